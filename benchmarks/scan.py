"""Benchmark: header-first parallel folder scan against the naive full read.

Baseline (named ``naive-full-read``): what a user would write first, walk the folder and read every
file completely with ``pydicom.dcmread`` in one thread (pixel data bytes included, not decoded),
then group by study and series UID. lumbar-edge's ``scan_path`` reads headers only, in parallel, and
also classifies series and sorts slices. Both run over the same root in the same process, warm
page cache for both (each is run once untimed first), alternating, and the median of ``--repeats``
runs is compared.

Usage: ``python -m lumbar_edge.benchmarks.scan [--root DIR | --studies 20] [--repeats 3] [--json FILE]``
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence


def naive_full_read(root: Path) -> Dict[str, Dict[str, int]]:
    """Read every file fully with pydicom in one thread; group instance counts by study/series."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    groups: Dict[str, Dict[str, int]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                ds = pydicom.dcmread(os.path.join(dirpath, name))
            except (InvalidDicomError, OSError):
                continue  # the baseline skips what it cannot read, as the scan does
            series = groups.setdefault(str(ds.get("StudyInstanceUID", "")), {})
            uid = str(ds.get("SeriesInstanceUID", ""))
            series[uid] = series.get(uid, 0) + 1
    return groups


def lumbar_edge_scan(root: Path, workers: Optional[int] = None) -> Dict[str, Dict[str, int]]:
    """lumbar-edge's header-first parallel scan, reduced to the same study/series counts."""
    from lumbar_edge.dicom import scan_path

    # The per-file "skipped" warnings (the root's CSVs) would repeat on every timed pass; the
    # skip count is still in the result.
    dicom_log = logging.getLogger("lumbar_edge.dicom")
    level = dicom_log.level
    dicom_log.setLevel(logging.ERROR)
    try:
        result = scan_path(root, workers=workers, progress=False)
    finally:
        dicom_log.setLevel(level)
    return {s.study_uid: {se.series_uid: len(se.instances) for se in s.series} for s in result.studies}


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(root: Path, repeats: int, workers: Optional[int]) -> dict:
    """Time both scanners over ``root``; raises RuntimeError if they disagree on the grouping."""
    files = sum(len(f) for _d, _s, f in os.walk(root))
    naive_groups = naive_full_read(root)  # warm-up, and the reference grouping
    ours_groups = lumbar_edge_scan(root, workers)
    if naive_groups != ours_groups:
        raise RuntimeError("the scan and the baseline found different studies/series; the comparison is void")
    naive_t: List[float] = []
    ours_t: List[float] = []
    for _ in range(repeats):
        naive_t.append(_time(lambda: naive_full_read(root)))
        ours_t.append(_time(lambda: lumbar_edge_scan(root, workers)))
    naive_med, ours_med = statistics.median(naive_t), statistics.median(ours_t)
    return {
        "benchmark": "scan",
        "root": str(root),
        "files": files,
        "studies": len(ours_groups),
        "series": sum(len(v) for v in ours_groups.values()),
        "repeats": repeats,
        "baseline": "naive-full-read (pydicom.dcmread of every file, one thread)",
        "baseline_s": naive_med,
        "lumbar_edge_s": ours_med,
        "baseline_files_per_s": files / naive_med,
        "lumbar_edge_files_per_s": files / ours_med,
        "speedup": naive_med / ours_med,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def format_result(r: dict) -> str:
    return "\n".join([
        f"scan benchmark: {r['files']} files, {r['studies']} studies, {r['series']} series, median of {r['repeats']} "
        f"({r['cpu_count']} CPUs, Python {r['python']})",
        f"  {'baseline: naive full read, 1 thread':40s} {r['baseline_s']:8.3f} s  {r['baseline_files_per_s']:8.0f} files/s",
        f"  {'lumbar-edge scan (headers, parallel)':40s} {r['lumbar_edge_s']:8.3f} s  {r['lumbar_edge_files_per_s']:8.0f} files/s",
        f"  speedup: {r['speedup']:.2f}x",
    ])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="an existing study root (default: synthesize one)")
    parser.add_argument("--studies", type=int, default=20, help="studies to synthesize when --root is not given")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="le-scan-bench-") as tmp:
        root = args.root
        if root is None:
            from lumbar_edge.synth import synthesize

            root = Path(tmp) / "data"
            print(f"synthesizing {args.studies} studies into {root} ...", file=sys.stderr)
            synthesize(root, n_studies=args.studies, seed=args.seed, progress=True)
        result = run(root, args.repeats, args.workers)
    print(format_result(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
