"""Benchmark: how lumbar-edge's time grows with slices per study and studies per root, and what
overlapping the CPU stages with the engine buys on a root of many studies.

1. **slices**: synthetic studies with ``n`` slices per sagittal series and ``2n`` axial slices
   (one study per size), ``Pipeline.run_study`` + report writing, median of ``--repeats``;
2. **studies per root**: ``run_infer`` (``lumbar-edge infer``: root scan, every study, reports,
   submission CSV) on roots of the first 1, 10, ... studies of one synthetic root, seconds per
   study and studies per second, sequential (``prefetch=0``) and overlapped (``prefetch=1``);
3. the largest root (``--studies``, default 50) is the overlap figure: both modes in the same
   run, alternating, the ratio of their throughputs; beside it the process' CPU time, and the
   ceiling it sets when the engine shares the CPU (cores x wall / CPU seconds of the sequential run).

The CPU INT8 model is used when the bundle has one (the CPU default), else FP32; ``--backend`` /
``--precision`` choose others (on a GPU machine: ``--backend auto``).

Usage: ``python -m lumbar_edge.benchmarks.scaling --model BUNDLE [--root DIR] [--studies 50]
[--sizes 1,10,50] [--slices 9,15,20,30] [--json FILE]``
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from lumbar_edge.benchmarks.common import timed, write_json


def _subset_root(root: Path, studies: List[Path], n: int, dest: Path) -> Path:
    """A root of the first ``n`` study folders of ``root``, hard-linked (or copied) into ``dest``."""
    import shutil

    dest.mkdir(parents=True)
    for folder in studies[:n]:
        target = dest / folder.relative_to(root)
        try:
            shutil.copytree(folder, target, copy_function=os.link)
        except OSError:
            shutil.copytree(folder, target)
    return dest


def slice_scaling(model: Path, counts: Sequence[int], backend: str, precision: Optional[str], repeats: int,
                  tmp: Path, overlays: bool = True) -> List[Dict[str, object]]:
    from lumbar_edge.infer import write_study_outputs
    from lumbar_edge.pipeline import Pipeline
    from lumbar_edge.synth import synthesize

    rows = []
    with Pipeline.load(model, backend=backend, precision=precision) as pipe:
        for n in counts:
            data = tmp / f"slices{n}"
            synthesize(data, n_studies=1, seed=100 + n, workers=1, sagittal_slices=(n, n), axial_slices=(2 * n, 2 * n))
            study = next(p for p in (data / "train_images").iterdir() if p.is_dir())
            run = lambda i: write_study_outputs(pipe.run_study(study), tmp / f"out-s{n}-{i}", overlays=overlays)  # noqa: E731
            run(-1)
            times = [timed(lambda: run(i))[0] for i in range(repeats)]
            med = statistics.median(times)
            rows.append({"sagittal_slices": n, "axial_slices": 2 * n, "files": 2 * n + 2 * n, "median_s": med,
                         "s_per_file": med / (4 * n)})
    return rows


def root_scaling(model: Path, root: Path, sizes: Sequence[int], backend: str, precision: Optional[str],
                 tmp: Path, passes: int = 1, overlays: bool = True) -> List[Dict[str, object]]:
    from lumbar_edge.dicom import scan_path
    from lumbar_edge.infer import run_infer
    from lumbar_edge.synth.dataset import default_workers

    studies = sorted({Path(s.series[0].instances[0].path).parent.parent for s in scan_path(root).studies})
    rows = []
    for n in sizes:
        sub = root if n >= len(studies) else _subset_root(root, studies, n, tmp / f"root{n}")
        n = min(n, len(studies))
        row: Dict[str, object] = {"studies": n}
        # Alternating, the sequential run first (``passes`` pairs for the largest root, one pair for
        # the others): both modes see the same warm page cache.
        for k, prefetch in enumerate((0, 1) * (passes if n == max(sizes) else 1)):
            cpu0 = time.process_time()
            seconds, summary = timed(lambda: run_infer(sub, model, tmp / f"out{n}-{k}", backend=backend,
                                                       precision=precision, progress=False, prefetch=prefetch, overlays=overlays,
                                                       echo=lambda *_: None))
            cpu = time.process_time() - cpu0
            if len(summary.succeeded) != n:
                raise RuntimeError(f"{len(summary.failed)} of {n} studies failed: {summary.failed}")
            mode = "sequential" if prefetch == 0 else "overlapped"
            row.setdefault(f"{mode}_s", []).append(seconds)
            row.setdefault(f"{mode}_cpu_s", []).append(cpu)
        for key in ("sequential_s", "overlapped_s", "sequential_cpu_s", "overlapped_cpu_s"):
            row[key] = statistics.median(row[key])
        # Overlap only fills idle cores: with C cores, a run that kept them all busy would take
        # cpu / C seconds, so C * wall / cpu of the sequential run caps what overlapping can give
        # when the engine runs on those same cores (ONNX Runtime). An accelerator's time is not
        # in the process' CPU time, so there the cap is higher.
        row["cores"] = default_workers()  # the CPUs this process may use
        row["sequential_cores_busy"] = row["sequential_cpu_s"] / row["sequential_s"]
        row["overlap_ceiling_cpu"] = row["cores"] * row["sequential_s"] / row["sequential_cpu_s"]
        row["sequential_studies_per_s"] = n / row["sequential_s"]
        row["overlapped_studies_per_s"] = n / row["overlapped_s"]
        row["overlap_speedup"] = row["sequential_s"] / row["overlapped_s"]
        rows.append(row)
    return rows


def format_result(doc: dict) -> str:
    from lumbar_edge.bench import table

    m = doc["machine"]
    lines = [f"scaling: {doc['backend']} ({doc['precision'] or 'default precision'}), reports "
             f"{'with' if doc.get('overlays', True) else 'without'} overlays; {m['processor']}, "
             f"{m['cpus']} CPUs, {m['gpu'] or 'no GPU'}", "", "time per study against its size (one study, median):"]
    lines += table(["sagittal/axial slices", "median s", "ms per file"],
                   [[f"{r['sagittal_slices']}+{r['sagittal_slices']}/{r['axial_slices']}", f"{r['median_s']:.2f}",
                     f"{r['s_per_file'] * 1e3:.0f}"] for r in doc["slices"]])
    lines += ["", "studies per root (lumbar-edge infer: scan, every study, reports, CSV):"]
    lines += table(["studies", "sequential s/study", "overlapped s/study", "sequential studies/s",
                    "overlapped studies/s", "overlap speedup"],
                   [[r["studies"], f"{r['sequential_s'] / r['studies']:.2f}", f"{r['overlapped_s'] / r['studies']:.2f}",
                     f"{r['sequential_studies_per_s']:.3f}", f"{r['overlapped_studies_per_s']:.3f}",
                     f"{r['overlap_speedup']:.2f}x"] for r in doc["roots"]])
    big = doc["roots"][-1] if doc["roots"] else None
    if big:
        lines.append(f"overlap on {big['studies']} studies: {big['overlap_speedup']:.2f}x the throughput of the "
                     f"stages run one after another (target >= 1.5x: {'met' if big['overlap_speedup'] >= 1.5 else 'NOT met'})")
        lines.append(f"the sequential run kept {big['sequential_cores_busy']:.2f} of {big['cores']} cores busy: with the engine "
                     f"on these cores, no overlap can beat {big['overlap_ceiling_cpu']:.2f}x here")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--root", type=Path, help="a root of synthetic studies (default: synthesize --studies)")
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--sizes", default="1,10,50", help="studies per root to time (the largest is the overlap figure)")
    parser.add_argument("--slices", default="9,15,20,30", help="sagittal slices per series (axial: twice as many)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--repeats", type=int, default=2, help="runs per size in the slices table")
    parser.add_argument("--passes", type=int, default=1, help="sequential/overlapped pairs on the largest root")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-overlays", action="store_true", help="JSON reports and CSV only (no PNG overlays)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from lumbar_edge.bench import machine_info
    from lumbar_edge.bundle import Bundle
    from lumbar_edge.synth import synthesize

    logging.getLogger("lumbar_edge").setLevel(logging.ERROR)  # the roots' CSVs are skipped files, every run
    precision = args.precision
    if precision is None and args.backend == "onnxruntime" and "int8" in Bundle.load(args.model).precisions:
        precision = "int8"
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    with tempfile.TemporaryDirectory(prefix="lumbar-edge-scaling-") as tmp:
        tmp_path = Path(tmp)
        root = args.root
        if root is None:
            root = tmp_path / "root"
            print(f"synthesizing {args.studies} studies ...", file=sys.stderr)
            synthesize(root, n_studies=args.studies, seed=args.seed, progress=True)
        root = Path(root) / "train_images" if (Path(root) / "train_images").is_dir() else Path(root)
        print("slices per study ...", file=sys.stderr)
        slices = slice_scaling(args.model, [int(s) for s in args.slices.split(",")], args.backend, precision,
                               args.repeats, tmp_path, not args.no_overlays)
        print("studies per root ...", file=sys.stderr)
        roots = root_scaling(args.model, root, sizes, args.backend, precision, tmp_path, args.passes, not args.no_overlays)
    doc = {"benchmark": "scaling", "bundle": str(args.model), "backend": args.backend, "precision": precision,
           "overlays": not args.no_overlays,
           "machine": machine_info(), "slices": slices, "roots": roots,
           "overlap": "infer with prefetch=1: the next study's scan, pixel decode and preprocessing in one "
                      "background thread and the previous study's reports in another while the engine runs "
                      "the current one"}
    print(format_result(doc))
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
