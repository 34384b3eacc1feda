"""Sends each done batch's DICOM results to the ``--forward`` AE by C-STORE, until delivered.

One thread. A batch's results go over one association; each instance acknowledged with a
success or warning status is recorded as delivered at once (state.json), so a retry, or a restart,
sends only what is missing. A failed attempt (peer unreachable, association rejected or aborted,
a failure status) is retried with exponential back-off: ``retry_base`` seconds, doubling up to
``retry_max``, with no limit on the number of attempts: results are kept until delivered.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pydicom

from .config import ForwardTarget
from .state import DONE, FORWARDED, BatchState, StateStore

log = logging.getLogger("lumbar_edge.serve")


class ForwardError(Exception):
    """One delivery attempt failed (internal: always turned into a retry)."""


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: base, 2 base, 4 base ... cap."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


class Forwarder:
    """Delivers results to ``target``, retrying with back-off; thread-safe :meth:`submit`."""

    def __init__(self, target: ForwardTarget, calling_aet: str, store: StateStore, out_root: Path, *,
                 retry_base: float, retry_max: float, network_timeout: float, max_pdu: int):
        self.target = target
        self.calling_aet = calling_aet
        self.store = store
        self.out_root = Path(out_root)
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.network_timeout = network_timeout
        self.max_pdu = max_pdu
        self._pending: Dict[str, BatchState] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    def submit(self, state: BatchState) -> None:
        if state.stage != DONE:
            return
        with self._cond:
            self._pending[state.key] = state
            self._cond.notify()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lumbar-edge-forward", daemon=True)
        self._thread.start()

    def stop(self, timeout: Optional[float] = None) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.time()
                    due = [s for s in self._pending.values() if s.next_forward <= now]
                    if due:
                        break
                    wait = min((s.next_forward for s in self._pending.values()), default=now + 60) - now
                    self._cond.wait(timeout=max(0.05, min(wait, 60)))
                if self._stopping:
                    return
            for state in sorted(due, key=lambda s: s.next_forward):
                self._attempt(state)
                with self._cond:
                    if self._stopping:
                        return

    def _attempt(self, state: BatchState) -> None:
        try:
            self._deliver(state)
        except ForwardError as exc:
            state.forward_attempts += 1
            delay = backoff(state.forward_attempts, self.retry_base, self.retry_max)
            state.next_forward = time.time() + delay
            self.store.save(state)
            self.store.journal("forward-failed", state, attempt=state.forward_attempts, error=str(exc), retry_in_s=delay)
            log.warning("study %s: sending results to %s failed (%s); attempt %d, next in %.0f s",
                        state.study_uid, self.target, exc, state.forward_attempts, delay)
            return
        state.stage = FORWARDED
        self.store.save(state)
        self.store.journal("forwarded", state, results=len(state.results), to=str(self.target))
        log.info("study %s: %d results delivered to %s", state.study_uid, len(state.results), self.target)
        with self._cond:
            self._pending.pop(state.key, None)

    def _deliver(self, state: BatchState) -> None:
        """Send the not yet delivered results of ``state`` over one association."""
        from pynetdicom import AE

        todo: List[str] = [f for f in state.results if f not in state.delivered]
        if not todo:
            return
        datasets = []
        for rel in todo:
            try:
                datasets.append((rel, pydicom.dcmread(self.out_root / rel)))
            except (OSError, pydicom.errors.InvalidDicomError) as exc:
                raise ForwardError(f"result file {rel} cannot be read ({exc})") from exc
        ae = AE(ae_title=self.calling_aet)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = self.network_timeout
        ae.maximum_pdu_size = self.max_pdu
        for sop_class in sorted({str(ds.SOPClassUID) for _, ds in datasets}):
            ae.add_requested_context(sop_class)
        try:
            assoc = ae.associate(self.target.host, self.target.port, ae_title=self.target.ae_title)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ForwardError(f"cannot connect ({exc})") from exc
        if not assoc.is_established:
            what = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            raise ForwardError(f"association {what}")
        try:
            for rel, ds in datasets:
                try:
                    status = assoc.send_c_store(ds)
                except (OSError, RuntimeError, ValueError) as exc:
                    raise ForwardError(f"C-STORE of {rel} failed ({exc})") from exc
                code = getattr(status, "Status", None)
                if code is None:
                    raise ForwardError(f"no answer to the C-STORE of {rel} (association lost or timed out)")
                if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:
                    raise ForwardError(f"C-STORE of {rel} answered with status 0x{code:04X}")
                state.delivered.append(rel)
                self.store.save(state)
        finally:
            if assoc.is_established:
                assoc.release()
