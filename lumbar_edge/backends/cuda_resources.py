"""CUDA resources the GPU backends share, each with one owner, ``free()`` and a context manager.

* :class:`PrimaryContext`: the device's primary context, retained for an engine's lifetime and
  made current around each call (shared with TensorRT, PyTorch and the CUDA runtime; never
  ``pycuda.autoinit``'s private context);
* :class:`DeviceBuffer`, :class:`HostBuffer` (pinned, or mapped pinned on integrated GPUs such as
  Jetson, where the device reads the host memory directly);
* :class:`Stream`: one per engine;
* :class:`GraphExec`: a captured CUDA graph. pycuda (2026.1) has no stream-capture API, so capture
  goes through the driver API (``libcuda``) via ctypes on the pycuda stream's handle.

Every pycuda call goes through :func:`cuda_call` and every driver-API call through
:func:`driver_call`; both raise :class:`CudaError` naming the step. pycuda is imported inside
functions only (the ``trt`` extra).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from typing import Iterator, Optional, Tuple

import numpy as np

from ..errors import MissingDependencyError
from .base import EngineError

#: cuStreamBeginCapture mode: capture only this thread's work into the graph (what trtexec uses).
CAPTURE_MODE_THREAD_LOCAL = 1


class CudaError(EngineError):
    """A CUDA call of a GPU backend failed; the message names the step and the driver's error."""


def driver():
    """``pycuda.driver``, or :class:`MissingDependencyError` naming the ``trt`` extra."""
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as exc:  # OSError: pycuda present but libcuda cannot load
        raise MissingDependencyError("the GPU backends", ["pycuda"], "trt") from exc
    return cuda


def checked_call(error_cls, what: str, fn, *args, **kwargs):
    """Run one pycuda call; the one place pycuda's errors (base ``pycuda.driver.Error``: LogicError,
    LaunchError, MemoryError, CompileError ...) become ``error_cls`` naming ``what``."""
    cuda = driver()
    try:
        return fn(*args, **kwargs)
    except cuda.Error as exc:
        raise error_cls(f"{what} failed: {type(exc).__name__}: {exc}".rstrip()) from exc


def cuda_call(what: str, fn, *args, **kwargs):
    """Run one pycuda call, turning pycuda's errors into :class:`CudaError` naming ``what``."""
    return checked_call(CudaError, f"CUDA: {what}", fn, *args, **kwargs)


@functools.lru_cache(maxsize=1)
def _libcuda() -> ctypes.CDLL:
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError as exc:
        raise CudaError(f"CUDA: cannot load the driver library {name}: {exc}") from exc


def _status_error(what: str, name: str, status: int) -> "CudaError":
    text = ctypes.c_char_p()
    _libcuda().cuGetErrorString(status, ctypes.byref(text))
    detail = text.value.decode(errors="replace") if text.value else "unknown error"
    return CudaError(f"CUDA: {what} failed: {name} returned {status} ({detail})")


def driver_call(what: str, name: str, *args) -> None:
    """Call the driver-API function ``name`` of libcuda; :class:`CudaError` unless it returns 0."""
    status = getattr(_libcuda(), name)(*args)
    if status != 0:
        raise _status_error(what, name, status)


def device_info(device: int = 0) -> Tuple[str, Tuple[int, int], bool]:
    """``(name, (major, minor), integrated)`` of CUDA device ``device``. Raises
    :class:`MissingDependencyError` without pycuda, :class:`CudaError` without a working device."""
    cuda = driver()
    cuda_call("cuInit", cuda.init)
    count = cuda_call("counting devices", cuda.Device.count)
    if not 0 <= device < count:
        raise CudaError(f"CUDA: device {device} does not exist ({count} present)")
    dev = cuda.Device(device)
    integrated = bool(cuda_call("reading INTEGRATED", dev.get_attribute, cuda.device_attribute.INTEGRATED))
    return dev.name(), tuple(dev.compute_capability()), integrated


def gpu_missing_reason(device: int = 0) -> Optional[str]:
    """Why no CUDA device ``device`` is usable here (one line), or ``None``; cheap enough for
    ``unavailable_reason`` (pycuda import + cuInit)."""
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as exc:
        return f"pycuda does not import ({exc})"
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as exc:
        return f"no usable NVIDIA GPU (cuInit failed: {exc})"
    if count <= device:
        return f"no NVIDIA GPU (the CUDA driver reports {count} devices)"
    return None


