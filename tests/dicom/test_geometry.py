"""SliceGeometry: DICOM PS3.3 C.7.6.2.1.1 pixel <-> patient mapping, planes, slice spacing."""
import math

import numpy as np
import pytest

from lumbar_edge.dicom import Plane, SliceGeometry, plane_of_normal
from lumbar_edge.dicom.geometry import slice_spacing


def test_known_point_by_hand():
    # Sagittal slice: rows run anterior->posterior (+y), columns run head->foot (-z).
    # PixelSpacing = (row spacing 0.5, column spacing 0.25). Pixel x=column 4, y=row 2:
    # P = S + x * dc * X + y * dr * Y = (10, 20, 30) + 4 * 0.25 * (0, 1, 0) + 2 * 0.5 * (0, 0, -1)
    g = SliceGeometry.from_tags([10, 20, 30], [0, 1, 0, 0, 0, -1], [0.5, 0.25])
    np.testing.assert_allclose(g.pixel_to_patient(4, 2), [10.0, 21.0, 29.0])
    np.testing.assert_allclose(g.normal, [-1.0, 0.0, 0.0])  # row x column
    x, y, d = g.patient_to_pixel([10.0, 21.0, 29.0])
    assert (float(x), float(y), float(d)) == pytest.approx((4.0, 2.0, 0.0))
    # 3 mm along the normal (towards patient right, -x) is 3 mm off the plane.
    _x, _y, d = g.patient_to_pixel([7.0, 21.0, 29.0])
    assert float(d) == pytest.approx(3.0)


def test_round_trip_vectorised_on_an_oblique_slice():
    rng = np.random.default_rng(0)
    a = math.radians(20)
    row = [math.cos(a), math.sin(a), 0.0]
    col = [0.0, 0.0, -1.0]
    g = SliceGeometry.from_tags([-100.5, 33.0, 12.25], row + col, [0.7, 0.9])
    xs, ys = rng.uniform(0, 512, size=(2, 4, 5))
    pts = g.pixel_to_patient(xs, ys)
    assert pts.shape == (4, 5, 3)
    bx, by, bd = g.patient_to_pixel(pts)
    np.testing.assert_allclose(bx, xs, atol=1e-9)
    np.testing.assert_allclose(by, ys, atol=1e-9)
    np.testing.assert_allclose(bd, 0.0, atol=1e-9)
    # One mm along the normal leaves x, y and moves the distance by one.
    bx, by, bd = g.patient_to_pixel(pts + g.normal)
    np.testing.assert_allclose(bd, 1.0, atol=1e-9)
    np.testing.assert_allclose(bx, xs, atol=1e-9)


def test_unnormalised_cosines_are_normalised():
    g = SliceGeometry.from_tags([0, 0, 0], [2, 0, 0, 0, 3, 0], [1, 1])
    np.testing.assert_allclose(g.row_dir, [1, 0, 0])
    np.testing.assert_allclose(g.normal, [0, 0, 1])


@pytest.mark.parametrize("values", [([0, 0], [1, 0, 0, 0, 1, 0], [1, 1]), ([0, 0, 0], [1, 0, 0, 1, 0, 0], [1, 1]),
                                    ([0, 0, 0], [1, 0, 0, 0, 1, 0], [0, 1]),
                                    ([0, 0, float("nan")], [1, 0, 0, 0, 1, 0], [1, 1])])
def test_bad_tags_raise_value_error(values):
    with pytest.raises(ValueError):
        SliceGeometry.from_tags(*values)


def test_patient_to_pixel_wants_three_coordinates():
    g = SliceGeometry.from_tags([0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1])
    with pytest.raises(ValueError, match="last axis of 3"):
        g.patient_to_pixel([1.0, 2.0])


@pytest.mark.parametrize("normal, plane", [
    ((1, 0, 0), Plane.SAGITTAL), ((-0.9, 0.3, 0.3), Plane.SAGITTAL), ((0, 1, 0), Plane.CORONAL),
    ((0, 0, -1), Plane.AXIAL), ((0.0, math.sin(math.radians(30)), math.cos(math.radians(30))), Plane.AXIAL),
    ((0.6, 0.6, 0.53), Plane.OBLIQUE),
])
def test_plane_from_the_dominant_axis_with_a_tolerance(normal, plane):
    n = np.asarray(normal, dtype=float)
    assert plane_of_normal(n / np.linalg.norm(n)) is plane


def test_obliquity_tolerance_is_a_parameter():
    n = (0.0, math.sin(math.radians(30)), math.cos(math.radians(30)))  # axial tilted 30 degrees
    assert plane_of_normal(n, max_obliquity_deg=20) is Plane.OBLIQUE


def test_slice_spacing_is_the_median_step():
    assert slice_spacing([0.0, 4.0, 8.0, 16.0, 20.0]) == pytest.approx(4.0)  # one slice missing
    assert slice_spacing([5.0]) is None
    assert slice_spacing([3.0, 3.0]) is None
