"""The CUDA peak decoder: loads ``kernels/decode.cu`` through pycuda and runs it on device buffers.

It decodes exactly as :func:`lumbar_edge.decode.decode_numpy` (same tie, NaN and activation rules,
shared with the kernel through ``kernels/decode_common.cuh``) and reads the engine's output
buffers in place: only the packed float32 [N, K, 8] records (layout
:data:`lumbar_edge.decode.PACKED_FIELDS`) are written, and only they cross to the host.

pycuda is an optional dependency (the ``trt`` extra) and is imported inside functions only. This
module never creates a CUDA context: callers make one current, e.g. the device's primary context
(shared with TensorRT and the CUDA runtime) through :func:`primary_context`; never
``pycuda.autoinit``, which makes a private context that would not see the engine's buffers.

Typical use next to an engine::

    with primary_context(0), CudaDecoder() as decoder:
        decoder.decode(hm_ptr, off_ptr, sev_ptr, n, k, h, w, groups, "float16", stream)
        decoded = decoder.download(n, k, w, stream)
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .decode import RECORD_SIZE, Decoded, check_shapes
from .errors import InputError, LumbarEdgeError, MissingDependencyError

#: Kernel entry point per input dtype (all three output buffers share it).
KERNEL_NAMES: Dict[str, str] = {"float32": "decode_peaks_f32", "float16": "decode_peaks_f16"}
#: Threads per block; a multiple of 32 up to LE_DECODE_MAX_THREADS in decode_common.cuh.
DEFAULT_BLOCK = 256
MAX_BLOCK = 256
#: pycuda prepared-call format of both entry points: heatmap, offset, severity, groups, out
#: pointers; n, num_k, num_c, h, w; stride.
ARG_FORMAT = "PPPPPiiiiif"
_INT32_MAX = 2**31 - 1
_MAX_CACHED_GROUPS = 8  # distinct group tables kept on the device (one per model head layout)


class CudaDecodeError(LumbarEdgeError):
    """The CUDA decoder cannot be built or run: compilation, module loading, allocation, copy or
    launch failed, or no CUDA context is current. The message names the step and pycuda's error."""


def kernel_dir() -> Path:
    """The folder holding ``decode.cu``, ``decode_common.cuh`` and the host test shim."""
    return Path(__file__).resolve().parent / "kernels"


def kernel_source() -> str:
    """decode.cu with decode_common.cuh inlined in place of its #include.

    Inlining (rather than an include path) makes the text handed to pycuda complete, so pycuda's
    compile cache, keyed on the source text, can never serve a kernel built from an older header.
    Raises :class:`CudaDecodeError` if the files are missing from the installation.
    """
    folder = kernel_dir()
    try:
        source = (folder / "decode.cu").read_text(encoding="utf-8")
        header = (folder / "decode_common.cuh").read_text(encoding="utf-8")
    except OSError as exc:
        raise CudaDecodeError(f"the decode kernel source is missing from {folder}: {exc}") from exc
    include = '#include "decode_common.cuh"'
    if include not in source:
        raise CudaDecodeError(f"{folder / 'decode.cu'} does not include decode_common.cuh")
    return source.replace(include, header, 1)


def nvcc_resource_command(nvcc: str, out: Union[str, Path], archs: Sequence[str] = ("sm_87", "sm_90")) -> List[str]:
    """The nvcc command line that builds decode.cu into a fatbin for ``archs`` and prints ptxas's
    register/spill report (run it in :func:`kernel_dir`). The same fatbin loads through
    ``CudaDecoder(cubin=...)``."""
    cmd = [nvcc, "--fatbin", "-O3", "-Xptxas", "-v", "-Werror", "all-warnings"]
    for arch in archs:
        cmd += ["-gencode", f"arch=compute_{arch[3:]},code={arch}"]
    return cmd + ["-o", str(out), "decode.cu"]


