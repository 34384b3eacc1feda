"""Markdown for benchmarks/RESULTS.md from a results folder (``bench.json``, ``end_to_end.json``,
``scaling.json``, as benchmarks/gpu_suite.sh writes them): machine, versions, command, tables.

Usage: ``python -m lumbar_edge.benchmarks.results_md RESULTS_DIR [--command TEXT] > RESULTS.md``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence


def _md(header: Sequence[str], rows: Sequence[Sequence[object]]) -> List[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def render(folder: Path, command: str = "") -> str:
    def load(name):
        path = folder / name
        return json.loads(path.read_text()) if path.exists() else None

    bench, e2e, scaling = load("bench.json"), load("end_to_end.json"), load("scaling.json")
    machine = next((d["machine"] for d in (bench, e2e, scaling) if d), {})
    out = ["## " + (machine.get("gpu") or "no GPU") + f", {machine.get('processor')} ({machine.get('cpus')} CPUs)", ""]
    out.append("Versions: " + ", ".join(f"{k} {machine.get(k)}" for k in
                                        ("python", "lumbar_edge", "numpy", "pydicom", "onnxruntime", "torch", "tensorrt")))
    if command:
        out += ["", f"Command: `{command}`"]
    if bench:
        out += ["", "### lumbar-edge bench (study in, report out)", ""]
        rows = []
        for r in bench["rows"]:
            cfg = f"{r['backend']}/{r['precision']} b{r['batch']}" if r.get("batch") else r["backend"]
            if r["status"] != "ok":
                rows.append([cfg, f"{r['status']}: {r['reason']}", "", "", "", ""])
                continue
            st = r["stages"]
            split = ", ".join(f"{k} {st[k]['p50_s'] * 1e3:.0f}" for k in ("scan", "decode_pixels", "preprocess", "h2d",
                                                                          "engine", "decode", "d2h", "report")
                              if "na" not in st[k])
            gpu = r["memory"]["gpu_peak_bytes"]
            rows.append([cfg, f"{r['latency_s']['p50'] * 1e3:.0f} / {r['latency_s']['p90'] * 1e3:.0f} / "
                              f"{r['latency_s']['p99'] * 1e3:.0f}", f"{r['throughput']['slices_per_s']:.1f}",
                         f"{r['throughput']['studies_per_s']:.2f}",
                         f"{r['memory']['host_peak_bytes'] / 2**20:.0f} / {'n/a' if gpu is None else f'{gpu / 2**20:.0f}'}",
                         split])
        out += _md(["backend/precision batch", "p50/p90/p99 ms", "slices/s", "studies/s", "host/GPU MiB",
                    "stage p50 ms"], rows)
    if e2e:
        out += ["", f"### End to end against the baselines (median of {e2e['repeats']}, interleaved)", ""]
        out += _md(["contender", "median ms", "what"],
                   [[c["name"], f"{c['median_s'] * 1e3:.0f}" if "median_s" in c else "n/a", c.get("label") if "median_s" in c
                     else c["na"]] for c in e2e["contenders"]])
        out += [""] + _md(["ratio", "value", "target"],
                          [[r["ratio"], f"{r['value']:.2f}x" if r["value"] else "n/a",
                            f">= {r['target']:g}x ({'met' if r['meets_target'] else 'not met'})" if r["target"] and r["value"]
                            else (f">= {r['target']:g}x" if r["target"] else "")] for r in e2e["ratios"]])
    if scaling:
        out += ["", f"### Scaling ({scaling['backend']}, {scaling['precision'] or 'default precision'})", ""]
        out += _md(["sagittal + sagittal / axial slices", "s per study"],
                   [[f"{r['sagittal_slices']}+{r['sagittal_slices']}/{r['axial_slices']}", f"{r['median_s']:.2f}"]
                    for r in scaling["slices"]])
        # Process CPU time of the sequential run: how busy the host was (an accelerator's time is
        # not in it), so the reader sees whether the overlap had anything left to fill.
        out += [""] + _md(["studies in the root", "sequential studies/s", "overlapped studies/s", "overlap speedup",
                           "host cores busy, sequential"],
                          [[r["studies"], f"{r['sequential_studies_per_s']:.3f}", f"{r['overlapped_studies_per_s']:.3f}",
                            f"{r['overlap_speedup']:.2f}x",
                            f"{r['sequential_cores_busy']:.2f} of {r['cores']}" if "cores" in r else "n/a"]
                           for r in scaling["roots"]])
    return "\n".join(out) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--command", default="")
    args = parser.parse_args(argv)
    sys.stdout.write(render(args.folder, args.command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
