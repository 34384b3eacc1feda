"""Shared fixtures for the decode kernel tests: the adversarial input cases, the host shim built
into a shared library (g++ and nvcc -x cu), and the comparison against ``decode_numpy``.

Every case is a dict with ``heatmap``, ``offset``, ``severity`` in their storage dtype (float32,
or float16 for the FP16 cases), ``groups`` int32 and ``stride``.
"""
import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import lumbar_edge
from lumbar_edge.decode import RECORD_SIZE, Decoded

KERNELS = Path(lumbar_edge.__file__).parent / "kernels"


def _outputs(rng, n, k, c, h, w, dtype=np.float32, scale=3.0):
    heatmap = (rng.standard_normal((n, k, h, w)) * scale).astype(np.float32)
    offset = rng.random((n, 2 * k, h, w), dtype=np.float32)
    severity = (rng.standard_normal((n, 3 * c, h, w)) * scale).astype(np.float32)
    groups = rng.integers(0, c, size=k).astype(np.int32)
    return {"heatmap": heatmap.astype(dtype), "offset": offset.astype(dtype), "severity": severity.astype(dtype),
            "groups": groups, "stride": 4.0}


def _random(n, k, c, h, w, dtype=np.float32):
    def make(rng):
        return _outputs(rng, n, k, c, h, w, dtype)
    return make


def _ties_constant(rng):
    case = _outputs(rng, 3, 4, 2, 7, 13)
    case["heatmap"][:] = 0.25
    case["heatmap"][1, 2] = -0.0  # -0.0 == +0.0 after the next line: still a tie, lowest index wins
    case["heatmap"][1, 2, 0, 5:] = 0.0
    return case


def _ties_repeated(rng):
    # Few distinct values: the maximum repeats many times in almost every map.
    case = _outputs(rng, 5, 3, 1, 33, 65)
    case["heatmap"] = rng.integers(-2, 3, size=case["heatmap"].shape).astype(np.float32)
    # The maximum only at the last cell, and at the first and last cells.
    case["heatmap"][0, 0] = -1.0
    case["heatmap"][0, 0, -1, -1] = 7.0
    case["heatmap"][0, 1] = -1.0
    case["heatmap"][0, 1, 0, 0] = case["heatmap"][0, 1, -1, -1] = 7.0
    return case


def _ties_across_threads(rng):
    # Equal maxima spaced by the block size (256) and by a warp (32): lanes of different warps and
    # of one warp hold equal values, so the reduction's tie-break decides.
    case = _outputs(rng, 2, 3, 1, 128, 128)
    flat = case["heatmap"].reshape(2, 3, -1)
    flat[0, 0, [300, 44, 556, 812]] = 50.0
    flat[0, 1, [31, 63, 95, 127, 1000]] = 50.0
    flat[0, 2, 255::256] = 50.0
    flat[1, :, 1::2] = np.inf
    return case


def _nan_some(rng):
    case = _outputs(rng, 4, 5, 2, 33, 65)
    hm = case["heatmap"]
    hm[rng.random(hm.shape) < 0.3] = np.nan
    hm[0, 0, 0, 0] = np.nan  # NaN first: np.argmax alone would pick it
    hm[1, 1].flat[[0, 10, 20]] = np.nan
    return case


def _nan_all(rng):
    case = _outputs(rng, 3, 2, 1, 7, 13)
    case["heatmap"][0] = np.nan
    case["heatmap"][1, 0] = np.nan
    case["heatmap"][1, 0, 3, 4] = -np.inf  # NaN everywhere else: the -inf cell wins
    case["heatmap"][2, 1] = -np.inf
    case["heatmap"][2, 1, 5, 5] = np.nan
    return case


def _nonfinite_heads(rng):
    # Overflowed FP16 logits: infinities and NaN in severity and offsets.
    case = _outputs(rng, 2, 4, 2, 16, 16)
    case["heatmap"][:, :, 2, 3] = 100.0
    case["heatmap"][1, 3, 2, 3] = -np.inf
    case["heatmap"][1, 3, 9, 9] = -100.0
    case["heatmap"][1, 3] = np.minimum(case["heatmap"][1, 3], -90.0)  # a tiny (subnormal-range) score
    sev = case["severity"]
    sev[0, 0:3, 2, 3] = [np.inf, 1.0, np.inf]
    sev[0, 3:6, 2, 3] = [-np.inf, -np.inf, -np.inf]
    sev[1, 0:3, 2, 3] = [np.nan, 0.0, 1.0]
    sev[1, 3:6, 2, 3] = [80.0, -80.0, 0.0]
    case["offset"][1, 2, 2, 3] = np.nan
    case["groups"] = np.array([0, 1, 0, 1], dtype=np.int32)
    return case


