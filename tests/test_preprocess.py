"""Tests for lumbar_edge.preprocess: the one preprocessing path shared by train, export and infer."""
import numpy as np
import pytest

from lumbar_edge.errors import InputError
from lumbar_edge.preprocess import (PreprocessConfig, _integer_percentiles, channel_indices, letterbox, pixel_aspect,
                                    preprocess_batch, preprocess_stack, resize_bilinear, window)


def test_window_clips_to_percentiles_and_scales_to_unit_range():
    data = np.arange(1000, dtype=np.float32).reshape(10, 100)
    out = window(data, 1.0, 99.0)
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    lo, hi = np.percentile(data, [1.0, 99.0])
    mid = data[5, 50]
    assert out[5, 50] == pytest.approx((mid - lo) / (hi - lo), rel=1e-6)


def test_window_of_constant_or_nonfinite_input_is_zero_not_nan():
    assert not window(np.full((4, 4), 7.0), 0.5, 99.5).any()
    data = np.array([[np.nan, 1.0], [2.0, np.inf]], dtype=np.float32)
    out = window(data, 0.0, 100.0)
    assert np.isfinite(out).all()
    assert out[0, 0] == 0.0 and out[1, 1] == 0.0 and out[1, 0] == 1.0


def _integer_samples():
    rng = np.random.default_rng(7)
    yield "12-bit uniform", rng.integers(0, 4096, (3, 64, 80))
    yield "MR-like with many repeats", np.round(rng.gamma(2.0, 300.0, (3, 96, 96)))
    yield "negative values (CT-like)", rng.integers(-1024, 3000, (2, 50, 70))
    yield "three values only", rng.integers(0, 3, (5, 40)) * 1000 - 1024
    yield "constant", np.full((3, 8, 8), -7)
    yield "one value", np.array([42])
    yield "two values", np.array([0, 1])
    for n in (3, 199, 200, 201, 1001):  # the virtual index falls on and between samples
        yield f"{n} samples", rng.integers(-50, 50, n)


@pytest.mark.parametrize("pcts", [(0.5, 99.5), (0.0, 100.0), (1.0, 99.0), (37.3, 62.9), (50.0, 50.0)])
def test_histogram_percentiles_are_numpys_to_the_bit(pcts):
    for name, data in _integer_samples():
        values = np.asarray(data, dtype=np.float32)
        got = _integer_percentiles(values, pcts)
        want = np.percentile(values, pcts)
        assert got is not None, name
        assert got.dtype == want.dtype and np.array_equal(got, want), (name, got, want)


def test_histogram_percentiles_decline_data_they_cannot_count():
    assert _integer_percentiles(np.array([0.5, 1.0, 2.0], np.float32), (1, 99)) is None  # not whole numbers
    assert _integer_percentiles(np.array([0.0, 3e7], np.float32), (1, 99)) is None  # span too wide to count
    # ...and the window is still numpy's percentile window for them.
    data = np.linspace(-3.3, 7.1, 500, dtype=np.float32).reshape(20, 25)
    lo, hi = np.percentile(data, [2.0, 98.0])
    np.testing.assert_array_equal(window(data, 2.0, 98.0),
                                  ((np.clip(data, lo, hi) - lo) / (hi - lo)).astype(np.float32))


def test_resize_preserves_a_linear_ramp():
    # Bilinear resampling with aligned pixel centres reproduces a linear function exactly
    # away from the clamped borders.
    ramp = np.tile(np.arange(64, dtype=np.float32), (32, 1))
    out = resize_bilinear(ramp, 32, 128)
    centre = (np.arange(128) + 0.5) / 2.0 - 0.5
    np.testing.assert_allclose(out[0, 2:-2], centre[2:-2], atol=1e-5)


@pytest.mark.parametrize("shape", [(320, 320), (300, 384), (384, 288), (97, 61), (517, 700)])
def test_letterbox_maps_a_bright_point_to_its_predicted_location(shape):
    h, w = shape
    rng = np.random.default_rng(0)
    # A Gaussian blob about 2 output pixels wide: smooth enough that its centroid is sub-pixel
    # exact after any resampling, so the centroid tests the coordinate map, not quantisation.
    sigma = 2.0 * max(h, w) / 128
    yy_src, xx_src = np.indices(shape)
    for _ in range(5):
        y, x = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        img = np.exp(-((xx_src - x) ** 2 + (yy_src - y) ** 2) / (2 * sigma ** 2)).astype(np.float32)
        out, t = letterbox(img, 128, 128)
        yy, xx = np.indices(out.shape)
        cx, cy = (out * xx).sum() / out.sum(), (out * yy).sum() / out.sum()
        px, py = t.to_model(x, y)
        assert abs(cx - px) < 0.1 and abs(cy - py) < 0.1
        sx, sy = t.to_source(px, py)
        assert sx == pytest.approx(x) and sy == pytest.approx(y)


