"""Stage timing for benchmarks: a small accumulator the pipeline's engine reports into.

Production code never creates one: :attr:`lumbar_edge.backends.base.Engine.timer` is None and
each stage costs one attribute test. ``lumbar-edge bench`` attaches a :class:`StageTimer` to the
engine, so the engine's own steps (``h2d``, ``engine``, ``decode``, ``d2h``) are timed where they
happen; GPU backends synchronise their stream at each stage boundary while a timer is attached.
"""
from __future__ import annotations

import time
from typing import Dict, Iterable, Sequence

import numpy as np

#: The stages of one study, in pipeline order: (key, label). ``other`` is what remains of the
#: study's wall time (series selection, aggregation, batching).
STAGES = (
    ("scan", "DICOM header scan"),
    ("decode_pixels", "pixel decode"),
    ("preprocess", "preprocessing"),
    ("h2d", "host-to-device"),
    ("engine", "engine"),
    ("decode", "decode (peaks)"),
    ("d2h", "device-to-host"),
    ("report", "report writing"),
    ("other", "other (selection, aggregation)"),
)
#: Stages that exist only where a batch crosses to an accelerator.
DEVICE_STAGES = ("h2d", "d2h")


class _Stage:
    __slots__ = ("timer", "name", "items", "t0")

    def __init__(self, timer: "StageTimer", name: str, items: int):
        self.timer, self.name, self.items = timer, name, items

    def __enter__(self) -> "_Stage":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.add(self.name, time.perf_counter() - self.t0, self.items)


class StageTimer:
    """Seconds (and items, e.g. slices) accumulated per stage name since the last :meth:`reset`."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self.items: Dict[str, int] = {}

    def stage(self, name: str, items: int = 0) -> _Stage:
        """A context manager adding its wall time (and ``items``) to stage ``name``."""
        return _Stage(self, name, items)

    def add(self, name: str, seconds: float, items: int = 0) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if items:
            self.items[name] = self.items.get(name, 0) + items

    def reset(self) -> None:
        self.seconds.clear()
        self.items.clear()


def percentiles(values: Sequence[float], qs: Iterable[float] = (50, 90, 99)) -> Dict[str, float]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` of ``values`` (linear interpolation, so they never
    decrease with q); plus ``mean``, ``min`` and ``max``."""
    arr = np.asarray(values, dtype=np.float64)
    out = {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(arr, list(qs)))}
    out.update(mean=float(arr.mean()), min=float(arr.min()), max=float(arr.max()))
    return out


__all__ = ["DEVICE_STAGES", "STAGES", "StageTimer", "percentiles"]
