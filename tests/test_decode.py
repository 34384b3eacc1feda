"""The numpy reference decoder: its rules, against a brute-force per-element decoder, and its
input checks. (The CUDA kernel is compared with it in tests/kernels/.)"""
import math

import numpy as np
import pytest

from lumbar_edge.decode import (PACKED_FIELDS, RECORD_SIZE, SLOT_INDEX, Decoded, decode_numpy, peak_index,
                                sigmoid, softmax3)
from lumbar_edge.errors import InputError


def brute_force(heatmap, offset, severity, groups, stride=4):
    """One (n, k) at a time in plain Python floats: the documented rules written out literally."""
    n_img, k_num, h, w = heatmap.shape
    out = {f: np.zeros((n_img, k_num)) for f in ("index", "x", "y", "score")}
    out["probs"] = np.zeros((n_img, k_num, 3))
    for n in range(n_img):
        for k in range(k_num):
            flat = [float(v) for v in heatmap[n, k].reshape(-1)]
            best = 0
            for i, v in enumerate(flat):
                b = flat[best]
                if math.isnan(b) and not math.isnan(v):
                    best = i
                elif not math.isnan(v) and v > b:
                    best = i
            iy, ix = divmod(best, w)
            z = flat[best]
            out["index"][n, k] = best
            out["x"][n, k] = (ix + float(offset[n, 2 * k, iy, ix])) * stride
            out["y"][n, k] = (iy + float(offset[n, 2 * k + 1, iy, ix])) * stride
            out["score"][n, k] = math.nan if math.isnan(z) else 1 / (1 + math.exp(-z)) if z > -700 else 0.0
            logits = [float(severity[n, 3 * groups[k] + j, iy, ix]) for j in range(3)]
            if any(math.isnan(v) for v in logits):
                out["probs"][n, k] = math.nan
            else:
                m = max(logits)
                e = [1.0 if v == m else math.exp(v - m) for v in logits]
                out["probs"][n, k] = [v / sum(e) for v in e]
    return out


def outputs(rng, n, k, c, h, w, nan_fraction=0.0, levels=None):
    hm = rng.standard_normal((n, k, h, w)).astype(np.float32) * 4
    if levels:
        hm = rng.integers(0, levels, size=hm.shape).astype(np.float32)
    hm[rng.random(hm.shape) < nan_fraction] = np.nan
    off = rng.random((n, 2 * k, h, w), dtype=np.float32)
    sev = (rng.standard_normal((n, 3 * c, h, w)) * 3).astype(np.float32)
    return hm, off, sev, rng.integers(0, c, size=k).astype(np.int32)


@pytest.mark.parametrize("shape,nan_fraction,levels", [
    ((1, 1, 1, 1), 0.0, None), ((2, 3, 7, 13), 0.0, None), ((3, 2, 9, 5), 0.5, None),
    ((2, 4, 6, 6), 0.0, 2), ((2, 4, 6, 6), 0.3, 3), ((1, 2, 3, 3), 0.95, 2)])
