"""The listener against real DICOM peers on loopback: dcmtk's storescu/echoscu send, dcmtk's
storescp is the PACS, and pynetdicom is the client where dcmtk cannot misbehave on purpose
(a non-MR data set on the MR context, an oversized PDU, holding an association open)."""
from __future__ import annotations

import json
import subprocess
import time

import pydicom
import pytest
from dicom_checks import check_results, dciodvfy_path, dciodvfy_problems, dsrdump_problems
from serve_helpers import PATIENT_ID, PATIENT_NAME, Pacs, ServeProcess, echoscu, free_port, storescu, tool, wait_until

from lumbar_edge.serve.state import read_journal

pytestmark = pytest.mark.usefixtures("dcmtk")

SENTINELS = (PATIENT_NAME, PATIENT_NAME.split("^")[0], PATIENT_ID)


def assert_no_patient_data(text: str) -> None:
    for s in SENTINELS:
        assert s not in text, f"the log holds patient data ({s!r})"


def events(spool, study_uid):
    return [e["event"] for e in read_journal(spool) if e["study_uid"] == study_uid]


def pynetdicom_client(aet="PYCLIENT", contexts=None):
    from pydicom.uid import MRImageStorage
    from pynetdicom import AE

    ae = AE(ae_title=aet)
    for c in contexts or [MRImageStorage]:
        ae.add_requested_context(c)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    return ae


def test_a_study_sent_with_storescu_comes_back_to_storescp_as_sr_and_secondary_captures(
        make_studies, tiny_bundle, tmp_path):
    """The issue's first "done when", through the command line: storescu -> serve -> storescp."""
    sent = make_studies(1)[0]
    pacs = Pacs(tmp_path / "pacs").start()
    port, spool, out = free_port(), tmp_path / "spool", tmp_path / "out"
    server = ServeProcess(["--model", str(tiny_bundle), "--spool", str(spool), "--out", str(out), "--port", str(port),
                           "--host", "127.0.0.1", "--quiet-time", "1", "--forward", pacs.target,
                           "--backend", "onnxruntime"], tmp_path / "serve.log")
    try:
        server.start(port)
        assert echoscu(port).returncode == 0
        proc = storescu(port, sent["folder"])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        wait_until(lambda: any(ds.Modality == "SR" for ds in pacs.received()), 90, 0.3, "the SR at the PACS")
        wait_until(lambda: "forwarded" in events(spool, sent["study_uid"]), 30, 0.2, "the forward to finish")
    finally:
        code = server.stop()
        pacs.stop()
    assert code == 0, server.log
    received = pacs.received()
    srs = [ds for ds in received if ds.Modality == "SR"]
    scs = [ds for ds in received if ds.Modality == "OT"]
    assert len(srs) + len(scs) == len(received)
    check_results(srs, scs, sent)
    assert dsrdump_problems(srs[0].filename) == []
    if dciodvfy_path():
        assert dciodvfy_problems(srs[0].filename) == []
        assert dciodvfy_problems(scs[0].filename) == []
    # The outputs of `infer` are written too, and the DICOM results are kept beside them.
    folder = out / sent["study_uid"]
    report = json.loads((folder / f"{sent['study_uid']}.json").read_text())
    assert len(report["findings"]) == 25
    assert len((folder / "submission.csv").read_text().splitlines()) == 26
    assert len(list((folder / "overlays").glob("*.png"))) == len(scs)
    assert len(list((folder / "dicom").glob("*.dcm"))) == len(received)
    assert events(spool, sent["study_uid"]) == ["receiving", "complete", "processing", "done", "forwarded"]
    assert not (spool / "studies" / sent["study_uid"] / "1" / "instances").exists()  # spool emptied
    assert_no_patient_data(server.log)
    assert "listening on" in server.log and "released: 24 instances stored" in server.log


def test_only_allowed_calling_ae_titles_are_accepted(listener, caplog):
    with listener(allow=("SCANNER", "PACS")) as server:
        assert echoscu(server.port, calling="SCANNER").returncode == 0
        proc = echoscu(server.port, calling="INTRUDER")
        assert proc.returncode != 0
        assert "Calling AE Title Not Recognized" in proc.stdout + proc.stderr
        proc = echoscu(server.port, called="SOMEONE_ELSE", calling="SCANNER")
        assert proc.returncode != 0 and "Called AE Title Not Recognized" in proc.stdout + proc.stderr
    assert "association from INTRUDER (127.0.0.1) rejected: calling AE title not allowed" in caplog.text
    assert "association from SCANNER (127.0.0.1) rejected: called AE title is not LUMBAR_EDGE" in caplog.text


