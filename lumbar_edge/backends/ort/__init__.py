"""ONNX Runtime backend: the CPU default, and how CI tests the runtime.

The package is called ``ort`` rather than ``onnxruntime`` so that nobody reading
``backends/onnxruntime`` mistakes it for the real package; its registry name is still
``onnxruntime``. ``onnxruntime`` itself is imported only in :meth:`OrtEngine._activate`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import InputError
from ..base import OUTPUT_NAMES, Engine, EngineError, _dims, usable_cpus

#: Precisions in the order this backend prefers them when the caller names none. INT8 (Q/DQ)
#: first: its convolutions run as QLinearConv, 2.7-2.8x FP32 on the demo model (2 cores), and the export
#: records its accuracy delta in the manifest; FP32 next (FP16 is emulated on ORT's CPU provider).
PREFERRED_PRECISIONS: Tuple[str, ...] = ("int8", "fp32", "fp16")


#: ORT graph rewrites turned off in every session. Common-subexpression elimination merges the
#: per-consumer DequantizeLinear nodes of a Q/DQ model back into shared ones, and a shared DQ keeps
#: DQ -> Conv -> Q from fusing into QLinearConv: 27 of the demo model's 43 convolutions then ran in
#: float and INT8 was ~1.2x FP32 instead of ~2.5x. FP32 models run at the same speed without it.
DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)

#: ORT's intra-op threads busy-wait for work between operators by default. lumbar-edge runs other
#: threads beside the engine (the next study's decoding, the previous study's reports), and the
#: spinning took their CPU: `infer` over 50 synthetic studies on 2 cores took 52.0-52.9 s without
#: spinning against 56.1-57.3 s with it (INT8, alternated runs); one study alone ran the same.
SESSION_CONFIG = (("session.intra_op.allow_spinning", "0"),)


def _ort_errors(ort) -> Tuple[type, ...]:
    """The exception types ONNX Runtime raises for bad models and failed runs.

    Its pybind errors (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile...) derive from plain
    ``Exception``, so they are collected from the module rather than caught broadly.
    """
    errors: List[type] = [RuntimeError, ValueError, OSError]
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    if state is not None:
        errors.extend(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OrtEngine(Engine):
    """Runs an ONNX model with ONNX Runtime.

    ``threads``: intra-op threads (default: the CPUs this process may use). ``providers``:
    execution providers in priority order (default ``["CPUExecutionProvider"]``); each must be
    available in the installed onnxruntime. Graph optimisations are all on except
    :data:`DISABLED_OPTIMIZERS`, and :data:`SESSION_CONFIG` applies; ``ort_defaults=True`` keeps
    ONNX Runtime's own session defaults instead (the benchmarks' baseline (c)). Input and output
    names and shapes are read from the model on :meth:`activate`; the model must have one float
    input ``[N, C, H, W]`` and float outputs named ``heatmap``, ``offset`` and ``severity``.
    """

    name = "onnxruntime"
    DEPENDENCIES = (("onnxruntime", "onnxruntime"),)
    # onnxruntime is in install_requires; the plain install brings it back.
    EXTRA = "all"

    def __init__(self, model_path: Union[str, Path], *, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, max_batch: int = 64, precision: str = "fp32",
                 num_keypoints: Optional[int] = None, num_conditions: Optional[int] = None,
                 ort_defaults: bool = False):
        super().__init__(precision=precision, max_batch=max_batch, num_keypoints=num_keypoints,
                         num_conditions=num_conditions)
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise InputError(f"threads must be a positive integer, got {threads!r}")
        if providers is not None and (isinstance(providers, str) or not providers):
            raise InputError(f"providers must be a non-empty list of execution provider names, got {providers!r}")
        self.model_path = Path(model_path)
        self.threads = threads if threads is not None else usable_cpus()
        self.providers: List[str] = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self.ort_defaults = bool(ort_defaults)
        self.input_name: Optional[str] = None
        self._session = None
        self._errors: Tuple[type, ...] = ()

    @classmethod
    def from_bundle(cls, bundle, precision: Optional[str] = None, *, threads: Optional[int] = None,
                    providers: Optional[Sequence[str]] = None, max_batch: int = 64) -> "OrtEngine":
        """An engine for ``bundle``'s ONNX model of ``precision`` (default: the first of
        :data:`PREFERRED_PRECISIONS` the bundle has). Raises the bundle's ``BundleError`` when it
        has no model of that precision."""
        if precision is None:
            available = bundle.precisions
            precision = next((p for p in PREFERRED_PRECISIONS if p in available), available[0])
        layout = bundle.layout
        return cls(bundle.model_path(precision), threads=threads, providers=providers, max_batch=max_batch,
                   precision=precision, num_keypoints=layout.num_keypoints, num_conditions=layout.num_conditions)

    @classmethod
    def precisions_for(cls, bundle) -> List[str]:
        """Every precision the bundle has an ONNX model of."""
        return list(bundle.precisions)

    def _activate(self) -> None:
        import onnxruntime as ort

        if not self.model_path.is_file():
            raise InputError(f"no ONNX model at {self.model_path}")
        unknown = [p for p in self.providers if p not in ort.get_available_providers()]
        if unknown:
            raise EngineError(f"onnxruntime {ort.__version__} has no {', '.join(unknown)}; available: "
                              f"{', '.join(ort.get_available_providers())}")
        self._errors = _ort_errors(ort)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        # One model runs at a time; parallelism is within each operator.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: ORT's warnings are not actionable for users
        if not self.ort_defaults:
            for key, value in SESSION_CONFIG:
                options.add_session_config_entry(key, value)
        disabled = [] if self.ort_defaults else list(DISABLED_OPTIMIZERS)
        try:
            session = ort.InferenceSession(str(self.model_path), options, providers=self.providers,
                                           disabled_optimizers=disabled)
        except self._errors as exc:
            raise EngineError(f"onnxruntime cannot load {self.model_path.name}: {_first_line(exc)}") from exc
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise EngineError(f"{self.model_path.name} has {len(inputs)} inputs; the model contract has one "
                              f"([N, C, H, W] image)")
        spec = inputs[0]
        if spec.type != "tensor(float)" or len(spec.shape) != 4:
            raise EngineError(f"{self.model_path.name}: input {spec.name!r} is {spec.type} {spec.shape}; "
                              f"expected a float32 [N, C, H, W] tensor")
        outputs = {o.name: o for o in session.get_outputs()}
        missing = [n for n in OUTPUT_NAMES if n not in outputs]
        if missing:
            raise EngineError(f"{self.model_path.name} has no {', '.join(missing)} output "
                              f"(it has {', '.join(outputs)}); the model contract names heatmap, offset, severity")
        wrong = [f"{n} is {outputs[n].type}" for n in OUTPUT_NAMES if outputs[n].type != "tensor(float)"]
        if wrong:
            raise EngineError(f"{self.model_path.name}: outputs must be float32 tensors ({'; '.join(wrong)})")
        self.input_name = spec.name
        self.input_shape = _dims(spec.shape)
        if self.input_shape[0] is not None and self.input_shape[0] > self.max_batch:
            raise EngineError(f"{self.model_path.name} has a fixed batch of {self.input_shape[0]}, above "
                              f"max_batch {self.max_batch}")
        self._session = session

    def _infer(self, images: np.ndarray) -> Mapping[str, np.ndarray]:
        try:
            values = self._session.run(list(OUTPUT_NAMES), {self.input_name: images})
        except self._errors as exc:
            raise EngineError(f"onnxruntime failed on a batch of {list(images.shape)} "
                              f"({self.model_path.name}): {_first_line(exc)}") from exc
        return dict(zip(OUTPUT_NAMES, values))

    def _deactivate(self) -> None:
        # Dropping the last reference frees the session's arena and threads.
        self._session = None

    @property
    def active_providers(self) -> List[str]:
        """The providers the session actually uses (after ORT's fallbacks); empty when inactive."""
        return list(self._session.get_providers()) if self._session is not None else []

    def describe(self) -> Dict[str, object]:
        """Settings for logs and benchmark records."""
        return {"backend": self.name, "precision": self.precision, "model": str(self.model_path),
                "threads": self.threads, "ort_defaults": self.ort_defaults,
                "providers": self.active_providers or self.providers,
                "max_batch": self.max_batch, "input_shape": list(self.input_shape)}


__all__ = ["OrtEngine", "PREFERRED_PRECISIONS"]
