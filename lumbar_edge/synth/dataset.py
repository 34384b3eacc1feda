"""``synthesize``: write a whole synthetic dataset in the RSNA 2024 layout.

Layout written under ``out_dir``::

    train_images/{study_id}/{series_id}/{instance_number}.dcm
    train.csv                         study_id + the 25 label columns ('' = unlabelled)
    train_label_coordinates.csv       study_id, series_id, instance_number, condition, level, x, y
    train_series_descriptions.csv     study_id, series_id, series_description
    synth_truth.json                  3D label points (patient mm), grades, sizes, options

Studies are rendered in a process pool; each is a pure function of ``(seed, index, options)``,
so the result does not depend on the number of workers. Every file is written under a temporary
name and renamed, and the CSVs and truth file come last: a folder without ``train.csv`` is an
interrupted run.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import InputError
from ..labels import LABEL_COLUMNS, SEVERITIES
from ..progress import Progress
from .dicom_io import write_atomic, write_study
from .options import SynthOptions
from .plan import allocate_ids
from .study import render_study

TRUTH_FILE = "synth_truth.json"
TRUTH_FORMAT = "lumbar-edge-synth-truth"
TRUTH_VERSION = 1
COORDINATE_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
DESCRIPTION_COLUMNS = ("study_id", "series_id", "series_description")


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize` wrote."""

    out_dir: Path
    seed: int
    n_studies: int
    n_series: int
    n_files: int
    n_bytes: int
    seconds: float
    label_counts: Dict[str, int]
    unlabelled: int
    stir_series: int
    study_ids: Tuple[int, ...]
    truth_path: Path
    options: SynthOptions = field(repr=False, default_factory=SynthOptions)
    #: How many studies have each variant value ({field: {value: count}}), see synth.variants.
    variants: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def describe(self) -> str:
        """A few lines for people: where, how much, and the label distribution."""
        total = sum(self.label_counts.values()) or 1
        dist = ", ".join(f"{name} {self.label_counts.get(name, 0)} ({100.0 * self.label_counts.get(name, 0) / total:.0f}%)"
                         for name in SEVERITIES)
        return "\n".join([
            f"wrote {self.n_studies} synthetic studies ({self.n_series} series, {self.n_files} DICOM files, "
            f"{self.n_bytes / 1e6:.1f} MB) to {self.out_dir} in {self.seconds:.1f} s (seed {self.seed})",
            f"labels: {dist}; unlabelled {self.unlabelled}",
            f"sagittal T2/STIR series: {self.n_studies - self.stir_series} T2, {self.stir_series} STIR; "
            f"3D ground truth in {self.truth_path.name}",
        ] + (["variants: " + "; ".join(f"{k.replace('_', ' ')} " + ", ".join(f"{v} {n}" for v, n in sorted(c.items()))
                                        for k, c in self.variants.items())]
             if any(len(c) > 1 or next(iter(c)) not in ("single", "False", "HFS") for c in self.variants.values())
             else []))


def _render_and_write(job: Tuple[int, int, SynthOptions, Tuple[int, Tuple[int, int, int]], str]) -> Dict[str, Any]:
    # Runs in a worker process: render one study, write its DICOM files, return its table rows.
    seed, index, options, ids, images_root = job
    study = render_study(seed, index, options, ids)
    files, size = write_study(study.plan, study.images, Path(images_root))
    plan = study.plan
    return {
        "index": index,
        "study_id": plan.study_id,
        "train_row": plan.train_row(),
        "coordinates": plan.coordinate_rows(),
        "descriptions": [{"study_id": str(plan.study_id), "series_id": str(sid), "series_description": desc}
                         for sid, desc in {s.series_id: s.description for s in plan.series}.items()],
        "truth": plan.truth(),
        "files": files,
        "bytes": size,
        "stir": plan.series_of("sagittal_t2").sequence == "STIR",
    }