def test_non_mr_objects_are_refused(listener, make_studies, tmp_path, caplog):
    from pydicom.uid import CTImageStorage, MRImageStorage

    sent = make_studies(1)[0]
    ct_folder = tmp_path / "ct"
    ct_folder.mkdir()
    ct = pydicom.dcmread(next(sent["folder"].rglob("*.dcm")))
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ct.Modality = "CT"
    ct.save_as(ct_folder / "ct.dcm")
    with listener() as server:
        # dcmtk: the CT presentation context is rejected at negotiation, nothing is sent.
        proc = storescu(server.port, ct_folder)
        assert proc.returncode != 0
        assert "no presentation context" in (proc.stdout + proc.stderr).lower()
        # pynetdicom: the same rejection, seen as the context's result (3: abstract syntax not supported).
        assoc = pynetdicom_client(contexts=[CTImageStorage, MRImageStorage]).associate(
            "127.0.0.1", server.port, ae_title="LUMBAR_EDGE")
        assert assoc.is_established
        results = {c.abstract_syntax: c.result for c in assoc.rejected_contexts}
        assert results == {CTImageStorage: 0x03}
        # A non-MR data set sent on the MR context: status A900 (does not match the SOP class).
        lying = pydicom.dcmread(next(sent["folder"].rglob("*.dcm")))
        lying.Modality = "CT"
        assert assoc.send_c_store(lying).Status == 0xA900
        # ... and one without UIDs the listener can use: C000 (cannot understand).
        bad = pydicom.dcmread(next(sent["folder"].rglob("*.dcm")))
        with pytest.warns(UserWarning, match="Invalid value for VR UI"):
            bad.StudyInstanceUID = "not/a/uid"
            assert assoc.send_c_store(bad).Status == 0xC000
        assoc.release()
        time.sleep(1.0)
    assert not (tmp_path / "spool" / "studies" / sent["study_uid"]).exists()
    assert "refused a non-MR object" in caplog.text


def test_the_association_limit_refuses_with_local_limit_exceeded(listener, caplog):
    with listener(max_associations=1) as server:
        holder = pynetdicom_client().associate("127.0.0.1", server.port, ae_title="LUMBAR_EDGE")
        assert holder.is_established
        proc = echoscu(server.port)
        assert proc.returncode != 0
        assert "Local Limit Exceeded" in proc.stdout + proc.stderr
        holder.release()
        wait_until(lambda: echoscu(server.port).returncode == 0, 10, 0.2, "a free association slot")
    assert "more than 1 associations at once" in caplog.text


def test_the_pdu_limit_is_announced_and_a_larger_pdu_aborts_the_association(listener, make_studies, caplog):
    sent = make_studies(1)[0]
    files = sorted(sent["folder"].rglob("*.dcm"))
    with listener(max_pdu=8192) as server:
        assoc = pynetdicom_client().associate("127.0.0.1", server.port, ae_title="LUMBAR_EDGE")
        assert assoc.is_established and assoc.acceptor.maximum_length == 8192
        assert assoc.send_c_store(pydicom.dcmread(files[0])).Status == 0x0000  # split into 8 KiB PDUs
        # A peer ignoring the limit: its DIMSE layer sends 1 MiB PDUs whatever was negotiated.
        dimse = assoc.dimse
        dimse.__class__ = type("LooseDIMSE", (type(dimse),), {"maximum_pdu_size": property(lambda self: 1 << 20)})
        status = assoc.send_c_store(pydicom.dcmread(files[1]))
        assert "Status" not in status  # no answer: the association was aborted
        wait_until(lambda: assoc.is_aborted, 10, 0.1, "the abort")
        time.sleep(1.0)
        # The study it was sending is held, not processed with the instance that did arrive.
        assert events(server.config.spool, sent["study_uid"]) == ["receiving", "held"]
    assert "exceeds the announced maximum of 8192 bytes" in caplog.text


