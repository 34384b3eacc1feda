"""When is a received study complete? The bookkeeping between associations and studies.

DICOM has no "end of study" message, so a study counts as complete when

* every association that sent instances of it has ended with a normal release (A-RELEASE), and
* no new instance of it has arrived for ``quiet_time`` seconds.

**Aborted associations.** When an association that sent to a study ends without a release (an
A-ABORT, a dropped connection, a network time-out, a server stopped mid-association), the
instances it sent are *kept* (each was acknowledged with a success status, so the sender may
count on them) but the study is *held*: the quiet time does not run for it, since the sender
did not say it had finished. A held study resumes when an association that started after the
abort sends to it again and is released normally (a sender retrying its study), and is set aside
in ``abandoned/``, never processed, when nobody does so within ``hold_timeout``. So a dropped
client never gets a half study processed.

The same holds for a study some of whose instances were refused (out of resources): it is held
until sent again, as the sender knows those instances failed.

**Exactly once.** A study's instances are processed as one *batch*; once a batch is complete, its
SOPInstanceUIDs are remembered: the same instances sent again are acknowledged and dropped, new
instances of that study start its next revision. The transitions are persisted (state.py) before
they take effect, and on start-up :meth:`StudyTracker.recover` resumes each batch where it was.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Set

from .spool import Spool
from .state import ABANDONED, COMPLETE, PROCESSING, RECEIVING, BatchState, StateStore

log = logging.getLogger("lumbar_edge.serve")

#: C-STORE statuses (PS3.4 B.2.3).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700


@dataclass
class Session:
    """One accepted association, as far as the studies are concerned."""

    id: str
    calling_aet: str
    started: float = field(default_factory=time.time)
    studies: Set[str] = field(default_factory=set)
    #: Studies some of whose instances this association had refused (out of resources).
    incomplete: Set[str] = field(default_factory=set)
    released: bool = False
    stored: int = 0
    duplicates: int = 0
    refused: int = 0


@dataclass
class _OpenBatch:
    state: BatchState
    last_activity: float  # time.monotonic()
    sessions: Set[str] = field(default_factory=set)


class StudyTracker:
    """Turns received instances into complete batches; thread-safe.

    ``on_complete(state)`` is called (outside the lock) for each batch that becomes complete, and
    for each batch :meth:`recover` finds complete or interrupted in processing.
    """

    def __init__(self, spool: Spool, store: StateStore, *, quiet_time: float, hold_timeout: float,
                 on_complete: Callable[[BatchState], None]):
        self.spool = spool
        self.states = store
        self.quiet_time = float(quiet_time)
        self.hold_timeout = float(hold_timeout)
        self.on_complete = on_complete
        self._lock = threading.RLock()
        self._open: Dict[str, _OpenBatch] = {}
        self._known: Dict[str, Set[str]] = {}  # study UID -> SOP UIDs of its batches past receiving
        self._revisions: Dict[str, int] = {}
        self._sessions: Dict[str, Session] = {}

    # -- start-up ----------------------------------------------------------------------------------

    def recover(self, states: Iterable[BatchState], leftover: Dict[str, List[str]]) -> List[BatchState]:
        """Rebuild the bookkeeping from the persisted states; returns the batches to (re)process.

        ``leftover``: association markers found at start-up (associations the server stopped
        during): the studies they sent to are held, as after an abort. Receiving studies restart
        their quiet time now.
        """
        interrupted = {uid for studies in leftover.values() for uid in studies}
        pending = []
        now = time.monotonic()
        with self._lock:
            for st in states:
                uid = st.study_uid
                self._revisions[uid] = max(self._revisions.get(uid, 0), st.revision)
                if st.stage == RECEIVING:
                    if uid in interrupted and not st.held:
                        self._hold(st, "the server stopped during an association that sent to it")
                    self._open[uid] = _OpenBatch(st, now)
                    continue
                self._known.setdefault(uid, set()).update(st.sop_uids)
                if st.stage in (COMPLETE, PROCESSING):
                    pending.append(st)
            for assoc_id in leftover:
                self.spool.clear_association(assoc_id)
        return pending

    # -- associations ------------------------------------------------------------------------------

    def open_session(self, session_id: str, calling_aet: str) -> Session:
        with self._lock:
            session = Session(session_id, calling_aet)
            self._sessions[session_id] = session
            return session

    def store(self, session_id: str, study_uid: str, sop_uid: str, data: bytes) -> int:
        """Keep one received instance; returns the C-STORE status to answer with."""
        with self._lock:
            session = self._sessions[session_id]
            if sop_uid in self._known.get(study_uid, ()):
                session.duplicates += 1
                return STATUS_SUCCESS  # already taken for processing: acknowledged, not kept again
            batch = self._open.get(study_uid)
            if batch is None:
                revision = self._revisions.get(study_uid, 0) + 1
                self._revisions[study_uid] = revision
                state = BatchState(study_uid=study_uid, revision=revision)
                self.states.save(state)
                self.states.journal("receiving", state, calling_aet=session.calling_aet)
                batch = self._open[study_uid] = _OpenBatch(state, time.monotonic())
                if revision > 1:
                    log.info("study %s: new instances after it was taken for processing: revision %d",
                             study_uid, revision)
            if study_uid not in session.studies:
                session.studies.add(study_uid)
                # The marker goes to disk before the first instance does: no instance of an
                # association is ever on disk without a record that the association was open.
                self.spool.mark_association(session.id, session.studies)
            batch.sessions.add(session_id)
            batch.last_activity = time.monotonic()
            revision = batch.state.revision
        ok, why = self.spool.reserve(len(data))
        if not ok:
            session.refused += 1
            session.incomplete.add(study_uid)
            if session.refused == 1:
                log.warning("association %s from %s: refusing instances with status A700 (out of resources): %s",
                            session.id, session.calling_aet, why)
            return STATUS_OUT_OF_RESOURCES
        try:
            grown = self.spool.write_instance(study_uid, revision, sop_uid, data)
        except OSError as exc:
            self.spool.unreserve(len(data))
            session.refused += 1
            session.incomplete.add(study_uid)
            log.error("association %s: an instance of study %s cannot be written to the spool (%s); "
                      "refused with status A700", session.id, study_uid, exc)
            return STATUS_OUT_OF_RESOURCES
        self.spool.adjust(grown - len(data))
        with self._lock:
            session.stored += 1
            batch.last_activity = time.monotonic()
        return STATUS_SUCCESS

    def release(self, session_id: str) -> None:
        """The peer asked to release the association: it has sent everything it meant to."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.released:
                return
            session.released = True
            now = time.monotonic()
            for uid in session.studies:
                batch = self._open.get(uid)
                if batch is None:
                    continue
                batch.sessions.discard(session_id)
                batch.last_activity = now
                st = batch.state
                if uid in session.incomplete:
                    # The sender knows those instances failed and must send them again: the study
                    # is not complete, whatever the quiet time says.
                    if not st.held:
                        self._hold(st, f"association {session.id} from {session.calling_aet} had instances "
                                       f"of it refused")
                    continue
                if st.held and st.held_since is not None and session.started > st.held_since:
                    st.held, st.held_since = False, None
                    self.states.save(st)
                    self.states.journal("resumed", st, calling_aet=session.calling_aet)
                    log.info("study %s: sent again and released; no longer held", uid)
            self.spool.clear_association(session_id)
            log.info("association %s from %s released: %d instances stored, %d duplicates, %d refused, %d studies",
                     session.id, session.calling_aet, session.stored, session.duplicates, session.refused,
                     len(session.studies))

    def close(self, session_id: str, reason: str = "aborted") -> None:
        """The association's connection closed; without a release first, its studies are held."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is None or session.released:
                return
            for uid in session.studies:
                batch = self._open.get(uid)
                if batch is None:
                    continue
                batch.sessions.discard(session_id)
                if not batch.state.held:
                    self._hold(batch.state, f"association {session.id} from {session.calling_aet} {reason} "
                                            f"before a release")
            # Only once the holds are on disk: a kill before this line leaves the marker, which
            # holds the same studies at start-up.
            self.spool.clear_association(session_id)
            if session.studies:
                log.warning("association %s from %s %s after %d instances: %d studies held until sent again",
                            session.id, session.calling_aet, reason, session.stored, len(session.studies))

    def _hold(self, st: BatchState, why: str) -> None:
        st.held, st.held_since = True, time.time()
        self.states.save(st)
        self.states.journal("held", st, reason=why)
        log.warning("study %s held: %s", st.study_uid, why)

    # -- completion --------------------------------------------------------------------------------

    def poll(self) -> List[BatchState]:
        """Complete the batches whose quiet time has passed, set aside those held too long;
        returns the batches completed (already handed to ``on_complete``)."""
        ready = []
        now, wall = time.monotonic(), time.time()
        with self._lock:
            for uid, batch in list(self._open.items()):
                st = batch.state
                if batch.sessions:
                    continue
                if st.held:
                    if st.held_since is not None and wall - st.held_since >= self.hold_timeout:
                        self._abandon(uid, batch)
                    continue
                if now - batch.last_activity < self.quiet_time:
                    continue
                sops = self.spool.instance_uids(uid, st.revision)
                if not sops:  # every instance was refused: nothing to process
                    del self._open[uid]
                    self._revisions[uid] = st.revision - 1
                    self.spool.discard_batch(uid, st.revision)
                    continue
                st.stage, st.sop_uids = COMPLETE, sops
                self.states.save(st)
                self.states.journal("complete", st, instances=len(sops))
                self._known.setdefault(uid, set()).update(sops)
                del self._open[uid]
                ready.append(st)
        for st in ready:
            log.info("study %s (revision %d) complete: %d instances", st.study_uid, st.revision, len(st.sop_uids))
            self.on_complete(st)
        return ready

    def _abandon(self, uid: str, batch: _OpenBatch) -> None:
        st = batch.state
        st.stage = ABANDONED
        st.sop_uids = self.spool.instance_uids(uid, st.revision)
        self.states.save(st)
        where = self.spool.abandon(uid, st.revision)
        self.states.journal("abandoned", st, instances=len(st.sop_uids))
        # Its SOP instances are not remembered as taken: if the sender comes back after all, the
        # study starts afresh.
        del self._open[uid]
        log.warning("study %s: held for %.0f s without its sender sending it again; set aside unprocessed in %s",
                    uid, self.hold_timeout, where)

    # -- introspection -----------------------------------------------------------------------------

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return {"receiving": sum(1 for b in self._open.values() if not b.state.held),
                    "held": sum(1 for b in self._open.values() if b.state.held),
                    "associations": len(self._sessions)}

    def session(self, session_id: str) -> Optional[Session]:
        with self._lock:
            return self._sessions.get(session_id)


__all__ = ["StudyTracker", "Session", "STATUS_SUCCESS", "STATUS_OUT_OF_RESOURCES"]
