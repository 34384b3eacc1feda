"""Rendering the phantom on a series' slice planes: geometry, painting, MR-like degradation.

Each slice's pixel grid is mapped to patient space through its DICOM geometry (the same
``P = IPP + col * dc * X + row * dr * Y`` the readers use), then to spine coordinates, and the
anatomy's layers are painted with soft (anti-aliased) edges. The image is then modulated by a
tissue texture and a smooth coil bias field, blurred by a small point-spread function, given
Rician noise and quantised to unsigned integers.

The painter works on 16 x 16 pixel tiles and evaluates a shape only on the tiles its bounding
box can touch, which keeps a 300 x 300 slice at a few tens of milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .anatomy import Anatomy

_TILE = 16
SEQUENCE_INDEX = {"T1": 0, "T2": 1, "STIR": 2}


@dataclass(frozen=True)
class SeriesGeometry:
    """Slice planes of one series (DICOM conventions, LPS mm).

    ``row_dir``: direction of increasing column index (IOP[:3]); ``col_dir``: of increasing row
    index (IOP[3:]); ``spacing``: (between rows, between columns) as PixelSpacing; ``positions``:
    ImagePositionPatient of each slice, in instance order (instance number = index + 1).
    """

    rows: int
    cols: int
    spacing: Tuple[float, float]
    row_dir: Tuple[float, float, float]
    col_dir: Tuple[float, float, float]
    positions: Tuple[Tuple[float, float, float], ...]
    thickness: float
    slice_spacing: float

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

    @property
    def n_slices(self) -> int:
        return len(self.positions)

    def iop(self) -> Tuple[float, ...]:
        return tuple(self.row_dir) + tuple(self.col_dir)

    def project(self, point: np.ndarray, index: int) -> Tuple[float, float, float]:
        """Pixel ``(x = column, y = row)`` of ``point`` on slice ``index`` and its signed
        distance (mm) from that plane along the normal."""
        v = np.asarray(point, dtype=np.float64) - np.asarray(self.positions[index])
        x = float(v @ np.asarray(self.row_dir)) / self.spacing[1]
        y = float(v @ np.asarray(self.col_dir)) / self.spacing[0]
        return x, y, float(v @ self.normal)

    def nearest_slice(self, point: np.ndarray) -> int:
        """Index of the slice whose plane is nearest ``point``."""
        n = self.normal
        dist = [abs(float((np.asarray(point) - np.asarray(p)) @ n)) for p in self.positions]
        return int(np.argmin(dist))

    def pixel_points(self, index: int, step: int = 1) -> np.ndarray:
        """Patient coordinates of the pixel centres of slice ``index`` (every ``step``-th row
        and column): shape (rows / step, cols / step, 3)."""
        r = np.arange(0, self.rows, step, dtype=np.float64)[:, None, None] * self.spacing[0] * np.asarray(self.col_dir)
        c = np.arange(0, self.cols, step, dtype=np.float64)[None, :, None] * self.spacing[1] * np.asarray(self.row_dir)
        return np.asarray(self.positions[index], dtype=np.float64) + r + c


@dataclass(frozen=True)
class Acquisition:
    """How one series is degraded and stored: sequence, gain (counts per unit signal), Rician
    noise level (fraction of unit signal), bias-field coefficients, and the stored bit depth."""

    sequence: str
    gain: float
    noise: float
    bias_linear: Tuple[float, float, float]
    bias_quadratic: Tuple[float, float, float]
    bias_centre: Tuple[float, float, float]
    bits_stored: int


def paint_slice(anatomy: Anatomy, origin: np.ndarray, col_step: np.ndarray, row_step: np.ndarray,
                rows: int, cols: int, sequence: str, edge: float) -> np.ndarray:
    """Noise-free signal of the anatomy on a pixel grid, float32 (rows, cols).

    Pixel ``(r, c)`` lies at ``origin + c * col_step + r * row_step`` (patient mm): ``col_step``
    is one column along the row direction, ``row_step`` one row down. Rows and columns are
    padded to whole tiles internally; ``edge`` is the width (mm) of the soft transition at shape
    borders, about one pixel.
    """
    seq = SEQUENCE_INDEX[sequence]
    ty, tx = -(-rows // _TILE), -(-cols // _TILE)
    r = (np.arange(ty)[:, None, None, None] * _TILE + np.arange(_TILE)[None, None, :, None]).astype(np.float64)
    c = (np.arange(tx)[None, :, None, None] * _TILE + np.arange(_TILE)[None, None, None, :]).astype(np.float64)
    # The frame transform is affine, so transform the grid's origin and steps, not every pixel.
    rot = anatomy.pose.rotation
    o = (np.asarray(origin, dtype=np.float64) - anatomy.pose.translation) @ rot
    cs = np.asarray(col_step, dtype=np.float64) @ rot
    rs = np.asarray(row_step, dtype=np.float64) @ rot
    n = ty * tx
    a, b, cc = ((o[i] + r * rs[i] + c * cs[i]).reshape(n, _TILE * _TILE) for i in range(3))
    straight = (a, cc, b)
    frames = {}
    for name, coords in (("curved", anatomy.curve(*straight)), ("straight", straight)):
        x, s, d = coords
        frames[name] = (x, s, d, np.stack([x.min(1), s.min(1), d.min(1)], axis=1),
                        np.stack([x.max(1), s.max(1), d.max(1)], axis=1))
    img = np.zeros((n, _TILE * _TILE), dtype=np.float64)
    margin = edge
    for layer in anatomy.layers:
        x, s, d, lo, hi = frames[layer.frame]
        b = layer.shape.bbox
        sel = np.flatnonzero((hi[:, 0] >= b[0] - margin) & (lo[:, 0] <= b[1] + margin)
                             & (hi[:, 1] >= b[2] - margin) & (lo[:, 1] <= b[3] + margin)
                             & (hi[:, 2] >= b[4] - margin) & (lo[:, 2] <= b[5] + margin))
        if sel.size == 0:
            continue
        dist = layer.shape.distance(x[sel], s[sel], d[sel])
        alpha = np.clip(0.5 - dist / edge, 0.0, 1.0)
        cur = img[sel]
        img[sel] = cur + alpha * (layer.values[seq] - cur)
    out = img.reshape(ty, tx, _TILE, _TILE).transpose(0, 2, 1, 3).reshape(ty * _TILE, tx * _TILE)
    return out[:rows, :cols].astype(np.float32)


def paint_geometry(anatomy: Anatomy, geometry: "SeriesGeometry", index: int, sequence: str,
                   edge: float = None) -> np.ndarray:
    """Noise-free signal of slice ``index`` of ``geometry`` (float32, rows x cols)."""
    col_step = np.asarray(geometry.row_dir) * geometry.spacing[1]
    row_step = np.asarray(geometry.col_dir) * geometry.spacing[0]
    edge = 0.9 * min(geometry.spacing) if edge is None else edge
    return paint_slice(anatomy, np.asarray(geometry.positions[index]), col_step, row_step,
                       geometry.rows, geometry.cols, sequence, edge)


def _blur(img: np.ndarray) -> np.ndarray:
    # A [1, 2, 1] / 4 kernel on both axes: the scanner's point-spread function, roughly.
    p = np.pad(img, 1, mode="edge")
    v = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]
    return 0.25 * v[:, :-2] + 0.5 * v[:, 1:-1] + 0.25 * v[:, 2:]


def _upsample(coarse: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    # Bilinear interpolation of a field sampled every 4 pixels back to full size.
    rows = np.arange(shape[0]) / 4.0
    cols = np.arange(shape[1]) / 4.0
    r0 = np.minimum(rows.astype(int), coarse.shape[0] - 1)
    c0 = np.minimum(cols.astype(int), coarse.shape[1] - 1)
    r1 = np.minimum(r0 + 1, coarse.shape[0] - 1)
    c1 = np.minimum(c0 + 1, coarse.shape[1] - 1)
    fr = (rows - r0)[:, None]
    fc = (cols - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c1] * fc
    bottom = coarse[r1][:, c0] * (1 - fc) + coarse[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


def render_slice(anatomy: Anatomy, geometry: SeriesGeometry, index: int, acq: Acquisition,
                 rng: np.random.Generator) -> np.ndarray:
    """One stored slice: painted, textured, bias-modulated, blurred, Rician noise, uint16."""
    img = paint_geometry(anatomy, geometry, index, acq.sequence).astype(np.float64)
    # Texture and bias are smooth: evaluate them on a coarse grid and upsample (cheap).
    coarse = geometry.pixel_points(index, step=4)
    field = np.ones(coarse.shape[:2])
    for k, phase, amp in anatomy.texture:
        field += amp * np.cos(coarse @ np.asarray(k) + phase)
    rel = (coarse - np.asarray(acq.bias_centre)) / 150.0
    field *= np.clip(1.0 + rel @ np.asarray(acq.bias_linear) + (rel * rel) @ np.asarray(acq.bias_quadratic), 0.6, 1.5)
    field = _upsample(field, img.shape)
    img = _blur(img * field)
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * acq.noise
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * acq.noise
    mag = np.sqrt((img + n1) ** 2 + n2 ** 2)
    top = (1 << acq.bits_stored) - 1
    return np.clip(np.rint(mag * acq.gain), 0, top).astype(np.uint16)


def render_series(anatomy: Anatomy, geometry: SeriesGeometry, acq: Acquisition,
                  rng: np.random.Generator) -> np.ndarray:
    """All slices of a series, uint16 array (n_slices, rows, cols), in instance order."""
    return np.stack([render_slice(anatomy, geometry, i, acq, rng) for i in range(geometry.n_slices)])
