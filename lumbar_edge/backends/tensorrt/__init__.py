"""TensorRT runtime backend: a bundle's serialized engine, pycuda buffers, the CUDA decode kernel.

Imports ``tensorrt`` or, failing that, the lean runtime ``tensorrt_lean`` (inside the engine
only). Device buffers are allocated once for the maximum batch, inputs go through pinned host
memory (mapped pinned memory on integrated GPUs such as Jetson, which the GPU reads in place), and
the engine and then the decode kernel are enqueued on the engine's one stream; only the packed
decode records come back. Engine + decode are captured in a CUDA graph per (batch size, groups)
seen, each batch size on its own execution context whose input shape is set once (a graph
recorded for one shape is invalid after ``set_input_shape`` to another); all contexts share one
scratch allocation (``USER_MANAGED``), which is safe because they only ever run one after another
on the engine's stream. The decoder's group table of a captured graph is held until the graph is
freed. When capture fails (some DLA or plugin engines cannot be captured, or the decode launch
is refused during capture) that key falls back to plain enqueueing, recorded in
:attr:`TensorRTEngine.graph_status`.

Every TensorRT name used here is listed in :data:`REQUIRED_NAMES` and checked at activation (and
in CI against the real ``tensorrt_lean`` bindings).
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ...decode_cuda import CudaDecodeError
from ...errors import InputError
from ..base import OUTPUT_NAMES, Engine, EngineError, _dims

#: Modules tried in order: the full TensorRT, then the lean runtime.
TENSORRT_MODULES: Tuple[str, ...] = ("tensorrt", "tensorrt_lean")
#: Every TensorRT attribute this backend uses, by owner (``module`` is the package itself).
REQUIRED_NAMES: Mapping[str, Tuple[str, ...]] = {
    "module": ("__version__", "Logger", "Runtime", "TensorIOMode", "DataType", "ExecutionContextAllocationStrategy"),
    "Logger": ("ERROR",),
    "Runtime": ("deserialize_cuda_engine", "engine_host_code_allowed", "DLA_core"),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype", "get_tensor_shape",
                    "get_tensor_profile_shape", "create_execution_context", "device_memory_size_v2"),
    "IExecutionContext": ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3",
                          "set_device_memory"),
    "ExecutionContextAllocationStrategy": ("USER_MANAGED",),
    "TensorIOMode": ("INPUT", "OUTPUT"),
    "DataType": ("FLOAT", "HALF"),
}
#: Precisions in the order this backend prefers them when the caller names none.
PREFERRED_PRECISIONS: Tuple[str, ...] = ("int8", "fp16", "fp32")
#: Batch sizes captured in CUDA graphs (one execution context each); later ones run plainly.
MAX_GRAPH_BATCH_SIZES = 16
#: What a failed capture may raise and still fall back to plain enqueueing: the driver's and
#: TensorRT's errors (CudaError is an EngineError) and the decode kernel's launch during capture.
GRAPH_FALLBACK_ERRORS: Tuple[type, ...] = (EngineError, CudaDecodeError)
_REBUILD = ("rebuild it from the bundle's ONNX with `lumbar-edge export ... --engine` (or `python -m "
            "lumbar_edge.export.tensorrt_build BUNDLE`) on this machine, which needs the full TensorRT (`tensorrt`)")


def capture_or_plain(capture) -> Tuple[Optional[object], str]:
    """``(graph, "graph")`` from ``capture()``, or ``(None, "plain (why)")`` when it raises one of
    :data:`GRAPH_FALLBACK_ERRORS`; anything else (a bug) propagates."""
    try:
        return capture(), "graph"
    except GRAPH_FALLBACK_ERRORS as exc:
        return None, f"plain ({exc})"


def import_tensorrt(names: Sequence[str] = TENSORRT_MODULES):
    """The first of ``names`` (default :data:`TENSORRT_MODULES`) that imports; :class:`ImportError`
    if none does."""
    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except (ImportError, OSError) as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError("neither TensorRT nor its lean runtime imports (" + "; ".join(errors) + ")")


def missing_names(trt) -> List[str]:
    """The entries of :data:`REQUIRED_NAMES` that the module ``trt`` lacks, as ``Owner.name``."""
    missing = []
    for owner, names in REQUIRED_NAMES.items():
        obj = trt if owner == "module" else getattr(trt, owner, None)
        if obj is None:
            missing.append(owner)
            continue
        missing.extend(f"{owner}.{n}" for n in names if not hasattr(obj, n))
    return missing


def version_tuple(text: object) -> Tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0, 30)`` (stops at the first non-numeric part)."""
    parts = []
    for piece in str(text).split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def engine_mismatch(entry: Mapping[str, object], tensorrt_version: str, compute_capability: str,
                    lean: bool = False) -> Optional[str]:
    """Why the bundle engine ``entry`` cannot run on a GPU of ``compute_capability`` ("8.7") with
    TensorRT ``tensorrt_version`` (``lean``: the lean runtime), or ``None`` when it can.

    A plain engine needs the same compute capability and TensorRT major.minor.patch; a
    version-compatible one the same major and a runtime at least as new; the lean runtime runs
    version-compatible engines only.
    """
    built_cc = str(entry.get("compute_capability"))
    if built_cc != str(compute_capability):
        return f"built for sm {built_cc}, this GPU is sm {compute_capability}"
    built, runtime = version_tuple(entry.get("tensorrt_version")), version_tuple(tensorrt_version)
    if len(built) < 3 or len(runtime) < 3:
        return f"unreadable TensorRT version ({entry.get('tensorrt_version')!r} vs {tensorrt_version!r})"
    if entry.get("version_compatible"):
        if built[0] != runtime[0] or runtime[:3] < built[:3]:
            return (f"version-compatible engine of TensorRT {entry.get('tensorrt_version')} needs TensorRT "
                    f"{built[0]}.x at least as new; this is {tensorrt_version}")
        return None
    if lean:
        return "not version-compatible, which the TensorRT lean runtime requires"
    if built[:3] != runtime[:3]:
        return f"built with TensorRT {entry.get('tensorrt_version')}, this is {tensorrt_version}"
    return None


