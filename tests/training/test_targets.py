"""Tests for training.targets: the encoding must decode back to the keypoint."""
import numpy as np

from lumbar_edge.training.targets import TargetConfig, collate_targets, make_targets


def _decode(t, k, w, stride):
    iy, ix = np.unravel_index(int(np.argmax(t["heatmap"][k])), t["heatmap"][k].shape)
    assert iy * w + ix == t["keypoint_index"][k]
    return (ix + t["offset"][k, 0]) * stride, (iy + t["offset"][k, 1]) * stride


def test_targets_decode_back_to_the_keypoint_exactly():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 255.9, size=(6, 2))
    t = make_targets(pts, np.ones(6, bool), np.array([0, 1, 2, -1, 0, 1]), np.ones(6), 64, 64, TargetConfig(4, 1.5))
    for k in range(6):
        x, y = _decode(t, k, 64, 4)
        assert abs(x - pts[k, 0]) < 1e-4 and abs(y - pts[k, 1]) < 1e-4
        assert t["heatmap"][k].max() == 1.0
        assert 0 <= t["offset"][k].min() and t["offset"][k].max() < 1
    assert list(t["severity"]) == [0, 1, 2, -1, 0, 1]


def test_absent_outside_and_nonfinite_keypoints_are_masked_out():
    pts = np.array([[10.0, 10.0], [300.0, 10.0], [np.nan, 5.0], [20.0, 20.0]])
    present = np.array([True, True, True, False])
    t = make_targets(pts, present, np.array([2, 2, 2, 2]), np.array([1, 1, 1, 0]), 32, 32)
    assert list(t["keypoint_mask"]) == [1, 0, 0, 0]
    assert list(t["severity"]) == [2, -1, -1, -1]
    assert not t["heatmap"][1:].any()
    assert list(t["channel_mask"]) == [1, 1, 1, 0]


def test_gaussian_width_follows_sigma_and_batches_stack():
    a = make_targets(np.array([[64.0, 64.0]]), np.ones(1, bool), np.zeros(1), np.ones(1), 32, 32, TargetConfig(4, 1.0))
    b = make_targets(np.array([[64.0, 64.0]]), np.ones(1, bool), np.zeros(1), np.ones(1), 32, 32, TargetConfig(4, 3.0))
    assert a["heatmap"][0, 16, 17] < b["heatmap"][0, 16, 17]
    assert a["heatmap"][0, 16, 17] == np.float32(np.exp(-0.5))
    batch = collate_targets([a, b])
    assert batch["heatmap"].shape == (2, 1, 32, 32) and batch["offset"].shape == (2, 1, 2)


def test_through_plane_weight_scales_the_peak_and_the_mask():
    pts = np.array([[40.0, 40.0], [80.0, 80.0], [20.0, 60.0]])
    weight = np.array([1.0, 0.3, 0.0], dtype=np.float32)
    t = make_targets(pts, weight, np.array([1, 2, 0]), np.ones(3), 32, 32)
    assert t["heatmap"][0].max() == 1.0 and np.isclose(t["heatmap"][1].max(), 0.3)
    assert np.isclose(t["heatmap"][1, 20, 20], 0.3)  # the peak sits at the keypoint's cell
    assert np.allclose(t["keypoint_mask"], [1.0, 0.3, 0.0])
    assert not t["heatmap"][2].any() and list(t["severity"]) == [1, 2, -1]
    # The Gaussian keeps its shape: only its height follows the weight.
    full = make_targets(pts[1:2], np.ones(1), np.zeros(1), np.ones(1), 32, 32)
    assert np.allclose(t["heatmap"][1], 0.3 * full["heatmap"][0], atol=1e-7)
