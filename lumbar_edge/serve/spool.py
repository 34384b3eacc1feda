"""The spool: received instances on disk, before and while they are processed.

Layout under the spool folder::

    studies/{StudyInstanceUID}/{revision}/instances/{SOPInstanceUID}.dcm
    studies/{StudyInstanceUID}/{revision}/state.json           (see state.py)
    associations/{id}.json    studies an association has sent to, until it is released or closed
    abandoned/{StudyInstanceUID}-{revision}-{time}/            set aside, never processed
    journal.jsonl

Every file is written atomically (temporary file in the same folder, fsync, rename), so a kill
at any moment leaves either the old file or the new one, never a partial instance. The spool
counts the bytes of instances it holds and refuses to take more than its limit.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

from ..report._io import atomic_write_bytes

log = logging.getLogger("lumbar_edge.serve")

INSTANCE_SUFFIX = ".dcm"


class Spool:
    """Instance files, association markers and disk accounting of one spool folder."""

    def __init__(self, root: Path, max_bytes: int, min_free_bytes: int = 0):
        self.root = Path(root)
        self.studies = self.root / "studies"
        self.associations = self.root / "associations"
        self.abandoned = self.root / "abandoned"
        self.max_bytes = int(max_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self._lock = threading.Lock()
        self._used = 0

    # -- setup -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the folders, remove temporary files a kill left behind and count the bytes of
        the instances held. Raises ``OSError`` when the folder cannot be created."""
        for folder in (self.studies, self.associations):
            folder.mkdir(parents=True, exist_ok=True)
        removed = 0
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("spool: removed %d temporary files left by an interrupted write", removed)
        self._used = sum(p.stat().st_size for p in self.studies.glob(f"*/*/instances/*{INSTANCE_SUFFIX}"))

    @property
    def used_bytes(self) -> int:
        return self._used

    # -- instances -------------------------------------------------------------------------------

    def instances_dir(self, study_uid: str, revision: int) -> Path:
        return self.studies / study_uid / str(int(revision)) / "instances"

    def reserve(self, nbytes: int) -> Tuple[bool, str]:
        """Count ``nbytes`` against the limit if they fit: ``(True, "")``, else ``(False, why)``."""
        with self._lock:
            if self._used + nbytes > self.max_bytes:
                return False, (f"the spool holds {self._used / 2**20:.1f} MiB of its "
                               f"{self.max_bytes / 2**20:.1f} MiB limit")
            try:
                free = shutil.disk_usage(self.root).free
            except OSError as exc:
                return False, f"the spool's disk cannot be checked ({exc})"
            if free - nbytes < self.min_free_bytes:
                return False, f"the spool's disk has {free / 2**20:.1f} MiB free"
            self._used += nbytes
            return True, ""

    def unreserve(self, nbytes: int) -> None:
        with self._lock:
            self._used = max(0, self._used - nbytes)

    def write_instance(self, study_uid: str, revision: int, sop_uid: str, data: bytes) -> int:
        """Write one received instance atomically; returns by how many bytes the spool grew
        (less than ``len(data)`` when the same SOP instance was already there and is replaced).
        Raises ``OSError``."""
        path = self.instances_dir(study_uid, revision) / f"{sop_uid}{INSTANCE_SUFFIX}"
        old = path.stat().st_size if path.exists() else 0
        atomic_write_bytes(path, data)
        return len(data) - old

    def adjust(self, delta: int) -> None:
        with self._lock:
            self._used = max(0, self._used + delta)

    def instance_uids(self, study_uid: str, revision: int) -> List[str]:
        folder = self.instances_dir(study_uid, revision)
        if not folder.is_dir():
            return []
        return sorted(p.name[:-len(INSTANCE_SUFFIX)] for p in folder.glob(f"*{INSTANCE_SUFFIX}")
                      if not p.name.startswith("."))

    def remove_instances(self, study_uid: str, revision: int) -> int:
        """Delete a batch's instances (its state file stays); returns the bytes freed."""
        folder = self.instances_dir(study_uid, revision)
        if not folder.is_dir():
            return 0
        freed = sum(p.stat().st_size for p in folder.glob(f"*{INSTANCE_SUFFIX}"))
        shutil.rmtree(folder)
        self.adjust(-freed)
        return freed

    def discard_batch(self, study_uid: str, revision: int) -> None:
        """Delete a batch's folder (a batch none of whose instances could be kept)."""
        self.remove_instances(study_uid, revision)
        folder = self.studies / study_uid / str(int(revision))
        if folder.exists():
            shutil.rmtree(folder)

    def abandon(self, study_uid: str, revision: int) -> Path:
        """Move a batch's folder to ``abandoned/`` (kept for an operator, never processed)."""
        src = self.studies / study_uid / str(int(revision))
        freed = sum(p.stat().st_size for p in src.glob(f"instances/*{INSTANCE_SUFFIX}"))
        dst = self.abandoned / f"{study_uid}-{int(revision)}-{time.strftime('%Y%m%dT%H%M%S')}"
        self.abandoned.mkdir(parents=True, exist_ok=True)
        n = 1
        while dst.exists():
            dst, n = dst.with_name(f"{dst.name.rsplit('~', 1)[0]}~{n}"), n + 1
        src.rename(dst)
        self.adjust(-freed)
        return dst

    # -- association markers ---------------------------------------------------------------------

    def mark_association(self, assoc_id: str, study_uids) -> None:
        """Record (atomically) which studies an open association has sent to. A marker still
        there at start-up means the server stopped during that association."""
        doc = json.dumps({"studies": sorted(study_uids)}).encode("utf-8")
        atomic_write_bytes(self.associations / f"{assoc_id}.json", doc)

    def clear_association(self, assoc_id: str) -> None:
        (self.associations / f"{assoc_id}.json").unlink(missing_ok=True)

    def leftover_associations(self) -> Dict[str, List[str]]:
        """Markers of associations that were open when the server stopped: ``{id: [study UIDs]}``."""
        found = {}
        for path in sorted(self.associations.glob("*.json")):
            try:
                found[path.stem] = list(json.loads(path.read_text(encoding="utf-8"))["studies"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("unreadable association marker %s (%s); ignored", path.name, exc)
                found[path.stem] = []
        return found
