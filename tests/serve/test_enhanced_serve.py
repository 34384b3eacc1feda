"""The listener receives Enhanced MR multi-frame objects and compressed transfer syntaxes from
dcmtk's storescu, stores them as received, and answers with an SR and Secondary Captures that
reference the right frames; presentation contexts it refuses are logged with the reason."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from dicom_checks import check_results, dciodvfy_path, dciodvfy_problems, dsrdump_problems
from serve_helpers import Pacs, tool, wait_until

from lumbar_edge.serve.sr import read_sr_findings
from lumbar_edge.synth.enhanced import ENHANCED_MR_STORAGE, convert_study
from lumbar_edge.synth.transcode import TRANSFER_SYNTAXES, transcode_tree

pytestmark = pytest.mark.usefixtures("dcmtk")


def storescu_with(port: int, folder: Path, *options: str) -> subprocess.CompletedProcess:
    """dcmtk's storescu sending every file under ``folder``, proposing only the presentation
    contexts its files need (-R) with the transfer syntax ``options`` (e.g. -xv: JPEG 2000)."""
    return subprocess.run([tool("storescu"), "-aet", "SCANNER", "-aec", "LUMBAR_EDGE", "-R", *options, "+sd", "+r",
                           "-to", "20", "127.0.0.1", str(port), str(folder)], capture_output=True, text=True,
                          timeout=120)


def _files(folder: Path):
    return {p: pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(Path(folder).rglob("*.dcm"))}


def _findings_by_slice(sr, files):
    """{(condition, level): (SeriesNumber, slice number, point)} of the SR's model findings, where
    the slice number is the classic InstanceNumber or the Enhanced object's frame number."""
    by_sop = {ds.SOPInstanceUID: ds for ds in files.values()}
    out = {}
    for f in read_sr_findings(sr):
        if f["basis"] != "model":
            continue
        ds = by_sop[f["sop_uid"]]
        if ds.SOPClassUID == ENHANCED_MR_STORAGE:
            assert f["frame_number"] is not None and 1 <= f["frame_number"] <= ds.NumberOfFrames
            number = f["frame_number"]
        else:
            assert f["frame_number"] is None
            number = int(ds.InstanceNumber)
        series_number = int(ds.SeriesNumber)
        out[(f["condition"], f["level"])] = (series_number, number, f["point"])
    return out


