"""The DICOM results on their own: the Comprehensive SR and the Secondary Captures made from a real
pipeline result, checked with pydicom and validated with dcmtk's dsrdump (and dicom3tools'
dciodvfy where installed); the validators are shown to catch broken objects."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pydicom
import pytest
from dicom_checks import check_results, dciodvfy_path, dciodvfy_problems, dsrdump_problems
from serve_helpers import PATIENT_ID, PATIENT_NAME

from lumbar_edge.serve.dicom_common import ResultUids, encode_dataset, valid_uid
from lumbar_edge.serve.sc import build_secondary_captures
from lumbar_edge.serve.sr import build_sr, read_sr_findings


@pytest.fixture
def made(make_studies, tiny_pipeline, tmp_path):
    """(sent study, result, SR path, SC paths) for one cloned study, revision 1."""
    sent = make_studies(1)[0]
    result = tiny_pipeline.run_study(sent["folder"])
    source = pydicom.dcmread(next(sent["folder"].rglob("*.dcm")), stop_before_pixels=True)
    uids = ResultUids(sent["study_uid"], 1, "model-key")
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    sr_path = tmp_path / "SR.dcm"
    sr_path.write_bytes(encode_dataset(build_sr(result, source, uids, model_name="tiny", now=now)))
    sc_paths = []
    for i, sc in enumerate(build_secondary_captures(result, source, uids, model_name="tiny", now=now)):
        sc_paths.append(tmp_path / f"SC_{i}.dcm")
        sc_paths[-1].write_bytes(encode_dataset(sc))
    return sent, result, sr_path, sc_paths


def test_sr_holds_the_25_findings_with_keypoints_on_the_source_instances(made):
    sent, result, sr_path, sc_paths = made
    sr = pydicom.dcmread(sr_path)
    check_results([sr], [pydicom.dcmread(p) for p in sc_paths], sent)
    # Patient and study attributes come from the source; the file is Part 10.
    assert sr.PatientName == PATIENT_NAME and sr.PatientID == PATIENT_ID
    assert sr.file_meta.MediaStorageSOPInstanceUID == sr.SOPInstanceUID
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    # Each finding's grade, probabilities and point are the pipeline's (SCOORD: pixel centre + 0.5).
    by_key = {(f["condition"], f["level"]): f for f in read_sr_findings(sr)}
    for finding in result.findings:
        got = by_key[(finding.condition, finding.level)]
        assert got["severity"] == finding.severity
        np.testing.assert_allclose(got["probabilities"], finding.probabilities, rtol=0, atol=1e-12)
        if finding.keypoint is None:
            assert got["point"] is None and got["basis"].startswith("class prior")
        else:
            assert got["sop_uid"] == finding.keypoint.sop_uid
            np.testing.assert_allclose(got["point"], (finding.keypoint.x + 0.5, finding.keypoint.y + 0.5), atol=1e-4)


def test_result_uids_are_stable_and_distinct_per_study_revision_and_model(made):
    sent, result, sr_path, _ = made
    a = ResultUids(sent["study_uid"], 1, "m1")
    assert a.sr_instance == ResultUids(sent["study_uid"], 1, "m1").sr_instance  # same inputs, same UIDs
    uids = {a.sr_series, a.sr_instance, a.sc_series, a.sc_instance("1.2.3"), a.sc_instance("1.2.4"),
            ResultUids(sent["study_uid"], 2, "m1").sr_instance, ResultUids(sent["study_uid"], 1, "m2").sr_instance}
    assert len(uids) == 7 and all(valid_uid(u) for u in uids)
    assert valid_uid("1.2.840.10008.1.1") and not valid_uid("1..2") and not valid_uid("../etc") and not valid_uid("1" * 65)


@pytest.mark.usefixtures("dcmtk")
def test_sr_passes_dsrdump_and_a_broken_sr_does_not(made, tmp_path):
    _, _, sr_path, _ = made
    assert dsrdump_problems(sr_path) == []
    # The check is not vacuous: an IMAGE under a SCOORD by CONTAINS (only SELECTED FROM is
    # allowed) and a missing Completion Flag are both reported.
    ds = pydicom.dcmread(sr_path)
    container = next(item for item in ds.ContentSequence if item.ValueType == "CONTAINER")
    scoord = next(item for item in container.ContentSequence if item.ValueType == "SCOORD")
    scoord.ContentSequence[0].RelationshipType = "CONTAINS"
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    assert any("SCOORD" in line for line in dsrdump_problems(bad))
    ds = pydicom.dcmread(sr_path)
    del ds.CompletionFlag
    ds.save_as(bad)
    assert any("CompletionFlag" in line for line in dsrdump_problems(bad))


@pytest.mark.skipif(dciodvfy_path() is None, reason="dicom3tools' dciodvfy is not installed")
def test_sr_and_secondary_captures_pass_dciodvfy(made, tmp_path):
    _, _, sr_path, sc_paths = made
    assert dciodvfy_problems(sr_path) == []
    for path in sc_paths:
        assert dciodvfy_problems(path) == []
    ds = pydicom.dcmread(sr_path)
    del ds.ContentDate
    ds.save_as(tmp_path / "bad.dcm")
    assert any("ContentDate" in line for line in dciodvfy_problems(tmp_path / "bad.dcm"))
