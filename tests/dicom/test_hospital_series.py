"""Series as hospitals send them (issue 17): pixel padding, a missing PixelSpacing, a stray
slice without position, and a three-plane localizer that must stay 'other' while angled axial
stacks do not."""
import shutil

import numpy as np
import pydicom
import pytest

from lumbar_edge.dicom import scan_path
from lumbar_edge.dicom.geometry import Plane
from lumbar_edge.preprocess import window
from lumbar_edge.select import select_series
from lumbar_edge.synth import SynthOptions, synthesize


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hospital")
    synthesize(root / "d", n_studies=1, seed=41, workers=1, options=SynthOptions.tiny())
    return root / "d" / "train_images"


def _copy(study_root, tmp_path):
    dst = tmp_path / "study"
    shutil.copytree(study_root, dst)
    scan = scan_path(dst, progress=False)
    return dst, scan.studies[0]


def _rewrite(path, **changes):
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_pixel_padding_is_left_out_of_the_window(study_root, tmp_path):
    _, study = _copy(study_root, tmp_path)
    inst = study.series_of_kind("axial_t2")[0].instances[3]
    ds = pydicom.dcmread(inst.path)
    pixels = ds.pixel_array.copy()
    yy, xx = np.mgrid[0:ds.Rows, 0:ds.Columns]
    outside = (yy - ds.Rows / 2) ** 2 + (xx - ds.Columns / 2) ** 2 > (0.45 * ds.Rows) ** 2
    pixels[outside] = 4095  # bright padding outside a circular field of view, as some scanners do
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.PixelPaddingValue = 4095
    ds["PixelPaddingValue"].VR = "US"
    ds.save_as(inst.path, enforce_file_format=True)
    study = scan_path(inst.path.parent, progress=False).studies[0]
    again = next(i for s in study.series for i in s.instances if i.sop_uid == inst.sop_uid)
    assert again.pixel_padding_value == 4095
    decoded = again.pixel_array()
    assert np.isnan(decoded[outside]).all() and np.isfinite(decoded[~outside]).all()
    # The window is the anatomy's: padding neither sets the top of the window nor shows as bright.
    windowed = window(decoded[None], 0.5, 99.5)[0]
    expected = window(np.where(outside, np.nan, ds.pixel_array.astype(np.float32))[None], 0.5, 99.5)[0]
    np.testing.assert_allclose(windowed, expected)
    assert (windowed[outside] == 0).all()
    unmasked = window(ds.pixel_array.astype(np.float32)[None], 0.5, 99.5)[0]
    assert unmasked[~outside].mean() < 0.5 * windowed[~outside].mean()  # what ignoring padding did


def test_signed_padding_value_read_by_the_fast_reader_is_signed(tmp_path, study_root):
    _, study = _copy(study_root, tmp_path)
    inst = study.series_of_kind("sagittal_t1")[0].instances[0]
    ds = pydicom.dcmread(inst.path)
    arr = ds.pixel_array.astype(np.int16) - 100
    arr[:2, :] = -2000
    ds.PixelRepresentation = 1
    ds.PixelData = arr.astype("<i2").tobytes()
    ds.PixelPaddingValue = -2000
    ds["PixelPaddingValue"].VR = "SS"
    ds.save_as(inst.path, enforce_file_format=True)
    study = scan_path(inst.path, progress=False).studies[0]
    got = study.series[0].instances[0]
    assert got.pixel_padding_value == -2000
    assert np.isnan(got.pixel_array()[:2]).all()