def test_enhanced_mr_and_jpeg2000_studies_are_answered_with_sr_and_secondary_captures(
        listener, make_studies, tmp_path):
    # make_studies clones its two source studies in turn: s000, s002 and s004 are one source
    # study, s001 and s003 the other. ``jpeg_sv1`` is compressed by dcmtk's dcmcjpeg (JPEG
    # Lossless, first-order prediction, which pydicom cannot encode) and sent with -xs.
    plain_a, plain_b, enhanced, j2k, jpeg_sv1 = make_studies(5)
    for path in sorted(jpeg_sv1["folder"].rglob("*.dcm")):
        subprocess.run([tool("dcmcjpeg"), str(path), str(path)], check=True, capture_output=True, timeout=60)
    convert_study(enhanced["folder"])
    enhanced["sop_uids"] = [ds.SOPInstanceUID for ds in _files(enhanced["folder"]).values()]
    transcode_tree(j2k["folder"], "jpeg2000")
    studies = (enhanced, j2k, jpeg_sv1, plain_a, plain_b)
    pacs = Pacs(tmp_path / "pacs").start()
    try:
        from lumbar_edge.serve import parse_forward
        from lumbar_edge.serve.state import read_journal

        with listener(forward=parse_forward(pacs.target), keep_spool=True) as server:
            spool = server.config.spool
            for sent, options in ((enhanced, ()), (j2k, ("-xv",)), (jpeg_sv1, ("-xs",)), (plain_a, ()),
                                  (plain_b, ())):
                proc = storescu_with(server.port, sent["folder"], *options)
                assert proc.returncode == 0, proc.stdout + proc.stderr

            def forwarded(uid):
                return any(e["event"] == "forwarded" and e["study_uid"] == uid for e in read_journal(spool))
            for sent in studies:
                wait_until(lambda: forwarded(sent["study_uid"]), 120, 0.2, "the results at the PACS")
    finally:
        pacs.stop()
    # Stored as received: the multi-frame objects whole, the JPEG 2000 files still JPEG 2000.
    kept = {sent["study_uid"]: _files(spool / "studies" / sent["study_uid"]) for sent in (enhanced, j2k, jpeg_sv1)}
    assert sorted((ds.SOPClassUID, int(ds.NumberOfFrames)) for ds in kept[enhanced["study_uid"]].values()) == sorted(
        (ds.SOPClassUID, int(ds.NumberOfFrames)) for ds in _files(enhanced["folder"]).values())
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in kept[j2k["study_uid"]].values()} == {
        TRANSFER_SYNTAXES["jpeg2000"]}
    assert len(kept[j2k["study_uid"]]) == len(j2k["sop_uids"])
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in kept[jpeg_sv1["study_uid"]].values()} == {
        "1.2.840.10008.1.2.4.70"}
    received = pacs.received()
    results = {}
    for sent in studies:
        mine = [ds for ds in received if ds.StudyInstanceUID == sent["study_uid"]]
        srs = [ds for ds in mine if ds.Modality == "SR"]
        scs = [ds for ds in mine if ds.Modality == "OT"]
        check_results(srs, scs, sent)
        results[sent["study_uid"]] = (srs[0], scs, _files(sent["folder"]))
    # The Enhanced study (3 multi-frame objects): the SR's points and slices are those of the
    # plain study it was made from, its frames numbered as the classic instances.
    sr_enh, scs_enh, files_enh = results[enhanced["study_uid"]]
    assert len(files_enh) == 3
    for made, plain in ((enhanced, plain_a), (j2k, plain_b), (jpeg_sv1, plain_a)):
        sr, _, files = results[made["study_uid"]]
        sr_plain, _, files_plain = results[plain["study_uid"]]
        got, want = _findings_by_slice(sr, files), _findings_by_slice(sr_plain, files_plain)
        assert got.keys() == want.keys() and len(got) >= 10
        for key in want:
            assert got[key][:2] == want[key][:2]
            assert got[key][2] == pytest.approx(want[key][2], abs=1e-3)
    # Each Secondary Capture names the frame it shows, and the SR's frames are exactly those.
    sc_frames = {(sc.SourceImageSequence[0].ReferencedSOPInstanceUID,
                  int(sc.SourceImageSequence[0].ReferencedFrameNumber)) for sc in scs_enh}
    sr_frames = {(f["sop_uid"], f["frame_number"]) for f in read_sr_findings(sr_enh) if f["basis"] == "model"}
    assert sc_frames == sr_frames and len(scs_enh) == len(sc_frames)
    assert len({sc.SOPInstanceUID for sc in scs_enh}) == len(scs_enh)  # one SC per frame, distinct UIDs
    assert dsrdump_problems(sr_enh.filename) == []
    if dciodvfy_path():
        assert dciodvfy_problems(sr_enh.filename) == []
        assert dciodvfy_problems(scs_enh[0].filename) == []


def test_refused_presentation_contexts_are_logged_with_the_reason(listener, caplog):
    from pydicom.uid import CTImageStorage, EnhancedMRImageStorage, JPEG2000Lossless
    from pynetdicom import AE

    ae = AE(ae_title="PYCLIENT")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(EnhancedMRImageStorage, [JPEG2000Lossless])
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", ["1.2.840.10008.1.2.4.92"])  # JPEG 2000 Part 2
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4.4")  # Legacy Converted Enhanced MR
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    with listener() as server:
        assoc = ae.associate("127.0.0.1", server.port, ae_title="LUMBAR_EDGE")
        assert assoc.is_established
        accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
        assert accepted == {(EnhancedMRImageStorage, JPEG2000Lossless),
                            ("1.2.840.10008.5.1.4.1.1.4.4", "1.2.840.10008.1.2.1")}
        assert {c.abstract_syntax: c.result for c in assoc.rejected_contexts} == {
            CTImageStorage: 0x03, "1.2.840.10008.5.1.4.1.1.4": 0x04}
        assoc.release()
        # Nothing acceptable at all: the association is aborted, and the log says why.
        only_ct = AE(ae_title="PYCLIENT")
        only_ct.add_requested_context(CTImageStorage)
        assert not only_ct.associate("127.0.0.1", server.port, ae_title="LUMBAR_EDGE").is_established
        wait_until(lambda: "no presentation context accepted" in caplog.text, 10, 0.1, "the log line")
    text = caplog.text
    assert ("refused presentation context(s): MR Image Storage (1.2.840.10008.5.1.4.1.1.4): none of its transfer "
            "syntaxes (JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)") in text
    assert "1 presentation context(s) refused, SOP class not supported here" in text
    assert "CT Image Storage (1.2.840.10008.5.1.4.1.1.2)" in text
    assert "no presentation context accepted, so the association is aborted; refused: CT Image Storage" in text
