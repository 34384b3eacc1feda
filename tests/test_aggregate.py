"""Tests for lumbar_edge.aggregate: levels the model put on one point are found and reported."""
import numpy as np
import pytest

from lumbar_edge.aggregate import SHARED_POINT_MM, assign_ordered, shared_points
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


def test_ordered_assignment_separates_levels_that_their_best_peaks_would_merge():
    # Three slices (candidates); heights in mm (+ = towards the head). Each level's best peak on
    # its own: L1/L2 slice 0, L2/L3 slice 1 ... but L4/L5 and L5/S1 both peak best at -100 mm.
    height = np.array([[0.0, 5.0, -3.0],
                       [-30.0, -35.0, -60.0],
                       [-62.0, -70.0, -66.0],
                       [-100.0, -95.0, -140.0],
                       [-101.0, -99.0, -135.0]])
    score = np.log(np.array([[0.9, 0.5, 0.4],
                             [0.6, 0.9, 0.3],
                             [0.5, 0.9, 0.6],
                             [0.9, 0.3, 0.2],
                             [0.9, 0.8, 0.7]]))
    greedy = list(np.argmax(score, axis=1))
    assert height[3, greedy[3]] - height[4, greedy[4]] < 20  # the collision the assignment removes
    chosen = assign_ordered(height, score, 20.0)
    assert chosen == [0, 1, 1, 0, 2]
    steps = [height[k, chosen[k]] - height[k + 1, chosen[k + 1]] for k in range(4)]
    assert min(steps) >= 20.0
    # Brute force over all 3**5 choices agrees that this is the best ordered one.
    import itertools

    best = max((c for c in itertools.product(range(3), repeat=5)
                if all(height[k, c[k]] - height[k + 1, c[k + 1]] >= 20.0 for k in range(4))),
               key=lambda c: sum(score[k, c[k]] for k in range(5)))
    assert tuple(chosen) == best


def test_ordered_assignment_is_none_when_the_levels_cannot_be_ordered():
    flat = np.zeros((5, 4))
    assert assign_ordered(flat, np.zeros((5, 4)), 20.0) is None
    assert assign_ordered(np.zeros((5, 0)), np.zeros((5, 0))) is None
    # One candidate per level, already in order: taken as it is.
    column = np.array([[0.0], [-25.0], [-50.0], [-75.0], [-100.0]])
    assert assign_ordered(column, np.zeros((5, 1)), 20.0) == [0, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        assign_ordered(np.zeros((5, 3)), np.zeros((5, 2)))