def test_missing_pixel_spacing_falls_back_to_imager_pixel_spacing_or_refuses_the_series(study_root, tmp_path):
    dst, study = _copy(study_root, tmp_path)
    t2 = study.series_of_kind("sagittal_t2")[0]
    spacing = t2.pixel_spacing
    for inst in t2.instances:
        _rewrite(inst.path, PixelSpacing=None, ImagerPixelSpacing=[f"{v:.6f}" for v in spacing])
    study = scan_path(dst, progress=False).studies[0]
    s = study.series_of_kind("sagittal_t2")[0]
    assert s.problem is None and s.pixel_spacing == pytest.approx(spacing)
    assert s.instances[0].geometry.pixel_spacing == pytest.approx(spacing)
    assert any("ImagerPixelSpacing is used" in w for w in s.warnings)
    selection = select_series(study, ["sagittal_t2"])
    assert any("ImagerPixelSpacing is used" in w for w in selection.warnings)
    for inst in t2.instances:
        _rewrite(inst.path, ImagerPixelSpacing=None)
    study = scan_path(dst, progress=False).studies[0]
    s = study.series_of_kind("sagittal_t2")[0]
    assert s.problem and "pixel size in mm is unknown" in s.problem
    selection = select_series(study, ["sagittal_t2", "sagittal_t1"])
    assert "sagittal_t2" not in selection.chosen and "sagittal_t1" in selection.chosen
    assert any(w.endswith(s.problem) and "is not used" in w for w in selection.warnings), selection.warnings


def test_a_three_plane_localizer_stays_mixed(study_root, tmp_path):
    dst, study = _copy(study_root, tmp_path)
    ax = study.series_of_kind("axial_t2")[0]
    sag = study.series_of_kind("sagittal_t2")[0]
    # Move one sagittal slice into the axial series: two planes in one series.
    donor = sag.instances[0].path
    ds = pydicom.dcmread(donor)
    ds.SeriesInstanceUID = ax.series_uid
    ds.SOPInstanceUID = ds.SOPInstanceUID[:60] + ".9"
    ds.Rows, ds.Columns = ax.rows, ax.columns
    ds.PixelData = np.zeros((ax.rows, ax.columns), "<u2").tobytes()
    ds.save_as(ax.instances[0].path.parent / "999.dcm", enforce_file_format=True)
    study = scan_path(dst, progress=False).studies[0]
    mixed = next(s for s in study.series if s.series_uid == ax.series_uid)
    assert mixed.plane is Plane.MIXED and mixed.kind.value == "other"


def test_the_scan_table_shows_the_stacks_of_an_axial_series(tmp_path):
    from lumbar_edge.dicom import format_scan

    synthesize(tmp_path / "d", n_studies=1, seed=41, workers=1, options=SynthOptions.tiny(axial_layout="stacks"))
    scan = scan_path(tmp_path / "d" / "train_images", progress=False)
    axial = scan.studies[0].series_of_kind("axial_t2")[0]
    row = next(line for line in format_scan(scan).splitlines() if line.strip().startswith(axial.series_id))
    assert f"{len(axial.instances)}/5 stacks" in row


def _second_echo(t2, folder, te, start, image_type=None):
    """Copies of the series ``t2``'s files at the same positions, as a second echo (``te``) or
    image type of the same series: new SOP instances numbered from ``start``."""
    for k, inst in enumerate(t2.instances):
        ds = pydicom.dcmread(inst.path)
        ds.EchoTime = te
        if image_type is not None:
            ds.ImageType = image_type
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = start + k
        ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"echo{te:g}_{k}.dcm", enforce_file_format=True)


@pytest.mark.parametrize("first_te", [12.0, 200.0])
def test_a_multi_echo_series_keeps_one_echo_per_position(study_root, tmp_path, first_te):
    dst, study = _copy(study_root, tmp_path)
    t2 = study.series_of_kind("sagittal_t2")[0]
    te, n = t2.sequence["TE"], len(t2.instances)
    folder = t2.instances[0].path.parent
    _second_echo(t2, folder, first_te, start=n + 1)
    scan = scan_path(dst, progress=False)
    s = scan.studies[0].series_of_kind("sagittal_t2")[0]
    # Both echoes count alike: the longer echo time is kept (the T2 echo of a PD/T2 pair).
    kept_te = max(te, first_te)
    assert len(s.instances) == n and s.sequence["TE"] == kept_te
    assert s.spacing == pytest.approx(t2.spacing)  # a stack of slices, not pairs 0 mm apart
    assert len({round(p, 3) for p in s.positions}) == n
    other = [k for k in scan.skipped if k.category == "other_echo"]
    assert len(other) == n and all(f"TE {kept_te:g} ms images are used" in k.reason for k in other)
    assert any("2 echoes or image types at the same positions" in w for w in s.warnings)


