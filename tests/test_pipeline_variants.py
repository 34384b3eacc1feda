"""Studies as real scanners store them, through the whole pipeline (issue 17): slices stored
flipped or transposed, axial series split over the discs, angled per-disc axial stacks, a
repeated sagittal T2, a slice without position, a slice that cannot be decoded.

Each variant is compared with the plain study of the same seed and index in patient space. The
model is the session's tiny one-epoch bundle: what is checked is that the same anatomy seen
through different storage gives the same points, not the accuracy of the network.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lumbar_edge.aggregate import axial_slices_for_levels
from lumbar_edge.dicom import scan_path
from lumbar_edge.labels import LEVELS
from lumbar_edge.pipeline import Pipeline
from lumbar_edge.synth import SynthOptions, synthesize

SEED = 31


def _make(root: Path, **variant) -> Path:
    opts = SynthOptions.tiny(partly_unlabelled_fraction=0.0, **variant)
    synthesize(root, n_studies=1, seed=SEED, workers=1, options=opts)
    return root


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("variants")
    return {name: _make(base / name, **kw) for name, kw in {
        "plain": {}, "split": {"axial_layout": "split"}, "stacks": {"axial_layout": "stacks"},
        "repeat": {"repeat_sagittal": True}}.items()}


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    with Pipeline.load(tiny_bundle, backend="onnxruntime") as p:
        yield p


def _study(root: Path):
    scan = scan_path(root / "train_images", progress=False)
    assert len(scan.studies) == 1
    return scan, scan.studies[0]


def _store_flipped(src: Path, dst: Path, flip_rows: bool, flip_columns: bool, transpose: bool) -> None:
    """Copy a series folder with every slice stored another way: the pixels moved and
    ImagePositionPatient / ImageOrientationPatient / PixelSpacing rewritten so that each pixel
    keeps its place in patient space (what a scanner does for another patient position)."""
    dst.mkdir(parents=True)
    for path in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        img = ds.pixel_array
        rows, cols = img.shape
        r = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
        c = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
        dr, dc = (float(v) for v in ds.PixelSpacing)
        origin = np.array([float(v) for v in ds.ImagePositionPatient])
        if flip_columns:
            origin, r, img = origin + (cols - 1) * dc * r, -r, img[:, ::-1]
        if flip_rows:
            origin, c, img = origin + (rows - 1) * dr * c, -c, img[::-1, :]
        if transpose:
            r, c, img, (dr, dc) = c, r, img.T, (dc, dr)
        ds.PixelData = np.ascontiguousarray(img).tobytes()
        ds.Rows, ds.Columns = img.shape
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([r, c])]
        ds.PixelSpacing = [f"{dr:.6f}", f"{dc:.6f}"]
        ds.save_as(dst / path.name, enforce_file_format=True)


def _by_column(result):
    return {f.column: f for f in result.findings}


def _assert_same_points(a, b, atol_mm=1e-3):
    fa, fb = _by_column(a), _by_column(b)
    assert fa.keys() == fb.keys()
    for column, f in fa.items():
        g = fb[column]
        assert f.source == g.source, column
        if f.keypoint is None:
            continue
        np.testing.assert_allclose(f.keypoint.patient_mm, g.keypoint.patient_mm, atol=atol_mm, err_msg=column)
        np.testing.assert_allclose(f.probabilities, g.probabilities, atol=1e-5, err_msg=column)


def test_slices_stored_flipped_or_transposed_give_the_same_points_in_patient_space(roots, pipe, tmp_path):
    scan, plain = _study(roots["plain"])
    flipped_root = tmp_path / "flipped"
    study_dir = flipped_root / plain.study_id
    # Sagittal series head-down and anterior-right, the axial one transposed and mirrored:
    # left and right, head and feet are only known from the orientation tags.
    plain_dir = roots["plain"] / "train_images" / plain.study_id
    for series in plain.series:
        folder = plain_dir / series.series_id
        kind = series.kind.value
        how = {"sagittal_t1": (True, False, False), "sagittal_t2": (True, True, False),
               "axial_t2": (False, True, True)}[kind]
        _store_flipped(folder, study_dir / folder.name, *how)
    _, flipped = _study_in(flipped_root)
    a, b = pipe.run_study(plain), pipe.run_study(flipped)
    assert sum(f.source == "model" for f in a.findings) >= 15  # both sagittal views at least
    _assert_same_points(a, b)
    # The keypoints are reported on the stored grid of each file: mapped back through its own
    # geometry they land where the plain study's points are (checked above in patient mm), and
    # a sagittal point of a head-down slice has its row counted from the other end.
    for f in a.findings:
        if f.keypoint is not None and f.condition == "spinal_canal_stenosis":
            g = _by_column(b)[f.column]
            rows = plain.series_of_kind("sagittal_t2")[0].rows
            assert g.keypoint.y == pytest.approx(rows - 1 - f.keypoint.y, abs=1e-6)


def _study_in(root: Path):
    scan = scan_path(root, progress=False)
    return scan, scan.studies[0]


def test_axial_series_split_over_the_discs_are_used_together(roots, pipe):
    _, plain = _study(roots["plain"])
    _, split = _study(roots["split"])
    axials = split.series_of_kind("axial_t2")
    assert len(axials) == 2
    a, b = pipe.run_study(plain), pipe.run_study(split)
    assert len(b.series_used_all["axial_t2"]) == 2
    assert "axial t2 series used together" in b.selection["axial_t2"]
    fa, fb = _by_column(a), _by_column(b)
    # The sagittal views are untouched; per axial level the same slice (same pixels, same
    # place) is found, except that a slice at the cut between the two series sees other
    # neighbours in its 2.5D input.
    for column, f in fa.items():
        g = fb[column]
        assert f.source == g.source, column
        if f.keypoint is None or "subarticular" not in column:
            if f.keypoint is not None:
                np.testing.assert_allclose(f.keypoint.patient_mm, g.keypoint.patient_mm, atol=1e-6)
            continue
        plain_index = plain.series_of_kind("axial_t2")[0].index_of_number(f.keypoint.instance_number)
        half = len(plain.series_of_kind("axial_t2")[0].instances) // 2
        if plain_index not in (half - 1, half):
            np.testing.assert_allclose(f.keypoint.patient_mm, g.keypoint.patient_mm, atol=1e-3, err_msg=column)


def test_angled_stacks_in_one_axial_series_are_an_axial_t2_read_per_disc(roots, pipe):
    _, study = _study(roots["stacks"])
    axials = study.series_of_kind("axial_t2")
    assert len(axials) == 1, [(s.description, s.kind, s.plane) for s in study.series]
    series = axials[0]
    stacks = series.stacks
    assert len(stacks) == 5
    for start, end in stacks:
        normals = {tuple(np.round(series.instances[i].geometry.normal, 6)) for i in range(start, end)}
        assert len(normals) == 1
        positions = [series.instances[i].position for i in range(start, end)]
        assert positions == sorted(positions)
        for i in range(start, end):
            assert all(start <= j < end for j in series.neighbour_indices(i, 3))
    # With the true disc centres, every level is read on a slice of its own stack, the one
    # nearest the disc.
    truth = json.loads((roots["stacks"] / "synth_truth.json").read_text())["studies"][0]
    discs = {lv: tuple(v) for lv, v in truth["discs"].items()}
    chosen = axial_slices_for_levels([series], discs)
    assert set(chosen) == set(LEVELS)
    # Stacks run from the feet to the head, as the slices within each do.
    for k, lv in enumerate(reversed(LEVELS)):
        s, index = chosen[lv]
        start, end = stacks[k]
        assert s is series and start <= index < end, lv
        dists = [abs(float(series.instances[i].geometry.patient_to_pixel(np.array(discs[lv]))[2]))
                 for i in range(start, end)]
        assert dists[index - start] == pytest.approx(min(dists))
    result = pipe.run_study(study)
    assert "stacks" in result.selection["axial_t2"]
    assert not any("no axial t2 series" in w for w in result.warnings), result.warnings


def test_a_repeated_sagittal_t2_is_chosen_by_the_declared_rules_and_the_report_says_why(roots, pipe):
    _, plain = _study(roots["plain"])
    _, repeat = _study(roots["repeat"])
    t2s = repeat.series_of_kind("sagittal_t2")
    assert len(t2s) == 2
    later = max(t2s, key=lambda s: s.series_number)
    result = pipe.run_study(repeat)
    assert result.series_used["sagittal_t2"] == later.series_uid
    reason = result.selection["sagittal_t2"]
    assert reason.startswith(f"series {later.series_number} chosen of 2 sagittal t2 series")
    assert ("wider coverage" in reason) or ("the later series" in reason)
    # The chosen series is the plain study's own sagittal T2 (same pixels): same canal points.
    a = _by_column(pipe.run_study(plain))
    for column, f in _by_column(result).items():
        if column.startswith("spinal_canal") and f.keypoint is not None:
            np.testing.assert_allclose(f.keypoint.patient_mm, a[column].keypoint.patient_mm, atol=1e-6)


def test_a_slice_without_position_is_left_out_not_its_series(roots, pipe, tmp_path):
    root = tmp_path / "noipp"
    shutil.copytree(roots["plain"] / "train_images", root)
    _, plain = _study_in(root)
    t2 = plain.series_of_kind("sagittal_t2")[0]
    victim = t2.instances[len(t2.instances) // 2].path
    ds = pydicom.dcmread(victim)
    del ds.ImagePositionPatient
    ds.save_as(victim, enforce_file_format=True)
    scan, study = _study_in(root)
    t2_after = study.series_of_kind("sagittal_t2")
    assert len(t2_after) == 1 and len(t2_after[0].instances) == len(t2.instances) - 1
    assert [s.category for s in scan.skipped] == ["no_geometry"]
    result = pipe.run_study(study)
    assert all(f.source == "model" for f in result.findings if f.condition == "spinal_canal_stenosis")
    assert any("without ImagePositionPatient" in w for w in result.warnings), result.warnings


def test_a_slice_whose_pixels_cannot_be_decoded_costs_that_slice_not_the_study(roots, pipe, tmp_path):
    root = tmp_path / "badpixels"
    shutil.copytree(roots["plain"] / "train_images", root)
    _, plain = _study_in(root)
    t1 = plain.series_of_kind("sagittal_t1")[0]
    victim = t1.instances[1]
    ds = pydicom.dcmread(victim.path)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # a whole element, half the pixels
    ds.save_as(victim.path, enforce_file_format=True)
    _, study = _study_in(root)
    result = pipe.run_study(study)
    assert len(result.findings) == 25
    bad = [w for w in result.warnings if f"instance {victim.instance_number}:" in w]
    assert len(bad) == 1 and bad[0].endswith("the slice is left out"), result.warnings
    assert sum(f.source == "model" for f in result.findings if "foraminal" in f.condition) == 10


def test_a_study_holds_a_few_decoded_slices_and_one_batch_of_inputs_not_whole_series(roots, pipe, monkeypatch):
    from lumbar_edge import pipeline as pipeline_module

    _, study = _study(roots["plain"])
    held = {"pixels": 0, "images": 0}
    real = pipeline_module._Prepared.pixels

    def counting(self, series, index, **kwargs):
        out = real(self, series, index, **kwargs)
        held["pixels"] = max(held["pixels"], sum(v is not None for v in self._pixels.values()))
        held["images"] = max(held["images"], len(self.images))
        return out

    monkeypatch.setattr(pipeline_module._Prepared, "pixels", counting)
    result = pipe.run_study(study)
    assert len(result.findings) == 25
    largest = max(len(s.instances) for s in study.series)
    # A sliding window of decoded slices (an input's neighbours) and at most one batch of inputs.
    assert held["pixels"] <= 2 * pipe.preprocess.in_channels + 2 < largest
    assert held["images"] <= pipe.batch_size


def _store_resampled(src: Path, dst: Path, row_factor: float) -> float:
    """Copy a series folder with its slices resampled along the columns (rows x ``row_factor``,
    linear) and PixelSpacing's row spacing set to match, as a scanner storing non-square pixels
    does; the first pixel keeps its place. Returns the new pixel aspect (height / width)."""
    dst.mkdir(parents=True)
    for path in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        img = ds.pixel_array.astype(np.float64)
        rows = img.shape[0]
        new_rows = int(round(rows * row_factor))
        at = np.linspace(0, rows - 1, new_rows)
        lo = np.floor(at).astype(int)
        hi = np.minimum(lo + 1, rows - 1)
        w = (at - lo)[:, None]
        out = img[lo] * (1 - w) + img[hi] * w
        dr, dc = (float(v) for v in ds.PixelSpacing)
        dr = dr * (rows - 1) / (new_rows - 1)
        ds.PixelData = np.round(out).astype(ds.pixel_array.dtype).tobytes()
        ds.Rows = new_rows
        ds.PixelSpacing = [f"{dr:.6f}", f"{dc:.6f}"]
        ds.save_as(dst / path.name, enforce_file_format=True)
    return dr / dc


def test_a_series_of_non_square_pixels_is_shown_to_the_model_in_its_proportions(roots, tiny_bundle, tmp_path):
    scan, plain = _study(roots["plain"])
    root = tmp_path / "aniso"
    plain_dir = roots["plain"] / "train_images" / plain.study_id
    aspect = None
    for series in plain.series:
        folder = plain_dir / series.series_id
        if series.kind.value == "sagittal_t2":
            aspect = _store_resampled(folder, root / plain.study_id / folder.name, 0.8)
        else:
            shutil.copytree(folder, root / plain.study_id / folder.name)
    _, aniso = _study_in(root)
    assert aniso.series_of_kind("sagittal_t2")[0].pixel_spacing[0] > plain.series_of_kind("sagittal_t2")[0].pixel_spacing[0]
    with Pipeline.load(tiny_bundle, backend="onnxruntime", keep_heatmaps=True) as p:
        results = {"plain": p.run_study(plain), "aniso": p.run_study(aniso)}
    for name, want in (("plain", 1.0), ("aniso", aspect)):
        grids = list(results[name].heatmaps.values())  # the sagittal T2 slices the canal was read on
        assert grids, name
        for g in grids:
            assert g.letterbox.scale_y / g.letterbox.scale_x == pytest.approx(want, rel=0.02), name
    assert len(results["aniso"].findings) == 25
    # The overlays show the non-square slices in mm proportions (the sagittal T2's), only those.
    t2_uid = aniso.series_of_kind("sagittal_t2")[0].series_uid
    aspects = results["aniso"].slice_aspects
    assert aspects and all(k[0] == t2_uid and v == pytest.approx(aspect) for k, v in aspects.items())
    assert results["plain"].slice_aspects == {}