def _driver():
    """``pycuda.driver``, or :class:`MissingDependencyError` naming the extra."""
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as exc:  # OSError: pycuda present but libcuda cannot load
        raise MissingDependencyError("decoding on the GPU", ["pycuda"], "trt") from exc
    return cuda


def _call(what: str, fn, *args, **kwargs):
    """Run one CUDA call, turning pycuda's errors into :class:`CudaDecodeError` naming ``what``."""
    from .backends.cuda_resources import checked_call

    _driver()  # a missing pycuda is reported as the decoder's dependency, with its extra
    return checked_call(CudaDecodeError, f"CUDA decoder: {what}", fn, *args, **kwargs)


def missing_dependencies() -> List[str]:
    """What the CUDA decoder lacks here, as human-readable lines; empty when it can run."""
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as exc:
        return [f"pycuda (install it with `pip install 'lumbar-edge[trt]'`; import failed: {exc})"]
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as exc:
        return [f"a working CUDA driver (cuInit failed: {exc})"]
    if count == 0:
        return ["a CUDA device (the driver reports none)"]
    return []


def is_available() -> bool:
    """Whether pycuda imports and at least one CUDA device is present."""
    return not missing_dependencies()


@contextlib.contextmanager
def primary_context(device: int = 0) -> Iterator[object]:
    """Make ``device``'s primary context current for the block, then pop it (it stays retained by
    whoever else holds it, e.g. TensorRT). Raises :class:`MissingDependencyError` without pycuda
    and :class:`CudaDecodeError` when the driver or the device fails."""
    cuda = _driver()
    _call("cuInit", cuda.init)
    count = _call("counting devices", cuda.Device.count)
    if not 0 <= device < count:
        raise CudaDecodeError(f"CUDA device {device} does not exist ({count} present)")
    ctx = _call(f"retaining the primary context of device {device}", cuda.Device(device).retain_primary_context)
    _call("pushing the primary context", ctx.push)
    try:
        yield ctx
    finally:
        _call("popping the primary context", cuda.Context.pop)


def _kernel_dtype(dtype) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError as exc:
        raise InputError(f"the decode kernel reads float32 or float16 buffers, got {dtype!r}") from exc
    if name not in KERNEL_NAMES:
        raise InputError(f"the decode kernel reads float32 or float16 buffers, got {name}")
    return name


