"""The CUDA peak decoder: loads ``kernels/decode.cu`` through pycuda and runs it on device buffers.

It decodes exactly as :func:`lumbar_edge.decode.decode_numpy` (same tie, NaN and activation rules,
shared with the kernel through ``kernels/decode_common.cuh``) and reads the engine's output
buffers in place: only the packed float32 [N, K, 8] records (layout
:data:`lumbar_edge.decode.PACKED_FIELDS`) are written, and only they cross to the host.

The kernel comes prebuilt: ``kernels/decode.fatbin`` (built by :mod:`lumbar_edge.kernels.build`
at package build or in CI, SASS for sm_80/86/87/89/90/100/120 and PTX) is loaded with
``module_from_file`` when it holds an image for the GPU and was built from the installed sources
(:func:`kernel_plan`, a pure function); decode.cu is compiled at run time with nvcc (pycuda's
``SourceModule``) only when it does not, and a missing nvcc then raises
:class:`~lumbar_edge.errors.MissingDependencyError` saying so.

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
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

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
_MAX_CACHED_GROUPS = 8  # group tables kept on the device that no captured graph holds


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
    """The nvcc command line that builds decode.cu into a fatbin of SASS for ``archs`` and prints
    ptxas's register/spill report (run it in :func:`kernel_dir`). The same fatbin loads through
    ``CudaDecoder(cubin=...)``; the packaged one is built by :mod:`lumbar_edge.kernels.build`."""
    from .kernels.build import fatbin_command

    return fatbin_command(nvcc, out, "decode.cu", [int(a[3:]) for a in archs], [])


def fatbin_image_for(compute_capability: Tuple[int, int], images: Sequence[Tuple[str, int]]) -> Optional[str]:
    """Which image of a fatbin the driver would load on a GPU of ``compute_capability``, in words,
    or ``None`` when none fits. ``images`` as :func:`lumbar_edge.kernels.build.fatbin_images`
    lists them. SASS for the exact architecture first, then SASS of the same major and a lower
    minor (binary compatible), then the newest PTX not newer than the GPU (JIT-compiled)."""
    major, minor = (int(v) for v in compute_capability)
    arch = major * 10 + minor
    sass = sorted({a for kind, a in images if kind == "sass"})
    ptx = sorted({a for kind, a in images if kind == "ptx"})
    if arch in sass:
        return f"SASS sm_{arch}"
    compatible = [a for a in sass if a // 10 == major and a % 10 <= minor]
    if compatible:
        return f"SASS sm_{compatible[-1]} (binary compatible with sm_{arch})"
    jit = [a for a in ptx if a <= arch]
    if jit:
        return f"PTX compute_{jit[-1]}, JIT-compiled by the driver for sm_{arch}"
    return None


def kernel_plan(compute_capability: Tuple[int, int], images: Optional[Sequence[Tuple[str, int]]],
                fatbin_note: Optional[str], nvcc: Optional[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """How to get the decode module on a GPU of ``compute_capability``: ``(steps, refusals)``.

    ``images`` are the packaged fatbin's (``None``: no usable fatbin, ``fatbin_note`` says why);
    ``nvcc`` is the nvcc found on PATH, or ``None``. ``steps`` are tried in order, each
    ``("fatbin", why)`` or ``("source", why)``: the fatbin when it holds an image for this GPU,
    then compiling decode.cu when nvcc is present. ``refusals`` say why a way is not in
    ``steps``. Pure: no CUDA, no files."""
    steps: List[Tuple[str, str]] = []
    refusals: List[str] = []
    arch = "sm_{}{}".format(*compute_capability)
    if images is None:
        refusals.append(fatbin_note or "no packaged decode.fatbin")
    else:
        image = fatbin_image_for(compute_capability, images)
        if image is not None:
            steps.append(("fatbin", image))
        else:
            listed = ", ".join(f"{'sm' if k == 'sass' else 'compute'}_{a}" for k, a in images)
            refusals.append(f"the packaged decode.fatbin has no image for {arch} (it holds {listed})")
    if nvcc is not None:
        steps.append(("source", f"compiled for {arch} by {nvcc}"))
    else:
        refusals.append("nvcc is not on PATH, so decode.cu cannot be compiled here")
    return steps, refusals


def packaged_fatbin(folder: "Path | None" = None) -> Tuple[Optional[Path], Optional[List[Tuple[str, int]]], Optional[str]]:
    """``(path, images, note)`` of the packaged decode.fatbin in ``folder`` (default: the
    installed package): ``images`` is ``None`` when it is absent, unreadable or built from other
    sources than the installed decode.cu, and ``note`` then says which."""
    from .kernels import build

    folder = Path(folder) if folder is not None else kernel_dir()
    path = folder / build.FATBIN_NAME
    manifest = build.read_manifest(folder)
    if manifest is None or not path.is_file():
        return None, None, (f"no packaged decode.fatbin in {folder} (lumbar-edge was installed without nvcc; "
                            f"`python -m lumbar_edge.kernels.build` builds it)")
    try:
        current = manifest.get("source_sha256") == build.source_sha256(kernel_dir())
        images = build.fatbin_images(path.read_bytes())
    except (OSError, LumbarEdgeError) as exc:
        return None, None, f"{path} cannot be used: {exc}"
    if not current:
        return None, None, f"{path} was built from other sources than the installed decode.cu (rebuild it)"
    return path, images, None


def compile_source(source_module: Callable, nvcc: str, options: Sequence[str] = ()):
    """``source_module`` (pycuda's ``SourceModule``) on the inlined kernel source with ``nvcc``.

    pycuda runs nvcc (and ``nvcc --preprocess`` for its cache key) through ``subprocess``: a
    missing or unrunnable nvcc surfaces as :class:`OSError`, raised here as
    :class:`MissingDependencyError`; pycuda's own compile errors pass through."""
    try:
        return source_module(kernel_source(), nvcc=nvcc, no_extern_c=True, options=list(options))
    except OSError as exc:
        raise MissingDependencyError(
            "compiling the CUDA decode kernel at run time", ["nvcc (the CUDA toolkit)"], "trt",
            how=(f"running {nvcc} failed ({exc}); put the CUDA toolkit's nvcc on PATH, or install a lumbar-edge "
                 f"whose packaged decode.fatbin covers this GPU (`python -m lumbar_edge.kernels.build`)")) from exc


class GroupTables:
    """Device copies of group tables, one per head layout, keyed by the groups.

    A table is never overwritten (a kernel still in flight reads the table it was launched with),
    and a table that a captured graph holds (:meth:`hold`) is never freed until it is released:
    the graph's kernel node keeps its address. At most ``limit`` tables that nobody holds are
    kept; beyond that the least recently used of them is freed. ``upload(table)`` makes a device
    buffer (with ``free()`` and ``int()``) holding the int32 ``table``.
    """

    def __init__(self, upload: Callable[[np.ndarray], object], limit: int = _MAX_CACHED_GROUPS):
        self._upload = upload
        self._limit = int(limit)
        self._tables: "OrderedDict[Tuple[int, ...], object]" = OrderedDict()
        self._holds: Dict[Tuple[int, ...], int] = {}

    @staticmethod
    def key(groups: "Sequence[int] | np.ndarray") -> Tuple[int, ...]:
        return tuple(int(g) for g in np.asarray(groups).reshape(-1))

    def __len__(self) -> int:
        return len(self._tables)

    def held(self) -> Dict[Tuple[int, ...], int]:
        """Hold counts per key (a copy)."""
        return dict(self._holds)

    def get(self, groups: "Sequence[int] | np.ndarray"):
        """The device buffer of ``groups``, uploaded on first use."""
        key = self.key(groups)
        buf = self._tables.get(key)
        if buf is not None:
            self._tables.move_to_end(key)
            return buf
        free_ones = [k for k in self._tables if k not in self._holds]
        need = 0 if key in self._holds else 1  # a table uploaded for hold() never counts
        while free_ones and len(free_ones) + need > self._limit:
            self._tables.pop(free_ones.pop(0)).free()
        buf = self._upload(np.ascontiguousarray(key, dtype=np.int32))
        self._tables[key] = buf
        return buf

    def hold(self, groups: "Sequence[int] | np.ndarray") -> Tuple[int, ...]:
        """Keep ``groups``' table (uploading it now if needed) until :meth:`release`; returns its key."""
        key = self.key(groups)
        self._holds[key] = self._holds.get(key, 0) + 1
        try:
            self.get(groups)
        except BaseException:
            self.release(key)
            raise
        return key

    def release(self, key: Tuple[int, ...]) -> None:
        """Drop one hold of ``key`` (a key :meth:`hold` returned); unknown keys are ignored."""
        count = self._holds.get(key, 0)
        if count <= 1:
            self._holds.pop(key, None)
        else:
            self._holds[key] = count - 1

    def buffers(self) -> List[object]:
        """Every table's buffer, and forget them all (for freeing at the end)."""
        buffers = list(self._tables.values())
        self._tables.clear()
        self._holds.clear()
        return buffers


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
    """The kernel's functions, a device output buffer and cached group tables.

    Create and use it with the same CUDA context current. The module comes from ``cubin`` when
    given (a cubin or fatbin file), else as :func:`kernel_plan` says: the packaged fatbin
    (``kernel_folder``, default the installed package) when it holds an image for this GPU, else
    decode.cu compiled with the nvcc on PATH (``options`` go to nvcc); :attr:`module_source` says
    which. Raises :class:`MissingDependencyError` without pycuda, or when the fatbin has no image
    for this GPU and there is no nvcc; :class:`InputError` for a block size that is not a multiple
    of 32 in 32..256; :class:`CudaDecodeError` when no context is current or the module does not
    build or load.
    """

    def __init__(self, block: int = DEFAULT_BLOCK, cubin: "str | Path | None" = None,
                 options: Optional[Sequence[str]] = None, kernel_folder: "str | Path | None" = None):
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
            self.module_source = f"{cubin} (given)"
        else:
            self._module, self.module_source = self._load_module(cuda, options, kernel_folder)
        self._functions = {}
        for dtype, name in KERNEL_NAMES.items():
            fn = _call(f"finding kernel {name}", self._module.get_function, name)
            self._functions[dtype] = _call(f"preparing kernel {name}", fn.prepare, ARG_FORMAT) or fn
        self._out = None
        self._out_bytes = 0
        self._groups = GroupTables(self._upload_table)

    @staticmethod
    def _load_module(cuda, options, kernel_folder):
        """``(module, how)`` following :func:`kernel_plan`; a step that fails to load is passed
        over for the next, and every failure is named if none succeeds."""
        device = _call("querying the current device", cuda.Context.get_device)
        cc = tuple(int(v) for v in _call("reading the compute capability", device.compute_capability))
        path, images, note = packaged_fatbin(kernel_folder)
        nvcc = shutil.which("nvcc")
        steps, refusals = kernel_plan(cc, images, note, nvcc)
        if not steps:
            raise MissingDependencyError(
                f"the CUDA decode kernel on this GPU (sm_{cc[0]}{cc[1]})", ["nvcc (the CUDA toolkit)"], "trt",
                how=("; ".join(refusals) + "; put the CUDA toolkit's nvcc on PATH, or install a lumbar-edge built "
                     "where nvcc covers this GPU (`python -m lumbar_edge.kernels.build`)"))
        failures = []
        for kind, why in steps:
            try:
                if kind == "fatbin":
                    return _call(f"loading {path}", cuda.module_from_file, str(path)), f"{path.name}: {why}"
                from pycuda.compiler import SourceModule

                return (_call("compiling decode.cu", compile_source, SourceModule, nvcc, options or ()),
                        f"decode.cu {why}")
            except CudaDecodeError as exc:
                failures.append(str(exc))
        raise CudaDecodeError("CUDA decoder: no way to load the kernel worked: " + "; ".join(failures + refusals))

    def _upload_table(self, table: np.ndarray):
        cuda = _driver()
        buf = _call("allocating the group table", cuda.mem_alloc, max(table.nbytes, 4))
        if table.nbytes:
            try:
                _call("uploading the group table", cuda.memcpy_htod, buf, table)
            except CudaDecodeError:
                _call("freeing a group table", buf.free)
                raise
        return buf

    def hold_groups(self, groups: "Sequence[int] | np.ndarray") -> Tuple[int, ...]:
        """Keep ``groups``' device table (uploading it now, outside any stream capture) until
        :meth:`release_groups`: call it before capturing a graph that decodes with these groups,
        and release when the graph is destroyed. Returns the key to release."""
        if self._functions is None:
            raise CudaDecodeError("CUDA decoder: used after free()")
        return self._groups.hold(groups)

    def release_groups(self, key: Tuple[int, ...]) -> None:
        """Drop a hold from :meth:`hold_groups` (the table may then be freed to make room)."""
        if self._functions is not None:
            self._groups.release(key)

    # -- lifetime ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._functions is None

    def free(self) -> None:
        """Free the device buffers and drop the module (the context must be current). Idempotent."""
        if self._functions is None:
            return
        buffers = ([self._out] if self._out is not None else []) + self._groups.buffers()
        self._out, self._out_bytes = None, 0
        self._functions, self._module = None, None
        for buf in buffers:
            _call("freeing a decoder buffer", buf.free)

    def __enter__(self) -> "CudaDecoder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.free()

    # -- decoding ---------------------------------------------------------------------------------

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
        groups_buf = self._groups.get(groups_arr)
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