def _csv_bytes(columns, rows) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"{out_dir} exists and is not a folder; give --out a new or empty folder")
        if any(out_dir.iterdir()):
            raise InputError(f"{out_dir} exists and is not empty; give --out a new or empty folder")


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def synthesize(out_dir, n_studies: int, seed: int = 0, workers: Optional[int] = None, progress: bool = False,
               options: Optional[SynthOptions] = None, **overrides: Any) -> SynthSummary:
    """Write ``n_studies`` synthetic studies made from ``seed`` into ``out_dir`` (RSNA layout).

    ``options`` (default :class:`SynthOptions`) with any field overridden by keyword, e.g.
    ``synthesize(d, 4, sagittal_matrix=(128,))``. ``workers`` processes render studies in
    parallel (default: the usable CPUs; 1 renders in this process); ``progress`` shows a bar on
    stderr. The same seed and options give byte-identical files whatever ``workers`` is.

    Raises :class:`InputError` when ``out_dir`` exists and is not an empty folder, for a study
    count below 1, bad workers or unknown/invalid options; ``OSError`` when writing fails.
    """
    out = Path(out_dir)
    if isinstance(n_studies, bool) or not isinstance(n_studies, int) or n_studies < 1:
        raise InputError(f"the number of studies must be a positive integer, got {n_studies!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"the seed must be an integer, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    opts = options if options is not None else SynthOptions()
    if overrides:
        opts = opts.replace(**overrides)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    images_root = out / "train_images"
    images_root.mkdir()

    start = time.perf_counter()
    ids = allocate_ids(seed, n_studies)
    jobs = [(seed, i, opts, ids[i], str(images_root)) for i in range(n_studies)]
    n_workers = min(workers or default_workers(), n_studies)
    results: List[Dict[str, Any]] = []
    with Progress(n_studies, "synth", enabled=progress) as bar:
        if n_workers == 1:
            for job in jobs:
                results.append(_render_and_write(job))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                futures = [pool.submit(_render_and_write, job) for job in jobs]
                try:
                    for fut in as_completed(futures):
                        results.append(fut.result())
                        bar.update()
                except BaseException:
                    # Stop queued studies at once (Ctrl-C or a failed study); the files already
                    # written are complete, and the missing CSVs mark the run as unfinished.
                    for fut in futures:
                        fut.cancel()
                    raise
    results.sort(key=lambda r: r["index"])

    # RSNA's tables are sorted by study id; keep that, deterministically.
    by_id = sorted(results, key=lambda r: r["study_id"])
    write_atomic(out / "train_series_descriptions.csv",
                 _csv_bytes(DESCRIPTION_COLUMNS, [row for r in by_id for row in r["descriptions"]]))
    write_atomic(out / "train_label_coordinates.csv",
                 _csv_bytes(COORDINATE_COLUMNS, [row for r in by_id for row in r["coordinates"]]))
    truth = {"format": TRUTH_FORMAT, "version": TRUTH_VERSION, "seed": seed, "n_studies": n_studies,
             "coordinates": "DICOM patient coordinates (LPS), millimetres",
             "options": opts.to_dict(), "studies": [r["truth"] for r in by_id]}
    truth_path = out / TRUTH_FILE
    write_atomic(truth_path, (json.dumps(truth, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    # train.csv last: its presence marks a complete dataset.
    write_atomic(out / "train.csv", _csv_bytes(("study_id",) + LABEL_COLUMNS, [r["train_row"] for r in by_id]))

    counts = {name: 0 for name in SEVERITIES}
    unlabelled = 0
    for r in results:
        for col in LABEL_COLUMNS:
            value = r["train_row"][col]
            if value:
                counts[value] += 1
            else:
                unlabelled += 1
    from .variants import Variant, describe_mix

    mix = describe_mix([Variant(**r["truth"]["variant"]) for r in results])
    return SynthSummary(out_dir=out, seed=seed, n_studies=n_studies,
                        n_series=sum(len(r["descriptions"]) for r in results),
                        n_files=sum(r["files"] for r in results), n_bytes=sum(r["bytes"] for r in results),
                        seconds=time.perf_counter() - start, label_counts=counts, unlabelled=unlabelled,
                        stir_series=sum(r["stir"] for r in results), study_ids=tuple(r["study_id"] for r in by_id),
                        truth_path=truth_path, options=opts, variants=mix)


def load_truth(root) -> Dict[str, Any]:
    """Read ``synth_truth.json`` of a dataset folder (or the file itself).

    Raises :class:`InputError` when it is missing or not a lumbar-edge synth truth file.
    """
    path = Path(root)
    if path.is_dir():
        path = path / TRUTH_FILE
    if not path.is_file():
        raise InputError(f"{path} not found: only datasets written by `lumbar-edge synth` have ground truth")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != TRUTH_FORMAT:
        raise InputError(f"{path} is not a lumbar-edge synth truth file")
    return data
