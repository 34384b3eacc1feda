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


# --- study-level choice on real domain objects: sagittal slices along patient x (LPS), 1 mm pixels.

from lumbar_edge.aggregate import (AggregationConfig, SlicePeaks, foramina_midline, sagittal_t1_findings,  # noqa: E402
                                   sagittal_t2_findings, through_plane_scores)
from lumbar_edge.dicom.model import Instance, Series  # noqa: E402
from lumbar_edge.dicom.geometry import Plane  # noqa: E402
from lumbar_edge.dicom.model import SeriesKind, Weighting  # noqa: E402
from lumbar_edge.labels import LEVELS  # noqa: E402
from lumbar_edge.preprocess import Letterbox  # noqa: E402

#: Row direction +y (posterior), column direction -z (down): pixel (x, y) is patient
#: (slice x, x - 100, 100 - y); the normal is -x.
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
IDENTITY = Letterbox(1.0, 1.0, 0.0, 0.0, 256, 256)


def _sagittal_series(xs_mm, uid="1.2.3"):
    instances = [Instance(file=f"/nonexistent/{i}.dcm", sop_uid=f"{uid}.{i}", instance_number=i + 1, rows=256,
                          columns=256, image_position=(float(x), -100.0, 100.0), image_orientation=SAGITTAL_IOP,
                          pixel_spacing=(1.0, 1.0), position=-float(x)) for i, x in enumerate(xs_mm)]
    order = sorted(range(len(instances)), key=lambda i: instances[i].position)
    return Series(series_uid=uid, series_id="7", series_number=7, description="", kind=SeriesKind.SAGITTAL_T2,
                  plane=Plane.SAGITTAL, weighting=Weighting.T2, instances=[instances[i] for i in order],
                  spacing=4.0, rows=256, columns=256, pixel_spacing=(1.0, 1.0), normal=np.array([-1.0, 0.0, 0.0]))


def _peaks(series, xy_by_slice, score_by_slice):
    """SlicePeaks for each slice index: xy [K, 2] pixels and scores [K]."""
    return [SlicePeaks(slice_index=i, instance=series.instances[i], letterbox=IDENTITY,
                       xy=np.asarray(xy_by_slice[i], dtype=np.float64), score=np.asarray(score_by_slice[i], dtype=np.float64),
                       probs=np.tile([0.7, 0.2, 0.1], (len(score_by_slice[i]), 1)))
            for i in range(len(series.instances))]


def test_through_plane_profile_picks_the_centre_of_a_plateau_and_discounts_a_lone_peak():
    x = np.arange(7) * 4.0
    pts = np.zeros((1, 7, 3))
    pts[0, :, 0] = x
    pts[0, :, 1:] = (10.0, 50.0)
    pts[0, 6, 1:] = (40.0, 80.0)  # the last slice's peak lies elsewhere in the plane
    raw = np.array([[0.1, 0.3, 0.5, 0.45, 0.55, 0.1, 0.7]])
    got = through_plane_scores(pts, raw, (1.0, 0.0, 0.0), sigma_mm=4.0, radius_mm=6.0)
    assert int(np.argmax(raw)) == 6 and int(np.argmax(got)) == 3
    assert got[0, 6] < got[0, 3]
    assert np.array_equal(through_plane_scores(pts, raw, (1.0, 0.0, 0.0), 0.0, 6.0), raw)


def _canal_layout(heights):
    # Five canal points down the spine at pixel x = 120, y = 100 - z.
    return [[120.0, 100.0 - z] for z in heights]


def test_the_canal_is_taken_near_the_midline_between_the_foramina():
    xs = np.arange(-16, 17, 4.0)  # 9 slices, 4 mm apart
    heights = [80.0, 40.0, 0.0, -40.0, -80.0]
    t1 = _sagittal_series(xs, "1.2.4")
    foramen = {-12.0: 0.8, 12.0: 0.7, -8.0: 0.3, 8.0: 0.3}
    t1_peaks = _peaks(t1, {i: _canal_layout(heights) for i in range(9)},
                      {i: [foramen.get(float(-inst.position), 0.05)] * 5 for i, inst in enumerate(t1.instances)})
    midline = foramina_midline(t1, t1_peaks)
    assert midline == pytest.approx(0.0)
    # The canal channels light up most on a lateral slice (x = 12 mm) and a little less on the
    # midline: without the midline the lateral slice wins.
    t2 = _sagittal_series(xs, "1.2.5")
    canal = {12.0: 0.6, 0.0: 0.5, 4.0: 0.35, -4.0: 0.35}
    t2_peaks = _peaks(t2, {i: _canal_layout(heights) for i in range(9)},
                      {i: [canal.get(float(-inst.position), 0.02)] * 5 for i, inst in enumerate(t2.instances)})
    no_prior = AggregationConfig(profile_sigma_mm=0.0)
    lateral = sagittal_t2_findings(t2, t2_peaks, no_prior, None)
    assert {kp.patient_mm[0] for kp, _ in lateral.values()} == {12.0}
    central = sagittal_t2_findings(t2, t2_peaks, no_prior, midline)
    assert {kp.patient_mm[0] for kp, _ in central.values()} == {0.0}
    for k, lv in enumerate(LEVELS):
        assert central[lv][0].patient_mm[2] == pytest.approx(heights[k])
    # Without a pair of foramina the right distance apart there is no midline.
    assert foramina_midline(t1, t1_peaks, AggregationConfig(foramen_gap_mm=(40.0, 80.0))) is None


