"""The listener assembled: spool, tracker, worker, forwarder and the Storage SCP.

``Server(config).start()`` recovers the spool (resuming what a crash or stop left pending: complete
and interrupted studies are processed, undelivered results forwarded, studies an interrupted
association sent to are held), loads the Pipeline, and only then starts listening.
:func:`run_server` is ``lumbar-edge serve``: it runs until SIGTERM or Ctrl-C.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Callable, Optional

from .config import ServeConfig
from .scp import StorageSCP, require_pynetdicom
from .spool import Spool
from .state import DONE, FINISHED, BatchState, StateStore
from .tracker import StudyTracker
from .worker import StudyWorker

log = logging.getLogger("lumbar_edge.serve")


class Server:
    """One DICOM listener. ``pipeline``: an open :class:`~lumbar_edge.pipeline.Pipeline` to use
    instead of loading ``config.model`` (embedding, tests)."""

    def __init__(self, config: ServeConfig, *, pipeline=None):
        self.config = config.checked()
        self.pipeline = pipeline
        self.port: Optional[int] = None
        self.spool: Optional[Spool] = None
        self.store: Optional[StateStore] = None
        self.tracker: Optional[StudyTracker] = None
        self.worker: Optional[StudyWorker] = None
        self.forwarder = None
        self.scp: Optional[StorageSCP] = None
        self._stop = threading.Event()
        self._monitor: Optional[threading.Thread] = None

    def start(self) -> "Server":
        """Recover, start the threads, listen. Raises :class:`~lumbar_edge.errors.LumbarEdgeError`
        for a missing pynetdicom, an unusable bundle or an address that cannot be bound."""
        require_pynetdicom()
        cfg = self.config
        if self.pipeline is None:
            from ..pipeline import Pipeline

            # One study at a time: the latency hint (all threads on one request).
            self.pipeline = Pipeline.load(cfg.model, backend=cfg.backend, precision=cfg.precision, device=cfg.device,
                                          hint="latency")
        log.info("model: %s; backend: %s", self.pipeline.description, self.pipeline.backend_reason)
        self.spool = Spool(cfg.spool, cfg.max_spool_bytes, cfg.min_free_bytes)
        self.spool.open()
        cfg.out.mkdir(parents=True, exist_ok=True)
        self.store = StateStore(cfg.spool)
        if cfg.forward is not None:
            from .forward import Forwarder

            self.forwarder = Forwarder(cfg.forward, cfg.ae_title, self.store, cfg.out, retry_base=cfg.retry_base,
                                       retry_max=cfg.retry_max, network_timeout=cfg.network_timeout,
                                       max_pdu=cfg.max_pdu)
        self.worker = StudyWorker(self.pipeline, self.spool, self.store, cfg.out, on_done=self._on_done,
                                  keep_spool=cfg.keep_spool, overlays=cfg.overlays,
                                  forward_to=str(cfg.forward) if cfg.forward else None)
        self.tracker = StudyTracker(self.spool, self.store, quiet_time=cfg.quiet_time, hold_timeout=cfg.hold_timeout,
                                    on_complete=self.worker.submit)
        states = list(self.store.load_all())
        # Before anything new is journaled: the lines a kill cut off between a state's save and
        # its journal line, so the journal says every study's completion exactly once.
        self.store.reconcile_journal(states)
        pending = self.tracker.recover(states, self.spool.leftover_associations())
        undelivered = self._resume_finished(states)
        self.worker.start()
        if self.forwarder is not None:
            self.forwarder.start()
        for st in pending:
            self.worker.submit(st)
        counts = self.tracker.counts()
        if pending or undelivered or counts["receiving"] or counts["held"]:
            log.info("resuming from the spool: %d studies to process, %d result sets to forward, "
                     "%d still receiving, %d held", len(pending), undelivered, counts["receiving"], counts["held"])
        self._monitor = threading.Thread(target=self._watch, name="lumbar-edge-monitor", daemon=True)
        self._monitor.start()
        self.scp = StorageSCP(cfg, self.tracker)
        self.port = self.scp.start()
        log.info("listening on %s:%d as %s%s; spool %s; results in %s%s", cfg.host or "*", self.port, cfg.ae_title,
                 f" (calling AE titles: {', '.join(cfg.allow)})" if cfg.allow else "", cfg.spool, cfg.out,
                 f"; forwarding to {cfg.forward}" if cfg.forward else "")
        return self

    def _resume_finished(self, states) -> int:
        """Finish what a stop left of finished batches: instances not yet removed, results not
        yet delivered. Returns how many result sets are queued for forwarding."""
        queued = 0
        for st in states:
            if st.stage not in FINISHED:
                continue
            if st.stage in (DONE,) and not self.config.keep_spool:
                self.spool.remove_instances(st.study_uid, st.revision)
            if st.stage == DONE and st.forward_to:
                if self.forwarder is not None:
                    self.forwarder.submit(st)
                    queued += 1
                else:
                    log.warning("study %s: its results wait to be sent to %s; start with --forward to deliver them",
                                st.study_uid, st.forward_to)
        return queued

    def _on_done(self, state: BatchState) -> None:
        if self.forwarder is not None:
            self.forwarder.submit(state)

    def _watch(self) -> None:
        interval = max(0.05, min(0.5, self.config.quiet_time / 4))
        while not self._stop.wait(interval):
            try:
                self.tracker.poll()
            except OSError as exc:
                log.error("the spool cannot be updated (%s); trying again", exc)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop listening, finish the study in hand, stop forwarding. Whatever is pending stays in
        the spool and resumes at the next start."""
        self._stop.set()
        if self.scp is not None:
            self.scp.stop()
        if self.worker is not None:
            self.worker.stop(timeout)
        if self.forwarder is not None:
            self.forwarder.stop(timeout)
        if self._monitor is not None:
            self._monitor.join(timeout)
        if self.pipeline is not None:
            self.pipeline.close()
        log.info("stopped")

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_server(config: ServeConfig, echo: Callable[[str], None] = print) -> None:
    """``lumbar-edge serve``: start a :class:`Server` and run until SIGTERM or Ctrl-C."""
    server = Server(config)
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.start()
        echo(f"lumbar-edge serve: listening on port {server.port} as {server.config.ae_title} "
             f"(Ctrl-C or SIGTERM stops)")
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        echo("stopping")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
