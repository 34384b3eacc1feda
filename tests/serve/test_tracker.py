"""Study completion, aborted associations, spool limits and crash recovery, without a network: the
tracker, spool and state store as the listener drives them (a restart is a fresh tracker on the
same spool, the old one dropped without any clean-up, as a SIGKILL leaves it)."""
from __future__ import annotations

import json
import time

import pytest

from lumbar_edge.serve.spool import Spool
from lumbar_edge.serve.state import BatchState, StateStore, read_journal
from lumbar_edge.serve.tracker import STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS, StudyTracker

QUIET = 0.15
DATA = b"D" * 100


class Harness:
    def __init__(self, root, max_bytes=10**9, hold_timeout=3600.0):
        self.root = root
        self.spool = Spool(root, max_bytes)
        self.spool.open()
        self.store = StateStore(root)
        self.completed = []
        self.tracker = StudyTracker(self.spool, self.store, quiet_time=QUIET, hold_timeout=hold_timeout,
                                    on_complete=self.completed.append)

    def restart(self, **kwargs) -> "tuple[Harness, list]":
        """A new process on the same spool: recover and return (harness, batches to process)."""
        fresh = Harness(self.root, **kwargs)
        pending = fresh.tracker.recover(list(fresh.store.load_all()), fresh.spool.leftover_associations())
        return fresh, pending

    def send(self, session, study, sops, release=True, aet="SCANNER"):
        self.tracker.open_session(session, aet)
        statuses = [self.tracker.store(session, study, sop, DATA) for sop in sops]
        if release:
            self.tracker.release(session)
        self.tracker.close(session)
        return statuses

    def settle(self):
        time.sleep(QUIET * 1.5)
        return self.tracker.poll()

    def events(self, study):
        return [e["event"] for e in read_journal(self.root) if e["study_uid"] == study]


@pytest.fixture
def h(tmp_path):
    return Harness(tmp_path / "spool")


def test_a_study_is_complete_after_its_associations_are_released_and_the_quiet_time(h):
    h.tracker.open_session("a1", "SCANNER")
    for sop in ("1.1", "1.2", "1.3"):
        assert h.tracker.store("a1", "9.1", sop, DATA) == STATUS_SUCCESS
    time.sleep(QUIET * 2)
    assert h.tracker.poll() == []  # the association is still open: the sender may not be done
    h.tracker.release("a1")
    h.tracker.close("a1")
    assert h.tracker.poll() == []  # released, but the quiet time starts now
    done = h.settle()
    assert [s.study_uid for s in done] == ["9.1"] and done[0].sop_uids == ["1.1", "1.2", "1.3"]
    assert h.completed == done
    state = json.loads((h.store.batch_dir("9.1", 1) / "state.json").read_text())
    assert state["stage"] == "complete" and state["sop_uids"] == ["1.1", "1.2", "1.3"]
    assert h.events("9.1") == ["receiving", "complete"]
    assert not list(h.spool.associations.iterdir())  # association markers are gone


def test_an_aborted_association_holds_its_study_until_the_sender_sends_it_again(h):
    h.send("a1", "9.1", ["1.1", "1.2"], release=False)  # the connection drops mid-study
    assert h.settle() == [] and h.settle() == []
    st = next(h.store.load_all())
    assert st.held and st.stage == "receiving"
    # An association that was already open before the abort does not release the hold.
    h.tracker.open_session("early", "SCANNER")
    h.tracker.session("early").started = st.held_since - 1
    h.tracker.store("early", "9.1", "1.2", DATA)
    h.tracker.release("early")
    h.tracker.close("early")
    assert h.settle() == []
    # The sender retries the whole study: duplicates overwrite, the release ends the hold.
    assert h.send("a2", "9.1", ["1.1", "1.2", "1.3", "1.4"]) == [STATUS_SUCCESS] * 4
    done = h.settle()
    assert [s.sop_uids for s in done] == [["1.1", "1.2", "1.3", "1.4"]]
    assert h.events("9.1") == ["receiving", "held", "resumed", "complete"]


def test_a_study_held_past_the_hold_timeout_is_set_aside_unprocessed(tmp_path):
    h = Harness(tmp_path / "spool", hold_timeout=0.3)
    h.send("a1", "9.1", ["1.1"], release=False)
    time.sleep(0.4)
    assert h.tracker.poll() == [] and h.completed == []
    assert h.events("9.1") == ["receiving", "held", "abandoned"]
    kept = list((h.spool.abandoned).iterdir())
    assert len(kept) == 1 and (kept[0] / "instances" / "1.1.dcm").read_bytes() == DATA
    assert h.spool.used_bytes == 0
    # If the sender comes back after all, the study starts afresh.
    h.send("a2", "9.1", ["1.1", "1.2"])
    assert [s.sop_uids for s in h.settle()] == [["1.1", "1.2"]]


