"""End-to-end tests of the study pipeline and `lumbar-edge infer` on synthetic studies.

A tiny model is trained for one epoch and exported to a real ONNX bundle, so every step runs for
real (pydicom, ONNX Runtime, the numpy decoder, the writers); what is checked is the plumbing and
the geometry, not the accuracy of a one-epoch network.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lumbar_edge.cli import main
from lumbar_edge.dicom import scan_path
from lumbar_edge.labels import CONDITIONS, LEVELS
from lumbar_edge.errors import InputError, LumbarEdgeError, UnexpectedStudyError
from lumbar_edge.pipeline import Pipeline, StudyError


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _one_study(val_dir: Path):
    scan = scan_path(val_dir / "train_images", progress=False)
    return scan.studies[0]


def test_run_study_gives_25_findings_with_consistent_geometry(tiny_rsna, tiny_bundle):
    _, val_dir = tiny_rsna
    study = _one_study(val_dir)
    with Pipeline.load(tiny_bundle, backend="onnxruntime") as pipe:
        result = pipe.run_study(study)
    assert [(f.condition, f.level) for f in result.findings] == [(c, lv) for c in CONDITIONS for lv in LEVELS]
    assert result.study_id == study.study_id
    assert set(result.series_used) == {"sagittal_t2", "sagittal_t1", "axial_t2"}
    series_by_uid = {s.series_uid: s for s in study.series}
    axial = series_by_uid[result.series_used["axial_t2"]]
    # Where the one-epoch model puts its canal points depends on the CPU's floating-point path,
    # so which levels the axial stack covers is read off the result, not assumed: a level is
    # covered when an axial slice lies within two slice spacings + 2 mm of its canal point.
    reach = 2.0 * float(axial.spacing) + 2.0
    covered = {lv for lv in LEVELS
               if min(abs(float(i.geometry.patient_to_pixel(
                   np.asarray(result.finding("spinal_canal_stenosis", lv).keypoint.patient_mm))[2]))
                   for i in axial.instances) <= reach}
    uncovered = [lv for lv in LEVELS if lv not in covered]
    # The report may say that the model put two levels on one point, and which levels the axial
    # series does not cover; nothing else about this complete study deserves a warning.
    for w in result.warnings:
        assert " were placed within " in w or (uncovered and w.startswith("the axial series does not cover ")), w
    coverage = [w for w in result.warnings if w.startswith("the axial series does not cover ")]
    assert bool(coverage) == bool(uncovered)
    if uncovered:
        assert coverage[0].split(";")[0].endswith(", ".join(lv.upper().replace("_", "/") for lv in uncovered))
    for f in result.findings:
        if "subarticular" in f.condition and f.level not in covered:
            assert f.source == "prior" and f.keypoint is None
            continue
        assert f.source == "model"
        assert abs(sum(f.probabilities) - 1) < 1e-6 and min(f.probabilities) >= 0
        kp = f.keypoint
        series = series_by_uid[kp.series_uid]
        view = next(v for v, uid in result.series_used.items() if uid == kp.series_uid)
        assert view == {"spinal_canal_stenosis": "sagittal_t2"}.get(
            f.condition, "sagittal_t1" if "foraminal" in f.condition else "axial_t2")
        inst = next(i for i in series.instances if i.sop_uid == kp.sop_uid)
        assert -0.5 <= kp.x <= inst.columns - 0.5 and -0.5 <= kp.y <= inst.rows - 0.5
        np.testing.assert_allclose(inst.geometry.pixel_to_patient(kp.x, kp.y), kp.patient_mm, atol=1e-6)
        assert (kp.series_uid, kp.sop_uid) in result.slices
    # Foramina are sorted into sides by patient position: left (+x in LPS) beyond the right.
    left = [result.finding("left_neural_foraminal_narrowing", lv).keypoint.patient_mm[0] for lv in LEVELS]
    right = [result.finding("right_neural_foraminal_narrowing", lv).keypoint.patient_mm[0] for lv in LEVELS]
    assert min(left) > max(right)
    # Each axial finding sits on the axial slice nearest that level's canal point.
    for lv in sorted(covered):
        disc = np.asarray(result.finding("spinal_canal_stenosis", lv).keypoint.patient_mm)
        dists = [abs(float(i.geometry.patient_to_pixel(disc)[2])) for i in axial.instances]
        chosen = result.finding("left_subarticular_stenosis", lv).keypoint.sop_uid
        assert axial.instances[int(np.argmin(dists))].sop_uid == chosen


def test_missing_series_fall_back_to_the_prior_and_unusable_studies_fail_clearly(tiny_rsna, tiny_bundle, tmp_path):
    _, val_dir = tiny_rsna
    study = _one_study(val_dir)
    # A copy of the study without its axial series.
    axial_uid = next(s.series_uid for s in study.series if str(s.kind.value) == "axial_t2")
    folder = tmp_path / "no_axial"
    for s in study.series:
        if s.series_uid != axial_uid:
            shutil.copytree(Path(s.instances[0].path).parent, folder / s.series_id)
    with Pipeline.load(tiny_bundle, backend="onnxruntime") as pipe:
        result = pipe.run_study(folder)
        sub = [f for f in result.findings if "subarticular" in f.condition]
        assert all(f.source == "prior" and f.keypoint is None for f in sub)
        assert any("axial" in w for w in result.warnings)
        assert all(f.source == "model" for f in result.findings if "subarticular" not in f.condition)
        with pytest.raises(StudyError, match="none of the needed series"):
            pipe.run_study(_coronal_only_study(study, tmp_path / "coronal"))


def _coronal_only_study(study, folder: Path) -> Path:
    """A real DICOM study holding a single coronal series (no series the model reads)."""
    series = next(s for s in study.series if str(s.kind.value) == "sagittal_t1")
    folder.mkdir(parents=True)
    study_uid, series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for inst in series.instances:
        ds = pydicom.dcmread(inst.path)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = "COR T1"
        ds.save_as(folder / f"{ds.InstanceNumber}.dcm")
    return folder


def test_infer_cli_writes_reports_csv_overlays_and_never_touches_the_input(tiny_rsna, tiny_bundle, tmp_path, capsys):
    _, val_dir = tiny_rsna
    root = tmp_path / "in"
    shutil.copytree(val_dir / "train_images", root)
    _coronal_only_study(_one_study(val_dir), root / "bad_study")
    before = _tree_digest(root)
    out = tmp_path / "out"
    code = main(["infer", str(root), "--model", str(tiny_bundle), "--out", str(out), "--backend", "onnxruntime", "-q"])
    text = capsys.readouterr().out
    assert code == 1, text  # one study failed: the exit status says so, the others are written
    assert _tree_digest(root) == before
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["succeeded"]) == 2 and len(summary["failed"]) == 1
    assert "none of the needed series" in next(iter(summary["failed"].values()))
    rows = (out / "submission.csv").read_text().splitlines()
    assert rows[0] == "row_id,normal_mild,moderate,severe" and len(rows) == 1 + 2 * 25
    for sid in summary["succeeded"]:
        report = json.loads((out / f"{sid}.json").read_text())
        assert report["schema_version"] and "NOT FOR CLINICAL USE" in report["disclaimer"]
        assert len(report["findings"]) == 25
    pngs = list((out / "overlays").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not list(out.rglob("*.tmp"))
    # The run's CSV scores against the labels with the project's own metric.
    assert main(["evaluate", str(out / "submission.csv"), "--labels", str(val_dir / "train.csv"), "--json"]) == 0
    score = json.loads(capsys.readouterr().out)
    assert np.isfinite(score["score"])


def test_infer_refuses_an_output_inside_the_input(tiny_rsna, tiny_bundle, capsys):
    _, val_dir = tiny_rsna
    code = main(["infer", str(val_dir), "--model", str(tiny_bundle), "--out", str(val_dir / "results"), "-q"])
    assert code == 2
    assert "inside the input" in capsys.readouterr().err
    assert not (val_dir / "results").exists()


def _findings(result):
    return [(f.condition, f.level, f.probabilities, f.source,
             None if f.keypoint is None else (f.keypoint.sop_uid, f.keypoint.x, f.keypoint.y)) for f in result.findings]


def test_overlapped_run_gives_the_sequential_results_in_order_and_survives_a_bad_study(tiny_rsna, tiny_bundle, tmp_path):
    _, val_dir = tiny_rsna
    scan = scan_path(val_dir / "train_images", progress=False)
    bad = _coronal_only_study(scan.studies[0], tmp_path / "coronal")
    # Study objects, a bad folder in the middle, and a study folder: what run() accepts.
    folder = Path(scan.studies[1].series[0].instances[0].path).parent.parent
    studies = [scan.studies[0], bad, folder, tmp_path / "no-such-folder"]
    with Pipeline.load(tiny_bundle, backend="onnxruntime") as pipe:
        runs = {prefetch: list(pipe.run(studies, prefetch=prefetch)) for prefetch in (0, 1, 2)}
    for prefetch, got in runs.items():
        assert [s for s, _ in got] == studies, prefetch
        assert isinstance(got[1][1], StudyError) and "none of the needed series" in str(got[1][1])
        assert isinstance(got[3][1], LumbarEdgeError) and not isinstance(got[3][1], StudyError)
        for (_, want), (_, have) in zip(runs[0], got):
            if not isinstance(want, LumbarEdgeError):
                assert _findings(have) == _findings(want)
                assert have.warnings == want.warnings and set(have.slices) == set(want.slices)
    assert runs[1][2][1].study_id == scan.studies[1].study_id
    with pytest.raises(InputError, match="prefetch"):
        list(Pipeline.load(tiny_bundle, backend="onnxruntime").run(studies, prefetch=-1))


def test_a_defect_met_on_one_study_fails_that_study_and_the_batch_goes_on(tiny_rsna, tiny_bundle, tmp_path,
                                                                          monkeypatch, caplog):
    # Fault injection: the aggregation raises what a defect would (not a LumbarEdgeError) for
    # the first study's sagittal T2 only; every other step runs for real.
    import lumbar_edge.pipeline as pipeline_module

    _, val_dir = tiny_rsna
    scan = scan_path(val_dir / "train_images", progress=False)
    first, second = scan.studies[0], scan.studies[1]
    bad_uids = {s.series_uid for s in first.series}
    real = pipeline_module.sagittal_levels

    def defective(t2, *args, **kwargs):
        if t2 is not None and t2.series_uid in bad_uids:
            raise ZeroDivisionError("float division by zero")
        return real(t2, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "sagittal_levels", defective)
    with Pipeline.load(tiny_bundle, backend="onnxruntime") as pipe:
        for prefetch in (0, 1):
            got = list(pipe.run([first, second], prefetch=prefetch))
            assert isinstance(got[0][1], UnexpectedStudyError), prefetch
            assert "ZeroDivisionError: float division by zero" in str(got[0][1]) and "\n" not in str(got[0][1])
            assert got[1][1].study_id == second.study_id and len(got[1][1].findings) == 25
    assert "Traceback" in caplog.text and "defective" in caplog.text  # the defect's traceback is logged
    out = tmp_path / "out"
    rc = main(["infer", str(val_dir / "train_images"), "--model", str(tiny_bundle), "--out", str(out),
               "--backend", "onnxruntime", "--no-overlays", "-q"])
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 1 and "unexpected error (ZeroDivisionError" in summary["failed"][first.study_id]
    assert set(summary["failed"]) == {first.study_id}
    assert (out / f"{second.study_id}.json").exists()


def test_inputs_preprocessed_together_on_threads_equal_those_made_one_by_one(tiny_rsna, tiny_bundle):
    _, val_dir = tiny_rsna
    scan = scan_path(val_dir / "train_images", progress=False)
    runs = {}
    # Compared at equal batch sizes only: an engine may compute another batch size otherwise.
    for threads, batch in ((1, 8), (3, 8), (1, 3), (2, 3), (4, 1)):
        with Pipeline.load(tiny_bundle, backend="onnxruntime", batch_size=batch, prep_threads=threads) as pipe:
            assert pipe.prep_threads == threads
            runs[threads, batch] = [pipe.run_study(study) for study in scan.studies[:2]]
            # A pool only where several threads can share a batch, and gone once closed.
            assert (pipe._prep_pool is not None) == (threads > 1 and batch > 1)
        assert pipe._prep_pool is None
    for key, got in runs.items():
        for a, b in zip(runs[1, key[1]] if key[1] > 1 else runs[key], got):
            assert _findings(b) == _findings(a), key
            assert b.warnings == a.warnings and set(b.slices) == set(a.slices), key
            for k in a.slices:
                np.testing.assert_array_equal(b.slices[k], a.slices[k])
    with pytest.raises(InputError, match="prep_threads"):
        Pipeline.load(tiny_bundle, backend="onnxruntime", prep_threads=0)


def _outputs(out: Path) -> dict:
    """Every output file's content, with the run-dependent parts (timings) removed."""
    got = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "summary.json"):
        data = path.read_bytes()
        if path.suffix == ".json":
            doc = json.loads(data)
            doc.pop("timings_s", None)
            data = json.dumps(doc, sort_keys=True).encode()
        got[str(path.relative_to(out))] = data
    return got


