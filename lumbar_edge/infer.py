"""Batch inference over a study folder or a root of many: ``lumbar-edge infer``.

Writes, atomically, into ``out``: a JSON report per study, PNG overlays per study, one
``submission.csv`` for the run in the competition's form, and ``summary.json`` (which studies
succeeded, which failed and why, skipped files, timings). The input folder is never written to: an
output folder inside it is refused. One bad study is reported and skipped, never fatal.

A study's report is written after its overlays, so a report in ``out`` means the study is
complete: ``skip_done`` grades only the studies without one (a resumed run). With ``shard`` the
run grades one shard of the studies and writes a shard summary instead of the CSV and summary,
which the merge writes once every shard has finished (:mod:`lumbar_edge.shards`).
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
from .shards import MergeSummary, Shard

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
    #: Studies whose complete report was already in ``out`` (``skip_done``): not graded again.
    skipped_done: List[str] = field(default_factory=list)
    shard: Optional[Shard] = None
    shard_summary: Optional[Path] = None
    #: The merge this shard run made (the last shard of a split to finish), if any.
    merged: Optional[MergeSummary] = None
    #: Why this shard run did not merge (shards still running, or the merge's refusal).
    merge_note: str = ""

    @property
    def ok(self) -> bool:
        """No study failed (a study is graded, or done before, or it failed)."""
        return not self.failed

    def describe(self) -> str:
        head = f"shard {self.shard}: " if self.shard is not None else ""
        done = f", {len(self.skipped_done)} skipped (done before)" if self.skipped_done else ""
        lines = [f"{head}{len(self.succeeded)} studies succeeded, {len(self.failed)} failed{done} "
                 f"({self.seconds:.1f} s, {self.backend})"]
        for study, why in self.failed.items():
            lines.append(f"  failed: {study}: {why}")
        if self.skipped_files:
            lines.append(f"  {self.skipped_files} files skipped while scanning (see summary.json)")
        if self.shard_summary:
            lines.append(f"shard summary: {self.shard_summary}")
        if self.merged:
            lines.append(self.merged.describe())
        elif self.merge_note:
            lines.append(self.merge_note)
        if self.csv_path and not self.merged:
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

    # The report last: its presence is what marks the study complete (skip_done, merge).
    pngs = (write_overlays(result, result.slices, Path(out) / "overlays", heatmaps=result.heatmaps if heatmaps else None)
            if overlays else [])
    report = write_study_json(result, out)
    return report, pngs


def run_infer(path: Path, model: Path, out: Path, *, backend: str = "auto", precision: Optional[str] = None,
              device: Optional[str] = None, batch_size: int = 8, overlays: bool = True, heatmaps: bool = False,
              progress: bool = True, prefetch: int = 1, shard: Optional[Shard] = None, skip_done: bool = False,
              merge: bool = True, echo=print) -> InferSummary:
    """Run every study under ``path`` through the bundle ``model``; write results into ``out``.

    ``device``: an OpenVINO device (implies the openvino backend).
    ``prefetch``: studies decoded and preprocessed ahead in a background thread while the engine
    runs (:meth:`Pipeline.run`), and each study's reports written in another while the engine
    runs the next; 0 runs the stages one after another.

    ``skip_done``: studies whose complete report by this grader is already in ``out`` are not
    graded again (each is echoed); the CSV still lists them, from their reports.
    ``shard``: grade only that shard's studies (:mod:`lumbar_edge.shards`), holding the shard's
    lock, and write ``out/shards/shard-K-of-N.json`` instead of ``submission.csv`` and
    ``summary.json``; with ``merge``, the run that finds every shard summary of its split merges.

    Raises :class:`InputError` for a missing input, an output folder inside the input, an
    unusable bundle/backend, a shard already running, or (``skip_done``) reports in ``out`` made
    by another grader; per-study problems are collected in the summary instead.
    """
    from contextlib import nullcontext

    from .dicom import scan_path
    from .pipeline import Pipeline
    from .report import write_submission_csv
    from .shards import (ShardLock, archive_digest, merge_shards, remove_partial_outputs, shard_set_complete,
                         summary_path, write_shard_summary)

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
    # Every shard scans the whole root (headers only) and keeps its own studies.
    studies = scan.studies if shard is None else [s for s in scan.studies if shard.contains(s.study_uid)]
    if shard is not None:
        echo(f"shard {shard}: {len(studies)} of the {len(scan.studies)} studies")
    out.mkdir(parents=True, exist_ok=True)
    summary = InferSummary(out=out, backend=pipeline.description, skipped_files=len(scan.skipped), shard=shard)
    with ShardLock(out, shard) if shard is not None else nullcontext():
        done = _done_studies(studies, out, pipeline.grader, echo) if skip_done else {}
        todo = [s for s in studies if str(s.study_id) not in done]
        for study in todo:
            for leftover in remove_partial_outputs(out, str(study.study_id)):
                log.info("removed %s, left by an interrupted run", leftover)
        per_study, results = _grade(pipeline, todo, out, summary, overlays=overlays, heatmaps=heatmaps,
                                    progress=progress, prefetch=prefetch)
        for sid, (report, result) in done.items():
            summary.skipped_done.append(sid)
            results[sid] = result
            per_study[sid] = {"ok": True, "done_before": str(report)}
        ordered = [results[str(s.study_id)] for s in studies if str(s.study_id) in results]
        if shard is None and ordered:
            summary.csv_path = out / "submission.csv"
            write_submission_csv(ordered, summary.csv_path)
        summary.seconds = time.perf_counter() - start
        doc = {
            "input": str(path), "model": str(model), "backend": summary.backend, "grader": pipeline.grader,
            "seconds": summary.seconds, "succeeded": summary.succeeded, "skipped_done": summary.skipped_done,
            "failed": summary.failed, "studies": per_study,
            "skipped_files": [{"path": str(s.path), "reason": s.reason} for s in scan.skipped],
        }
        if shard is None:
            tmp = out / "summary.json.tmp"
            tmp.write_text(json.dumps(doc, indent=2))
            os.replace(tmp, out / "summary.json")
            return summary
        status = {sid: "graded" for sid in summary.succeeded}
        status.update({sid: "done" for sid in summary.skipped_done})
        doc["studies"] = [
            dict({"study_id": str(s.study_id), "study_uid": s.study_uid, "status": status.get(str(s.study_id), "failed")},
                 **({"error": summary.failed[str(s.study_id)]} if str(s.study_id) in summary.failed else {}))
            for s in studies]
        doc["archive"] = {"studies": len(scan.studies), "digest": archive_digest(s.study_uid for s in scan.studies)}
        summary.shard_summary = write_shard_summary(out, doc, shard)
    if not merge:
        return summary
    if not shard_set_complete(out, shard):
        waiting = [f"{k}/{shard.count}" for k in range(shard.count)
                   if not summary_path(out, Shard(k, shard.count)).is_file()]
        summary.merge_note = (f"not merged yet: shards {', '.join(waiting)} have not finished; the last one merges "
                              f"(or run `lumbar-edge merge {out}`)")
        return summary
    try:
        summary.merged = merge_shards([out])
        summary.csv_path = summary.merged.csv_path
    except LumbarEdgeError as exc:
        # This shard's own work is done and recorded; the merge can be repeated once fixed.
        summary.merge_note = f"not merged: {exc}"
    return summary


def _done_studies(studies, out: Path, grader: Dict[str, str], echo) -> Dict[str, tuple]:
    """{study_id: (report, result)} of the studies whose complete report by ``grader`` is in
    ``out``, each echoed as skipped; raises InputError for a report by another grader."""
    from .shards import read_done_report

    done = {}
    for study in studies:
        sid = str(study.study_id)
        report, result = read_done_report(out, sid, study.study_uid, grader)
        if report is not None:
            done[sid] = (report, result)
            echo(f"skipped (done): study {sid}: {report}")
        elif result != "no report":
            echo(f"graded again: study {sid}: {result}")
    return done


def _grade(pipeline, studies, out: Path, summary: InferSummary, *, overlays: bool, heatmaps: bool, progress: bool,
           prefetch: int) -> Tuple[Dict[str, dict], Dict[str, object]]:
    """Grade ``studies`` and write their outputs; record each in ``summary``. Returns the
    per-study summary entries and {study_id: result} of the studies written."""
    results: Dict[str, object] = {}
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
        results[sid] = result
        summary.succeeded.append(sid)
        per_study[sid] = {"ok": True, "warnings": result.warnings, "timings_s": result.timings}

    # Overlapped, one writer thread writes a study's reports and overlays while the engine runs
    # the next study; at most one study waits for it, so memory stays bounded and the order of
    # the summary is the order of the studies.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lumbar-edge-writer") if prefetch > 0 else None
    waiting = None
    try:
        with pipeline, Progress(len(studies), "inferring studies", enabled=progress) as bar:
            for study, result in pipeline.run(studies, prefetch=prefetch):
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
    return per_study, results