def _fp16_near_ties(rng):
    # Distinct float32 values that round to the same float16: ties appear only after rounding.
    case = _outputs(rng, 4, 3, 1, 33, 65)
    hm = case["heatmap"]
    hm[:, :, 5, 7] = 3.0001
    hm[:, :, 20, 60] = 3.0002
    hm[:, :, 30, 1] = 3.00015
    return {key: (value.astype(np.float16) if key in ("heatmap", "offset", "severity") else value)
            for key, value in case.items()}


CASES = {
    "1x1-batch1": _random(1, 1, 1, 1, 1),
    "1x1-batch64": _random(64, 3, 2, 1, 1),
    "7x13": _random(2, 5, 1, 7, 13),
    "33x65": _random(3, 10, 1, 33, 65),
    "128x128-batch1": _random(1, 2, 1, 128, 128),
    "64x64-batch64": _random(64, 2, 1, 64, 64),
    "31x33-3groups": _random(4, 6, 3, 31, 33),
    "fp16-7x13": _random(2, 5, 1, 7, 13, np.float16),
    "fp16-33x65": _random(3, 10, 2, 33, 65, np.float16),
    "fp16-128x128": _random(2, 2, 1, 128, 128, np.float16),
    "fp16-near-ties": _fp16_near_ties,
    "ties-constant": _ties_constant,
    "ties-repeated": _ties_repeated,
    "ties-across-threads": _ties_across_threads,
    "nan-some": _nan_some,
    "nan-all": _nan_all,
    "nonfinite-heads": _nonfinite_heads,
}


@pytest.fixture(params=sorted(CASES))
def decode_case(request):
    """One adversarial or random decode input (see ``CASES``), deterministic per case name."""
    seed = sum(map(ord, request.param))
    return CASES[request.param](np.random.default_rng(seed))


def _reference(case):
    from lumbar_edge.decode import decode_numpy

    return decode_numpy(case["heatmap"], case["offset"], case["severity"], case["groups"], stride=case["stride"])


def _assert_packed_matches(packed, ref: Decoded, width: int):
    """Peak indices (and what follows from them exactly: cells, logits, x, y) identical;
    score and probabilities within 1e-5 relative (the ``expf`` of each side may differ by an ulp;
    the absolute floor only matters for subnormal scores)."""
    got = Decoded.from_packed(packed, width)
    np.testing.assert_array_equal(got.index, ref.index)
    np.testing.assert_array_equal(got.ix, ref.ix)
    np.testing.assert_array_equal(got.iy, ref.iy)
    for field in ("x", "y", "logit"):
        np.testing.assert_array_equal(getattr(got, field), getattr(ref, field), err_msg=field)
    for field in ("score", "probs"):
        np.testing.assert_allclose(getattr(got, field), getattr(ref, field), rtol=1e-5, atol=1e-30,
                                   equal_nan=True, err_msg=field)


@pytest.fixture
def reference():
    """``reference(case)``: ``decode_numpy`` of a case."""
    return _reference


@pytest.fixture
def assert_packed_matches():
    """``assert_packed_matches(packed, ref, width)``: a packed record array against a Decoded.
    (Fixtures rather than imports: several conftest.py files live in this suite.)"""
    return _assert_packed_matches


