"""The generator's real-scanner variants (lumbar_edge.synth.variants)."""
from collections import Counter

import numpy as np
import pydicom
import pytest

from lumbar_edge.errors import InputError
from lumbar_edge.synth import SynthOptions, synthesize
from lumbar_edge.synth.render import SeriesGeometry
from lumbar_edge.synth.study import render_study
from lumbar_edge.synth.variants import OPTIONAL_TAGS, draw_realistic, flip_geometry

TINY = SynthOptions.tiny()


def test_split_axial_series_are_the_plain_stack_cut_in_two_with_the_same_pixels():
    plain = render_study(5, 1, TINY)
    split = render_study(5, 1, TINY.replace(axial_layout="split"))
    axials = [s for s in split.plan.series if s.kind == "axial_t2"]
    assert len(axials) == 2 and len({s.series_id for s in axials}) == 2
    assert len({s.series_number for s in split.plan.series}) == len(split.plan.series)
    joined = np.concatenate([split.images[s.series_id] for s in axials])
    assert np.array_equal(joined, plain.image("axial_t2"))
    for kind in ("sagittal_t1", "sagittal_t2"):
        assert np.array_equal(split.image(kind), plain.image(kind))


def test_angled_stacks_follow_each_disc_and_keep_the_labels_on_the_nearest_slice():
    study = render_study(5, 1, TINY.replace(axial_layout="stacks"))
    stacks = [s for s in study.plan.series if s.kind == "axial_t2"]
    assert len(stacks) == 5 and len({s.series_id for s in stacks}) == 1
    numbers = [s.first_instance for s in stacks]
    assert numbers[0] == 1 and all(b == a + s.geometry.n_slices for a, b, s in zip(numbers, numbers[1:], stacks))
    normals = [s.geometry.normal for s in stacks]
    # Each stack is angled along its own disc: not all parallel.
    assert max(np.degrees(np.arccos(np.clip(abs(a @ b), -1, 1))) for a in normals for b in normals) > 2.0
    truth = study.plan.truth()
    assert truth["series"]["axial_t2"]["n_slices"] == sum(s.geometry.n_slices for s in stacks)
    for lab in study.plan.labels:
        if "subarticular" in lab.condition:
            assert abs(lab.plane_distance_mm) <= 3.0  # the stack is centred on the disc
    assert study.images[stacks[0].series_id].shape[0] == sum(s.geometry.n_slices for s in stacks)


def test_a_repeated_sagittal_is_an_earlier_unlabelled_series_and_the_plain_one_the_later():
    plain = render_study(5, 2, TINY)
    study = render_study(5, 2, TINY.replace(repeat_sagittal=True))
    t2s = [s for s in study.plan.series if s.kind == "sagittal_t2"]
    assert len(t2s) == 2
    used, earlier = (t2s[0], t2s[1]) if t2s[0].labelled else (t2s[1], t2s[0])
    assert not earlier.labelled and earlier.series_number < used.series_number
    assert earlier.geometry.n_slices <= used.geometry.n_slices
    assert np.array_equal(study.images[used.series_id], plain.image("sagittal_t2"))
    assert all(lab.series_id != earlier.series_id for lab in study.plan.labels)


def test_flipped_storage_keeps_every_pixel_in_its_place_in_patient_space():
    g = SeriesGeometry(rows=4, cols=6, spacing=(0.8, 0.5), row_dir=(0.0, 1.0, 0.0), col_dir=(0.0, 0.0, -1.0),
                       positions=((10.0, -40.0, 60.0), (13.0, -40.0, 60.0)), thickness=3.0, slice_spacing=3.0)
    for flip_rows in (False, True):
        for flip_columns in (False, True):
            f = flip_geometry(g, flip_rows, flip_columns)
            want = g.pixel_points(1)
            if flip_rows:
                want = want[::-1]
            if flip_columns:
                want = want[:, ::-1]
            np.testing.assert_allclose(f.pixel_points(1), want, atol=1e-3)


def test_a_study_stored_for_another_patient_position_holds_the_plain_pixels_moved():
    plain = render_study(5, 3, TINY)
    ffp = render_study(5, 3, TINY.replace(patient_position="FFP"))
    for s in plain.plan.series:
        assert np.array_equal(ffp.images[s.series_id], plain.images[s.series_id][:, ::-1, ::-1])
    # The labels are on the stored grid: the same instance, the pixel counted from the other corner.
    for a, b in zip(plain.plan.labels, ffp.plan.labels):
        s = plain.plan.series_of(plain.plan.series_of("axial_t2").kind if "subarticular" in a.condition else
                                 {"spinal_canal_stenosis": "sagittal_t2"}.get(a.condition, "sagittal_t1"))
        assert b.instance_number == a.instance_number
        assert b.x == pytest.approx(s.geometry.cols - 1 - a.x, abs=2e-3)  # positions are stored to 0.1 um
        assert b.y == pytest.approx(s.geometry.rows - 1 - a.y, abs=2e-3)


def test_the_realistic_mix_has_its_proportions_in_any_run_of_studies():
    for seed in (0, 7, 2026):
        vs = [draw_realistic(seed, i) for i in range(60, 90)]
        layouts = Counter(v.axial_layout for v in vs)
        assert layouts["stacks"] == 10 and layouts["split"] == 5
        assert sum(v.repeat_sagittal for v in vs) == 6
        assert sum(v.patient_position != "HFS" for v in vs) in (13, 14)
    assert [draw_realistic(3, i) for i in range(6)] != [draw_realistic(4, i) for i in range(6)]


def test_files_say_the_patient_position_and_can_lack_the_optional_tags(tmp_path):
    summary = synthesize(tmp_path / "d", n_studies=1, seed=3, workers=1,
                         options=TINY.replace(patient_position="FFS", drop_optional_tags=True))
    files = sorted((tmp_path / "d" / "train_images").rglob("*.dcm"))
    assert len(files) == summary.n_files
    for path in files[:5]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientPosition == "FFS"
        assert not any(keyword in ds for keyword in OPTIONAL_TAGS)
    assert "patient position FFS 1" in summary.describe()


def test_unknown_variant_values_are_refused():
    with pytest.raises(InputError, match="axial_layout must be one of"):
        TINY.replace(axial_layout="spiral")
    with pytest.raises(InputError, match="patient_position must be one of"):
        TINY.replace(patient_position="LDL")


def test_a_realistic_root_scans_to_every_study_with_its_three_views(tmp_path):
    from lumbar_edge.dicom import scan_path
    from lumbar_edge.synth.transcode import postprocess_realistic, realistic_encoding

    synthesize(tmp_path / "r", n_studies=4, seed=8, workers=1, options=TINY.replace(realistic=True))
    counts = postprocess_realistic(tmp_path / "r")
    encodings = [realistic_encoding(8, i) for i in range(4)]
    assert counts.get("enhanced MR", 0) == sum(e for e, _ in encodings)
    assert sum(n for name, n in counts.items() if name != "enhanced MR") == 4
    scan = scan_path(tmp_path / "r" / "train_images", progress=False)
    assert len(scan.studies) == 4 and not scan.skipped
    for study in scan.studies:
        kinds = {s.kind.value for s in study.series}
        assert {"sagittal_t1", "sagittal_t2", "axial_t2"} <= kinds, [(s.description, s.kind, s.plane) for s in study.series]