def test_matches_brute_force(shape, nan_fraction, levels):
    rng = np.random.default_rng(sum(map(ord, repr((shape, nan_fraction, levels)))))  # stable across runs
    n, k, h, w = shape
    hm, off, sev, groups = outputs(rng, n, k, 2, h, w, nan_fraction, levels)
    got = decode_numpy(hm, off, sev, groups)
    ref = brute_force(hm, off, sev, groups)
    np.testing.assert_array_equal(got.index, ref["index"])
    np.testing.assert_array_equal(got.ix, got.index % w)
    np.testing.assert_array_equal(got.iy, got.index // w)
    for field in ("x", "y", "score", "probs"):
        np.testing.assert_allclose(getattr(got, field), ref[field], rtol=1e-6, atol=1e-7, equal_nan=True)


def test_worked_example():
    hm = np.full((1, 2, 3, 4), -5.0, dtype=np.float32)
    hm[0, 0, 1, 2] = 2.0  # index 6
    hm[0, 1, 2, 3] = 0.0  # index 11
    off = np.zeros((1, 4, 3, 4), dtype=np.float32)
    off[0, 0, 1, 2], off[0, 1, 1, 2] = 0.25, 0.75
    off[0, 2, 2, 3], off[0, 3, 2, 3] = 0.5, 0.0
    sev = np.zeros((1, 6, 3, 4), dtype=np.float32)
    sev[0, 0:3, 1, 2] = [0.0, math.log(2), math.log(5)]  # group 0 at keypoint 0's peak
    sev[0, 3:6, 2, 3] = [-1000.0, 1000.0, -1000.0]       # group 1 at keypoint 1's peak
    d = decode_numpy(hm, off, sev, [0, 1], stride=4)
    assert d.index.tolist() == [[6, 11]] and d.ix.tolist() == [[2, 3]] and d.iy.tolist() == [[1, 2]]
    assert d.x.tolist() == [[9.0, 14.0]] and d.y.tolist() == [[7.0, 8.0]]
    np.testing.assert_allclose(d.score, [[1 / (1 + math.exp(-2)), 0.5]], rtol=1e-6)
    np.testing.assert_allclose(d.probs[0, 0], [1 / 8, 2 / 8, 5 / 8], rtol=1e-6)
    np.testing.assert_array_equal(d.probs[0, 1], [0.0, 1.0, 0.0])
    assert d.logit.tolist() == [[2.0, 0.0]]
    assert d.index.dtype == np.int32 and d.x.dtype == np.float32 and d.probs.dtype == np.float32
    assert d.shape == (1, 2)


def test_ties_and_nan_rules():
    nan, inf = np.nan, np.inf
    maps = np.array([
        [3, 1, 3, 3],            # repeated maximum: the first
        [nan, 1, 5, 5],          # NaN first is ignored (np.argmax alone would return 0)
        [nan, nan, nan, nan],    # all NaN: 0
        [nan, -inf, nan, -inf],  # NaN is below -inf
        [-inf, -inf, -inf, -inf],
        [0.0, -0.0, 0.0, 1e-45],  # signed zeros tie; the subnormal is larger
        [-0.0, 0.0, -1, -1],
        [inf, nan, inf, 3e38],
    ], dtype=np.float32).reshape(-1, 1, 2, 2)
    assert peak_index(maps).reshape(-1).tolist() == [0, 2, 0, 1, 0, 3, 0, 0]
    d = decode_numpy(maps, np.zeros((8, 2, 2, 2), np.float32), np.zeros((8, 3, 2, 2), np.float32), [0])
    assert np.isnan(d.score[2, 0]) and d.score[3, 0] == 0.0 and d.score[7, 0] == 1.0


def test_activations_are_stable():
    z = np.array([-1e30, -100, -88, 0, 88, 100, 1e30, np.inf, -np.inf, np.nan], dtype=np.float32)
    with np.errstate(over="raise"):  # no overflow on the way (underflow to 0 is the point)
        s = sigmoid(z)
        p = softmax3(np.array([[1e30, 0, -1e30], [np.inf, np.inf, 1], [-np.inf] * 3, [-88, 0, 88]], np.float32))
    assert s.dtype == np.float32 and np.isfinite(s[:-1]).all() and np.isnan(s[-1])
    assert s[0] == 0.0 and s[3] == 0.5 and s[6] == 1.0 and s[7] == 1.0 and s[8] == 0.0
    np.testing.assert_array_equal(p[0], [1, 0, 0])
    np.testing.assert_array_equal(p[1], [0.5, 0.5, 0])
    np.testing.assert_allclose(p[2], [1 / 3] * 3)
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-6)
    assert np.isnan(softmax3(np.array([0, np.nan, 1], np.float32))).all()


def test_dtypes_are_decoded_in_float32():
    rng = np.random.default_rng(4)
    hm, off, sev, groups = outputs(rng, 2, 3, 1, 9, 11)
    half = [a.astype(np.float16) for a in (hm, off, sev)]
    widened = decode_numpy(*(a.astype(np.float32) for a in half), groups)
    from_half = decode_numpy(*half, groups)
    for field in ("index", "x", "y", "score", "probs", "logit"):
        np.testing.assert_array_equal(getattr(from_half, field), getattr(widened, field))
        assert getattr(from_half, field).dtype == getattr(widened, field).dtype
    # float64 is rounded to float32 before comparing: these two differ only below float32's precision.
    hm64 = np.zeros((1, 1, 1, 2))
    hm64[0, 0, 0] = [1.0, 1.0 + 1e-12]
    assert decode_numpy(hm64, np.zeros((1, 2, 1, 2)), np.zeros((1, 3, 1, 2)), [0]).index[0, 0] == 0
    # Mixed dtypes are fine.
    decode_numpy(half[0], off, sev.astype(np.float64), groups)


def test_packed_round_trip_and_layout():
    rng = np.random.default_rng(8)
    hm, off, sev, groups = outputs(rng, 3, 4, 2, 5, 7, nan_fraction=0.2)
    d = decode_numpy(hm, off, sev, groups)
    packed = d.to_packed()
    assert packed.shape == (3, 4, RECORD_SIZE) and packed.dtype == np.float32 and RECORD_SIZE == 8
    assert PACKED_FIELDS == ("x", "y", "score", "p0", "p1", "p2", "index", "logit")
    np.testing.assert_array_equal(packed.view(np.int32)[..., SLOT_INDEX], d.index)
    back = Decoded.from_packed(packed, 7)
    for field in ("index", "ix", "iy", "x", "y", "score", "logit", "probs"):
        np.testing.assert_array_equal(getattr(back, field), getattr(d, field))
    # Indices travel as bits: large ones (not representable as float32) and 0 survive.
    big = Decoded.from_packed(packed, 7)
    big.index[...] = [[0, 1, 2**24 + 1, 2**31 - 1]] * 3
    again = Decoded.from_packed(big.to_packed(), 2**16)
    assert again.index[0].tolist() == [0, 1, 2**24 + 1, 2**31 - 1]
    assert again.iy[0, 3] == (2**31 - 1) // 2**16 and again.ix[0, 3] == (2**31 - 1) % 2**16