class CudaDecoder:
    """The compiled kernel's functions, a device output buffer and cached group tables.

    Create and use it with the same CUDA context current. ``cubin`` loads a prebuilt cubin or
    fatbin (see :func:`nvcc_resource_command`) instead of compiling the source with nvcc at run
    time. Raises :class:`MissingDependencyError` without pycuda, :class:`InputError` for a block
    size that is not a multiple of 32 in 32..256, :class:`CudaDecodeError` when no context is
    current or the module does not build or load.
    """

    def __init__(self, block: int = DEFAULT_BLOCK, cubin: "str | Path | None" = None,
                 options: Optional[Sequence[str]] = None):
        if not isinstance(block, (int, np.integer)) or block < 32 or block > MAX_BLOCK or block % 32:
            raise InputError(f"the decode block size must be a multiple of 32 in 32..{MAX_BLOCK}, got {block}")
        cuda = _driver()
        if _call("querying the current context", cuda.Context.get_current) is None:
            raise CudaDecodeError("CUDA decoder: no CUDA context is current; push one first "
                                  "(lumbar_edge.decode_cuda.primary_context)")
        self.block = int(block)
        if cubin is not None:
            if not Path(cubin).is_file():
                raise CudaDecodeError(f"CUDA decoder: no kernel binary at {cubin}")
            self._module = _call(f"loading {cubin}", cuda.module_from_file, str(cubin))
        else:
            from pycuda.compiler import SourceModule

            self._module = _call("compiling decode.cu", SourceModule, kernel_source(), no_extern_c=True,
                                 options=list(options or []))
        self._functions = {}
        for dtype, name in KERNEL_NAMES.items():
            fn = _call(f"finding kernel {name}", self._module.get_function, name)
            self._functions[dtype] = _call(f"preparing kernel {name}", fn.prepare, ARG_FORMAT) or fn
        self._out = None
        self._out_bytes = 0
        self._groups: Dict[Tuple[int, ...], object] = {}

    # -- lifetime ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._functions is None

    def free(self) -> None:
        """Free the device buffers and drop the module (the context must be current). Idempotent."""
        if self._functions is None:
            return
        buffers = ([self._out] if self._out is not None else []) + list(self._groups.values())
        self._out, self._out_bytes, self._groups = None, 0, {}
        self._functions, self._module = None, None
        for buf in buffers:
            _call("freeing a decoder buffer", buf.free)

    def __enter__(self) -> "CudaDecoder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.free()

    # -- decoding ---------------------------------------------------------------------------------

    def _groups_buffer(self, groups: np.ndarray):
        key = tuple(int(g) for g in groups)
        buf = self._groups.get(key)
        if buf is None:
            # One table per head layout; never overwritten, so a kernel still in flight on
            # another stream keeps reading the table it was launched with.
            if len(self._groups) >= _MAX_CACHED_GROUPS:
                for old in self._groups.values():
                    _call("freeing a group table", old.free)
                self._groups = {}
            cuda = _driver()
            table = np.ascontiguousarray(groups, dtype=np.int32)
            buf = _call("allocating the group table", cuda.mem_alloc, max(table.nbytes, 4))
            if table.nbytes:
                _call("uploading the group table", cuda.memcpy_htod, buf, table)
            self._groups[key] = buf
        return buf

    def _output(self, nbytes: int):
        if self._out is None or self._out_bytes < nbytes:
            cuda = _driver()
            if self._out is not None:
                _call("freeing the output buffer", self._out.free)
                self._out, self._out_bytes = None, 0
            self._out = _call(f"allocating {nbytes} bytes of decode output", cuda.mem_alloc, nbytes)
            self._out_bytes = nbytes
        return self._out

    def decode(self, heatmap_ptr: int, offset_ptr: int, severity_ptr: int, n: int, k: int, h: int, w: int,
               groups: "Sequence[int] | np.ndarray", dtype="float32", stream=None, *,
               num_conditions: Optional[int] = None, stride: float = 4.0, out_ptr: Optional[int] = None):
        """Launch the kernel on device buffers (NCHW contiguous, all of ``dtype``): heatmap
        [n, k, h, w], offset [n, 2k, h, w], severity [n, 3C, h, w]. ``num_conditions`` is C
        (default ``max(groups) + 1``). Asynchronous on ``stream`` (None = the default stream).

        Returns the decoder's device buffer holding float32 [n, k, 8] packed records; it stays
        valid until the next ``decode`` or ``free``. ``out_ptr``, when given, is a device address
        of at least ``n * k * 32`` bytes (e.g. mapped pinned memory) written instead, and returned. Raises :class:`InputError` on bad sizes,
        dtype or groups, :class:`CudaDecodeError` on CUDA failures or after ``free``.
        """
        if self._functions is None:
            raise CudaDecodeError("CUDA decoder: used after free()")
        function = self._functions[_kernel_dtype(dtype)]
        dims = {"n": n, "k": k, "h": h, "w": w}
        bad = {name: v for name, v in dims.items() if not isinstance(v, (int, np.integer)) or v < (1 if name in "hw" else 0)}
        if bad:
            raise InputError(f"decode sizes must be integers, n and k >= 0, h and w >= 1; got {bad}")
        n, k, h, w = int(n), int(k), int(h), int(w)
        if n * k > _INT32_MAX or h * w > _INT32_MAX:
            raise InputError(f"decode sizes too large for the kernel's int32 indexing: n*k = {n * k}, h*w = {h * w}")
        groups_arr = np.asarray(groups)
        if groups_arr.size == 0 and k == 0:
            groups_arr = np.zeros(0, dtype=np.int32)
        if (groups_arr.ndim != 1 or groups_arr.shape[0] != k or not np.issubdtype(groups_arr.dtype, np.integer)
                or (k and groups_arr.min() < 0)):
            raise InputError(f"groups must be {k} non-negative integers, got {groups_arr.tolist()}")
        c = int(num_conditions) if num_conditions is not None else (int(groups_arr.max()) + 1 if k else 0)
        if k and (c < 1 or groups_arr.max() >= c):
            raise InputError(f"groups must be in 0..{c - 1} for {c} condition groups, got {groups_arr.tolist()}")
        out = self._output(max(n * k, 1) * RECORD_SIZE * 4) if out_ptr is None else int(out_ptr)
        if n * k == 0:
            return out
        groups_buf = self._groups_buffer(groups_arr)
        _call(f"launching {KERNEL_NAMES[_kernel_dtype(dtype)]} on {n}x{k} maps of {h}x{w}",
              function.prepared_async_call, (n * k, 1), (self.block, 1, 1), stream,
              int(heatmap_ptr), int(offset_ptr), int(severity_ptr), int(groups_buf), int(out),
              n, k, c, h, w, float(stride))
        return out

    def download(self, n: int, k: int, w: int, stream=None) -> Decoded:
        """Copy the last ``decode``'s records to the host (waiting on ``stream``) as a
        :class:`Decoded`; ``w`` is the heatmap width. Raises :class:`CudaDecodeError`."""
        if self._functions is None:
            raise CudaDecodeError("CUDA decoder: used after free()")
        packed = np.empty((int(n), int(k), RECORD_SIZE), dtype=np.float32)
        if packed.nbytes > self._out_bytes:
            raise CudaDecodeError(f"CUDA decoder: download of {n}x{k} records exceeds the last decode's output")
        if packed.size:
            cuda = _driver()
            if stream is None:
                _call("copying the decoded peaks to the host", cuda.memcpy_dtoh, packed, self._out)
            else:
                _call("copying the decoded peaks to the host", cuda.memcpy_dtoh_async, packed, self._out, stream)
                _call("waiting for the decode stream", stream.synchronize)
        return Decoded.from_packed(packed, w)

    def decode_arrays(self, heatmap: np.ndarray, offset: np.ndarray, severity: np.ndarray,
                      groups: "Sequence[int] | np.ndarray", stride: float = 4.0) -> Decoded:
        """Decode host arrays on the GPU (copy in, run, copy the records back): for tests and
        one-off use. float16 inputs run the FP16 kernel when all three are float16, anything
        else runs the FP32 kernel on float32 copies. Raises what :meth:`decode` raises and
        :class:`InputError` on shapes that do not fit together (as ``decode_numpy``)."""
        arrays = [np.asarray(a) for a in (heatmap, offset, severity)]
        for name, arr in zip(("heatmap", "offset", "severity"), arrays):
            if arr.ndim != 4 or not np.issubdtype(arr.dtype, np.floating):
                raise InputError(f"{name} must be a 4-D float array, got {arr.dtype} {list(arr.shape)}")
        groups_arr = check_shapes(arrays[0].shape, arrays[1].shape, arrays[2].shape, groups)
        dtype = np.float16 if all(a.dtype == np.float16 for a in arrays) else np.float32
        arrays = [np.ascontiguousarray(a, dtype=dtype) for a in arrays]
        n, k, h, w = arrays[0].shape
        cuda = _driver()
        buffers = []
        try:
            for arr in arrays:
                buf = _call(f"allocating {arr.nbytes} bytes", cuda.mem_alloc, max(arr.nbytes, 1))
                buffers.append(buf)
                if arr.nbytes:
                    _call("copying an input to the device", cuda.memcpy_htod, buf, arr)
            self.decode(*(int(b) for b in buffers), n, k, h, w, groups_arr, dtype,
                        num_conditions=arrays[2].shape[1] // 3, stride=stride)
            return self.download(n, k, w)
        finally:
            for buf in buffers:
                _call("freeing an input buffer", buf.free)
