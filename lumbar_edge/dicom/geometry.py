"""Patient-space geometry of one image slice (DICOM PS3.3 C.7.6.2.1.1) and of slice stacks.

The DICOM image plane maps a pixel at column ``x`` and row ``y`` to the patient coordinate
system (LPS, millimetres) as::

    P = S + x * dc * X + y * dr * Y

where ``S`` is ImagePositionPatient (the centre of the first pixel), ``X`` the first triplet of
ImageOrientationPatient (direction of a row: increasing column index), ``Y`` the second triplet
(direction of a column: increasing row index), ``dr`` and ``dc`` PixelSpacing[0] (between rows)
and PixelSpacing[1] (between columns). The slice normal is ``X x Y``.
"""
from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np

#: Default obliquity tolerance: a slice whose normal lies within this angle of a patient axis is
#: called by that axis' plane; lumbar axials are often tilted 20-30 degrees along a disc.
DEFAULT_MAX_OBLIQUITY_DEG = 45.0


class Plane(str, enum.Enum):
    """The anatomical plane of a slice or series, from the dominant axis of the slice normal."""

    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"
    OBLIQUE = "oblique"  # the normal is further than the tolerance from every patient axis
    MIXED = "mixed"  # slices of one series are not parallel (e.g. a three-plane localizer)
    UNKNOWN = "unknown"  # no ImageOrientationPatient


def plane_of_normal(normal: Sequence[float], max_obliquity_deg: float = DEFAULT_MAX_OBLIQUITY_DEG) -> Plane:
    """The plane whose axis the unit ``normal`` is closest to, or OBLIQUE past the tolerance.

    The normal's x component is the patient left-right axis (sagittal slices), y anterior-
    posterior (coronal), z head-foot (axial).
    """
    n = np.abs(np.asarray(normal, dtype=np.float64))
    axis = int(np.argmax(n))
    if n[axis] < math.cos(math.radians(max_obliquity_deg)):
        return Plane.OBLIQUE
    return (Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL)[axis]


