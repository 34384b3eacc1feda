"""Soak on loopback: 20 studies from 4 concurrent dcmtk storescu clients into ``lumbar-edge serve``
(a subprocess), SIGKILLed once in the middle and restarted, forwarding to dcmtk's storescp.

Ends with exactly 20 result sets at the PACS: every study once, none lost, none duplicated (one
SR per study, one Secondary Capture series, every study processed to "done" exactly once in the
journal, each with all its instances). Clients behave as scanners do: a send that fails (the
server died under it, or is not back yet) is repeated, whole, until it succeeds. Prints the
throughput in studies per minute, from the first send to the last result delivered.
"""
from __future__ import annotations

import collections
import json
import threading
import time

import pytest
from dicom_checks import check_results, dsrdump_problems
from serve_helpers import PATIENT_ID, PATIENT_NAME, Pacs, ServeProcess, free_port, storescu, wait_until

from lumbar_edge.serve.state import read_journal

STUDIES, CLIENTS, KILL_AFTER = 20, 4, 6


@pytest.mark.slow
@pytest.mark.usefixtures("dcmtk")
def test_soak_20_studies_from_4_clients_with_a_server_kill(make_studies, tiny_bundle, tmp_path, capsys):
    studies = make_studies(STUDIES)
    pacs = Pacs(tmp_path / "pacs").start()
    port, spool, out = free_port(), tmp_path / "spool", tmp_path / "out"
    args = ["--model", str(tiny_bundle), "--spool", str(spool), "--out", str(out), "--port", str(port),
            "--host", "127.0.0.1", "--quiet-time", "1", "--forward", pacs.target, "--backend", "onnxruntime",
            "--no-overlays"]
    first = ServeProcess(args, tmp_path / "serve1.log").start(port)
    second = None
    lock = threading.Lock()
    sent = []
    failed_sends = collections.Counter()
    kill_now = threading.Event()
    deadline = time.monotonic() + 240

    def client(k: int, batch) -> None:
        time.sleep(0.3 * k)  # scanners do not start in step
        for study in batch:
            while time.monotonic() < deadline:
                if storescu(port, study["folder"], calling=f"SCANNER{k}").returncode == 0:
                    break
                with lock:
                    failed_sends[study["study_uid"]] += 1
                time.sleep(0.5)
            with lock:
                sent.append(study["study_uid"])
                if len(sent) == KILL_AFTER:
                    kill_now.set()

    threads = [threading.Thread(target=client, args=(k, studies[k::CLIENTS])) for k in range(CLIENTS)]
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        assert kill_now.wait(180), "the clients did not get going"
        # SIGKILL in the middle of the run, while associations are sending instances.
        markers = spool / "associations"
        wait_until(lambda: len(list(markers.glob("*.json"))) >= 2, 30, 0.005, "two associations in flight")
        first.kill()
        killed_at = time.monotonic() - t0
        in_flight = {uid for m in markers.glob("*.json") for uid in json.loads(m.read_text())["studies"]}
        second = ServeProcess(args, tmp_path / "serve2.log").start(port)
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        uids = {s["study_uid"] for s in studies}

        def forwarded():
            return {e["study_uid"] for e in read_journal(spool) if e["event"] == "forwarded"}
        wait_until(lambda: forwarded() >= uids, max(1.0, deadline - time.monotonic()), 0.25, "all 20 result sets")
        elapsed = time.monotonic() - t0
    finally:
        for proc in (second, first):
            if proc is not None:
                proc.stop()
        pacs.stop()
    assert sorted(sent) == sorted(uids)

    # The PACS: exactly one result set per study.
    received = pacs.received()
    by_study = collections.defaultdict(list)
    for ds in received:
        by_study[ds.StudyInstanceUID].append(ds)
    assert set(by_study) == uids
    journal = read_journal(spool)
    states = {e["study_uid"]: e for e in journal if e["event"] == "done"}
    for study in studies:
        got = by_study[study["study_uid"]]
        unique = {ds.SOPInstanceUID: ds for ds in got}
        srs = [ds for ds in unique.values() if ds.Modality == "SR"]
        scs = [ds for ds in unique.values() if ds.Modality == "OT"]
        check_results(srs, scs, study)  # one SR, one SC series, 25 findings on sent instances
        assert len(unique) == states[study["study_uid"]]["results"]
    assert all(dsrdump_problems(next(d for d in v if d.Modality == "SR").filename) == [] for v in by_study.values())
    # The journal: each study complete with all its instances and done exactly once, across the kill.
    done = collections.Counter(e["study_uid"] for e in journal if e["event"] == "done")
    assert done == collections.Counter({u: 1 for u in uids})
    complete = [e for e in journal if e["event"] == "complete"]
    assert sorted(e["study_uid"] for e in complete) == sorted(uids)
    assert all(e["instances"] == len(studies[0]["sop_uids"]) for e in complete)
    logs = first.log + second.log
    for secret in (PATIENT_NAME, PATIENT_ID):
        assert secret not in logs
    assert "resuming from the spool" in second.log
    # The studies whose associations the kill cut were held at restart, then sent again whole.
    held_at_restart = {e["study_uid"] for e in journal if e["event"] == "held"
                       and "server stopped" in e["reason"]}
    assert in_flight and held_at_restart == in_flight
    assert all(failed_sends[uid] >= 1 for uid in in_flight)
    receptions = len(received)
    redelivered = receptions - sum(len({d.SOPInstanceUID for d in v}) for v in by_study.values())
    held = sum(1 for e in journal if e["event"] == "held")
    reprocessed = sum(1 for e in journal if e["event"] == "processing" and e["attempt"] > 1)
    rate = STUDIES / (elapsed / 60)
    with capsys.disabled():  # the figure is shown whatever pytest's capture mode
        print(f"\nsoak: {STUDIES} studies from {CLIENTS} storescu clients, server SIGKILLed at {killed_at:.1f} s and "
              f"restarted; all {STUDIES} result sets delivered in {elapsed:.1f} s = {rate:.1f} studies/min "
              f"({sum(failed_sends.values())} sends repeated by clients, {held} studies held, {reprocessed} "
              f"processing restarts, {receptions} objects received by the PACS, {redelivered} of them re-deliveries)")
