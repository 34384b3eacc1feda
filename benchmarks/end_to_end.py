"""Benchmark: lumbar-edge end to end (study folder in, report out) against the named baselines.

Contenders, all in one process on the same study, interleaved (each repeat runs every contender
once, in a rotated order) after one untimed run each; the figure is the median of ``--repeats``:

* ``lumbar-edge cpu int8``: ``Pipeline`` on ONNX Runtime with the bundle's INT8 model;
* ``lumbar-edge cpu fp32``: the same forced to FP32 (an ablation: the pipeline alone);
* ``lumbar-edge openvino int8`` / ``fp32``: ``Pipeline`` on OpenVINO (CPU, latency hint) with the
  same ONNX files, where the ``openvino`` extra is installed;
* ``lumbar-edge gpu``: ``Pipeline.load(backend="auto")`` when a GPU backend runs here
  (TensorRT, else torch CUDA FP16 with CUDA graphs and the decode kernel);
* baselines (a), (b), (c) of :mod:`lumbar_edge.benchmarks.baselines`.

Baseline (c), "ONNX Runtime FP32 on the CPU", is read as the job a user would write with ONNX
Runtime: the naive I/O of (a) with an FP32 ONNX Runtime session at its default settings. The
ablation row shows how much of lumbar-edge's lead is its pipeline and how much INT8.

Every contender writes the same outputs (the JSON report and, unless ``--no-overlays``, the PNG
overlays) with the same writers, and its most likely grades are compared with lumbar-edge's.

Usage: ``python -m lumbar_edge.benchmarks.end_to_end --model BUNDLE [--study DIR] [--repeats 3]
[--batch 8] [--json FILE]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from lumbar_edge.benchmarks.common import fmt_ratio, ratio, timed, write_json

#: Which contender each headline ratio divides (baseline, lumbar-edge), and the target the issue sets.
RATIOS = (
    ("(a) naive PyTorch eager FP32 / lumbar-edge gpu", "a", "lumbar-edge gpu", 5.0),
    ("(b) naive PyTorch eager FP16 / lumbar-edge gpu", "b", "lumbar-edge gpu", None),
    ("(c) naive ONNX Runtime FP32 / lumbar-edge cpu int8", "c", "lumbar-edge cpu int8", 2.0),
    ("(c) naive ONNX Runtime FP32 / lumbar-edge cpu fp32 (pipeline only)", "c", "lumbar-edge cpu fp32", None),
    ("(c) naive ONNX Runtime FP32 / lumbar-edge openvino int8", "c", "lumbar-edge openvino int8", 3.0),
    ("lumbar-edge cpu int8 (onnxruntime) / lumbar-edge openvino int8", "lumbar-edge cpu int8",
     "lumbar-edge openvino int8", None),
    ("(a) naive PyTorch eager FP32 / lumbar-edge cpu int8", "a", "lumbar-edge cpu int8", None),
)


def _grades(result) -> List[int]:
    return [max(range(3), key=lambda i: f.probabilities[i]) for f in result.findings]


def contenders(bundle_path: Path, batch: int, threads: Optional[int]) -> Dict[str, Dict[str, object]]:
    """``{name: {"label", "run" (study -> StudyResult) | "na" (reason), "close"}}``."""
    from lumbar_edge.backends.openvino import OpenVinoEngine
    from lumbar_edge.backends.ort import OrtEngine
    from lumbar_edge.bundle import Bundle
    from lumbar_edge.errors import LumbarEdgeError
    from lumbar_edge.pipeline import Pipeline

    from .baselines import BASELINES, baseline_engine, baseline_unavailable, naive_load_study

    bundle = Bundle.load(bundle_path)
    out: Dict[str, Dict[str, object]] = {}
    # The CPU engines on the bundle's ONNX files; "cpu" is ONNX Runtime, the project's CPU default.
    cpu_engines = (("cpu", "onnxruntime", OrtEngine, {}, "CPU"),
                   ("openvino", "openvino", OpenVinoEngine, {"hint": "latency"}, "CPU, latency hint"))
    for key, runtime, engine_cls, options, where in cpu_engines:
        for precision in ("int8", "fp32"):
            name = f"lumbar-edge {key} {precision}"
            why = engine_cls.unavailable_reason()
            if why is None and precision not in bundle.precisions:
                why = f"the bundle has no {precision} ONNX model"
            if why is not None:
                out[name] = {"label": name, "na": why}
                continue
            engine = engine_cls.from_bundle(bundle, precision, threads=threads, **options)
            pipe = Pipeline(bundle, engine, batch_size=batch)
            out[name] = {"label": f"lumbar-edge, {runtime} {precision} ({where})", "run": pipe.run_study,
                         "close": pipe.close}
    try:
        # auto over the GPU backends: one that cannot run this bundle (no TensorRT engine for this
        # GPU, e.g. a random-weights bundle) is passed over for the next.
        pipe = Pipeline.load(bundle_path, backend="auto", available_order=("tensorrt", "torch"), batch_size=batch)
        why = pipe.backend_reason
        out["lumbar-edge gpu"] = {"label": f"lumbar-edge, {pipe.engine.name} {pipe.engine.precision} ({why})",
                                  "run": pipe.run_study, "close": pipe.close}
    except LumbarEdgeError as exc:
        out["lumbar-edge gpu"] = {"label": "lumbar-edge on a GPU backend", "na": f"no GPU backend: {exc}"}
    for key, (label, _backend, _precision) in BASELINES.items():
        reason = baseline_unavailable(key, bundle)
        if reason:
            out[key] = {"label": f"({key}) {label}", "na": reason}
            continue
        pipe = Pipeline(bundle, baseline_engine(key, bundle), batch_size=batch)

        def run(study, pipe=pipe):
            return pipe.run_study(naive_load_study(Path(study)))

        out[key] = {"label": f"({key}) {label}", "run": run, "close": pipe.close}
    return out


def run(bundle_path: Path, study: Path, repeats: int = 3, batch: int = 8, overlays: bool = True,
        threads: Optional[int] = None, progress: bool = True) -> dict:
    """Time every contender on ``study``; the result document (see the module docstring)."""
    from lumbar_edge.bench import machine_info
    from lumbar_edge.bench.runner import _study_info
    from lumbar_edge.infer import write_study_outputs
    from lumbar_edge.progress import Progress

    who = contenders(bundle_path, batch, threads)
    live = [n for n, c in who.items() if "run" in c]
    times: Dict[str, List[float]] = {n: [] for n in live}
    grades: Dict[str, List[int]] = {}
    with tempfile.TemporaryDirectory(prefix="lumbar-edge-e2e-") as tmp:

        def job(name: str, i: int) -> Callable[[], object]:
            def go():
                result = who[name]["run"](study)
                write_study_outputs(result, Path(tmp) / f"{name.replace(' ', '_')}-{i}", overlays=overlays)
                return result
            return go

        try:
            with Progress((repeats + 1) * len(live), "end-to-end benchmark", enabled=progress) as bar:
                for name in live:  # untimed: opens each engine, warms caches
                    grades[name] = _grades(job(name, -1)())
                    bar.update()
                for r in range(repeats):
                    order = live[r % len(live):] + live[:r % len(live)]
                    for name in order:
                        seconds, _ = timed(job(name, r))
                        times[name].append(seconds)
                        bar.set_postfix(name)
                        bar.update()
        finally:
            for c in who.values():
                if "close" in c:
                    c["close"]()
    med = {n: statistics.median(t) for n, t in times.items()}
    reference = grades.get("lumbar-edge cpu fp32") or grades.get("lumbar-edge cpu int8")
    rows = []
    for name, c in who.items():
        row: Dict[str, object] = {"name": name, "label": c["label"]}
        if name in med:
            row.update(median_s=med[name], runs_s=times[name],
                       same_grades_as_lumbar_edge_fp32=(sum(a == b for a, b in zip(grades[name], reference)) / len(reference)
                                                        if reference else None))
        else:
            row["na"] = c["na"]
        rows.append(row)
    ratios = []
    for label, base, ours, target in RATIOS:
        value = ratio(med.get(base), med.get(ours))
        why = None
        if value is None:
            why = "; ".join(str(who[n]["na"]) for n in (base, ours) if "na" in who.get(n, {}))
        ratios.append({"ratio": label, "value": value, "target": target, "na": why,
                       "meets_target": (value >= target) if (value is not None and target) else None})
    return {"benchmark": "end_to_end", "bundle": str(bundle_path), "study": _study_info(study), "repeats": repeats,
            "batch": batch, "overlays": overlays, "machine": machine_info(), "contenders": rows, "ratios": ratios,
            "baseline_c_reading": "the naive I/O of (a) with an FP32 ONNX Runtime session at its default settings"}


def format_result(doc: dict) -> str:
    from lumbar_edge.bench import table

    st, m = doc["study"], doc["machine"]
    series = ", ".join(f"{s['kind']} {s['slices']}" for s in st["series"])
    lines = [f"end to end (study in, report out): {st['files']} files ({series}); median of {doc['repeats']}, "
             f"interleaved; batch {doc['batch']}; {m['processor']}, {m['cpus']} CPUs, {m['gpu'] or 'no GPU'}"]
    rows, notes = [], []
    for r in doc["contenders"]:
        if "na" in r:
            rows.append([r["name"], "n/a", ""])
            notes.append(f"  {r['name']}: n/a ({r['na']})")
        else:
            rows.append([r["name"], f"{r['median_s'] * 1e3:.0f}", f"{r['same_grades_as_lumbar_edge_fp32'] * 100:.0f}%"])
            notes.append(f"  {r['name']}: {r['label']}")
    lines += table(["contender", "median ms", "same grades"], rows) + notes + [""]
    lines += table(["ratio (baseline time / lumbar-edge time)", "value", "target"],
                   [[r["ratio"], fmt_ratio(r["value"]),
                     (f">= {r['target']:g}x: {'met' if r['meets_target'] else 'NOT met'}" if r["value"] is not None
                      else f">= {r['target']:g}x: awaits a GPU" if "gpu" in r["ratio"] else f">= {r['target']:g}x")
                     if r["target"] else ""] for r in doc["ratios"]])
    lines.append(f"baseline (c) is read as: {doc['baseline_c_reading']}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="bundle folder (FP32 + INT8 ONNX, model.pt)")
    parser.add_argument("--study", type=Path, help="a folder holding one study (default: synthesize one of realistic size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-overlays", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from lumbar_edge.bench import synth_study

    with tempfile.TemporaryDirectory(prefix="lumbar-edge-e2e-study-") as tmp:
        study = args.study or synth_study(Path(tmp) / "study", seed=args.seed)
        doc = run(args.model, study, args.repeats, args.batch, not args.no_overlays, args.threads, not args.quiet)
    print(format_result(doc))
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
