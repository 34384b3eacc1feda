r"""Persistent state of the listener: one small JSON file per received study, and a journal.

A *batch* is one study as received in one go: instances of a StudyInstanceUID that arrive after
that study was already taken for processing start the next *revision* of it, processed on its own
(results in their own series). Each batch has ``state.json`` beside its instances, replaced
atomically at each step::

    receiving -> complete -> processing -> done -> forwarded     (forwarded only with --forward)
                                        \-> failed
    receiving (held) -> abandoned        (an aborted sender never came back)

``journal.jsonl`` in the spool gets one line per step (appended and flushed to disk): the audit
trail of what was received, processed and delivered, with UIDs and counts and never patient data.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator, List, Optional

from ..report._io import atomic_write_bytes

log = logging.getLogger("lumbar_edge.serve")

RECEIVING, COMPLETE, PROCESSING, DONE, FORWARDED, FAILED, ABANDONED = (
    "receiving", "complete", "processing", "done", "forwarded", "failed", "abandoned")
STAGES = (RECEIVING, COMPLETE, PROCESSING, DONE, FORWARDED, FAILED, ABANDONED)
#: Stages after which the batch's instances are no longer needed.
FINISHED = (DONE, FORWARDED, FAILED, ABANDONED)
STATE_FILE = "state.json"
JOURNAL_FILE = "journal.jsonl"


@dataclass
class BatchState:
    """What is known about one batch (one revision of one study); see the module docstring."""

    study_uid: str
    revision: int
    stage: str = RECEIVING
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    #: True while the batch waits for a sender whose association was aborted to send again.
    held: bool = False
    held_since: Optional[float] = None
    #: SOPInstanceUIDs of the batch, recorded when it is complete.
    sop_uids: List[str] = field(default_factory=list)
    #: How often processing was started (more than once only after a crash or restart).
    attempts: int = 0
    #: Output folder of the results, relative to the output root, once done.
    out_dir: Optional[str] = None
    #: The DICOM result files (relative to the output root), where they are to be delivered
    #: (the --forward target when the batch was done, if any), and those delivered.
    results: List[str] = field(default_factory=list)
    forward_to: Optional[str] = None
    delivered: List[str] = field(default_factory=list)
    forward_attempts: int = 0
    next_forward: float = 0.0
    error: Optional[str] = None

    @property
    def key(self) -> str:
        return f"{self.study_uid}#{self.revision}"

    @classmethod
    def from_dict(cls, doc: dict) -> "BatchState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


class StateStore:
    """Reads and writes batch states under ``spool/studies`` and appends to the journal.

    Writes are atomic (temporary file, fsync, rename); the journal is appended under a lock.
    """

    def __init__(self, spool_root: Path):
        self.root = Path(spool_root)
        self.studies = self.root / "studies"
        self.journal_path = self.root / JOURNAL_FILE
        self._journal_lock = threading.Lock()

    def batch_dir(self, study_uid: str, revision: int) -> Path:
        # UIDs are checked (digits and dots only) before they get here; see scp.valid_uid.
        return self.studies / study_uid / str(int(revision))

    def save(self, state: BatchState) -> None:
        state.updated = time.time()
        data = json.dumps(asdict(state), indent=1, allow_nan=False).encode("utf-8")
        atomic_write_bytes(self.batch_dir(state.study_uid, state.revision) / STATE_FILE, data)

    def load_all(self) -> Iterator[BatchState]:
        """Every batch state in the spool. An unreadable state file (only possible after disk
        damage, as writes are atomic) is logged and skipped, its folder left for inspection."""
        if not self.studies.is_dir():
            return
        for path in sorted(self.studies.glob(f"*/*/{STATE_FILE}")):
            try:
                state = BatchState.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                log.error("unreadable batch state %s (%s); that batch is left alone", path, exc)
                continue
            if state.stage not in STAGES:
                log.error("batch state %s has an unknown stage %r; that batch is left alone", path, state.stage)
                continue
            yield state

    def reconcile_journal(self, states) -> int:
        """Append the journal lines a kill cut off: a state is saved before its journal line is
        written, so a process killed between the two leaves a study whose stage says it was
        completed (or done) with no such line. Each missing line is added once, marked
        ``recovered``, with what the line it stands for carries (a ``done`` line its number of
        result files, from the state); returns how many."""
        seen = {(e.get("event"), e.get("study_uid"), e.get("revision")) for e in read_journal(self.root)}
        added = 0
        for st in states:
            for event in _IMPLIED_EVENTS.get(st.stage, ()):
                if (event, st.study_uid, st.revision) not in seen:
                    extra = {"results": len(st.results)} if event == "done" else {}
                    self.journal(event, st, recovered=True, **extra)
                    added += 1
        return added

    def journal(self, event: str, state: BatchState, **extra) -> None:
        """Append one line ``{time, event, study_uid, revision, ...}`` to ``journal.jsonl``."""
        entry = {"time": round(time.time(), 3), "event": event, "study_uid": state.study_uid,
                 "revision": state.revision, **extra}
        line = (json.dumps(entry, allow_nan=False) + "\n").encode("utf-8")
        with self._journal_lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.journal_path, "ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())


#: The journal events each stage implies happened before it (for :meth:`StateStore.reconcile_journal`).
_IMPLIED_EVENTS = {COMPLETE: ("complete",), PROCESSING: ("complete",), DONE: ("complete", "done"),
                   FORWARDED: ("complete", "done"), FAILED: ("complete",)}


def read_journal(spool_root: Path) -> List[dict]:
    """The journal's entries, oldest first (an empty list when there is none yet). A torn last
    line (the process was killed while appending) is ignored."""
    path = Path(spool_root) / JOURNAL_FILE
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries
