"""Implicit shapes of the phantom, in the spine's own curved coordinates (mm).

Every shape lives in "spine coordinates" ``(x, s, d)``: ``x`` lateral (+ = patient's left),
``s`` arc length along the lordotic curve of the vertebral bodies (+ = head), ``d`` distance
behind that curve (+ = posterior). A shape gives an approximate signed distance (negative
inside) for arrays of points, and a bounding box so the painter only evaluates it where it can
be. Shapes are small frozen dataclasses so studies can be planned in one process and rendered
in another.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

Box = Tuple[float, float, float, float, float, float]  # x0, x1, s0, s1, d0, d1


def _pow(a: np.ndarray, p: float) -> np.ndarray:
    # Integer exponents are much faster than the generic power.
    if p == 2.0:
        return a * a
    if p == 4.0:
        b = a * a
        return b * b
    return np.power(a, p)


@dataclass(frozen=True)
class SuperEllipsoid:
    """A superellipsoid with per-side radii, optionally tilted in the s-d (sagittal) plane.

    Cross-section in x-d has exponent ``p`` (2 = ellipse, larger = boxier); along ``s`` the
    exponent ``q`` (large = flat ends, like vertebral endplates). ``tilt`` rotates the shape
    about its centre from +s toward +d (radians).
    """

    cx: float
    cs: float
    cd: float
    rx_neg: float
    rx_pos: float
    rs: float
    rd_neg: float
    rd_pos: float
    p: float = 2.0
    q: float = 2.0
    tilt: float = 0.0

    @classmethod
    def make(cls, centre, radii, p: float = 2.0, q: float = 2.0, tilt: float = 0.0,
             rd_pos: float = None, rx_pos: float = None) -> "SuperEllipsoid":
        """Symmetric form: ``radii = (rx, rs, rd)``; ``rd_pos``/``rx_pos`` override one side."""
        rx, rs, rd = (float(v) for v in radii)
        return cls(float(centre[0]), float(centre[1]), float(centre[2]), rx,
                   rx if rx_pos is None else float(rx_pos), rs, rd,
                   rd if rd_pos is None else float(rd_pos), float(p), float(q), float(tilt))

    @property
    def bbox(self) -> Box:
        if self.tilt:
            # A tilted shape stays inside the circle of its largest s-d radius.
            r = max(self.rs, self.rd_neg, self.rd_pos)
            s0, s1, d0, d1 = self.cs - r, self.cs + r, self.cd - r, self.cd + r
        else:
            s0, s1 = self.cs - self.rs, self.cs + self.rs
            d0, d1 = self.cd - self.rd_neg, self.cd + self.rd_pos
        return (self.cx - self.rx_neg, self.cx + self.rx_pos, s0, s1, d0, d1)

    def distance(self, x: np.ndarray, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        ds = s - self.cs
        dd = d - self.cd
        if self.tilt:
            c, sn = np.cos(self.tilt), np.sin(self.tilt)
            ds, dd = c * ds + sn * dd, -sn * ds + c * dd
        dx = x - self.cx
        u = np.abs(dx) / np.where(dx < 0, self.rx_neg, self.rx_pos)
        v = np.abs(dd) / np.where(dd < 0, self.rd_neg, self.rd_pos)
        w = np.abs(ds) / self.rs
        cross = _pow(u, self.p) + _pow(v, self.p)
        if self.q != self.p:
            cross = np.power(cross, self.q / self.p)
        level = np.power(cross + _pow(w, self.q), 1.0 / self.q)
        rmin = min(self.rx_neg, self.rx_pos, self.rs, self.rd_neg, self.rd_pos)
        return (level - 1.0) * rmin


@dataclass(frozen=True)
class Capsule:
    """A tube around the segment ``a``-``b`` (points ``(x, s, d)``), radius ``ra`` to ``rb``."""

    a: Tuple[float, float, float]
    b: Tuple[float, float, float]
    ra: float
    rb: float

    @property
    def bbox(self) -> Box:
        r = max(self.ra, self.rb)
        lo = np.minimum(self.a, self.b) - r
        hi = np.maximum(self.a, self.b) + r
        return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]), float(lo[2]), float(hi[2]))

    def distance(self, x: np.ndarray, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        a = np.asarray(self.a, dtype=np.float64)
        ab = np.asarray(self.b, dtype=np.float64) - a
        px, ps, pd = x - a[0], s - a[1], d - a[2]
        denom = float(ab @ ab) or 1e-9
        t = np.clip((px * ab[0] + ps * ab[1] + pd * ab[2]) / denom, 0.0, 1.0)
        ex, es, ed = px - t * ab[0], ps - t * ab[1], pd - t * ab[2]
        return np.sqrt(ex * ex + es * es + ed * ed) - (self.ra + t * (self.rb - self.ra))


@dataclass(frozen=True)
class ProfileTube:
    """A tube along ``s`` whose cross-section (a superellipse in x-d) varies with ``s``.

    ``knots`` are increasing s positions; at each, ``xc`` the centre, ``w_neg``/``w_pos`` the
    half-widths towards -x/+x, ``d_lo``/``d_hi`` the anterior and posterior bounds. Values in
    between are linearly interpolated; the tube ends at the first and last knot. Used for the
    canal, the thecal sac (whose narrowing follows the stenosis grades), muscles and the body.
    """

    knots: Tuple[float, ...]
    xc: Tuple[float, ...]
    w_neg: Tuple[float, ...]
    w_pos: Tuple[float, ...]
    d_lo: Tuple[float, ...]
    d_hi: Tuple[float, ...]
    p: float = 2.0

    @property
    def bbox(self) -> Box:
        xc, wn, wp = (np.asarray(v) for v in (self.xc, self.w_neg, self.w_pos))
        return (float(np.min(xc - wn)), float(np.max(xc + wp)), float(self.knots[0]), float(self.knots[-1]),
                float(np.min(self.d_lo)), float(np.max(self.d_hi)))

    def __post_init__(self) -> None:
        k = np.asarray(self.knots, dtype=np.float64)
        table = np.asarray([self.xc, self.w_neg, self.w_pos, self.d_lo, self.d_hi], dtype=np.float64)
        steps = np.diff(k)
        uniform = bool(k.size > 1 and np.allclose(steps, steps[0]))
        constant = bool(np.all(table == table[:, :1]))
        object.__setattr__(self, "_k", k)
        object.__setattr__(self, "_rows", np.ascontiguousarray(table.T))
        object.__setattr__(self, "_uniform", uniform)
        object.__setattr__(self, "_constant", constant)

    def _profiles(self, s: np.ndarray):
        k, rows = self._k, self._rows
        if self._constant:
            return rows[0]
        if self._uniform:
            pos = np.clip((s - k[0]) / (k[1] - k[0]), 0.0, k.size - 1.000001)
            i = pos.astype(np.intp)
            t = pos - i
        else:
            i = np.clip(np.searchsorted(k, s) - 1, 0, k.size - 2)
            t = np.clip((s - k[i]) / (k[i + 1] - k[i]), 0.0, 1.0)
        lo = rows[i]
        vals = lo + t[..., None] * (rows[i + 1] - lo)
        return np.moveaxis(vals, -1, 0)

    def distance(self, x: np.ndarray, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        xc, wn, wp, lo, hi = self._profiles(s)
        half = np.maximum((hi - lo) * 0.5, 1e-3)
        dx = x - xc
        w = np.maximum(np.where(dx < 0, wn, wp), 1e-3)
        u = np.abs(dx) / w
        v = np.abs(d - (lo + hi) * 0.5) / half
        level = np.power(_pow(u, self.p) + _pow(v, self.p), 1.0 / self.p)
        cross = (level - 1.0) * np.minimum(w, half)
        ends = np.maximum(self._k[0] - s, s - self._k[-1])
        return np.maximum(cross, ends)


@dataclass(frozen=True)
class Layer:
    """One painted shape: its tissue name, signal per sequence ``(T1, T2, STIR)`` and frame.

    ``frame`` is ``"curved"`` (the shape is in spine coordinates ``(x, s, d)``) or
    ``"straight"`` (the shape's ``(x, s, d)`` are the uncurved spine frame's lateral,
    superior and posterior axes: the body outline, which does not follow the lordosis).
    """

    shape: object
    tissue: str
    values: Tuple[float, float, float]
    frame: str = "curved"