def test_instances_sent_again_after_completion_are_acknowledged_and_new_ones_start_a_revision(h):
    h.send("a1", "9.1", ["1.1", "1.2"])
    assert len(h.settle()) == 1
    assert h.send("a2", "9.1", ["1.1", "1.2"]) == [STATUS_SUCCESS] * 2  # a resend: nothing new
    assert h.settle() == []
    assert not h.spool.instances_dir("9.1", 2).exists()
    h.send("a3", "9.1", ["1.2", "1.3"])  # one new instance
    done = h.settle()
    assert [(s.revision, s.sop_uids) for s in done] == [(2, ["1.3"])]


def test_the_spool_limit_refuses_with_out_of_resources_and_holds_the_incomplete_study(tmp_path):
    h = Harness(tmp_path / "spool", max_bytes=250)
    assert h.send("a1", "9.1", ["1.1", "1.2", "1.3"]) == [STATUS_SUCCESS, STATUS_SUCCESS, STATUS_OUT_OF_RESOURCES]
    assert h.spool.used_bytes == 200 and not h.spool.instances_dir("9.1", 1).joinpath("1.3.dcm").exists()
    assert h.settle() == []  # released, but the sender knows an instance failed: not complete
    assert "held" in h.events("9.1")


def test_a_restart_resumes_every_batch_where_it_was(h):
    for study in ("9.4", "9.5", "9.6"):
        h.send(f"a{study}", study, [f"{study}.1"])
    assert len(h.settle()) == 3  # complete; then one goes on to processing and one to done
    states = {s.study_uid: s for s in h.store.load_all()}
    for uid, stage in (("9.5", "processing"), ("9.6", "done")):
        states[uid].stage = stage
        h.store.save(states[uid])
    h.send("a1", "9.1", ["1.1"])                   # released: waiting for its quiet time
    h.send("a2", "9.2", ["2.1"], release=False)    # aborted: held
    h.tracker.open_session("a3", "SCANNER")        # still open when the process dies
    h.tracker.store("a3", "9.3", "3.1", DATA)
    h2, pending = h.restart()  # SIGKILL: nothing of h was shut down
    assert sorted(s.study_uid for s in pending) == ["9.4", "9.5"]  # complete, and interrupted processing
    held = {s.study_uid: s.held for s in h2.store.load_all() if s.stage == "receiving"}
    assert held == {"9.1": False, "9.2": True, "9.3": True}  # 9.3's association was open at the kill
    assert not list(h2.spool.associations.iterdir())
    assert [s.study_uid for s in h2.settle()] == ["9.1"]  # its quiet time restarted at start-up
    # 9.6 is done: sending it again is a duplicate, not a new study.
    assert h2.send("b1", "9.6", ["9.6.1"]) == [STATUS_SUCCESS]
    assert h2.settle() == []
    # 9.3's sender retries after the restart: released, complete.
    h2.send("b2", "9.3", ["3.1", "3.2"])
    assert [(s.study_uid, s.sop_uids) for s in h2.settle()] == [("9.3", ["3.1", "3.2"])]


def test_worker_marks_a_bad_study_and_a_repeatedly_interrupted_one_failed(tmp_path, tiny_pipeline):
    from lumbar_edge.serve.worker import MAX_ATTEMPTS, StudyWorker

    h = Harness(tmp_path / "spool")
    done = []
    worker = StudyWorker(tiny_pipeline, h.spool, h.store, tmp_path / "out", on_done=done.append)
    h.send("a1", "9.1", ["1.1"])  # 100 bytes that are not DICOM: no study in it
    (st,) = h.settle()
    worker.process(st)
    assert st.stage == "failed" and "no DICOM study" in st.error and done == []
    assert h.spool.instances_dir("9.1", 1).joinpath("1.1.dcm").exists()  # kept for inspection
    crashed = BatchState(study_uid="9.2", revision=1, stage="processing", attempts=MAX_ATTEMPTS)
    worker.process(crashed)
    assert crashed.stage == "failed" and "interrupted" in crashed.error


def test_journal_lines_cut_off_by_a_kill_are_added_once_at_start(tmp_path):
    # A state is saved before its journal line is written: a kill between the two leaves a study
    # whose stage says it was completed (or done) with no line for it.
    store = StateStore(tmp_path)
    done = BatchState("9.1", 1, stage="done", sop_uids=["1.1"], results=["a/sr.dcm", "a/sc1.dcm", "a/sc2.dcm"])
    complete = BatchState("9.2", 1, stage="complete", sop_uids=["2.1"])
    receiving = BatchState("9.3", 1)
    for st in (done, complete, receiving):
        store.save(st)
    store.journal("complete", done)  # its "done" line was cut off, not this one
    assert store.reconcile_journal([done, complete, receiving]) == 2
    entries = read_journal(tmp_path)
    got = [(e["event"], e["study_uid"], e.get("recovered", False)) for e in entries]
    assert got == [("complete", "9.1", False), ("done", "9.1", True), ("complete", "9.2", True)]
    # The recovered "done" line counts the results as the worker's own line does.
    assert entries[1]["results"] == 3 and "results" not in entries[2]
    # Once added, never again.
    assert store.reconcile_journal([done, complete, receiving]) == 0
    assert len(read_journal(tmp_path)) == 3