class PrimaryContext:
    """Device ``device``'s primary context, retained until :meth:`free`; ``with ctx.current():``
    makes it current for a block. Raises :class:`CudaError` when the device is unusable."""

    def __init__(self, device: int = 0):
        cuda = driver()
        device_info(device)
        self.device = device
        self._ctx = cuda_call(f"retaining the primary context of device {device}",
                              cuda.Device(device).retain_primary_context)

    @contextlib.contextmanager
    def current(self) -> Iterator["PrimaryContext"]:
        if self._ctx is None:
            raise CudaError("CUDA: the primary context was used after free()")
        cuda = driver()
        cuda_call("pushing the primary context", self._ctx.push)
        try:
            yield self
        finally:
            cuda_call("popping the primary context", cuda.Context.pop)

    def free(self) -> None:
        """Release the retain (the context lives on while others hold it); idempotent."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            cuda_call("releasing the primary context", ctx.detach)

    def __enter__(self) -> "PrimaryContext":
        return self

    def __exit__(self, *exc) -> None:
        self.free()


class DeviceBuffer:
    """``nbytes`` of device memory (``int(buf)`` / :attr:`ptr` is its address); a context must
    be current to create and free it."""

    def __init__(self, nbytes: int, what: str = "a device buffer"):
        cuda = driver()
        self.nbytes = int(nbytes)
        self._mem = cuda_call(f"allocating {self.nbytes} bytes for {what}", cuda.mem_alloc, max(self.nbytes, 1))
        self.ptr = int(self._mem)

    def __int__(self) -> int:
        return self.ptr

    def free(self) -> None:
        mem, self._mem = self._mem, None
        if mem is not None:
            cuda_call("freeing a device buffer", mem.free)

    def __enter__(self) -> "DeviceBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.free()


class HostBuffer:
    """A pinned host array of ``shape``/``dtype``; ``mapped=True`` maps it into the device's
    address space (integrated GPUs: :attr:`device_ptr` reads it in place, no copy)."""

    def __init__(self, shape, dtype, mapped: bool = False):
        cuda = driver()
        flags = cuda.host_alloc_flags.DEVICEMAP if mapped else 0
        self.array: Optional[np.ndarray] = cuda_call(
            f"allocating {'mapped ' if mapped else ''}pinned host memory", cuda.pagelocked_empty,
            tuple(shape), np.dtype(dtype), mem_flags=flags)
        self.mapped = mapped
        self.device_ptr: Optional[int] = (int(cuda_call("mapping pinned memory", self.array.base.get_device_pointer))
                                          if mapped else None)

    def free(self) -> None:
        array, self.array = self.array, None
        if array is not None:
            cuda_call("freeing pinned host memory", array.base.free)

    def __enter__(self) -> "HostBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.free()


class Stream:
    """One CUDA stream (``.stream`` the pycuda object, ``.handle`` the raw CUstream)."""

    def __init__(self):
        cuda = driver()
        self.stream = cuda_call("creating a stream", cuda.Stream)
        self.handle = int(self.stream.handle)

    def synchronize(self) -> None:
        cuda_call("waiting for the stream", self.stream.synchronize)

    def free(self) -> None:
        # pycuda destroys the stream when its object goes; dropping the only reference is the release.
        self.stream = None

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.free()


class GraphExec:
    """A CUDA graph captured from ``stream`` while ``record()`` enqueues work, instantiated.

    Raises :class:`CudaError` when capture or instantiation fails (the stream is left out of
    capture mode); :meth:`launch` replays it on the stream.
    """

    def __init__(self, stream: Stream, record):
        lib = _libcuda()
        handle = ctypes.c_void_p(stream.handle)
        self._stream = handle
        self._graph, self._exec = None, None
        driver_call("beginning stream capture", "cuStreamBeginCapture_v2", handle,
                    ctypes.c_int(CAPTURE_MODE_THREAD_LOCAL))
        graph = ctypes.c_void_p()
        try:
            record()
        except BaseException:
            # End the capture so the stream stays usable, drop the partial graph, and re-raise
            # record()'s error (which says more than any status of this clean-up would).
            if lib.cuStreamEndCapture(handle, ctypes.byref(graph)) == 0 and graph.value:
                lib.cuGraphDestroy(graph)
            raise
        status = lib.cuStreamEndCapture(handle, ctypes.byref(graph))
        if graph.value:
            self._graph = graph
        if status != 0:
            self.free()
            raise _status_error("ending stream capture", "cuStreamEndCapture", status)
        executable = ctypes.c_void_p()
        try:
            driver_call("instantiating a CUDA graph", "cuGraphInstantiateWithFlags", ctypes.byref(executable),
                        graph, ctypes.c_ulonglong(0))
        except CudaError:
            self.free()
            raise
        self._exec = executable

    def launch(self) -> None:
        if not self._exec:
            raise CudaError("CUDA: a graph was launched after free()")
        driver_call("launching a CUDA graph", "cuGraphLaunch", self._exec, self._stream)

    def free(self) -> None:
        exec_, graph = self._exec, self._graph
        self._exec, self._graph = None, None
        if exec_:
            driver_call("destroying a graph executable", "cuGraphExecDestroy", exec_)
        if graph:
            driver_call("destroying a CUDA graph", "cuGraphDestroy", graph)

    def __enter__(self) -> "GraphExec":
        return self

    def __exit__(self, *exc) -> None:
        self.free()


__all__ = ["CudaError", "DeviceBuffer", "GraphExec", "HostBuffer", "PrimaryContext", "Stream", "cuda_call",
           "device_info", "driver", "driver_call", "gpu_missing_reason"]