@pytest.mark.parametrize("aspect", [0.5, 0.8, 1.25, 2.0])
def test_letterbox_of_non_square_pixels_keeps_the_anatomy_round(aspect):
    # A disc of radius 20 mm on a grid of 1 mm wide pixels `aspect` mm tall: an ellipse in
    # pixels, a circle again in the model input when the letterbox is told the pixel aspect.
    rows, cols = int(round(96 / aspect)), 96
    yy, xx = np.indices((rows, cols))
    disc = ((((yy - rows / 2) * aspect) ** 2 + (xx - cols / 2) ** 2) <= 20.0 ** 2).astype(np.float32)
    out, t = letterbox(disc, 128, 128, aspect)
    assert t.scale_y / t.scale_x == pytest.approx(aspect, rel=0.02)
    inside = out > 0.5
    height, width = inside.any(axis=1).sum(), inside.any(axis=0).sum()
    assert abs(int(height) - int(width)) <= 1, (height, width)
    squashed, _ = letterbox(disc, 128, 128)  # told nothing: the ellipse stays one
    inside = squashed > 0.5
    assert abs(inside.any(axis=1).sum() / inside.any(axis=0).sum() - 1 / aspect) < 0.1
    sx, sy = t.to_source(*t.to_model(10.3, 20.7))
    assert (sx, sy) == (pytest.approx(10.3), pytest.approx(20.7))


def test_pixel_aspect_reads_pixel_spacing_for_the_slice_as_shown():
    assert pixel_aspect((0.5, 0.625)) == pytest.approx(0.8)
    assert pixel_aspect((0.5, 0.625), transpose=True) == pytest.approx(1.25)
    # Square within the tolerance, unknown or unusable: square, so the letterbox is the old one.
    for spacing in ((0.778471, 0.778472), None, (), (0.5,), (0.0, 0.5), (float("nan"), 0.5), (-1.0, 0.5)):
        assert pixel_aspect(spacing) == 1.0, spacing
    img = np.random.default_rng(1).random((40, 60)).astype(np.float32)
    plain, box = letterbox(img, 64, 64)
    same, same_box = letterbox(img, 64, 64, pixel_aspect((0.778471, 0.778472)))
    assert np.array_equal(plain, same) and box == same_box
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(InputError, match="pixel aspect"):
            letterbox(img, 64, 64, bad)


def test_letterbox_pads_the_short_side_with_zeros():
    out, t = letterbox(np.ones((100, 50), np.float32), 64, 64)
    assert t.pad_x > 0 and t.pad_y == 0
    assert not out[:, : int(t.pad_x)].any() and out[:, 32].all()


def test_preprocess_stack_shapes_dtype_and_standardisation():
    cfg = PreprocessConfig(height=64, width=96, in_channels=3, mean=0.5, std=0.25)
    stack = np.random.default_rng(1).normal(500, 100, size=(3, 120, 100)).astype(np.float32)
    out, t = preprocess_stack(stack, cfg)
    assert out.shape == (3, 64, 96) and out.dtype == np.float32
    # Padding is 0 before standardising, so it reads (0 - mean) / std afterwards.
    assert out[0, 0, 0] == pytest.approx(-2.0)
    assert out.max() <= (1 - 0.5) / 0.25 + 1e-6


def test_preprocess_rejects_wrong_channel_count_and_mixed_shapes():
    cfg = PreprocessConfig(height=64, width=64, in_channels=3)
    with pytest.raises(InputError, match="expected 3 slices"):
        preprocess_stack(np.zeros((2, 10, 10)), cfg)
    with pytest.raises(InputError, match="share a shape"):
        preprocess_stack([np.zeros((10, 10)), np.zeros((10, 11)), np.zeros((10, 10))], cfg)
    with pytest.raises(InputError, match="no slices"):
        preprocess_batch([], cfg)


def test_config_validation_and_round_trip():
    cfg = PreprocessConfig(height=256, width=256, in_channels=5)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match="multiple of 4"):
        PreprocessConfig(height=250)
    with pytest.raises(InputError, match="unknown preprocessing"):
        PreprocessConfig.from_dict({"height": 256, "gamma": 2})


def test_channel_indices_centre_and_clamp_at_the_ends():
    assert channel_indices(10, 5, 3) == [4, 5, 6]
    assert channel_indices(10, 0, 3) == [0, 0, 1]
    assert channel_indices(10, 9, 5) == [7, 8, 9, 9, 9]
    assert channel_indices(1, 0, 3) == [0, 0, 0]
    with pytest.raises(InputError):
        channel_indices(4, 4, 3)
