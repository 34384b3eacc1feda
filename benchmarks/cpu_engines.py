"""Benchmark: the CPU engines on the same ONNX files, OpenVINO against ONNX Runtime (the baseline).

Every engine runs the bundle's own models (FP32, and the INT8 Q/DQ file the export calibrated
once for every runtime) in one process on the same preprocessed inputs: real slices of a study
when ``--study`` is given (else a deterministic random batch, said in the output). After warm-up,
the timed runs are interleaved, one run of each engine per round, so that both sides of a ratio
see the same background load; the figure is the median per batch. The ratio is ONNX Runtime's
time over OpenVINO's at the same precision and batch (the project's ORT session settings, i.e.
what ``--backend onnxruntime`` runs; OpenVINO with the latency hint, as ``bench`` and ``serve``).

Usage: ``python -m lumbar_edge.benchmarks.cpu_engines --model BUNDLE [--batch 1,8] [--study DIR]
[--iters 10] [--json FILE]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from lumbar_edge.benchmarks.common import fmt_ratio, interleaved_runs, ratio, write_json

#: The speed-up of OpenVINO INT8 over ONNX Runtime INT8 the OpenVINO backend is held to.
TARGET_INT8 = 1.3


def run(bundle_path: Path, batches: Sequence[int], study: Optional[Path], warmup: int = 3, iters: int = 10,
        threads: Optional[int] = None, hint: str = "latency") -> dict:
    """Time ``{onnxruntime, openvino} x {fp32, int8}`` at each batch; the result document. Raises
    :class:`~lumbar_edge.errors.MissingDependencyError` when openvino is not installed."""
    from lumbar_edge.backends.openvino import OpenVinoEngine
    from lumbar_edge.backends.ort import OrtEngine
    from lumbar_edge.bench import machine_info
    from lumbar_edge.bundle import Bundle

    from .ort_precision import _inputs

    OpenVinoEngine.require()
    bundle = Bundle.load(bundle_path)
    precisions = [p for p in ("fp32", "int8") if p in bundle.precisions]
    data, source = _inputs(bundle, study, max(batches))
    engines = {}
    for p in precisions:
        engines[("onnxruntime", p)] = OrtEngine(bundle.model_path(p), precision=p, threads=threads)
        engines[("openvino", p)] = OpenVinoEngine(bundle.model_path(p), precision=p, threads=threads, hint=hint)
    rows: List[dict] = []
    try:
        for engine in engines.values():
            engine.activate()
        for b in batches:
            x = np.ascontiguousarray(data[:b])
            times = interleaved_runs(engines, x, warmup, iters)
            for (backend, p), values in times.items():
                med = statistics.median(values)
                rows.append({"backend": backend, "precision": p, "batch": b, "median_s": med, "slices_per_s": b / med,
                             "runs_s": values})
        described = {f"{k[0]} {k[1]}": e.describe() for k, e in engines.items()}
    finally:
        for engine in engines.values():
            engine.deactivate()
    med = {(r["backend"], r["precision"], r["batch"]): r["median_s"] for r in rows}
    ratios = []
    for b in batches:
        for p in precisions:
            value = ratio(med[("onnxruntime", p, b)], med[("openvino", p, b)])
            target = TARGET_INT8 if p == "int8" else None
            ratios.append({"precision": p, "batch": b, "value": value, "target": target,
                           "meets_target": (value >= target) if target else None})
    return {"benchmark": "cpu_engines", "bundle": str(bundle_path), "inputs": source,
            "input_shape": list(data.shape[1:]), "baseline": "onnxruntime (project session settings), same ONNX file",
            "warmup": warmup, "iters": iters, "hint": hint, "rows": rows, "ratios": ratios, "engines": described,
            "machine": machine_info()}


def format_result(doc: dict) -> str:
    from lumbar_edge.bench import table

    m = doc["machine"]
    lines = [f"CPU engines on the same ONNX files: onnxruntime {m['onnxruntime']} vs openvino {m.get('openvino')}; "
             f"{m['processor']}, {m['cpus']} CPUs; input {doc['input_shape']}, {doc['inputs']}; "
             f"median of {doc['iters']} interleaved runs"]
    lines += table(["engine", "precision", "batch", "ms/batch", "slices/s"],
                   [[r["backend"], r["precision"], str(r["batch"]), f"{r['median_s'] * 1e3:.1f}",
                     f"{r['slices_per_s']:.1f}"] for r in doc["rows"]])
    lines.append("")
    lines += table(["onnxruntime time / openvino time", "value", "target"],
                   [[f"{r['precision']} batch {r['batch']}", fmt_ratio(r["value"]),
                     f">= {r['target']:g}x: {'met' if r['meets_target'] else 'NOT met'}" if r["target"] else ""]
                    for r in doc["ratios"]])
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="bundle folder with fp32 and int8 models")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--study", type=Path, help="a study folder whose slices are the inputs")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--hint", choices=("latency", "throughput"), default="latency")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    doc = run(args.model, [int(b) for b in args.batch.split(",")], args.study, args.warmup, args.iters,
              args.threads, args.hint)
    print(format_result(doc))
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