def test_foramina_named_one_level_off_are_held_to_the_canal_levels():
    xs = np.array([-12.0, -8.0, 8.0, 12.0])
    heights = [80.0, 40.0, 0.0, -40.0, -80.0, -120.0]  # the sixth: one disc below the last level
    t1 = _sagittal_series(xs, "1.2.6")
    # On every slice, channel k peaks at disc k + 1 (score 0.6) except on the two inner slices,
    # where each channel peaks on its own disc with 0.4: a network one level off.
    xy, score = {}, {}
    for i, inst in enumerate(t1.instances):
        inner = abs(inst.position) < 10
        xy[i] = _canal_layout(heights[:5] if inner else heights[1:])
        score[i] = [0.4 if inner else 0.6] * 5
    peaks = _peaks(t1, xy, score)
    from lumbar_edge.results import Keypoint
    canal = {lv: (Keypoint("1.2.5", "5", "x", 1, 120.0, 100.0 - z, (0.0, 20.0, z), 0.9), (0.7, 0.2, 0.1))
             for lv, z in zip(LEVELS, heights)}
    config = AggregationConfig(profile_sigma_mm=0.0)
    off = sagittal_t1_findings(t1, peaks, 0.0, AggregationConfig(profile_sigma_mm=0.0, level_sigma_mm=0.0), canal)
    held = sagittal_t1_findings(t1, peaks, 0.0, config, canal)
    for side in ("left", "right"):
        for k, lv in enumerate(LEVELS):
            assert off[(side, lv)][0].patient_mm[2] == pytest.approx(heights[k + 1])
            assert held[(side, lv)][0].patient_mm[2] == pytest.approx(heights[k])
    # Left is +x (LPS): the sides come from the slices' positions against the midline.
    assert all(held[("left", lv)][0].patient_mm[0] > 0 > held[("right", lv)][0].patient_mm[0] for lv in LEVELS)


def _two_views(canal_shifted: bool, left_shifted: bool):
    """A T2 series (canal on the midline slice x = 0) and a T1 series (foramina at x = +-12 mm):
    the network finds every level's structure with 0.4 where it truly is, and on the slices
    beside it one disc lower with 0.6 (a view read one level off: the canal, or the left
    foramina) or 0.2."""
    heights = [80.0, 40.0, 0.0, -40.0, -80.0, -120.0]
    xs = np.arange(-16, 17, 4.0)
    series, peaks = {}, {}
    for view, uid, on_slice, shifted in (("t2", "1.2.7", {0.0}, canal_shifted),
                                         ("t1", "1.2.8", {-12.0, 12.0}, left_shifted)):
        s = _sagittal_series(xs, uid)
        xy, score = {}, {}
        for i, inst in enumerate(s.instances):
            here = float(-inst.position) in on_slice
            # Two peaks cannot share a slice and channel: the true place is seen on the slice,
            # the one-level-off place on its neighbour (4 mm away, same structure column).
            near = any(abs(float(-inst.position) - x) == 4.0 for x in on_slice)
            if here:
                xy[i], score[i] = _canal_layout(heights[:5]), [0.4] * 5
            elif near:
                # LPS: the left foramina are at +x; the canal's "side" does not matter.
                off = shifted and (view == "t2" or float(-inst.position) > 0)
                xy[i], score[i] = _canal_layout(heights[1:]), [0.6 if off else 0.2] * 5
            else:
                xy[i], score[i] = _canal_layout(heights[:5]), [0.01] * 5
        series[view], peaks[view] = s, _peaks(s, xy, score)
    return heights, series, peaks


@pytest.mark.parametrize("canal_shifted, left_shifted", [(True, False), (False, True)])
def test_the_sagittal_views_agree_on_levels_and_the_surer_reading_sets_them(canal_shifted, left_shifted):
    from lumbar_edge.aggregate import sagittal_levels

    heights, series, peaks = _two_views(canal_shifted, left_shifted)
    config = AggregationConfig(profile_sigma_mm=0.0, midline_sigma_mm=0.0)
    canal, foramina, _ = sagittal_levels(series["t2"], peaks["t2"], series["t1"], peaks["t1"], config)
    # Alone, the shifted view would take its one-level-off peaks (0.6 beats 0.4).
    alone = sagittal_levels(series["t2"], peaks["t2"], None, [], config)[0]["l1_l2"] if canal_shifted else \
        sagittal_levels(None, [], series["t1"], peaks["t1"], config)[1][("left", "l1_l2")]
    assert alone[0].patient_mm[2] == pytest.approx(heights[1])
    # Together, the levels that two of the three readings (canal, left, right) agree on win, and
    # the third is held to them.
    for k, lv in enumerate(LEVELS):
        assert canal[lv][0].patient_mm[2] == pytest.approx(heights[k])
        for side in ("left", "right"):
            assert foramina[(side, lv)][0].patient_mm[2] == pytest.approx(heights[k])