def _repeat(inst) -> None:
    """A copy of the slice ``inst`` as a new SOP instance, number 99, beside it: a repeat."""
    ds = pydicom.dcmread(inst.path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(inst.path.parent / "repeat.dcm", enforce_file_format=True)


def test_a_slice_repeated_at_one_position_is_kept_once(study_root, tmp_path):
    dst, study = _copy(study_root, tmp_path)
    t1 = study.series_of_kind("sagittal_t1")[0]
    source = t1.instances[2]
    _repeat(source)
    scan = scan_path(dst, progress=False)
    s = scan.studies[0].series_of_kind("sagittal_t1")[0]
    assert len(s.instances) == len(t1.instances) and s.spacing == pytest.approx(t1.spacing)
    # The later acquisition (instance 99) is kept, the earlier slice at its position left out.
    (skip,) = [k for k in scan.skipped if k.category == "colocated"]
    assert skip.path == source.path and str(source.path.parent / "repeat.dcm") in skip.reason
    assert "repeat.dcm" in {i.path.name for i in s.instances} and source.path not in {i.path for i in s.instances}
    assert any("at the position of another slice" in w for w in s.warnings)


def test_a_te_that_varies_from_slice_to_slice_beside_a_repeat_loses_no_position(study_root, tmp_path):
    # Not a multi-echo series: every slice has its own TE (a scanner storing the actual TE), and
    # one slice is repeated. Only the repeat goes; no slice is dropped as "another echo".
    dst, study = _copy(study_root, tmp_path)
    t1 = study.series_of_kind("sagittal_t1")[0]
    te = t1.sequence["TE"]
    for k, inst in enumerate(t1.instances):
        _rewrite(inst.path, EchoTime=te + 0.01 * k)
    source = t1.instances[1]
    _repeat(source)
    scan = scan_path(dst, progress=False)
    s = scan.studies[0].series_of_kind("sagittal_t1")[0]
    assert len(s.instances) == len(t1.instances)
    assert [k.category for k in scan.skipped] == ["colocated"]


def test_an_original_series_is_chosen_over_a_derived_copy(study_root, tmp_path):
    dst, study = _copy(study_root, tmp_path)
    t2 = study.series_of_kind("sagittal_t2")[0]
    mpr = t2.instances[0].path.parent.parent / "mpr"
    mpr.mkdir()
    uid = pydicom.uid.generate_uid()
    for k, inst in enumerate(t2.instances):
        ds = pydicom.dcmread(inst.path)
        ds.SeriesInstanceUID, ds.SeriesNumber = uid, (t2.series_number or 0) + 100  # the later series
        ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(mpr / f"{k}.dcm", enforce_file_format=True)
    study = scan_path(dst, progress=False).studies[0]
    assert len(study.series_of_kind("sagittal_t2")) == 2
    selection = select_series(study, ["sagittal_t2"])
    assert selection.chosen["sagittal_t2"].series_uid == t2.series_uid
    assert "an original acquisition, not derived" in selection.reasons["sagittal_t2"]
    assert "derived, " in selection.reasons["sagittal_t2"]


def test_frames_of_one_enhanced_file_at_repeated_positions_are_one_skip_entry(study_root, tmp_path):
    from lumbar_edge.synth.enhanced import convert_series

    dst, study = _copy(study_root, tmp_path)
    t2 = study.series_of_kind("sagittal_t2")[0]
    n = len(t2.instances)
    folder = t2.instances[0].path.parent
    _second_echo(t2, folder, t2.sequence["TE"], start=n + 1)  # the same slices again: a repeat
    out = tmp_path / "enhanced.dcm"
    convert_series(folder, out)
    shutil.rmtree(folder)
    folder.mkdir()
    shutil.move(out, folder / "1.dcm")
    scan = scan_path(dst, progress=False)
    s = scan.studies[0].series_of_kind("sagittal_t2")[0]
    assert len(s.instances) == n and {i.frame for i in s.instances} <= set(range(2 * n))
    (skip,) = [k for k in scan.skipped if k.category == "colocated"]
    assert skip.path == folder / "1.dcm" and skip.reason.startswith(f"{n} frame(s): ")