def test_from_packed_refuses_bad_arrays():
    with pytest.raises(InputError, match="float32 \\[N, K, 8\\]"):
        Decoded.from_packed(np.zeros((2, 3, 7), np.float32), 4)
    with pytest.raises(InputError, match="float32"):
        Decoded.from_packed(np.zeros((2, 3, 8), np.float64), 4)
    with pytest.raises(InputError, match="width"):
        Decoded.from_packed(np.zeros((2, 3, 8), np.float32), 0)


def test_empty_batches():
    d = decode_numpy(np.zeros((0, 3, 4, 4), np.float32), np.zeros((0, 6, 4, 4), np.float32),
                     np.zeros((0, 3, 4, 4), np.float32), [0, 0, 0])
    assert d.index.shape == (0, 3) and d.probs.shape == (0, 3, 3) and d.to_packed().shape == (0, 3, 8)
    d = decode_numpy(np.zeros((2, 0, 4, 4), np.float32), np.zeros((2, 0, 4, 4), np.float32),
                     np.zeros((2, 0, 4, 4), np.float32), [])
    assert d.index.shape == (2, 0)


@pytest.mark.parametrize("hm,off,sev,groups,match", [
    ((2, 3, 4, 4), (2, 5, 4, 4), (2, 3, 4, 4), [0, 0, 0], "offset must be"),
    ((2, 3, 4, 4), (2, 6, 4, 5), (2, 3, 4, 4), [0, 0, 0], "offset must be"),
    ((2, 3, 4, 4), (2, 6, 4, 4), (2, 4, 4, 4), [0, 0, 0], "severity must be"),
    ((2, 3, 4, 4), (2, 6, 4, 4), (1, 3, 4, 4), [0, 0, 0], "severity must be"),
    ((2, 3, 4, 4), (2, 6, 4, 4), (2, 0, 4, 4), [0, 0, 0], "severity must be"),
    ((2, 3, 4, 4), (2, 6, 4, 4), (2, 6, 4, 4), [0, 0], "groups must be 3 integers in 0..1"),
    ((2, 3, 4, 4), (2, 6, 4, 4), (2, 6, 4, 4), [0, 2, 0], "groups"),
    ((2, 3, 4, 4), (2, 6, 4, 4), (2, 6, 4, 4), [0, -1, 0], "groups"),
    ((2, 3, 4, 4), (2, 6, 4, 4), (2, 6, 4, 4), [0.0, 1.0, 0.0], "groups"),
    ((2, 3, 4, 4), (2, 6, 4, 4), (2, 6, 4, 4), [[0, 1, 0]], "groups"),
    ((2, 3, 0, 4), (2, 6, 0, 4), (2, 6, 0, 4), [0, 0, 0], "at least 1x1"),
    ((3, 4, 4), (2, 6, 4, 4), (2, 6, 4, 4), [0, 0, 0], "heatmap must be 4-D"),
])
def test_shape_errors_are_one_line_input_errors(hm, off, sev, groups, match):
    with pytest.raises(InputError, match=match) as info:
        decode_numpy(np.zeros(hm, np.float32), np.zeros(off, np.float32), np.zeros(sev, np.float32), groups)
    assert "\n" not in str(info.value)


def test_non_float_inputs_are_refused():
    with pytest.raises(InputError, match="heatmap must be float16, float32 or float64, got int32"):
        decode_numpy(np.zeros((1, 1, 2, 2), np.int32), np.zeros((1, 2, 2, 2), np.float32),
                     np.zeros((1, 3, 2, 2), np.float32), [0])


def test_decodes_what_the_training_targets_encode():
    from lumbar_edge.training.targets import TargetConfig, make_targets

    rng = np.random.default_rng(2)
    pts = rng.uniform(0, 255.9, size=(5, 2))
    t = make_targets(pts, np.ones(5, bool), np.array([0, 1, 2, 0, 1]), np.ones(5), 64, 64, TargetConfig(4, 1.5))
    hm = t["heatmap"][None]
    off = np.zeros((1, 10, 64, 64), np.float32)
    sev = np.zeros((1, 3, 64, 64), np.float32)
    for k in range(5):
        iy, ix = divmod(int(t["keypoint_index"][k]), 64)
        off[0, 2 * k:2 * k + 2, iy, ix] = t["offset"][k]
        sev[0, t["severity"][k], iy, ix] = 10.0  # single group; the last write per cell wins
    d = decode_numpy(hm, off, sev, [0] * 5)
    np.testing.assert_array_equal(d.index[0], t["keypoint_index"])
    np.testing.assert_allclose(np.stack([d.x[0], d.y[0]], -1), pts, atol=1e-4)