def test_infer_overlapped_writes_what_the_sequential_run_writes_and_a_failed_write_loses_one_study(
        tiny_rsna, tiny_bundle, tmp_path):
    from lumbar_edge.infer import run_infer

    _, val_dir = tiny_rsna
    root = tmp_path / "in"
    shutil.copytree(val_dir / "train_images", root)
    _coronal_only_study(_one_study(val_dir), root / "bad_study")
    runs = {}
    for prefetch in (0, 1):
        out = tmp_path / f"out{prefetch}"
        summary = run_infer(root, tiny_bundle, out, backend="onnxruntime", progress=False, prefetch=prefetch,
                            echo=lambda *_: None)
        runs[prefetch] = summary
        assert len(summary.succeeded) == 2 and len(summary.failed) == 1
    assert runs[1].succeeded == runs[0].succeeded and set(runs[1].failed) == set(runs[0].failed)
    assert [p.name for p in runs[1].overlays] == [p.name for p in runs[0].overlays]
    assert _outputs(tmp_path / "out1") == _outputs(tmp_path / "out0")

    # A study whose report cannot be written (a folder where the file goes) fails alone, in the
    # writer thread as inline, and nothing half-written is left.
    first = runs[0].succeeded[0]
    for prefetch in (0, 1):
        out = tmp_path / f"blocked{prefetch}"
        (out / f"{first}.json").mkdir(parents=True)
        summary = run_infer(root, tiny_bundle, out, backend="onnxruntime", progress=False, prefetch=prefetch,
                            echo=lambda *_: None)
        assert "writing its outputs failed" in summary.failed[first], prefetch
        assert summary.succeeded == [s for s in runs[0].succeeded if s != first]
        assert not list(out.rglob("*.tmp"))
        assert len((out / "submission.csv").read_text().splitlines()) == 1 + 25
