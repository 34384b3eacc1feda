"""Benchmark: ONNX Runtime on the CPU, FP32 (the named baseline) against INT8 (Q/DQ) and FP16.

Both models come from the same bundle and run in the same process on the same preprocessed
inputs: real slices of a synthetic study when ``--study`` is given (else a deterministic random
batch, said in the output). Each configuration gets warm-up runs, then the median of ``--iters``
timed runs; the figure is slices per second and the ratio against FP32 at the same batch size.

Usage: ``python -m lumbar_edge.benchmarks.ort_precision --model BUNDLE [--batch 1,8] [--study DIR] [--json FILE]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from lumbar_edge.benchmarks.common import interleaved_runs


def _inputs(bundle, study: Optional[Path], count: int) -> "tuple[np.ndarray, str]":
    pre = bundle.preprocess
    if study is None:
        rng = np.random.default_rng(0)
        return rng.standard_normal((count, pre.in_channels, pre.height, pre.width)).astype(np.float32), "random"
    from lumbar_edge.dicom import scan_path
    from lumbar_edge.preprocess import channel_indices, preprocess_stack

    scan = scan_path(study, progress=False)
    images = []
    for s in (se for st in scan.studies for se in st.series):
        for centre in range(len(s.instances)):
            idx = channel_indices(len(s.instances), centre, pre.in_channels)
            images.append(preprocess_stack([s.pixels(i) for i in idx], pre)[0])
            if len(images) == count:
                return np.stack(images), f"{count} slices of {study}"
    if not images:
        raise SystemExit(f"no slices found in {study}")
    while len(images) < count:
        images.extend(images[: count - len(images)])
    return np.stack(images), f"{count} slices of {study} (repeated)"


def run(bundle_path: Path, batches: Sequence[int], study: Optional[Path], warmup: int, iters: int,
        threads: Optional[int]) -> dict:
    from lumbar_edge.backends.ort import OrtEngine
    from lumbar_edge.bundle import Bundle

    bundle = Bundle.load(bundle_path)
    precisions = [p for p in ("fp32", "int8", "fp16") if p in bundle.precisions]
    data, source = _inputs(bundle, study, max(batches))
    rows: List[dict] = []
    engines = {p: OrtEngine(bundle.model_path(p), precision=p, threads=threads) for p in precisions}
    try:
        for engine in engines.values():
            engine.activate()
        for b in batches:
            x = np.ascontiguousarray(data[:b])
            times = interleaved_runs(engines, x, warmup, iters)
            for p in precisions:
                med = statistics.median(times[p])
                rows.append({"precision": p, "batch": b, "median_s": med, "slices_per_s": b / med})
    finally:
        for engine in engines.values():
            engine.deactivate()
    base = {r["batch"]: r["slices_per_s"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        r["vs_fp32"] = r["slices_per_s"] / base[r["batch"]]
    return {"benchmark": "ort_precision", "bundle": str(bundle_path), "inputs": source,
            "input_shape": list(data.shape[1:]), "baseline": "onnxruntime fp32 (CPU)", "rows": rows,
            "warmup": warmup, "iters": iters, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": __import__("onnxruntime").__version__, "processor": platform.processor() or platform.machine()}


def format_result(r: dict) -> str:
    lines = [f"ONNX Runtime {r['onnxruntime']} on the CPU ({r['cpu_count']} CPUs), input {r['input_shape']}, "
             f"{r['inputs']}; median of {r['iters']}",
             f"  {'precision':10s} {'batch':>5s} {'ms/batch':>10s} {'slices/s':>10s} {'vs fp32':>8s}"]
    for row in r["rows"]:
        lines.append(f"  {row['precision']:10s} {row['batch']:5d} {row['median_s'] * 1e3:10.1f} "
                     f"{row['slices_per_s']:10.2f} {row['vs_fp32']:7.2f}x")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="bundle folder with fp32 and int8 models")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--study", type=Path, help="a study folder whose slices are the inputs")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args.model, [int(b) for b in args.batch.split(",")], args.study, args.warmup, args.iters, args.threads)
    print(format_result(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
