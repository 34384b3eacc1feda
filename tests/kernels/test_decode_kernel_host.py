"""The kernel's per-peak logic (kernels/decode_common.cuh), run on the CPU through the host shim,
against the numpy reference decoder."""
import math

import numpy as np
import pytest

from lumbar_edge.decode import PACKED_FIELDS, RECORD_SIZE, sigmoid, softmax3


def test_record_layout_matches_python(host_decoder):
    import ctypes

    lib = host_decoder.lib
    assert lib.le_host_record_size() == RECORD_SIZE
    slots = np.zeros(RECORD_SIZE, dtype=np.int32)
    lib.le_host_slots(host_decoder._ptr(slots, ctypes.c_int))
    # le_host_slots lists the C slots in PACKED_FIELDS order.
    assert slots.tolist() == list(range(len(PACKED_FIELDS)))


@pytest.mark.parametrize("block", [0, 32, 64, 256])
def test_host_decode_matches_numpy(host_decoder, decode_case, block, reference, assert_packed_matches):
    packed = host_decoder.decode(decode_case["heatmap"], decode_case["offset"], decode_case["severity"],
                                 decode_case["groups"], decode_case["stride"], block=block)
    assert_packed_matches(packed, reference(decode_case), decode_case["heatmap"].shape[3])


def test_host_half_path_matches_numpy(nvcc_host_decoder, decode_case, reference, assert_packed_matches):
    host_decoder = nvcc_host_decoder
    assert host_decoder.has_f16
    case = {key: (value.astype(np.float16) if key in ("heatmap", "offset", "severity") else value)
            for key, value in decode_case.items()}
    packed = host_decoder.decode_f16(case["heatmap"], case["offset"], case["severity"], case["groups"], case["stride"])
    assert_packed_matches(packed, reference(case), case["heatmap"].shape[3])


def test_better_is_the_documented_total_order(host_decoder):
    better = host_decoder.lib.le_host_better
    nan, inf = math.nan, math.inf
    assert better(2.0, 9, 1.0, 0) and not better(1.0, 0, 2.0, 9)
    assert better(1.0, 3, 1.0, 4) and not better(1.0, 4, 1.0, 3)  # tie: lower index
    assert better(-0.0, 3, 0.0, 4) and not better(0.0, 4, -0.0, 3)  # signed zeros tie
    assert better(-inf, 5, nan, 0) and not better(nan, 0, -inf, 5)  # NaN below -inf
    assert better(nan, 1, nan, 2) and not better(nan, 2, nan, 1)  # two NaNs: lower index
    assert better(inf, 7, 3.0e38, 0)
    values = [nan, -inf, -1.0, -0.0, 0.0, 1.0, inf, 1.0, nan]
    # A strict total order on distinct indices: exactly one of a<b, b<a for every pair.
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            if i != j:
                assert better(a, i, b, j) != better(b, j, a, i), (a, i, b, j)


def test_sigmoid_and_softmax_match_numpy(host_decoder):
    import ctypes

    lib = host_decoder.lib
    z = np.array([0.0, -0.0, 1e-8, -3.5, 3.5, 17.0, -17.0, 88.0, -88.0, -100.0, 1e30, -1e30,
                  np.inf, -np.inf, np.nan], dtype=np.float32)
    got = np.array([lib.le_host_sigmoid(float(v)) for v in z], dtype=np.float32)
    np.testing.assert_allclose(got, sigmoid(z), rtol=1e-6, atol=1e-30, equal_nan=True)
    assert got[-3] == 1.0 and got[-2] == 0.0 and np.isnan(got[-1])
    rows = np.array([[0, 0, 0], [1, 2, 3], [1000, 0, -1000], [np.inf, 1, np.inf], [-np.inf] * 3,
                     [np.inf, -np.inf, 0], [np.nan, 0, 0], [-80, 80, 0]], dtype=np.float32)
    out = np.zeros(3, dtype=np.float32)
    for row, ref in zip(rows, softmax3(rows)):
        lib.le_host_softmax3(*map(float, row), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-30, equal_nan=True, err_msg=str(row))
    np.testing.assert_array_equal(softmax3(rows[3]), [0.5, 0.0, 0.5])
    np.testing.assert_allclose(softmax3(rows[4]), [1 / 3] * 3)


def test_host_decode_refuses_bad_blocks(host_decoder):
    z = np.zeros((1, 1, 2, 2), dtype=np.float32)
    off = np.zeros((1, 2, 2, 2), dtype=np.float32)
    sev = np.zeros((1, 3, 2, 2), dtype=np.float32)
    for block in (-32, 48, 512):
        with pytest.raises(ValueError, match="refused"):
            host_decoder.decode(z, off, sev, [0], block=block)


def test_out_of_range_group_reads_nothing_and_gives_nan(host_decoder):
    # The numpy decoder refuses such groups; the kernel's last guard must not read out of bounds.
    rng = np.random.default_rng(5)
    hm = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    off = rng.random((2, 4, 3, 4), dtype=np.float32)
    sev = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    packed = host_decoder.decode(hm, off, sev, np.array([0, 7], dtype=np.int32))
    assert np.isnan(packed[:, 1, 3:6]).all()
    assert np.isfinite(packed[:, 0, 3:6]).all()