def select_engine_entry(entries: Sequence[Mapping[str, object]], precision: Optional[str], tensorrt_version: str,
                        compute_capability: str, gpu_name: str = "this GPU", lean: bool = False) -> dict:
    """The first entry of ``entries`` (of ``precision``, or the first of
    :data:`PREFERRED_PRECISIONS` that has a usable engine) that runs here. Raises a one-line
    :class:`EngineError` listing why each engine was refused and how to rebuild."""
    order = [precision] if precision is not None else list(PREFERRED_PRECISIONS)
    refused = []
    for wanted in order:
        for entry in entries:
            if entry.get("precision") != wanted:
                continue
            why = engine_mismatch(entry, tensorrt_version, compute_capability, lean)
            if why is None:
                return dict(entry)
            refused.append(f"{entry.get('file')}: {why}")
    runtime = f"TensorRT {'lean runtime ' if lean else ''}{tensorrt_version}"
    what = f"{precision} " if precision else ""
    detail = "; ".join(refused) if refused else f"the bundle has no {what}engine"
    raise EngineError(f"no {what}TensorRT engine in the bundle runs on {gpu_name} (sm {compute_capability}, "
                      f"{runtime}): {detail}; {_REBUILD}")


class TensorRTEngine(Engine):
    """Runs a serialized TensorRT engine on CUDA device ``device``.

    ``max_batch`` is capped by the engine's optimisation profile. ``version_compatible`` engines
    are deserialised with ``engine_host_code_allowed``; ``dla_core`` selects a Jetson DLA core.
    ``cuda_graphs=False`` enqueues plainly instead of capturing graphs. ``runtime`` names the
    module to deserialise with (``"tensorrt_lean"`` to use the lean runtime where the full
    TensorRT is also installed); by default the first of :data:`TENSORRT_MODULES` that imports.
    Raises :class:`InputError` for another ``runtime``.
    """

    name = "tensorrt"
    DECODER = "cuda kernel"
    DEVICE_COPIES = True
    DEPENDENCIES = (("pycuda", "pycuda"),)
    EXTRA = "trt"

    def __init__(self, engine_path: Union[str, Path], *, device: int = 0, max_batch: int = 64,
                 precision: str = "fp16", version_compatible: bool = False, dla_core: Optional[int] = None,
                 cuda_graphs: bool = True, num_keypoints: Optional[int] = None,
                 num_conditions: Optional[int] = None, stride: int = 4, runtime: Optional[str] = None):
        super().__init__(precision=precision, max_batch=max_batch, stride=stride, num_keypoints=num_keypoints,
                         num_conditions=num_conditions)
        if runtime is not None and runtime not in TENSORRT_MODULES:
            raise InputError(f"runtime must be one of {', '.join(TENSORRT_MODULES)}, got {runtime!r}")
        #: The module to deserialise with (None: the first of TENSORRT_MODULES that imports).
        self.runtime = runtime
        self.engine_path = Path(engine_path)
        self.device = int(device)
        self.version_compatible = bool(version_compatible)
        self.dla_core = dla_core
        self.cuda_graphs = bool(cuda_graphs)
        #: Per (batch, groups) key: "graph", or "plain (reason)" when capture failed.
        self.graph_status: Dict[Tuple[int, Tuple[int, ...]], str] = {}
        self.integrated = False
        self._owned: List[object] = []
        self._reset()

    def _reset(self) -> None:
        self._ctx = self._stream = self._engine = self._context = self._runtime = self._decoder = None
        self._input_name: Optional[str] = None
        self._input = self._host_input = self._records = None
        self._records_dev: Optional[int] = None
        self._outputs: Dict[str, object] = {}
        self._out_dtypes: Dict[str, np.dtype] = {}
        self._graphs: Dict[Tuple[int, Tuple[int, ...]], object] = {}
        self._input_ptr: Optional[int] = None
        self._held: Dict[Tuple[int, Tuple[int, ...]], Tuple[int, ...]] = {}  # graph key -> held group table
        self._graph_contexts: Dict[int, object] = {}  # batch size -> its own execution context
        self._scratch = None
        self._shape_n: Optional[int] = None

    # -- availability ---------------------------------------------------------------------------

    @classmethod
    def missing_dependencies(cls) -> List[str]:
        missing = super().missing_dependencies()
        if all(importlib.util.find_spec(m) is None for m in TENSORRT_MODULES):
            missing.append("tensorrt-lean-cu13")
        return missing

    @classmethod
    def unavailable_reason(cls) -> Optional[str]:
        reason = super().unavailable_reason()
        if reason is not None:
            return reason
        from ..cuda_resources import gpu_missing_reason

        return gpu_missing_reason()

    @classmethod
    def from_bundle(cls, bundle, precision: Optional[str] = None, *, device: int = 0, max_batch: int = 64,
                    cuda_graphs: bool = True, **_ignored) -> "TensorRTEngine":
        """An engine for the bundle's TensorRT engine that runs on this GPU and TensorRT.

        Raises :class:`EngineError` (one line) when none fits: built for another GPU or TensorRT
        version, or absent, with how to rebuild it from the ONNX.
        """
        from ..cuda_resources import device_info

        trt = _import_or_missing()
        gpu, (major, minor), _ = device_info(device)
        lean = trt.__name__ == "tensorrt_lean"
        entry = select_engine_entry(bundle.engines, precision, trt.__version__, f"{major}.{minor}", gpu, lean)
        layout = bundle.layout
        return cls(bundle.engine_path(entry), device=device, max_batch=max_batch, precision=str(entry["precision"]),
                   version_compatible=bool(entry.get("version_compatible")), dla_core=entry.get("dla_core"),
                   cuda_graphs=cuda_graphs, num_keypoints=layout.num_keypoints,
                   num_conditions=layout.num_conditions, stride=bundle.stride)

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def precisions_for(cls, bundle) -> List[str]:
        """The precisions of the bundle's TensorRT engines (whether they fit this GPU is checked
        when one is opened)."""
        return list(dict.fromkeys(str(e.get("precision")) for e in bundle.engines))

    def _own(self, resource):
        self._owned.append(resource)
        return resource

    def _activate(self) -> None:
        trt = _import_or_missing(self.runtime)
        absent = missing_names(trt)
        if absent:
            raise EngineError(f"{trt.__name__} {getattr(trt, '__version__', '?')} lacks {', '.join(absent)}; "
                              f"this backend needs TensorRT 10 or 11")
        if not self.engine_path.is_file():
            raise InputError(f"no TensorRT engine at {self.engine_path}")
        from ...decode_cuda import CudaDecoder
        from ..cuda_resources import DeviceBuffer, HostBuffer, PrimaryContext, Stream, device_info

        _, _, self.integrated = device_info(self.device)
        try:
            self._ctx = PrimaryContext(self.device)
            with self._ctx.current():
                self._runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
                if self.version_compatible:
                    self._runtime.engine_host_code_allowed = True
                if self.dla_core is not None:
                    self._runtime.DLA_core = int(self.dla_core)
                self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
                if self._engine is None:
                    raise EngineError(f"{trt.__name__} {trt.__version__} cannot deserialize {self.engine_path.name} "
                                      f"(TensorRT's error is above); {_REBUILD}")
                self._bind(trt)
                # One scratch allocation for every context: they run one after another on one stream.
                self._scratch = self._own(DeviceBuffer(int(self._engine.device_memory_size_v2),
                                                       "TensorRT's scratch memory"))
                self._context = self._new_context(trt)
                self._stream = self._own(Stream())
                n, c, h, w = self.max_batch, *self.input_shape[1:]
                self._set_batch(n)
                if self.integrated:
                    self._host_input = self._own(HostBuffer((n, c, h, w), np.float32, mapped=True))
                    input_ptr = self._host_input.device_ptr
                else:
                    self._host_input = self._own(HostBuffer((n, c, h, w), np.float32))
                    self._input = self._own(DeviceBuffer(n * c * h * w * 4, "the engine input"))
                    input_ptr = self._input.ptr
                self._input_ptr = input_ptr
                for name in OUTPUT_NAMES:
                    shape = tuple(self._context.get_tensor_shape(name))
                    self._outputs[name] = self._own(DeviceBuffer(int(np.prod(shape)) * self._out_dtypes[name].itemsize,
                                                                 name))
                self._bind_addresses(self._context)
                k = tuple(self._context.get_tensor_shape("heatmap"))[1]
                self._records = self._own(HostBuffer((n, k, 8), np.float32, mapped=self.integrated))
                self._records_dev = (self._records.device_ptr if self.integrated
                                     else self._own(DeviceBuffer(n * k * 8 * 4, "decode records")).ptr)
                self._decoder = self._own(CudaDecoder())
        except BaseException:
            self._deactivate()
            raise

    def _bind(self, trt) -> None:
        """Read the engine's I/O: one FLOAT input [N, C, H, W], outputs heatmap/offset/severity."""
        inputs, outputs = [], {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            mode = self._engine.get_tensor_mode(name)
            if mode == trt.TensorIOMode.INPUT:
                inputs.append(name)
            elif mode == trt.TensorIOMode.OUTPUT:
                outputs[name] = self._engine.get_tensor_dtype(name)
        file = self.engine_path.name
        if len(inputs) != 1:
            raise EngineError(f"{file} has {len(inputs)} inputs; the model contract has one ([N, C, H, W] image)")
        self._input_name = inputs[0]
        if self._engine.get_tensor_dtype(self._input_name) != trt.DataType.FLOAT:
            raise EngineError(f"{file}: input {self._input_name!r} is not float32")
        missing = [n for n in OUTPUT_NAMES if n not in outputs]
        if missing:
            raise EngineError(f"{file} has no {', '.join(missing)} output (it has {', '.join(outputs)})")
        dtypes = {trt.DataType.FLOAT: np.dtype(np.float32), trt.DataType.HALF: np.dtype(np.float16)}
        for name in OUTPUT_NAMES:
            if outputs[name] not in dtypes:
                raise EngineError(f"{file}: output {name} is {outputs[name]}; the decode kernel reads FP32 or FP16")
            self._out_dtypes[name] = dtypes[outputs[name]]
        if len({d.name for d in self._out_dtypes.values()}) != 1:
            raise EngineError(f"{file}: the outputs mix FP32 and FP16; the decode kernel reads one dtype")
        shape = _dims(tuple(self._engine.get_tensor_shape(self._input_name)))
        if len(shape) != 4 or None in shape[1:]:
            raise EngineError(f"{file}: input shape {shape} is not [N, C, H, W] with fixed C, H, W")
        profile_max = tuple(self._engine.get_tensor_profile_shape(self._input_name, 0)[2])
        fixed = shape[0]
        limit = fixed if fixed is not None else int(profile_max[0])
        self.max_batch = min(self.max_batch, limit)
        self.input_shape = shape

    def _new_context(self, trt=None):
        """An execution context running in the shared scratch memory."""
        trt = trt or _import_or_missing(self.runtime)
        context = self._engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context for {self.engine_path.name} "
                              f"(out of host or device memory?)")
        context.set_device_memory(self._scratch.ptr, self._scratch.nbytes)
        return context

    def _bind_addresses(self, context) -> None:
        """Point ``context``'s input and outputs at the engine's buffers (sized for max_batch)."""
        if not context.set_tensor_address(self._input_name, self._input_ptr):
            raise EngineError(f"TensorRT refused the input address for {self.engine_path.name}")
        for name in OUTPUT_NAMES:
            if not context.set_tensor_address(name, self._outputs[name].ptr):
                raise EngineError(f"TensorRT refused the {name} address for {self.engine_path.name}")

    def _graph_context(self, n: int):
        """The execution context of batch size ``n`` for graph capture (made on first use, its
        input shape set once and never changed), or ``None`` past :data:`MAX_GRAPH_BATCH_SIZES`."""
        context = self._graph_contexts.get(n)
        if context is None:
            if len(self._graph_contexts) >= MAX_GRAPH_BATCH_SIZES:
                return None
            context = self._new_context()
            c, h, w = self.input_shape[1:]
            if not context.set_input_shape(self._input_name, (n, c, h, w)):
                raise EngineError(f"TensorRT refused input shape {[n, c, h, w]} for {self.engine_path.name}")
            self._bind_addresses(context)
            self._graph_contexts[n] = context
        return context

    def _set_batch(self, n: int) -> None:
        if self._shape_n != n:
            c, h, w = self.input_shape[1:]
            if not self._context.set_input_shape(self._input_name, (n, c, h, w)):
                raise EngineError(f"TensorRT refused input shape {[n, c, h, w]} for {self.engine_path.name}")
            self._shape_n = n

    def _deactivate(self) -> None:
        from ..cuda_resources import CudaError

        errors = []
        try:
            if self._ctx is not None:
                with self._ctx.current():
                    for graph in self._graphs.values():
                        if graph is not None:
                            graph.free()
                    self._graphs.clear()
                    # Contexts before the engine, and both before the scratch memory they run in.
                    self._graph_contexts.clear()
                    self._context = self._engine = self._runtime = None
                    for resource in reversed(self._owned):
                        try:
                            resource.free()
                        except CudaError as exc:
                            errors.append(exc)
        finally:
            self._owned.clear()
            ctx = self._ctx
            self._reset()
            if ctx is not None:
                ctx.free()
        if errors:
            raise errors[0]

    # -- inference ------------------------------------------------------------------------------

    def _upload(self, images: np.ndarray) -> None:
        from ..cuda_resources import cuda_call, driver

        n = images.shape[0]
        np.copyto(self._host_input.array[:n], images)
        if self._input is not None:
            cuda_call("copying the batch to the device", driver().memcpy_htod_async, self._input.ptr,
                      self._host_input.array[:n], self._stream.stream)

    def _enqueue(self, context=None) -> None:
        if not (context or self._context).execute_async_v3(self._stream.handle):
            raise EngineError(f"TensorRT failed to enqueue {self.engine_path.name}")

    def _infer(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        from ..cuda_resources import cuda_call, driver

        cuda = driver()
        n = images.shape[0]
        with self._ctx.current():
            self._set_batch(n)
            self._upload(images)
            self._enqueue()
            out = {}
            for name in OUTPUT_NAMES:
                host = np.empty(tuple(self._context.get_tensor_shape(name)), self._out_dtypes[name])
                cuda_call(f"copying {name} to the host", cuda.memcpy_dtoh_async, host, self._outputs[name].ptr,
                          self._stream.stream)
                out[name] = host
            self._stream.synchronize()
        return {k: v.astype(np.float32, copy=False) for k, v in out.items()}

    def _decode_into_records(self, n: int, groups: np.ndarray, context=None) -> None:
        context = context or self._context
        k, h, w = tuple(context.get_tensor_shape("heatmap"))[1:]
        c = tuple(context.get_tensor_shape("severity"))[1] // 3
        self._decoder.decode(self._outputs["heatmap"].ptr, self._outputs["offset"].ptr, self._outputs["severity"].ptr,
                             n, k, h, w, groups, self._out_dtypes["heatmap"], self._stream.stream,
                             num_conditions=c, stride=float(self.stride), out_ptr=self._records_dev)

    def infer_decoded(self, images: np.ndarray, groups: "Sequence[int] | np.ndarray"):
        """Run a batch and decode on the GPU; only the packed records cross to the host.

        Raises what :meth:`Engine.infer` raises, :class:`InputError` for bad ``groups``, and
        :class:`~lumbar_edge.backends.cuda_resources.CudaError` when a CUDA call fails. A key
        (batch size, groups) whose capture fails runs plainly from then on (:attr:`graph_status`).
        """
        from ...decode import Decoded
        from ..cuda_resources import cuda_call, driver

        images = self.check_input(images)
        groups_arr = np.asarray(groups)
        if groups_arr.ndim != 1 or not np.issubdtype(groups_arr.dtype, np.integer):
            raise InputError(f"groups must be a 1-D sequence of integers, got {groups_arr.tolist()}")
        n = images.shape[0]
        if self.timer is not None:
            return self._infer_decoded_timed(images, groups_arr)
        key = (n, tuple(int(g) for g in groups_arr))
        with self._ctx.current():
            self._upload(images)
            graph = self._graphs.get(key)
            if graph is not None:
                graph.launch()
                context = self._graph_contexts[n]
            elif key in self.graph_status or not self.cuda_graphs:
                context = self._run_plain(n, groups_arr)
                self.graph_status.setdefault(key, "plain (cuda_graphs=False)")
            else:
                context = self._graph_context(n)
                if context is None:
                    context = self._run_plain(n, groups_arr)
                    self.graph_status[key] = f"plain (more than {MAX_GRAPH_BATCH_SIZES} batch sizes captured)"
                else:
                    # Uncaptured first run on this shape's context: TensorRT's deferred setup and
                    # the group table's upload happen here, outside any capture.
                    self._enqueue(context)
                    self._decode_into_records(n, groups_arr, context)
                    self._stream.synchronize()
                    self._capture(key, context, groups_arr)
            w = tuple(context.get_tensor_shape("heatmap"))[3]
            records = self._records.array[:n]
            if not self.integrated:
                cuda_call("copying the decoded peaks to the host", driver().memcpy_dtoh_async, records,
                          self._records_dev, self._stream.stream)
            self._stream.synchronize()
            return Decoded.from_packed(np.array(records), w)

    def _run_plain(self, n: int, groups_arr: np.ndarray):
        """Engine + decode enqueued on the plain context (shape set to ``n``); returns it."""
        self._set_batch(n)
        self._enqueue()
        self._decode_into_records(n, groups_arr)
        return self._context

    def _capture(self, key, context, groups_arr: np.ndarray) -> None:
        """Capture engine + decode for ``key`` on ``context``; on failure the key runs plainly.
        The group table is held for the graph's lifetime (its address is baked into the graph)."""
        from ..cuda_resources import GraphExec

        n = key[0]
        held = self._decoder.hold_groups(groups_arr)
        graph, status = capture_or_plain(lambda: GraphExec(self._stream, lambda: (
            self._enqueue(context), self._decode_into_records(n, groups_arr, context))))
        if graph is None:
            self._decoder.release_groups(held)
        else:
            self._graphs[key] = graph
            self._held[key] = held
        self.graph_status[key] = status

    def _infer_decoded_timed(self, images: np.ndarray, groups_arr: np.ndarray):
        """:meth:`infer_decoded` for a stage timer: copy in, engine, decode kernel and copy out
        run one by one, each synchronised, without the CUDA graph (which fuses them)."""
        from ...decode import Decoded
        from ..cuda_resources import cuda_call, driver

        n = images.shape[0]
        with self._ctx.current():
            self._set_batch(n)
            with self.stage("h2d"):
                self._upload(images)
                self._stream.synchronize()
            with self.stage("engine", n):
                self._enqueue()
                self._stream.synchronize()
            with self.stage("decode"):
                self._decode_into_records(n, groups_arr)
                self._stream.synchronize()
            with self.stage("d2h"):
                records = self._records.array[:n]
                if not self.integrated:
                    cuda_call("copying the decoded peaks to the host", driver().memcpy_dtoh_async, records,
                              self._records_dev, self._stream.stream)
                self._stream.synchronize()
                w = tuple(self._context.get_tensor_shape("heatmap"))[3]
                return Decoded.from_packed(np.array(records), w)

    def device_memory(self) -> Optional[Tuple[int, str]]:
        """Bytes in use on the whole GPU (all processes: TensorRT has no per-engine peak)."""
        from ..cuda_resources import driver

        if self._ctx is None:
            return None
        with self._ctx.current():
            free, total = driver().mem_get_info()
        return int(total - free), "in use on the GPU (cuMemGetInfo, all processes)"

    def describe(self) -> Dict[str, object]:
        """Settings for logs and benchmark records."""
        return {"backend": self.name, "precision": self.precision, "engine": str(self.engine_path),
                "device": self.device, "integrated": self.integrated, "max_batch": self.max_batch,
                "version_compatible": self.version_compatible, "dla_core": self.dla_core,
                "graphs": {f"{n}": s for (n, _), s in self.graph_status.items()},
                "graph_contexts": sorted(self._graph_contexts)}


def _import_or_missing(runtime: Optional[str] = None):
    from ...errors import MissingDependencyError

    try:
        return import_tensorrt((runtime,) if runtime else TENSORRT_MODULES)
    except ImportError as exc:
        raise MissingDependencyError("the tensorrt backend", ["tensorrt-lean-cu13"], "trt") from exc


__all__ = ["PREFERRED_PRECISIONS", "REQUIRED_NAMES", "TENSORRT_MODULES", "TensorRTEngine", "engine_mismatch",
           "import_tensorrt", "missing_names", "select_engine_entry"]