def test_a_client_that_drops_mid_association_leaves_no_half_processed_study(listener, make_studies, caplog):
    sent = make_studies(1)[0]
    with listener(quiet_time=0.5) as server:
        spool = server.config.spool
        instances = spool / "studies" / sent["study_uid"] / "1" / "instances"
        # dcmtk's storescu killed while sending: the connection just drops.
        proc = subprocess.Popen([tool("storescu"), "-aet", "SCANNER", "-aec", "LUMBAR_EDGE", "+sd", "+r",
                                 "127.0.0.1", str(server.port), str(sent["folder"])],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: instances.exists() and len(list(instances.glob("*.dcm"))) >= 3, 30, 0.02,
                   "the first instances")
        proc.kill()
        proc.wait(10)
        wait_until(lambda: "held" in events(spool, sent["study_uid"]), 10, 0.1, "the hold")
        got = len(list(instances.glob("*.dcm")))
        time.sleep(2.0)  # four quiet times: a dropped sender's study is still not processed
        assert events(spool, sent["study_uid"]) == ["receiving", "held"]
        assert 3 <= got < len(sent["sop_uids"])
        assert not (server.config.out / sent["study_uid"]).exists()
        # A pynetdicom client that aborts (A-ABORT) holds its study just the same.
        other = make_studies(1)[0]
        assoc = pynetdicom_client().associate("127.0.0.1", server.port, ae_title="LUMBAR_EDGE")
        for path in sorted(other["folder"].rglob("*.dcm"))[:4]:
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0
        assoc.abort()
        wait_until(lambda: "held" in events(spool, other["study_uid"]), 10, 0.1, "the hold after A-ABORT")
        # The scanner sends the whole study again: processed once, with every instance.
        assert storescu(server.port, sent["folder"]).returncode == 0
        wait_until(lambda: "done" in events(spool, sent["study_uid"]), 60, 0.2, "the resent study")
        assert events(spool, sent["study_uid"]) == ["receiving", "held", "resumed", "complete", "processing", "done"]
        complete = next(e for e in read_journal(spool) if e["event"] == "complete")
        assert complete["instances"] == len(sent["sop_uids"])
        assert events(spool, other["study_uid"]) == ["receiving", "held"]
    assert_no_patient_data(caplog.text)


def test_results_are_kept_and_retried_with_backoff_until_the_pacs_is_up(listener, make_studies, tmp_path, caplog):
    sent = make_studies(1)[0]
    pacs = Pacs(tmp_path / "pacs")  # not started yet: nothing listens on its port
    with listener(forward=_target(pacs), retry_base=0.2, retry_max=0.8) as server:
        spool = server.config.spool
        assert storescu(server.port, sent["folder"]).returncode == 0
        wait_until(lambda: events(spool, sent["study_uid"]).count("forward-failed") >= 4, 60, 0.1,
                   "four failed forwards")
        delays = [e["retry_in_s"] for e in read_journal(spool) if e["event"] == "forward-failed"][:4]
        assert delays == [0.2, 0.4, 0.8, 0.8]  # doubling, capped at retry_max
        pacs.start()
        try:
            wait_until(lambda: "forwarded" in events(spool, sent["study_uid"]), 30, 0.1, "the delivery")
            received = pacs.received()
        finally:
            pacs.stop()
    check_results([d for d in received if d.Modality == "SR"], [d for d in received if d.Modality == "OT"], sent)
    assert "sending results to PACS@127.0.0.1" in caplog.text
    assert_no_patient_data(caplog.text)


def _target(pacs):
    from lumbar_edge.serve import parse_forward

    return parse_forward(pacs.target)


def test_the_spool_limit_refuses_instances_with_out_of_resources(listener, make_studies, caplog):
    sent = make_studies(1)[0]
    series = sorted(p for p in sent["folder"].iterdir() if p.is_dir())[0]
    files = sorted(series.glob("*.dcm"))[:4]  # one series: instances of one size
    size = max(p.stat().st_size for p in files)
    with listener(max_spool_bytes=int(size * 2.5)) as server:
        assoc = pynetdicom_client().associate("127.0.0.1", server.port, ae_title="LUMBAR_EDGE")
        statuses = [assoc.send_c_store(pydicom.dcmread(p)).Status for p in files]
        assoc.release()
        assert statuses == [0, 0, 0xA700, 0xA700]
        time.sleep(1.5)
        assert events(server.config.spool, sent["study_uid"]) == ["receiving", "held"]
    assert "status A700 (out of resources): the spool holds" in caplog.text
