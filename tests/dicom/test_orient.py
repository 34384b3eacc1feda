"""Reorientation of stored slices to the trained orientation (lumbar_edge.dicom.orient)."""
import itertools

import numpy as np
import pytest

from lumbar_edge.dicom.geometry import Plane, SliceGeometry
from lumbar_edge.dicom.orient import TRAINED_ORIENTATION, Reorientation, reorientation_for


def _stored_from_trained(canonical, row_dir, col_dir, origin, spacing, transpose, flip_rows, flip_columns):
    """Store a trained-orientation slice another way: the pixels and the DICOM geometry of the
    stored slice, made independently of the module under test (by moving the pixel grid)."""
    rows, cols = canonical.shape
    r, c = np.asarray(row_dir, float), np.asarray(col_dir, float)
    # Patient position of each canonical pixel centre.
    yy, xx = np.mgrid[0:rows, 0:cols]
    pts = origin + xx[..., None] * spacing * r + yy[..., None] * spacing * c
    img, grid = canonical, pts
    if flip_columns:
        img, grid = img[:, ::-1], grid[:, ::-1]
    if flip_rows:
        img, grid = img[::-1, :], grid[::-1, :]
    if transpose:
        img, grid = img.T, np.swapaxes(grid, 0, 1)
    new_r = (grid[0, 1] - grid[0, 0]) / spacing
    new_c = (grid[1, 0] - grid[0, 0]) / spacing
    return np.ascontiguousarray(img), tuple(new_r) + tuple(new_c), grid[0, 0], grid


@pytest.mark.parametrize("plane", [Plane.AXIAL, Plane.SAGITTAL, Plane.CORONAL])
@pytest.mark.parametrize("transpose,flip_rows,flip_columns", list(itertools.product([False, True], repeat=3)))
def test_every_flip_and_quarter_turn_comes_back_to_the_trained_pixels(plane, transpose, flip_rows, flip_columns):
    rng = np.random.default_rng(0)
    canonical = rng.random((6, 9)).astype(np.float32)  # not square: a transpose shows in the shape
    row_dir, col_dir = TRAINED_ORIENTATION[plane]
    origin = np.array([-20.0, 35.0, 110.0])
    stored, iop, ipp, grid = _stored_from_trained(canonical, row_dir, col_dir, origin, 0.7,
                                                  transpose, flip_rows, flip_columns)
    orient = reorientation_for(iop, plane, *stored.shape)
    assert np.array_equal(orient.apply(stored), canonical)
    assert orient.shape == canonical.shape
    # A point found on the trained-orientation slice maps back to the stored pixel at the same
    # place in patient space.
    geometry = SliceGeometry.from_tags(ipp, iop, (0.7, 0.7))
    for x, y in [(0.0, 0.0), (8.0, 5.0), (3.25, 1.5)]:
        sx, sy = orient.to_stored(x, y)
        want = origin + x * 0.7 * np.asarray(row_dir) + y * 0.7 * np.asarray(col_dir)
        np.testing.assert_allclose(geometry.pixel_to_patient(sx, sy), want, atol=1e-9)
        back = orient.to_reoriented(sx, sy)
        np.testing.assert_allclose(back, (x, y), atol=1e-12)


def test_small_in_plane_rotation_and_oblique_angles_are_left_as_stored():
    angle = np.radians(12.0)
    row = (np.cos(angle), np.sin(angle), 0.0)
    col = (-np.sin(angle), np.cos(angle), 0.0)
    assert reorientation_for(row + col, Plane.AXIAL, 8, 8).is_identity
    # A lumbar axial tilted 25 degrees along its disc is still the trained orientation.
    tilt = np.radians(25.0)
    assert reorientation_for((1.0, 0.0, 0.0, 0.0, np.cos(tilt), -np.sin(tilt)), Plane.AXIAL, 8, 8).is_identity


def test_missing_or_unusable_orientation_is_the_identity():
    assert reorientation_for(None, Plane.AXIAL, 4, 5).is_identity
    assert reorientation_for((0, 0, 0, 0, 0, 0), Plane.AXIAL, 4, 5).is_identity
    assert reorientation_for((1, 0, 0, 0, 1, 0), Plane.MIXED, 4, 5).is_identity


def test_apply_refuses_a_slice_of_another_size():
    with pytest.raises(ValueError, match="expected slices of 4x5"):
        Reorientation(4, 5, flip_rows=True).apply(np.zeros((5, 4)))
