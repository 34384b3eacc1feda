"""The CUDA decode kernel on a real GPU, through pycuda, against the numpy reference.

Marked ``gpu``: skipped where there is no GPU (tests/conftest.py) and, through the fixtures,
where pycuda is missing. The device's primary context is pushed for the session and popped at
the end (never pycuda.autoinit, which makes a private context).
"""
import shutil
import subprocess

import numpy as np
import pytest

from lumbar_edge import decode_cuda
from lumbar_edge.decode import RECORD_SIZE, decode_numpy

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="session")
def cuda_context():
    missing = decode_cuda.missing_dependencies()
    if missing:
        pytest.skip("the CUDA decoder needs " + "; ".join(missing))
    with decode_cuda.primary_context(0) as ctx:
        yield ctx


@pytest.fixture(scope="session", params=[32, 256], ids=lambda b: f"block{b}")
def gpu_decoder(request, cuda_context):
    with decode_cuda.CudaDecoder(block=request.param) as decoder:
        yield decoder


def _as(case, dtype):
    return {key: (value.astype(dtype) if key in ("heatmap", "offset", "severity") else value)
            for key, value in case.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_kernel_matches_numpy(gpu_decoder, decode_case, dtype, reference, assert_packed_matches):
    case = _as(decode_case, dtype)
    got = gpu_decoder.decode_arrays(case["heatmap"], case["offset"], case["severity"], case["groups"],
                                    stride=case["stride"])
    assert_packed_matches(got.to_packed(), reference(case), case["heatmap"].shape[3])


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_full_model_batch(gpu_decoder, dtype, assert_packed_matches):
    # The default network's 17 keypoint channels and 3 condition groups, batch 64 at 128x128.
    from lumbar_edge.labels import ALL_VIEWS

    rng = np.random.default_rng(17)
    groups = np.array(ALL_VIEWS.keypoint_groups(), dtype=np.int32)
    k, c = len(groups), ALL_VIEWS.num_conditions
    hm = (rng.standard_normal((64, k, 128, 128)) * 4).astype(dtype)
    off = rng.random((64, 2 * k, 128, 128), dtype=np.float32).astype(dtype)
    sev = (rng.standard_normal((64, 3 * c, 128, 128)) * 4).astype(dtype)
    got = gpu_decoder.decode_arrays(hm, off, sev, groups)
    assert_packed_matches(got.to_packed(), decode_numpy(hm, off, sev, groups), 128)
    again = gpu_decoder.decode_arrays(hm, off, sev, groups)
    np.testing.assert_array_equal(again.to_packed().view(np.int32), got.to_packed().view(np.int32))


def test_reads_engine_buffers_in_place(cuda_context, gpu_decoder):
    """Outputs laid out back to back in one allocation (as an engine's bindings may be), pointers
    into its middle, a stream: the kernel reads them in place, writes only its records."""
    import pycuda.driver as cuda

    rng = np.random.default_rng(3)
    n, k, c, h, w = 8, 5, 1, 33, 65
    host = [(rng.standard_normal(shape) * 3).astype(np.float16) for shape in
            ((n, k, h, w), (n, 2 * k, h, w), (n, 3 * c, h, w))]
    pad = 256
    arena = cuda.mem_alloc(sum(a.nbytes for a in host) + 4 * pad)
    ptrs, at = [], pad
    for arr in host:
        cuda.memcpy_htod(int(arena) + at, arr)
        ptrs.append(int(arena) + at)
        at += arr.nbytes + pad
    stream = cuda.Stream()
    groups = np.zeros(k, dtype=np.int32)
    try:
        out = gpu_decoder.decode(*ptrs, n, k, h, w, groups, "float16", stream, num_conditions=c)
        got = gpu_decoder.download(n, k, w, stream)
        ref = decode_numpy(*host, groups)
        np.testing.assert_array_equal(got.index, ref.index)
        np.testing.assert_allclose(got.probs, ref.probs, rtol=1e-5)
        for ptr, arr in zip(ptrs, host):
            back = np.empty_like(arr)
            cuda.memcpy_dtoh(back, ptr)
            np.testing.assert_array_equal(back.view(np.uint16), arr.view(np.uint16))
        assert int(out) != int(arena)
    finally:
        arena.free()


def test_loads_a_prebuilt_fatbin(cuda_context, tmp_path, assert_packed_matches):
    import pycuda.driver as cuda

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found on PATH: cannot build the fatbin")
    major, minor = cuda.Context.get_device().compute_capability()
    binary = tmp_path / "decode.fatbin"
    cmd = decode_cuda.nvcc_resource_command(nvcc, binary, (f"sm_{major}{minor}",))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=decode_cuda.kernel_dir())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rng = np.random.default_rng(9)
    hm = rng.standard_normal((3, 4, 31, 17)).astype(np.float32)
    off = rng.random((3, 8, 31, 17), dtype=np.float32)
    sev = rng.standard_normal((3, 6, 31, 17)).astype(np.float32)
    groups = np.array([0, 1, 1, 0], dtype=np.int32)
    with decode_cuda.CudaDecoder(cubin=binary) as decoder:
        got = decoder.decode_arrays(hm, off, sev, groups)
    assert_packed_matches(got.to_packed(), decode_numpy(hm, off, sev, groups), 17)
    assert got.to_packed().shape == (3, 4, RECORD_SIZE)


def test_the_default_decoder_loads_the_packaged_fatbin(cuda_context, assert_packed_matches):
    from lumbar_edge.kernels import build

    if not build.is_current():
        pytest.skip("no current packaged decode.fatbin (python -m lumbar_edge.kernels.build)")
    rng = np.random.default_rng(11)
    hm = rng.standard_normal((2, 3, 16, 20)).astype(np.float16)
    off = rng.random((2, 6, 16, 20), dtype=np.float32).astype(np.float16)
    sev = rng.standard_normal((2, 3, 16, 20)).astype(np.float16)
    groups = np.zeros(3, dtype=np.int32)
    with decode_cuda.CudaDecoder() as decoder:
        assert decoder.module_source.startswith("decode.fatbin: "), decoder.module_source
        print(f"decoder module: {decoder.module_source}")
        got = decoder.decode_arrays(hm, off, sev, groups)
    assert_packed_matches(got.to_packed(), decode_numpy(hm, off, sev, groups), 20)
