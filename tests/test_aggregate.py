"""Tests for lumbar_edge.aggregate: levels the model put on one point are found and reported."""
from lumbar_edge.aggregate import SHARED_POINT_MM, shared_points
from lumbar_edge.pipeline import _shared_point_warnings
from lumbar_edge.results import Keypoint


def kp(z_mm, x_mm=0.0):
    return Keypoint(series_uid="1.2", series_id="7", sop_uid="1.2.3", instance_number=9, x=10.0, y=20.0,
                    patient_mm=(x_mm, 0.0, z_mm), score=0.9)


def test_levels_apart_share_nothing_and_close_ones_group_transitively():
    spread = {"l1_l2": kp(0), "l2_l3": kp(-35), "l3_l4": kp(-70), "l4_l5": kp(-105), "l5_s1": kp(-140)}
    assert shared_points(spread) == []
    # L3/L4 and L5/S1 both within 10 mm of L4/L5 (not of each other): one group of three.
    collided = dict(spread, l3_l4=kp(-100), l5_s1=kp(-111))
    assert shared_points(collided) == [["l3_l4", "l4_l5", "l5_s1"]]
    # The distance is in patient space, all three axes, and strictly under the threshold.
    assert shared_points({"a": kp(0, 0), "b": kp(0, SHARED_POINT_MM)}) == []
    assert shared_points({"a": kp(0, 0), "b": kp(0, SHARED_POINT_MM - 0.1)}) == [["a", "b"]]
    assert shared_points({}) == [] and shared_points({"l1_l2": kp(0)}) == []


def test_the_report_warns_per_view_and_side_naming_the_levels():
    probs = (0.6, 0.3, 0.1)
    canal = {"l1_l2": (kp(0), probs), "l2_l3": (kp(-3), probs), "l3_l4": (kp(-70), probs)}
    foramina = {("left", "l3_l4"): (kp(-70, 20), probs), ("left", "l4_l5"): (kp(-72, 20), probs),
                ("right", "l3_l4"): (kp(-70, -20), probs), ("right", "l4_l5"): (kp(-105, -20), probs),
                # the same place on the other side is not a collision: sides are checked apart
                ("right", "l5_s1"): (kp(-72, 20), probs)}
    warnings = _shared_point_warnings(canal, foramina)
    assert len(warnings) == 2
    assert warnings[0].startswith("sagittal T2/STIR (spinal canal): L1/L2, L2/L3 were placed within 10 mm")
    assert warnings[1].startswith("sagittal T1 (left foramina): L3/L4, L4/L5")
    assert all("unreliable" in w for w in warnings)
    assert _shared_point_warnings({}, {}) == []
