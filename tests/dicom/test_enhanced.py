"""Enhanced MR multi-frame objects and compressed transfer syntaxes, read by the scan and decoded
frame by frame: real files written by the generator, converted by ``synth.enhanced`` and
re-encoded by ``synth.transcode`` (pydicom's own encoders), checked against the classic series
they were made from, and by dicom3tools' dciodvfy where installed."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.sequence import Sequence as DicomSequence

from lumbar_edge.dicom import scan_path
from lumbar_edge.dicom.headers import HeaderRecord, read_header
from lumbar_edge.errors import InputError
from lumbar_edge.synth import SynthOptions, synthesize
from lumbar_edge.synth.enhanced import ENHANCED_MR_STORAGE, convert_series, convert_study
from lumbar_edge.synth.transcode import TRANSFER_SYNTAXES, transcode_file, transcode_tree


@pytest.fixture(scope="module")
def classic_study(tmp_path_factory):
    """One tiny generated study (classic MR Image Storage): its folder."""
    root = tmp_path_factory.mktemp("enh_src")
    opts = SynthOptions.tiny(partly_unlabelled_fraction=0.0, sagittal_slices=(7, 7), axial_slices=(9, 9))
    synthesize(root / "ds", n_studies=1, seed=31, workers=1, options=opts, progress=False)
    return next((root / "ds" / "train_images").iterdir())


def _enhanced_copy(classic_study, parent):
    dest = parent / classic_study.name  # the RSNA layout: the study folder keeps its id
    shutil.copytree(classic_study, dest)
    convert_study(dest)
    return dest


def _series_facts(series):
    return {"uid": series.series_uid, "kind": series.kind, "plane": series.plane, "weighting": series.weighting,
            "n": len(series.instances), "spacing": series.spacing, "pixel_spacing": series.pixel_spacing,
            "normal": tuple(np.round(series.normal, 9)), "numbers": series.instance_numbers}


def test_an_enhanced_mr_series_scans_to_the_slices_of_its_classic_series(classic_study, tmp_path):
    enhanced = _enhanced_copy(classic_study, tmp_path / "study")
    files = sorted(enhanced.rglob("*.dcm"))
    assert len(files) == 3  # one multi-frame file per series
    assert all(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID == ENHANCED_MR_STORAGE for f in files)
    plain, enh = scan_path(classic_study), scan_path(enhanced)
    assert not enh.skipped and len(enh.studies) == 1
    listed = enh.to_dict()["studies"][0]["series"][0]["instances"]  # `scan --json` names each frame
    assert sorted(i["frame"] for i in listed) == list(range(len(listed)))
    assert enh.studies[0].study_id == plain.studies[0].study_id  # the RSNA ids survive (1.dcm per series)
    for a, b in zip(plain.studies[0].series, enh.studies[0].series):
        assert _series_facts(a) == _series_facts(b)
        assert a.kind.value != "other"
        for ia, ib in zip(a.instances, b.instances):
            assert ia.frame is None and ib.frame == ib.instance_number - 1
            assert ib.position == pytest.approx(ia.position, abs=1e-6)
            assert ib.image_position == pytest.approx(ia.image_position, abs=1e-6)
            assert ib.image_orientation == pytest.approx(ia.image_orientation, abs=1e-9)
            assert ib.pixel_spacing == pytest.approx(ia.pixel_spacing)
        # Classification saw the same timing: TR, TE and TI come from the MR functional groups.
        for key in ("TR", "TE", "TI"):
            assert b.sequence[key] == pytest.approx(a.sequence[key]) if a.sequence[key] is not None \
                else b.sequence[key] is None


def test_a_study_mixing_classic_and_enhanced_series_scans_whole(classic_study, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(classic_study, mixed)
    sagittal = sorted(p for p in mixed.iterdir())[0]
    one = convert_series(sagittal, tmp_path / "one.dcm")
    for f in sagittal.iterdir():
        f.unlink()
    shutil.move(one, sagittal / "1.dcm")
    plain, scanned = scan_path(classic_study), scan_path(mixed)
    assert [_series_facts(s) for s in scanned.studies[0].series] == [_series_facts(s) for s in plain.studies[0].series]
    frames = [s for s in scanned.studies[0].series if s.instances[0].frame is not None]
    assert len(frames) == 1 and frames[0].series_uid == sagittal_uid(classic_study, sagittal.name)


def sagittal_uid(study, name):
    return pydicom.dcmread(next((study / name).iterdir()), stop_before_pixels=True).SeriesInstanceUID


@pytest.mark.parametrize("syntax", ["explicit", "deflated", "jpeg2000", "jpegls", "rle"])
def test_decoding_frame_k_gives_classic_slice_k(classic_study, tmp_path, syntax):
    enhanced = _enhanced_copy(classic_study, tmp_path / "study")
    if syntax != "explicit":
        transcode_tree(enhanced, syntax)
    plain, enh = scan_path(classic_study), scan_path(enhanced)
    assert not enh.skipped
    for a, b in zip(plain.studies[0].series, enh.studies[0].series):
        assert {i.transfer_syntax_uid for i in b.instances} == {TRANSFER_SYNTAXES[syntax]}
        for k in (0, len(a.instances) // 2, len(a.instances) - 1):
            np.testing.assert_array_equal(b.pixels(k), a.pixels(k))


def test_per_frame_groups_win_over_shared_and_top_level(classic_study, tmp_path):
    """A frame's own PixelValueTransformation and PixelMeasures beat the shared ones; the shared
    ones beat top-level tags; and the decoded frame is rescaled with its own values."""
    series = sorted(classic_study.iterdir())[0]
    path = convert_series(series, tmp_path / "e.dcm")
    ds = pydicom.dcmread(path)
    item = ds.PerFrameFunctionalGroupsSequence[2]
    pvt = pydicom.Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = "2", "-100", "US"
    item.PixelValueTransformationSequence = DicomSequence([pvt])
    measures = pydicom.Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.75], "2"
    item.PixelMeasuresSequence = DicomSequence([measures])
    ds.RepetitionTime = 999999  # not the shared MR timing's value: the functional group wins
    ds.save_as(path)
    records = read_header(str(path))
    assert isinstance(records, list) and len(records) == ds.NumberOfFrames
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert (records[2].rescale_slope, records[2].rescale_intercept) == (2.0, -100.0)
    assert records[2].pixel_spacing == (0.5, 0.75) and records[2].slice_thickness == 2.0
    assert records[1].rescale_slope == 1.0
    assert records[1].pixel_spacing == tuple(float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    assert all(r.repetition_time == float(shared.MRTimingAndRelatedParametersSequence[0].RepetitionTime)
               for r in records)
    scanned = {i.frame: i for s in scan_path(path).studies[0].series for i in s.instances}
    frame2 = scanned[2]
    # The scan keeps each frame's own pixel size (its frames share one file path).
    assert frame2.pixel_spacing == (0.5, 0.75) and frame2.geometry.pixel_spacing == (0.5, 0.75)
    assert scanned[1].pixel_spacing == records[1].pixel_spacing
    stored = pydicom.pixels.pixel_array(str(path), index=2)
    np.testing.assert_array_equal(frame2.pixel_array(), stored.astype(np.float32) * 2 - 100)


def test_legacy_converted_attributes_and_top_level_tags_are_the_fallback(classic_study, tmp_path):
    series = sorted(classic_study.iterdir())[0]
    path = convert_series(series, tmp_path / "legacy.dcm")
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.4"
    shared = ds.SharedFunctionalGroupsSequence[0]
    te = float(shared.MREchoSequence[0].EffectiveEchoTime)
    del shared.MREchoSequence
    unassigned = pydicom.Dataset()
    unassigned.EchoTime = te
    shared.UnassignedSharedConvertedAttributesSequence = DicomSequence([unassigned])
    ds.save_as(path)
    records = read_header(str(path))
    assert isinstance(records, list) and {r.echo_time for r in records} == {te}
    assert {r.sop_class_uid for r in records} == {"1.2.840.10008.5.1.4.1.1.4.4"}


def test_broken_multi_frame_files_are_skipped_with_a_reason(classic_study, tmp_path):
    series = sorted(classic_study.iterdir())[0]
    good = convert_series(series, tmp_path / "good.dcm")
    data = good.read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(data[:-5000])
    ds = pydicom.dcmread(good)
    del ds.PerFrameFunctionalGroupsSequence[-1]
    ds.save_as(tmp_path / "fewer_groups.dcm")
    ds = pydicom.dcmread(good)
    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(tmp_path / "no_groups.dcm")
    verdict = {name: read_header(str(tmp_path / name)) for name in ("truncated.dcm", "fewer_groups.dcm", "no_groups.dcm")}
    assert verdict["truncated.dcm"][0] == "truncated"
    assert verdict["fewer_groups.dcm"][0] == "corrupt" and "PerFrameFunctionalGroupsSequence" in verdict["fewer_groups.dcm"][1]
    assert verdict["no_groups.dcm"][0] == "unsupported" and "multi-frame" in verdict["no_groups.dcm"][1]
    # A copy of the good file elsewhere: one duplicate skip for the file, not one per frame.
    (tmp_path / "copy").mkdir()
    shutil.copy(good, tmp_path / "copy" / "good.dcm")
    result = scan_path(tmp_path)
    dupes = [s for s in result.skipped if s.category == "duplicate"]
    assert len(dupes) == 1 and result.n_instances == pydicom.dcmread(good).NumberOfFrames


def test_a_decode_of_a_frame_past_the_end_or_a_damaged_frame_is_a_dicom_error(classic_study, tmp_path):
    from lumbar_edge.errors import DicomError

    series = sorted(classic_study.iterdir())[0]
    path = convert_series(series, tmp_path / "e.dcm")
    transcode_file(path, path, "jpeg2000")
    inst = scan_path(path).studies[0].series[0].instances[0]
    ds = pydicom.dcmread(path)
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    frames[inst.frame] = frames[inst.frame][:40]  # a truncated codestream
    ds.PixelData = pydicom.encaps.encapsulate(frames)
    ds.save_as(path)
    with pytest.raises(DicomError, match=f"frame {inst.frame + 1}: cannot decode"):
        inst.pixel_array()


def test_transcode_refuses_unknown_names_and_keeps_the_source(classic_study, tmp_path):
    src = next(sorted(classic_study.iterdir())[0].iterdir())
    with pytest.raises(InputError, match="unknown transfer syntax"):
        transcode_file(src, tmp_path / "x.dcm", "jpeg2001")
    before = src.read_bytes()
    out = transcode_file(src, tmp_path / "x.dcm", "rle")
    assert src.read_bytes() == before
    written = pydicom.dcmread(out)
    assert written.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES["rle"]
    assert written.SOPInstanceUID == pydicom.dcmread(src).SOPInstanceUID  # lossless: the same instance
    record = read_header(str(out))
    assert isinstance(record, HeaderRecord) and record.frame is None


def test_the_converted_object_passes_dciodvfy(classic_study, tmp_path):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools' dciodvfy is not installed")
    for series in sorted(classic_study.iterdir()):
        path = convert_series(series, tmp_path / f"{series.name}.dcm")
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        text = proc.stdout + proc.stderr
        assert "EnhancedMRImage" in text
        assert [line for line in text.splitlines() if line.startswith("Error")] == []
