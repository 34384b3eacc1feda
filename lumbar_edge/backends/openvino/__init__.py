"""OpenVINO backend: the fastest CPU engine on x86 consoles and workstations without an NVIDIA GPU.

It runs the bundle's own ONNX files: FP32, and the INT8 Q/DQ model the export calibrated once for
TensorRT and ONNX Runtime (OpenVINO's low-precision passes turn each DequantizeLinear -> Conv ->
QuantizeLinear into a real INT8 convolution). FP16 runs where the device computes in FP16 (Intel
GPUs, CPUs with AVX512-FP16); elsewhere it is refused rather than silently run in FP32.

``openvino`` is imported only in :meth:`OpenVinoEngine._activate` (and in :func:`device_capabilities`),
so importing this module is cheap and works without it; the ``openvino`` extra installs it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ...errors import InputError
from ..base import OUTPUT_NAMES, Engine, EngineError, _dims, usable_cpus

#: Precisions in the order this backend prefers them when the caller names none: INT8 (Q/DQ) is
#: the fastest on CPUs, but only where the export measured OpenVINO's INT8 to be as accurate as
#: ONNX Runtime's (:func:`int8_accuracy_problem`).
PREFERRED_PRECISIONS: Tuple[str, ...] = ("int8", "fp32", "fp16")
#: How much worse than ONNX Runtime's INT8 OpenVINO's INT8 may be, on the export's own figures,
#: before it is not chosen by default: the share of heatmap peaks in the same cell as FP32's
#: (parity inputs), and the validation competition score's rise over FP32 (lower is better).
#: On the demo bundle (AMD EPYC, AVX2 only; OpenVINO 2025.4 and 2026.4 alike) OpenVINO's INT8 had
#: 68% of peaks where FP32 has them against ONNX Runtime's 94%, and a score 0.08 worse against
#: 0.003, on the same Q/DQ file: a grade a user would not get from the other engines.
INT8_PEAK_MARGIN = 0.05
INT8_SCORE_MARGIN = 0.02
#: ``hint`` values: one request with every thread on it (``latency``: a study at a time, ``serve``,
#: ``bench``), or several streams each running a slice of the batch (``throughput``).
HINTS: Tuple[str, ...] = ("latency", "throughput")
#: Devices OpenVINO composes from real ones; they are not in ``Core.available_devices``.
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
#: The compute precision asked of the device per model precision. FP32 and INT8 models keep their
#: floating-point parts in FP32, as ONNX Runtime runs them: OpenVINO's CPU default is BF16 on CPUs
#: that have it (AMX, AVX512-BF16) and FP16 on GPUs, which would make "fp32" mean something else
#: on each machine and the grades differ from the other backends'.
_INFERENCE_PRECISION = {"fp32": "f32", "int8": "f32", "fp16": "f16"}


#: CPU features that decide how OpenVINO runs INT8 (and FP16/BF16) kernels on x86: the accuracy
#: the export measured holds for CPUs with the same set.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def cpu_isa() -> List[str]:
    """The :data:`ISA_FLAGS` this CPU has (from /proc/cpuinfo), or ``[platform.machine()]`` where
    the flags cannot be read (not Linux, not x86)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        flags = None
    if not flags:
        return [platform.machine() or "unknown"]
    return [flag for flag in ISA_FLAGS if flag in flags]


def default_cache_dir() -> Optional[Path]:
    """Where compiled OpenVINO models are cached between runs: ``$LUMBAR_EDGE_CACHE_DIR/openvino``,
    else ``$XDG_CACHE_HOME`` or ``~/.cache``, ``/lumbar-edge/openvino``; None when that folder
    cannot be made (the engine then compiles every run: slower, not wrong)."""
    root = os.environ.get("LUMBAR_EDGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lumbar-edge")
    folder = Path(root) / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # OpenVINO's messages start with the C++ source location ("Exception from src/...:123:");
    # the reason is on the lines after it.
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Exception from")]
    return lines[0] if lines else (text.splitlines()[0] if text else type(exc).__name__)


#: What OpenVINO raises for unreadable models, failed compiles and failed runs (its C++
#: exceptions arrive as RuntimeError; argument conversions as TypeError/ValueError).
_OV_ERRORS = (RuntimeError, ValueError, TypeError, OSError)


