"""Runs complete studies through the Pipeline (the same one ``infer`` uses) and writes the results.

For each batch, into ``out/{StudyInstanceUID}/`` (``..._r{n}`` for a later revision), each file
atomically: the JSON report, ``submission.csv`` and the PNG overlays as ``infer`` writes them, and
under ``dicom/`` the Structured Report (``SR.dcm``) and one Secondary Capture per overlay
(``SC_001.dcm`` ...). The batch becomes *done* only after every file is written; a crash before
that leaves it *processing*, and it is processed again at start-up, giving the same files with
the same UIDs (dicom_common.ResultUids). Processing interrupted ``MAX_ATTEMPTS`` times marks it
failed instead, so one study that crashes the process cannot stop the listener for good.
"""
from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pydicom

from ..errors import LumbarEdgeError
from ..report import write_overlays, write_study_json, write_submission_csv
from ..report._io import atomic_write_bytes, safe_name
from .dicom_common import ResultUids, encode_dataset
from .sc import build_secondary_captures
from .spool import Spool
from .sr import build_sr
from .state import DONE, FAILED, PROCESSING, BatchState, StateStore

log = logging.getLogger("lumbar_edge.serve")

MAX_ATTEMPTS = 3


def batch_folder(state: BatchState) -> str:
    """The batch's output folder name, relative to the output root."""
    name = safe_name(state.study_uid)
    return name if state.revision == 1 else f"{name}_r{state.revision}"


def model_key(pipeline) -> str:
    """What identifies the model in result UIDs: its manifest, precision and backend."""
    manifest = json.dumps(pipeline.bundle.manifest, sort_keys=True, default=str)
    return hashlib.sha256(f"{manifest}|{pipeline.description}".encode("utf-8")).hexdigest()[:32]


class StudyWorker:
    """One thread taking complete batches from a queue, one at a time (the engine is shared)."""

    def __init__(self, pipeline, spool: Spool, store: StateStore, out_root: Path, *,
                 on_done: Callable[[BatchState], None], keep_spool: bool = False, overlays: bool = True,
                 forward_to: Optional[str] = None):
        self.pipeline = pipeline
        self.spool = spool
        self.store = store
        self.out_root = Path(out_root)
        self.on_done = on_done
        self.keep_spool = keep_spool
        self.overlays = overlays
        self.forward_to = forward_to
        self.model_key = model_key(pipeline)
        self._queue: "queue.Queue[Optional[BatchState]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._busy = threading.Event()

    def submit(self, state: BatchState) -> None:
        self._queue.put(state)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lumbar-edge-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Finish the batch in hand, then stop (queued batches stay complete on disk)."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def idle(self) -> bool:
        return self._queue.empty() and not self._busy.is_set()

    def _run(self) -> None:
        while True:
            state = self._queue.get()
            if state is None:
                return
            self._busy.set()
            try:
                self.process(state)
            finally:
                self._busy.clear()

    def process(self, state: BatchState) -> None:
        """Process one complete (or interrupted) batch; never raises for a bad study."""
        if state.attempts >= MAX_ATTEMPTS:
            self._fail(state, f"processing was interrupted {state.attempts} times (a crash each time?); "
                              f"not tried again")
            return
        state.stage, state.attempts = PROCESSING, state.attempts + 1
        self.store.save(state)
        self.store.journal("processing", state, attempt=state.attempts)
        try:
            files = self._produce(state)
        except LumbarEdgeError as exc:
            self._fail(state, str(exc))
            return
        except Exception as exc:  # a bug must not stop the listener: record it, keep serving
            log.exception("study %s: processing failed unexpectedly", state.study_uid)
            self._fail(state, f"{type(exc).__name__}: {exc}")
            return
        state.stage, state.out_dir, state.results, state.error = DONE, batch_folder(state), files, None
        state.forward_to = self.forward_to
        self.store.save(state)
        self.store.journal("done", state, results=len(files))
        log.info("study %s (revision %d) done: results in %s", state.study_uid, state.revision,
                 self.out_root / state.out_dir)
        if not self.keep_spool:
            self.spool.remove_instances(state.study_uid, state.revision)
        self.on_done(state)

    def _fail(self, state: BatchState, why: str) -> None:
        state.stage, state.error = FAILED, why
        self.store.save(state)
        self.store.journal("failed", state, error=why)
        log.error("study %s (revision %d) failed: %s (its instances stay in %s)", state.study_uid, state.revision,
                  why, self.spool.instances_dir(state.study_uid, state.revision))

    def _produce(self, state: BatchState) -> List[str]:
        """Run the pipeline and write every output; returns the DICOM result files relative to
        the output root. Raises :class:`LumbarEdgeError` (bad study) or ``OSError``."""
        folder = self.spool.instances_dir(state.study_uid, state.revision)
        result = self.pipeline.run_study(folder)
        out = self.out_root / batch_folder(state)
        write_study_json(result, out)
        write_submission_csv([result], out / "submission.csv")
        if self.overlays:
            write_overlays(result, result.slices, out / "overlays")
        source, sop_classes = self._sources(folder, result)
        uids = ResultUids(state.study_uid, state.revision, self.model_key)
        name = self.pipeline.bundle.name
        datasets = [("SR.dcm", build_sr(result, source, uids, model_name=name, sop_classes=sop_classes,
                                        revision=state.revision))]
        for i, sc in enumerate(build_secondary_captures(result, source, uids, model_name=name,
                                                        sop_classes=sop_classes, revision=state.revision), start=1):
            datasets.append((f"SC_{i:03d}.dcm", sc))
        files = []
        for filename, ds in datasets:
            path = atomic_write_bytes(out / "dicom" / filename, encode_dataset(ds))
            files.append(str(path.relative_to(self.out_root)))
        return files

    @staticmethod
    def _sources(folder: Path, result) -> "tuple[pydicom.Dataset, Dict[str, str]]":
        """The header of one source instance (for the patient/study attributes) and the SOP
        class of every instance a keypoint references."""
        wanted = {f.keypoint.sop_uid for f in result.findings if f.keypoint is not None}
        sop_classes: Dict[str, str] = {}
        source = None
        for sop in sorted(wanted) or [p.stem for p in sorted(folder.glob("*.dcm"))[:1]]:
            ds = pydicom.dcmread(folder / f"{sop}.dcm", stop_before_pixels=True)
            sop_classes[sop] = str(ds.SOPClassUID)
            source = source if source is not None else ds
        if source is None:
            raise LumbarEdgeError(f"study {result.study_uid}: no instance left to copy the study attributes from")
        return source, sop_classes