@dataclass(frozen=True, eq=False)
class SliceGeometry:
    """Where one slice lies in patient space.

    ``origin``: ImagePositionPatient (mm, centre of the top-left pixel); ``row_dir`` and
    ``col_dir``: the two unit direction cosines of ImageOrientationPatient; ``pixel_spacing``:
    (row spacing, column spacing) in mm as in PixelSpacing; ``normal``: ``row_dir x col_dir``.
    """

    origin: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    pixel_spacing: Tuple[float, float]
    normal: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # Plain float arithmetic: a scan builds one geometry per file, and numpy's cross/inv on
        # 3-vectors cost more than the header parsing itself.
        origin = np.array([float(v) for v in np.asarray(self.origin, dtype=np.float64).reshape(3)])
        row = _unit(self.row_dir)
        col = _unit(self.col_dir)
        normal = _unit(_cross(row, col))
        dr, dc = (float(v) for v in self.pixel_spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "row_dir", np.array(row))
        object.__setattr__(self, "col_dir", np.array(col))
        object.__setattr__(self, "pixel_spacing", (dr, dc))
        object.__setattr__(self, "normal", np.array(normal))

    @functools.cached_property
    def _to_patient(self) -> np.ndarray:
        """Columns of the affine: one pixel step along x, one along y, one mm along the normal."""
        return np.stack([self.row_dir * self.pixel_spacing[1], self.col_dir * self.pixel_spacing[0], self.normal],
                        axis=1)

    @functools.cached_property
    def _to_pixel(self) -> np.ndarray:
        # Inverting the full affine (rather than projecting on the directions) stays exact for
        # orientations that are not quite orthogonal, as some scanners write them.
        return np.linalg.inv(self._to_patient)

    @classmethod
    def from_tags(cls, ipp: Sequence[float], iop: Sequence[float], pixel_spacing: Sequence[float]) -> "SliceGeometry":
        """Build from ImagePositionPatient, ImageOrientationPatient (6 values) and PixelSpacing.

        Raises ValueError when the values have the wrong count or the orientation is degenerate.
        """
        ipp = [float(v) for v in ipp]
        iop = [float(v) for v in iop]
        ps = [float(v) for v in pixel_spacing]
        if len(ipp) != 3 or len(iop) != 6 or len(ps) != 2:
            raise ValueError(f"expected 3 position, 6 orientation and 2 spacing values, got {len(ipp)}, {len(iop)}, {len(ps)}")
        if not all(math.isfinite(v) for v in ipp + iop + ps) or min(ps) <= 0:
            raise ValueError("position, orientation or pixel spacing is not finite and positive")
        return cls(np.array(ipp), np.array(iop[:3]), np.array(iop[3:]), (ps[0], ps[1]))

    @staticmethod
    def normal_of(orientation: Sequence[float]) -> Tuple[float, float, float]:
        """The unit normal (row x column direction) of the 6 ImageOrientationPatient values;
        raises ValueError for a degenerate orientation."""
        if len(orientation) != 6:
            raise ValueError(f"ImageOrientationPatient needs 6 values, got {len(orientation)}")
        return _unit(_cross(_unit(orientation[:3]), _unit(orientation[3:])))

    def pixel_to_patient(self, x, y) -> np.ndarray:
        """Patient coordinates (mm, LPS) of pixel column ``x`` and row ``y``.

        ``x`` and ``y`` may be numbers or arrays (broadcast together, sub-pixel allowed); the
        result has their broadcast shape plus a last axis of 3.
        """
        x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        return self.origin + x[..., None] * self._to_patient[:, 0] + y[..., None] * self._to_patient[:, 1]

    def patient_to_pixel(self, points) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel column ``x``, row ``y`` and signed distance from the slice plane (mm, along the
        normal) of patient points ``(..., 3)``; each result has the points' leading shape.

        Raises ValueError when the last axis of ``points`` is not 3.
        """
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise ValueError(f"points must have a last axis of 3 (x, y, z in mm), got shape {p.shape}")
        xyd = (p - self.origin) @ self._to_pixel.T
        return xyd[..., 0], xyd[..., 1], xyd[..., 2]

    def position_along(self, normal: Optional[np.ndarray] = None) -> float:
        """The slice's position (mm) along ``normal`` (default its own): ``dot(origin, normal)``."""
        n = self.normal if normal is None else normal
        o = self.origin
        return float(o[0] * n[0] + o[1] * n[1] + o[2] * n[2])

    def is_parallel(self, other: "SliceGeometry", tolerance_deg: float = 1.0) -> bool:
        """Whether the two slice planes are parallel within ``tolerance_deg``."""
        return abs(float(np.dot(self.normal, other.normal))) >= math.cos(math.radians(tolerance_deg))

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"origin": self.origin.tolist(), "row_dir": self.row_dir.tolist(), "col_dir": self.col_dir.tolist(),
                "pixel_spacing": list(self.pixel_spacing), "normal": self.normal.tolist()}


def _unit(v) -> Tuple[float, float, float]:
    x, y, z = (float(c) for c in v)
    norm = math.sqrt(x * x + y * y + z * z)
    if not norm > 1e-6:
        raise ValueError("a direction cosine or slice normal has zero length")
    return x / norm, y / norm, z / norm


def _cross(a, b) -> Tuple[float, float, float]:
    return a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]


def slice_spacing(positions: Sequence[float]) -> Optional[float]:
    """The typical distance (mm) between consecutive sorted slice positions: the median step,
    so that one missing slice does not change it; None for fewer than two distinct slices."""
    if len(positions) < 2:
        return None
    steps = np.diff(np.sort(np.asarray(positions, dtype=np.float64)))
    steps = steps[steps > 1e-4]
    return float(np.median(steps)) if steps.size else None