def device_capabilities(device: str = "CPU") -> List[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of ``device`` (e.g. ``['FP32', 'INT8', ...]``);
    empty when openvino is missing or the device is absent."""
    try:
        import openvino as ov
    except ImportError:
        return []
    core = ov.Core()
    base = device.split(".")[0].split(":")[0]
    if base in VIRTUAL_DEVICES or not any(d.split(".")[0] == base for d in core.available_devices):
        return []
    try:
        return [str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")]
    except _OV_ERRORS:
        return []


def _int8_convolutions(compiled) -> Optional[str]:
    """``"40 of 43"``: how many of the compiled model's convolutions run in INT8 (what OpenVINO's
    low-precision passes made of the Q/DQ pairs), or None where the device does not say (GPU)."""
    try:
        ops = compiled.get_runtime_model().get_ordered_ops()
        kinds = [(op.get_rt_info()["layerType"].astype(str), op.get_rt_info()["runtimePrecision"].astype(str))
                 for op in ops]
    except (*_OV_ERRORS, KeyError):
        # Only the CPU plugin's runtime graph carries these execution-node entries.
        return None
    convs = [precision for kind, precision in kinds if kind == "Convolution"]
    return f"{sum(p in ('u8', 'i8') for p in convs)} of {len(convs)}"


def int8_accuracy_problem(bundle) -> Optional[str]:
    """Why OpenVINO's INT8 should not run ``bundle`` by default, from the export's accuracy record
    (``accuracy_vs_fp32.openvino`` of the INT8 model, written where openvino was installed), or
    None when it was measured, is within :data:`INT8_PEAK_MARGIN` / :data:`INT8_SCORE_MARGIN` of
    ONNX Runtime's INT8 on the same file, and was measured on a CPU with this one's
    :data:`ISA_FLAGS`."""
    entry = next((m for m in bundle.manifest.get("models", []) if m.get("precision") == "int8"), None)
    accuracy = (entry or {}).get("accuracy_vs_fp32") or {}
    ov = accuracy.get("openvino")
    if not ov:
        return ("the export did not measure OpenVINO's INT8 accuracy (export the bundle where the openvino "
                "extra is installed)")
    ort_peaks = (accuracy.get("outputs") or {}).get("peak_agreement")
    ov_peaks = (ov.get("outputs") or {}).get("peak_agreement")
    if ort_peaks is not None and ov_peaks is not None and ov_peaks < ort_peaks - INT8_PEAK_MARGIN:
        return (f"the export measured OpenVINO {ov.get('version')}'s INT8 heatmap peaks in FP32's cell for "
                f"{ov_peaks:.0%} of keypoints against ONNX Runtime's {ort_peaks:.0%} on the same file")
    ort_score = (accuracy.get("deltas") or {}).get("score")
    ov_score = (ov.get("deltas") or {}).get("score")
    if ort_score is not None and ov_score is not None and ov_score > ort_score + INT8_SCORE_MARGIN:
        return (f"the export measured OpenVINO {ov.get('version')}'s INT8 validation score {ov_score:+.3f} from "
                f"FP32 against ONNX Runtime's {ort_score:+.3f} on the same file")
    # OpenVINO picks its INT8 kernels by CPU features (AVX2, AVX-512 VNNI, AMX...), so its accuracy
    # may differ between CPUs (the gap above was measured on an AVX2-only CPU, no other was at
    # hand): a measurement is trusted only on CPUs with the same set.
    measured_isa = (ov.get("measured_on") or {}).get("isa")
    here = cpu_isa()
    if measured_isa is None or sorted(measured_isa) != sorted(here):
        return (f"the export measured OpenVINO's INT8 accuracy on a CPU with "
                f"{', '.join(measured_isa) if measured_isa else 'unrecorded features'}, and this one has "
                f"{', '.join(here)} (re-export the bundle on a CPU like this one)")
    return None


class OpenVinoEngine(Engine):
    """Runs an ONNX model with OpenVINO.

    ``device``: an OpenVINO device name (``CPU``, ``GPU``, ``GPU.1``, ``AUTO``...); it must be
    present here. ``threads``: CPU inference threads (default: the CPUs this process may use;
    ignored by other devices). ``hint``: ``latency`` or ``throughput`` (:data:`HINTS`); in
    throughput mode a batch is split across the device's optimal number of requests, run at once.
    The model (one float32 ``[N, C, H, W]`` input; float32 ``heatmap``, ``offset``, ``severity``
    outputs) is compiled for each input shape it meets, once (see :meth:`_entry`), with the
    compute precision of :data:`_INFERENCE_PRECISION`.
    """

    name = "openvino"
    DEPENDENCIES = (("openvino", "openvino"),)
    EXTRA = "openvino"

    def __init__(self, model_path: Union[str, Path], *, device: str = "CPU", threads: Optional[int] = None,
                 hint: str = "latency", max_batch: int = 64, precision: str = "fp32",
                 num_keypoints: Optional[int] = None, num_conditions: Optional[int] = None,
                 cache_dir: Union[str, Path, None, bool] = True):
        super().__init__(precision=precision, max_batch=max_batch, num_keypoints=num_keypoints,
                         num_conditions=num_conditions)
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise InputError(f"threads must be a positive integer, got {threads!r}")
        if hint not in HINTS:
            raise InputError(f"hint must be one of {', '.join(HINTS)}, got {hint!r}")
        if not isinstance(device, str) or not device.strip():
            raise InputError(f"device must be an OpenVINO device name such as CPU, GPU or AUTO, got {device!r}")
        if precision not in _INFERENCE_PRECISION:
            raise InputError(f"precision must be one of {', '.join(_INFERENCE_PRECISION)}, got {precision!r}")
        self.model_path = Path(model_path)
        self.device = device.strip()
        self.threads = threads if threads is not None else usable_cpus()
        self.hint = hint
        #: Where OpenVINO keeps compiled models between processes (``True``: :func:`default_cache_dir`;
        #: ``None``/``False``: no cache).
        self.cache_dir: Optional[Path] = (default_cache_dir() if cache_dir is True
                                          else Path(cache_dir) if cache_dir else None)
        self.version: Optional[str] = None
        self._core = None
        self._model = None
        self._config_used: Dict[str, object] = {}
        #: input shape -> (compiled model, infer requests, output ports): one compile each; with a
        #: dynamic batch the key's batch is None and one compile serves every batch.
        self._entries: Dict[Tuple[Optional[int], ...], tuple] = {}
        self._dynamic_batch = False
        self._settings: Dict[str, object] = {}

    @classmethod
    def from_bundle(cls, bundle, precision: Optional[str] = None, *, device: str = "CPU",
                    threads: Optional[int] = None, hint: str = "latency", max_batch: int = 64) -> "OpenVinoEngine":
        """An engine for ``bundle``'s ONNX model of ``precision``. The default is the first of
        :data:`PREFERRED_PRECISIONS` the bundle has, except that INT8 is not taken silently when
        :func:`int8_accuracy_problem` finds one: then :class:`EngineError` says why and how to
        choose (``auto`` moves on to the next backend). Raises the bundle's ``BundleError`` when
        it has no model of that precision."""
        if precision is None:
            available = bundle.precisions
            precision = next((p for p in PREFERRED_PRECISIONS if p in available), available[0])
            problem = int8_accuracy_problem(bundle) if precision == "int8" else None
            if problem is not None:
                raise EngineError(f"OpenVINO's INT8 is not chosen by default for {bundle.name}: {problem}; "
                                  f"name --precision int8 to run it anyway, or --precision fp32")
        layout = bundle.layout
        return cls(bundle.model_path(precision), device=device, threads=threads, hint=hint, max_batch=max_batch,
                   precision=precision, num_keypoints=layout.num_keypoints, num_conditions=layout.num_conditions)

    @classmethod
    def precisions_for(cls, bundle) -> List[str]:
        """The bundle's precisions this backend runs on the CPU: FP32 and INT8, and FP16 only where
        the CPU computes in FP16 (otherwise OpenVINO would run it in FP32 under the FP16 name)."""
        fp16 = "FP16" in device_capabilities("CPU")
        return [p for p in bundle.precisions if p != "fp16" or fp16]

    # -- lifecycle ------------------------------------------------------------------------------

    def _check_device(self, core) -> None:
        base = self.device.split(":")[0].split(".")[0]
        available = list(core.available_devices)
        if base in VIRTUAL_DEVICES:
            return
        if self.device not in available and not any(d.split(".")[0] == self.device for d in available):
            raise EngineError(f"OpenVINO {self.version} has no device {self.device!r} here; "
                              f"available: {', '.join(available) or 'none'} (or AUTO)")
        if self.precision == "fp16" and "FP16" not in device_capabilities(self.device):
            raise EngineError(f"the OpenVINO device {self.device} does not compute in FP16 (it offers "
                              f"{', '.join(device_capabilities(self.device)) or 'nothing'}); use fp32 or int8")

    def _config(self) -> Dict[str, object]:
        config: Dict[str, object] = {"PERFORMANCE_HINT": self.hint.upper(),
                                     "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION[self.precision]}
        if self.cache_dir is not None:
            config["CACHE_DIR"] = str(self.cache_dir)
        if self.device.split(".")[0] == "CPU":
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def _activate(self) -> None:
        import openvino as ov

        self.version = ov.__version__.split("-")[0]
        if not self.model_path.is_file():
            raise InputError(f"no ONNX model at {self.model_path}")
        core = ov.Core()
        self._check_device(core)
        try:
            model = core.read_model(str(self.model_path))
        except _OV_ERRORS as exc:
            raise EngineError(f"OpenVINO cannot read {self.model_path.name}: {_first_line(exc)}") from exc
        if len(model.inputs) != 1:
            raise EngineError(f"{self.model_path.name} has {len(model.inputs)} inputs; the model contract has one "
                              f"([N, C, H, W] image)")
        port = model.inputs[0]
        shape = port.get_partial_shape()
        if port.get_element_type() != ov.Type.f32 or shape.rank.is_dynamic or shape.rank.get_length() != 4:
            raise EngineError(f"{self.model_path.name}: input {port.get_any_name()!r} is {port.get_element_type()} "
                              f"{shape}; expected a float32 [N, C, H, W] tensor")
        outputs = {name: out for out in model.outputs for name in out.get_names()}
        missing = [n for n in OUTPUT_NAMES if n not in outputs]
        if missing:
            raise EngineError(f"{self.model_path.name} has no {', '.join(missing)} output "
                              f"(it has {', '.join(sorted(outputs))}); the model contract names heatmap, offset, severity")
        wrong = [f"{n} is {outputs[n].get_element_type()}" for n in OUTPUT_NAMES
                 if outputs[n].get_element_type() != ov.Type.f32]
        if wrong:
            raise EngineError(f"{self.model_path.name}: outputs must be float32 tensors ({'; '.join(wrong)})")
        dims = _dims([d.get_length() if d.is_static else None for d in shape])
        if dims[0] is not None and dims[0] > self.max_batch:
            raise EngineError(f"{self.model_path.name} has a fixed batch of {dims[0]}, above max_batch {self.max_batch}")
        self._core, self._model, self._config_used = core, model, self._config()
        self._entries = {}
        self.input_shape = dims
        self._dynamic_batch = dims[0] is None and not _concatenates_ramps(model)
        # Compiled now for one image (or the model's fixed batch), so that a model OpenVINO cannot
        # compile fails here, at activation, where `auto` can still pass over this backend. A
        # model with free spatial sizes is compiled as it is, for that check only.
        if None in dims[1:]:
            compiled, requests = self._compile(model, "its declared input shape")
        else:
            compiled, requests, _ = self._entry((dims[0] or 1,) + tuple(dims[1:]))
        self._settings = {"batch": "dynamic" if self._dynamic_batch else "static per shape",
                          "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
                          "streams": int(compiled.get_property("NUM_STREAMS")), "requests": len(requests),
                          "execution_devices": [str(d) for d in compiled.get_property("EXECUTION_DEVICES")],
                          "int8_convolutions": _int8_convolutions(compiled)}

    def _entry(self, shape: Tuple[int, ...]):
        """``(compiled model, infer requests, output ports)`` for input ``shape``, compiled on first
        use: once for every batch where the batch is dynamic, else once per shape (compiling takes
        about 2 s here, once per process; 0.4 s from the cache; :meth:`_bucket` keeps the shapes
        few). A model exported before the export's fold (``export/fold.py``) concatenates the
        coordinate ramps, computed from the input's shape, to a quantized map; compiled with a
        dynamic batch, OpenVINO's INT8 of such a model put 66% of heatmap peaks in FP32's cell
        against 95% with static shapes (ONNX Runtime: 94%), so such models get static shapes.
        Without that concatenation the dynamic compile gives the static one's outputs (93.2% of
        peaks both, on 96 held-out slices) and no batch is padded."""
        key = ((None,) + tuple(shape[1:])) if self._dynamic_batch else tuple(shape)
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        model = self._model.clone()
        try:
            model.reshape({model.inputs[0]: [-1 if d is None else d for d in key]})
        except _OV_ERRORS as exc:
            raise EngineError(f"{self.model_path.name} does not take input shape {list(shape)}: "
                              f"{_first_line(exc)}") from exc
        compiled, requests = self._compile(model, f"input shape {list(shape)}")
        entry = (compiled, requests, {name: compiled.output(name) for name in OUTPUT_NAMES})
        self._entries[key] = entry
        return entry

    def _compile(self, model, what: str):
        """``(compiled model, infer requests)``: one request with the latency hint, the device's
        optimal number with the throughput hint. Raises :class:`EngineError`."""
        try:
            compiled = self._core.compile_model(model, self.device, self._config_used)
            count = 1
            if self.hint == "throughput":
                count = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            return compiled, [compiled.create_infer_request() for _ in range(count)]
        except _OV_ERRORS as exc:
            raise EngineError(f"OpenVINO cannot compile {self.model_path.name} for {self.device} at {what}: "
                              f"{_first_line(exc)}") from exc

    def _bucket(self, n: int) -> int:
        """The batch a slice of ``n`` images runs at: the model's fixed batch; ``n`` itself with a
        dynamic batch; else the smallest power of two >= n (a pipeline's batches and remainders then
        need at most 4 compiles for batch 8, instead of one per remainder)."""
        fixed = self.input_shape[0]
        if fixed is not None:
            return fixed
        return int(n) if self._dynamic_batch else 1 << (int(n) - 1).bit_length()

    def _infer(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        # The batch is split into as many contiguous slices as the device has requests (one with
        # the latency hint: the whole batch); each slice runs on a request compiled for its padded
        # shape. Unpadded slices are shared, not copied: the caller's array outlives the wait.
        n, rest = len(images), tuple(images.shape[1:])
        per_shape = len(self._entry((self._bucket(n),) + rest)[1])
        chunks = np.array_split(np.arange(n), min(per_shape, n))
        used: Dict[int, int] = {}
        busy, error = [], None
        for rows in chunks:
            part = images[rows[0]:rows[-1] + 1]
            shape = (self._bucket(len(part)),) + rest
            if shape[0] != len(part):
                padded = np.zeros(shape, dtype=np.float32)
                padded[:len(part)] = part
                part_in = padded
            else:
                part_in = part
            try:
                compiled, requests, ports = self._entry(shape)
            except EngineError as exc:  # a new shape that does not compile: raised after the waits
                error = exc
                break
            # Counted per compiled model: with a dynamic batch, slices of different sizes share one.
            index = used.get(id(compiled), 0)
            used[id(compiled)] = index + 1
            try:
                # Slices of one call never share a request (a busy request refuses a second
                # start); a shape whose compile asked for fewer requests than slices gets more.
                while len(requests) <= index:
                    requests.append(compiled.create_infer_request())
                request = requests[index]
                request.start_async({0: part_in}, share_inputs=True)
            except _OV_ERRORS as exc:
                error = exc
                break
            busy.append((request, ports, len(part), part_in))
        # Every started request is waited for, even after a failure, so none is still writing
        # into its buffers (or reading an input array) when this returns.
        for request, _, _, _ in busy:
            try:
                request.wait()
            except _OV_ERRORS as exc:
                error = error or exc
        if isinstance(error, EngineError):
            raise error
        if error is not None:
            raise EngineError(f"OpenVINO failed on a batch of {list(images.shape)} ({self.model_path.name}): "
                              f"{_first_line(error)}") from error
        # The requests' output buffers are reused by their next run: copy out now (padding dropped).
        parts = [{name: np.array(request.get_tensor(port).data[:count], dtype=np.float32, copy=True)
                  for name, port in ports.items()} for request, ports, count, _ in busy]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in OUTPUT_NAMES}

    def _deactivate(self) -> None:
        # Dropping the requests and the compiled models frees their memory and threads.
        self._entries = {}
        self._model = self._core = None

    def describe(self) -> Dict[str, object]:
        """Settings for logs and benchmark records (the compiled model's own, once active)."""
        out: Dict[str, object] = {"backend": self.name, "precision": self.precision, "model": str(self.model_path),
                                  "device": self.device, "hint": self.hint, "threads": self.threads,
                                  "cache_dir": str(self.cache_dir) if self.cache_dir else None,
                                  "openvino": self.version, "max_batch": self.max_batch,
                                  "input_shape": list(self.input_shape)}
        out.update(self._settings)
        out["compiled_batches"] = ("dynamic" if self._dynamic_batch and self._entries
                                   else sorted({shape[0] for shape in self._entries}))
        return out


def _concatenates_ramps(model) -> bool:
    """Whether an OpenVINO model is an export from before the fold: its coordinate channels are
    computed in the graph (nodes under ``/coords``, ``CoordChannels``) and concatenated to a map."""
    return any(op.get_friendly_name().startswith("/coords") for op in model.get_ops())


__all__ = ["default_cache_dir", "HINTS", "INT8_PEAK_MARGIN", "INT8_SCORE_MARGIN", "ISA_FLAGS", "OpenVinoEngine", "PREFERRED_PRECISIONS",
           "cpu_isa", "device_capabilities", "int8_accuracy_problem"]