class HostDecoder:
    """ctypes front of the host shim library (``kernels/decode_host.cpp``)."""

    def __init__(self, path: Path, compiler: str):
        self.compiler = compiler
        lib = ctypes.CDLL(str(path))
        f32p = ctypes.POINTER(ctypes.c_float)
        i32p = ctypes.POINTER(ctypes.c_int)
        lib.le_host_decode.argtypes = [f32p, f32p, f32p, i32p, f32p] + [ctypes.c_int] * 5 + [ctypes.c_float, ctypes.c_int]
        lib.le_host_decode.restype = ctypes.c_int
        u16p = ctypes.POINTER(ctypes.c_uint16)
        lib.le_host_decode_f16.argtypes = [u16p, u16p, u16p, i32p, f32p] + [ctypes.c_int] * 5 + [ctypes.c_float]
        lib.le_host_decode_f16.restype = ctypes.c_int
        lib.le_host_better.argtypes = [ctypes.c_float, ctypes.c_int, ctypes.c_float, ctypes.c_int]
        lib.le_host_better.restype = ctypes.c_int
        lib.le_host_sigmoid.argtypes = [ctypes.c_float]
        lib.le_host_sigmoid.restype = ctypes.c_float
        lib.le_host_softmax3.argtypes = [ctypes.c_float] * 3 + [f32p]
        lib.le_host_softmax3.restype = None
        lib.le_host_slots.argtypes = [i32p]
        lib.le_host_slots.restype = None
        self.lib = lib

    @staticmethod
    def _ptr(arr, ctype):
        return arr.ctypes.data_as(ctypes.POINTER(ctype))

    def decode(self, heatmap, offset, severity, groups, stride=4.0, block=0):
        """Packed float32 [N, K, 8]; float16 inputs are widened first (what the kernel's
        ``__half2float`` does before comparing). block 0 = serial scan, else the simulated kernel
        reduction for that block size."""
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in (heatmap, offset, severity)]
        groups = np.ascontiguousarray(groups, dtype=np.int32)
        n, k, h, w = arrays[0].shape
        c = arrays[2].shape[1] // 3
        out = np.full((n, k, RECORD_SIZE), -12345.0, dtype=np.float32)
        rc = self.lib.le_host_decode(*(self._ptr(a, ctypes.c_float) for a in arrays), self._ptr(groups, ctypes.c_int),
                                     self._ptr(out, ctypes.c_float), n, k, c, h, w, stride, block)
        if rc != 0:
            raise ValueError(f"le_host_decode refused its arguments ({rc})")
        return out

    def decode_f16(self, heatmap, offset, severity, groups, stride=4.0):
        """Packed float32 [N, K, 8] from float16 inputs through the header's ``__half`` path (nvcc builds)."""
        arrays = [np.ascontiguousarray(a, dtype=np.float16).view(np.uint16) for a in (heatmap, offset, severity)]
        groups = np.ascontiguousarray(groups, dtype=np.int32)
        n, k, h, w = arrays[0].shape
        c = arrays[2].shape[1] // 3
        out = np.full((n, k, RECORD_SIZE), -12345.0, dtype=np.float32)
        rc = self.lib.le_host_decode_f16(*(self._ptr(a, ctypes.c_uint16) for a in arrays),
                                         self._ptr(groups, ctypes.c_int), self._ptr(out, ctypes.c_float),
                                         n, k, c, h, w, stride)
        if rc != 0:
            raise ValueError(f"le_host_decode_f16 refused its arguments ({rc})")
        return out

    @property
    def has_f16(self) -> bool:
        return bool(self.lib.le_host_has_f16())


def _build(compiler: str, out: Path) -> Path:
    source = KERNELS / "decode_host.cpp"
    lib = out / f"decode_host_{compiler.replace('+', 'p')}.so"
    if compiler == "g++":
        cmd = [shutil.which("g++"), "-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
               "-o", str(lib), str(source)]
    else:
        cmd = [shutil.which("nvcc"), "-x", "cu", "-std=c++17", "-O2", "-Werror", "all-warnings",
               "-Xcompiler", "-fPIC,-Wall,-Wextra", "-shared", "-o", str(lib), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"{compiler} failed on the host shim:\n{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return lib


@pytest.fixture(scope="session")
def shim_builder(tmp_path_factory):
    """``build(compiler)`` -> HostDecoder; each compiler's library is built once per session,
    and a missing compiler skips the requesting test."""
    built = {}

    def build(compiler: str) -> HostDecoder:
        if shutil.which(compiler) is None:
            pytest.skip(f"{compiler} not found on PATH")
        if compiler not in built:
            built[compiler] = HostDecoder(_build(compiler, tmp_path_factory.mktemp("decode_host")), compiler)
        return built[compiler]

    return build


@pytest.fixture(scope="session", params=["g++", "nvcc"])
def host_decoder(request, shim_builder):
    """The host shim compiled by g++ (plain C++ side of the header) and by nvcc -x cu (its
    __CUDACC__ side, __host__ __device__ functions on the host)."""
    return shim_builder(request.param)


@pytest.fixture(scope="session")
def gxx_host_decoder(shim_builder):
    """The g++ build only, for tests that need one CPU stand-in for the kernel."""
    return shim_builder("g++")


@pytest.fixture(scope="session")
def nvcc_host_decoder(shim_builder):
    """The nvcc -x cu build only: the one with the header's __half path."""
    return shim_builder("nvcc")


@pytest.fixture(scope="session")
def fatbin_folder(tmp_path_factory):
    """A folder with decode.fatbin + manifest built from the installed sources by the real nvcc:
    the package's own when it is current (CI builds it), else one built here."""
    from lumbar_edge.kernels import build

    if build.is_current():
        return build.kernel_dir()
    import shutil

    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found on PATH and no packaged decode.fatbin: cannot build one")
    folder = tmp_path_factory.mktemp("fatbin")
    build.build(folder)
    return folder
