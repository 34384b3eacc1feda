"""The closing table of ``benchmarks/gpu_suite.sh``: every row is a figure, or a named reason.

The suite runs each step isolated (its own process, its own time limit) and appends one line per
step to ``steps.tsv`` in the results folder: ``name <TAB> exit status <TAB> seconds <TAB> note``,
the note being ``skipped: why`` when the suite did not run the step. This module turns that file
and the steps' JSON results into rows ``(step, configuration, figure or reason, note)``: a step
that crashed, timed out, wrote nothing or was skipped gets one row saying so, with the last line
of its log; a step that wrote results gets one row per figure (a benchmark row that is n/a keeps
its own reason).

Usage: ``python -m lumbar_edge.benchmarks.suite_table RESULTS_DIR [--seconds S]``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

Row = Tuple[str, str, str, str]


def _pytest(data: dict) -> List[Row]:
    return [("pytest -m gpu", "", data["summary"], "")]


def _micro(data: dict) -> List[Row]:
    rows = []
    for r in data["rows"]:
        ratio = r.get("kernel_speedup", r.get("speedup_vs_eager_fp32"))
        label = "kernel faster by" if "kernel_speedup" in r else "vs eager FP32"
        rows.append((f"{r['bench']} b{r['batch']}", r["way"], f"{r['ms']} ms", f"{label} {ratio}x"))
    return rows


def _train(data: dict) -> List[Row]:
    return [("train_speed", r["name"], f"{r['ms_per_step']:.0f} ms/step",
             f"{r['images_per_s']:.1f} img/s" + (f", {r['speedup']:.2f}x" if r.get("speedup") else ""))
            for r in data["rows"]]


def _bench(data: dict) -> List[Row]:
    rows = []
    for r in data["rows"]:
        cfg = f"{r['backend']}/{r['precision']}" + (f" b{r['batch']}" if r.get("batch") else "")
        if r["status"] == "ok":
            rows.append(("bench", cfg, f"p50 {r['latency_s']['p50'] * 1e3:.0f} ms",
                         f"{r['throughput']['slices_per_s']:.0f} slices/s"
                         + (f"; {r['engine']['fp32_math']}" if r.get("engine", {}).get("fp32_math") else "")))
        else:
            rows.append(("bench", cfg, f"{r['status']}: {r.get('reason') or 'no reason given'}", ""))
    return rows


def _end_to_end(data: dict) -> List[Row]:
    rows = []
    for r in data["ratios"]:
        if r.get("value"):
            rows.append(("end_to_end", r["ratio"], f"{r['value']:.2f}x",
                         f"target {r['target']}x" if r.get("target") else ""))
        else:
            rows.append(("end_to_end", r["ratio"], f"n/a: {r.get('na') or 'no reason given'}", ""))
    return rows


def _scaling(data: dict) -> List[Row]:
    return [("scaling", f"{r['studies']} studies", f"{r['overlapped_studies_per_s']:.2f} studies/s",
             f"overlap {r['overlap_speedup']:.2f}x") for r in data["roots"]]


#: The suite's steps in order: (name in steps.tsv, result file, rows from its JSON).
STEPS: Sequence[Tuple[str, str, Callable[[dict], List[Row]]]] = (
    ("pytest_gpu", "pytest_gpu.json", _pytest),
    ("decode_bench", "decode_bench.json", _micro),
    ("backend_bench", "backend_bench.json", _micro),
    ("train_speed", "train_speed.json", _train),
    ("make_bundle", "", lambda data: []),
    ("bench", "bench.json", _bench),
    ("end_to_end", "end_to_end.json", _end_to_end),
    ("scaling", "scaling.json", _scaling),
)


def read_steps(folder: Path) -> Dict[str, Tuple[int, str, str]]:
    """``{name: (exit status, seconds, note)}`` from ``steps.tsv`` (the last line of a name wins)."""
    out: Dict[str, Tuple[int, str, str]] = {}
    path = folder / "steps.tsv"
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = (int(parts[1]), parts[2], parts[3] if len(parts) > 3 else "")
    return out


def _last_line(folder: Path, name: str) -> str:
    path = folder / f"{name}.log"
    if not path.exists():
        return "no log"
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:160] if lines else "empty log"


def rows(folder: Path) -> List[Row]:
    """The table's rows for the results in ``folder`` (see the module docstring)."""
    steps = read_steps(folder)
    out: List[Row] = []
    for name, result, render in STEPS:
        if name not in steps:
            out.append((name, "", "not run: the suite ended before this step", ""))
            continue
        rc, seconds, note = steps[name]
        if note.startswith("skipped"):
            out.append((name, "", note, ""))
            continue
        data: Optional[dict] = None
        error = ""
        if result and (folder / result).exists():
            try:
                data = json.loads((folder / result).read_text(encoding="utf-8"))
            except ValueError as exc:
                error = f"unreadable {result}: {exc}"
        if rc == 124:
            out.append((name, "", f"timed out after {seconds} s", _last_line(folder, name)))
            continue
        if rc != 0 and name != "pytest_gpu":
            out.append((name, "", f"failed (exit {rc}) after {seconds} s: {_last_line(folder, name)}", ""))
            continue
        if not result:
            out.append((name, "", f"done in {seconds} s", ""))
            continue
        if data is None:
            out.append((name, "", error or f"no {result} (exit {rc}): {_last_line(folder, name)}", ""))
            continue
        if "skipped" in data:
            out.append((name, "", f"skipped: {data['skipped']}", ""))
            continue
        try:
            made = render(data)
        except (KeyError, TypeError, ValueError) as exc:
            made = [(name, "", f"{result} has an unexpected layout ({type(exc).__name__}: {exc})", "")]
        out.extend(made or [(name, "", f"{result} holds no rows", "")])
        if name == "pytest_gpu" and rc != 0:
            out[-1] = out[-1][:3] + (f"exit {rc}",)
    return out


def render_table(table: Sequence[Row], seconds: str = "") -> str:
    """The rows as aligned text under a title."""
    widths = [max(len(str(r[i])) for r in table) for i in range(4)] if table else [0] * 4
    lines = [f"=== lumbar-edge GPU suite{f' ({seconds} s)' if seconds else ''} ==="]
    lines += ["  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in table]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--seconds", default="")
    args = parser.parse_args(argv)
    print(render_table(rows(Path(args.folder)), args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
