"""Batch inference over a study folder or a root of many: ``lumbar-edge infer``.

Writes, atomically, into ``out``: a JSON report per study, PNG overlays per study, one
``submission.csv`` for the run in the competition's form, and ``summary.json`` (which studies
succeeded, which failed and why, skipped files, timings). The input folder is never written to: an
output folder inside it is refused. One bad study is reported and skipped, never fatal.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .errors import InputError, LumbarEdgeError
from .progress import Progress

log = logging.getLogger("lumbar_edge.infer")


@dataclass
class InferSummary:
    out: Path
    backend: str
    succeeded: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    skipped_files: int = 0
    csv_path: Optional[Path] = None
    reports: List[Path] = field(default_factory=list)
    overlays: List[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and bool(self.succeeded)

    def describe(self) -> str:
        lines = [f"{len(self.succeeded)} studies succeeded, {len(self.failed)} failed "
                 f"({self.seconds:.1f} s, {self.backend})"]
        for study, why in self.failed.items():
            lines.append(f"  failed: {study}: {why}")
        if self.skipped_files:
            lines.append(f"  {self.skipped_files} files skipped while scanning (see summary.json)")
        if self.csv_path:
            lines.append(f"submission CSV: {self.csv_path}")
        lines.append(f"reports: {self.out} ({len(self.reports)} JSON, {len(self.overlays)} PNG overlays)")
        return "\n".join(lines)


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def write_study_outputs(result, out: Path, *, overlays: bool = True, heatmaps: bool = False) -> Tuple[Path, List[Path]]:
    """Write one study's JSON report and (unless ``overlays`` is False) its PNG overlays into
    ``out``; returns ``(report, overlays)``. Raises OSError or the report writers' errors."""
    from .report import write_overlays, write_study_json

    report = write_study_json(result, out)
    pngs = (write_overlays(result, result.slices, Path(out) / "overlays", heatmaps=result.heatmaps if heatmaps else None)
            if overlays else [])
    return report, pngs


def run_infer(path: Path, model: Path, out: Path, *, backend: str = "auto", precision: Optional[str] = None,
              device: Optional[str] = None, batch_size: int = 8, overlays: bool = True, heatmaps: bool = False,
              progress: bool = True, prefetch: int = 1, echo=print) -> InferSummary:
    """Run every study under ``path`` through the bundle ``model``; write results into ``out``.

    ``device``: an OpenVINO device (implies the openvino backend).
    ``prefetch``: studies decoded and preprocessed ahead in a background thread while the engine
    runs (:meth:`Pipeline.run`), and each study's reports written in another while the engine
    runs the next; 0 runs the stages one after another.

    Raises :class:`InputError` for a missing input, an output folder inside the input, or an
    unusable bundle/backend; per-study problems are collected in the summary instead.
    """
    from .dicom import scan_path
    from .pipeline import Pipeline
    from .report import write_submission_csv

    path, out = Path(path), Path(out)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if _inside(out, path if path.is_dir() else path.parent):
        raise InputError(f"the output folder {out} is inside the input {path}; the input is never written to")
    start = time.perf_counter()
    # A batch job: the throughput hint where a backend has one (OpenVINO splits each batch over
    # several streams; serve and bench, which time one study, use the latency hint).
    pipeline = Pipeline.load(model, backend=backend, precision=precision, device=device, hint="throughput",
                             batch_size=batch_size, keep_heatmaps=heatmaps)
    echo(f"model: {pipeline.description}")
    echo(f"backend: {pipeline.backend_reason}")
    scan = scan_path(path, progress=progress)
    if not scan.studies:
        raise InputError(f"no DICOM studies found under {path} ({len(scan.skipped)} files skipped)")
    out.mkdir(parents=True, exist_ok=True)
    summary = InferSummary(out=out, backend=pipeline.description, skipped_files=len(scan.skipped))
    results = []
    per_study: Dict[str, dict] = {}

    def written(sid: str, result, job) -> None:
        """Record a study whose outputs ``job()`` writes (now or, overlapped, in the writer)."""
        try:
            report, pngs = job()
        except (OSError, LumbarEdgeError) as exc:
            summary.failed[sid] = f"writing its outputs failed: {exc}"
            per_study[sid] = {"ok": False, "error": summary.failed[sid]}
            return
        summary.reports.append(report)
        summary.overlays.extend(pngs)
        results.append(result)
        summary.succeeded.append(sid)
        per_study[sid] = {"ok": True, "warnings": result.warnings, "timings_s": result.timings}

    # Overlapped, one writer thread writes a study's reports and overlays while the engine runs
    # the next study; at most one study waits for it, so memory stays bounded and the order of
    # the summary is the order of the studies.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lumbar-edge-writer") if prefetch > 0 else None
    waiting = None
    try:
        with pipeline, Progress(len(scan.studies), "inferring studies", enabled=progress) as bar:
            for study, result in pipeline.run(scan.studies, prefetch=prefetch):
                bar.update()
                sid = str(study.study_id)
                if isinstance(result, LumbarEdgeError):
                    summary.failed[sid] = str(result)
                    per_study[sid] = {"ok": False, "error": str(result)}
                    log.warning("study %s failed: %s", sid, result)
                    continue
                job = functools.partial(write_study_outputs, result, out, overlays=overlays, heatmaps=heatmaps)
                if writer is None:
                    written(sid, result, job)
                    continue
                if waiting is not None:
                    written(waiting[0], waiting[1], waiting[2].result)
                waiting = (sid, result, writer.submit(job))
            if waiting is not None:
                written(waiting[0], waiting[1], waiting[2].result)
                waiting = None
    finally:
        if writer is not None:
            writer.shutdown(wait=True)
    if results:
        summary.csv_path = out / "submission.csv"
        write_submission_csv(results, summary.csv_path)
    summary.seconds = time.perf_counter() - start
    doc = {
        "input": str(path), "model": str(model), "backend": summary.backend, "seconds": summary.seconds,
        "succeeded": summary.succeeded, "failed": summary.failed, "studies": per_study,
        "skipped_files": [{"path": str(s.path), "reason": s.reason} for s in scan.skipped],
    }
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, out / "summary.json")
    return summary
