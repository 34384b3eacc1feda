"""Helpers shared by the benchmarks: timing, machine description, tables and JSON output."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, Hashable, List, Mapping, Optional, Union



def median_ms(fn: Callable[[], object], iters: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def interleaved_runs(engines: Mapping[Hashable, object], images, warmup: int, iters: int) -> Dict[Hashable, List[float]]:
    """Seconds of ``engine.infer(images)`` for every active engine of ``engines``: ``warmup``
    untimed runs each, then ``iters`` rounds of one timed run of each engine in turn, so that on a
    shared machine every side of a ratio sees the same background load."""
    for engine in engines.values():
        for _ in range(warmup):
            engine.infer(images)
    times: Dict[Hashable, List[float]] = {key: [] for key in engines}
    for _ in range(iters):
        for key, engine in engines.items():
            t0 = time.perf_counter()
            engine.infer(images)
            times[key].append(time.perf_counter() - t0)
    return times


def timed(fn: Callable[[], object]) -> "tuple[float, object]":
    """``(seconds, result)`` of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def write_json(path: Optional[Union[str, Path]], doc: Dict[str, object]) -> None:
    """Write ``doc`` as indented JSON to ``path`` (nothing when ``path`` is None)."""
    if path:
        Path(path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def ratio(baseline_s: Optional[float], ours_s: Optional[float]) -> Optional[float]:
    """How many times faster ``ours`` is than ``baseline`` (None when either is missing)."""
    if not baseline_s or not ours_s:
        return None
    return baseline_s / ours_s


def fmt_ratio(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}x"

