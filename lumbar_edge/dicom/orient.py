"""Bringing a stored slice to the orientation the models were trained on, and back.

Scanners store a slice in whatever in-plane orientation the protocol, the patient position (head
or feet first, supine or prone) and the operator chose: a sagittal slice may be stored head-down,
an axial one with the patient's right on the right. The models were trained on one orientation
per plane (the RSNA 2024 data's, which the generator writes):

- sagittal: columns run anterior to posterior (row direction +y in DICOM LPS), rows run head to
  feet (column direction -z);
- axial: columns run from the patient's right to left (+x), rows anterior to posterior (+y);
- coronal: columns right to left (+x), rows head to feet (-z).

Left and right, head and feet are only known from ImageOrientationPatient, so a slice stored
any other way is resampled to the trained orientation before the model sees it. Every stored
orientation lies within 45 degrees of one of the eight flips and quarter turns of the trained
one; that dihedral transform is a pure permutation of pixels (exact, no interpolation) and
leaves the remaining in-plane rotation under 45 degrees, which within a few degrees is what the
training saw. :class:`Reorientation` applies it and maps model-side pixel coordinates back to
the stored grid, so reports, overlays and DICOM results keep the stored image's coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .geometry import Plane

#: (row direction, column direction) of the trained orientation per plane (DICOM LPS).
TRAINED_ORIENTATION = {
    Plane.SAGITTAL: ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    Plane.AXIAL: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    Plane.CORONAL: ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}


@dataclass(frozen=True)
class Reorientation:
    """A flip / quarter-turn of a stored ``rows`` x ``columns`` slice: first transpose (when
    ``transpose``), then reverse the rows (``flip_rows``) and the columns (``flip_columns``) of
    the result. The identity is ``Reorientation(rows, columns)``."""

    rows: int
    columns: int
    transpose: bool = False
    flip_rows: bool = False
    flip_columns: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_columns)

    @property
    def shape(self) -> Tuple[int, int]:
        """The reoriented slice's (rows, columns)."""
        return (self.columns, self.rows) if self.transpose else (self.rows, self.columns)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The stored slice(s) ``[..., rows, columns]`` in the trained orientation (a view where
        possible). Raises ValueError when the last two axes are not (rows, columns)."""
        arr = np.asarray(pixels)
        if arr.shape[-2:] != (self.rows, self.columns):
            raise ValueError(f"expected slices of {self.rows}x{self.columns}, got shape {arr.shape}")
        if self.transpose:
            arr = np.swapaxes(arr, -1, -2)
        if self.flip_rows:
            arr = arr[..., ::-1, :]
        if self.flip_columns:
            arr = arr[..., :, ::-1]
        return arr

    def to_stored(self, x, y):
        """Pixel column ``x`` and row ``y`` of the reoriented slice -> the stored slice's
        (column, row), sub-pixel (pixel centres at integers, as everywhere in the project)."""
        out_rows, out_columns = self.shape
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if self.flip_columns:
            x = (out_columns - 1) - x
        if self.flip_rows:
            y = (out_rows - 1) - y
        if self.transpose:
            x, y = y, x
        return x, y

    def to_reoriented(self, x, y):
        """The inverse of :meth:`to_stored`: stored (column, row) -> reoriented (column, row)."""
        out_rows, out_columns = self.shape
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if self.transpose:
            x, y = y, x
        if self.flip_columns:
            x = (out_columns - 1) - x
        if self.flip_rows:
            y = (out_rows - 1) - y
        return x, y

    def describe(self) -> str:
        """A few words for reports: ``"as stored"`` or e.g. ``"transposed, rows reversed"``."""
        parts = [name for flag, name in ((self.transpose, "transposed"), (self.flip_rows, "rows reversed"),
                                          (self.flip_columns, "columns reversed")) if flag]
        return ", ".join(parts) if parts else "as stored"


def reorientation_for(orientation: Optional[Sequence[float]], plane: Plane, rows: int, columns: int) -> Reorientation:
    """The transform that brings a slice with ImageOrientationPatient ``orientation`` (6 values)
    closest to the trained orientation of ``plane``. The identity when the orientation is
    missing or degenerate, or the plane has no trained orientation (oblique, mixed, unknown)."""
    identity = Reorientation(rows, columns)
    target = TRAINED_ORIENTATION.get(Plane(plane))
    if orientation is None or len(orientation) != 6 or target is None:
        return identity
    r = np.asarray(orientation[:3], dtype=np.float64)
    c = np.asarray(orientation[3:], dtype=np.float64)
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(c))) or np.linalg.norm(r) < 1e-6 or np.linalg.norm(c) < 1e-6:
        return identity
    r, c = r / np.linalg.norm(r), c / np.linalg.norm(c)
    want_r, want_c = np.asarray(target[0]), np.asarray(target[1])
    best, best_score = identity, -np.inf
    for transpose in (False, True):
        # After a transpose the new columns run along the stored column direction and back.
        base_r, base_c = (c, r) if transpose else (r, c)
        for flip_columns in (False, True):
            for flip_rows in (False, True):
                new_r = -base_r if flip_columns else base_r
                new_c = -base_c if flip_rows else base_c
                score = float(new_r @ want_r + new_c @ want_c)
                # Strictly greater: on a tie (a 45-degree slice) the simpler transform, found first, stays.
                if score > best_score + 1e-9:
                    best_score = score
                    best = Reorientation(rows, columns, transpose, flip_rows, flip_columns)
    return best
