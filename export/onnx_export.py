"""Export a trained checkpoint to ONNX and prove the graph computes what PyTorch computes.

The graph follows the model contract (shared/DESIGN.md): input ``image`` float32 [batch, C, H, W]
with H and W fixed by the checkpoint's preprocessing and only the batch axis dynamic (named
``batch``), outputs ``heatmap``, ``offset`` and ``severity`` at stride 4.

Exporter choice (torch 2.13): the TorchScript exporter (``dynamo=False``) is used. It needs no
extra package, gives a plain ONNX graph (Conv/Relu/MatMul/Softmax/Resize with ``sizes``) that
TensorRT parses, and supports opsets 17+. The ``torch.export`` exporter (``dynamo=True``, the
default since torch 2.9) needs ``onnxscript``, which the ``export`` extra does not install; its
deprecation warning for the TorchScript path is silenced here because the choice is deliberate.

After export the graph is tidied (the exporter's constant folding shares identical initializers
through ``Identity`` nodes; TensorRT and the FP16/INT8 passes are simpler without them), checked
with ``onnx.checker.check_model(full_check=True)``, shape-inferred, and run in ONNX Runtime
against PyTorch on real preprocessed slices (or, when none are given, a deterministic synthetic
batch, which the report says).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import onnx

from lumbar_edge.backends.ort import DISABLED_OPTIMIZERS

from .errors import ExportError, ParityError

#: Default max-abs-difference tolerances of an FP32 export against PyTorch, per output.
FP32_TOLERANCES: Mapping[str, float] = {"heatmap": 1e-3, "offset": 1e-3, "severity": 1e-3}
#: The lowest opset the export accepts (Resize with ``sizes`` and the ops TensorRT 10/11 parse).
MIN_OPSET = 17
DEFAULT_OPSET = 17
#: Rows per ONNX Runtime / PyTorch call in parity runs (bounds the attention's memory at 512x512).
PARITY_BATCH = 8


@dataclass
class ParityReport:
    """Per-output max abs (and max relative-to-range) differences of a candidate vs a reference."""

    max_abs: Dict[str, float]
    tolerances: Dict[str, float]
    num_inputs: int
    synthetic_inputs: bool
    reference: str = "pytorch"
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def failures(self) -> Dict[str, float]:
        """Outputs whose difference exceeds their tolerance (NaN counts as exceeding)."""
        return {k: v for k, v in self.max_abs.items()
                if k in self.tolerances and not (v <= self.tolerances[k])}

    @property
    def ok(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs.items())
        source = "synthetic inputs" if self.synthetic_inputs else "preprocessed slices"
        return f"max |diff| vs {self.reference} on {self.num_inputs} {source}: {parts}"

    def to_dict(self) -> dict:
        return {"reference": self.reference, "max_abs": dict(self.max_abs), "tolerances": dict(self.tolerances),
                "num_inputs": self.num_inputs, "synthetic_inputs": self.synthetic_inputs, **self.extra}


@dataclass
class OnnxExport:
    """What :func:`export_checkpoint` wrote: the file, its opset and the parity figures."""

    path: Path
    opset: int
    input_shape: Tuple[str, int, int, int]
    parity: ParityReport


def load_checkpoint_model(checkpoint: Union[str, Path]):
    """Load a training checkpoint and rebuild its network in eval mode on the CPU.

    Returns ``(model, state)`` where ``state`` is the checkpoint dict (model_config, layout,
    preprocess, train_config, metrics, epoch). Raises :class:`~lumbar_edge.errors.InputError` for
    a missing or foreign file and :class:`ExportError` when the weights do not fit the recorded
    model config.
    """
    from lumbar_edge.training.model import build_model
    from lumbar_edge.training.train import load_checkpoint

    state = load_checkpoint(Path(checkpoint))
    for key in ("model", "model_config", "preprocess", "layout"):
        if key not in state:
            raise ExportError(f"checkpoint {checkpoint} lacks {key!r}; re-save it with lumbar-edge train")
    model = build_model(state["model_config"])
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ExportError(f"checkpoint {checkpoint}: weights do not fit its model config ({first})") from exc
    model.eval()
    return model, state


def synthetic_batch(in_channels: int, height: int, width: int, n: int = 2, seed: int = 0) -> np.ndarray:
    """A deterministic float32 batch [n, C, H, W] shaped like standardised MR slices.

    Smooth blobs on a dark background, standardised as the default preprocessing does (mean 0.5,
    std 0.25), so activations have realistic ranges; used only when no real slices are given.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n, in_channels, height, width), dtype=np.float32)
    for i in range(n):
        img = np.zeros((height, width), dtype=np.float32)
        for _ in range(6):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            r = rng.uniform(0.05, 0.25) * min(height, width)
            img += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img = np.clip(img / max(float(img.max()), 1e-6), 0, 1)
        for c in range(in_channels):
            noisy = np.clip(img + rng.normal(0, 0.03, img.shape).astype(np.float32), 0, 1)
            out[i, c] = (noisy - 0.5) / 0.25
    return out


def _validate_inputs(inputs, in_channels: int, height: int, width: int) -> np.ndarray:
    array = np.asarray(inputs)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or tuple(array.shape[1:]) != (in_channels, height, width):
        raise ExportError(f"parity inputs must be [N, {in_channels}, {height}, {width}], got {list(array.shape)}")
    if array.shape[0] == 0:
        raise ExportError("parity inputs are empty")
    if not np.isfinite(array).all():
        raise ExportError("parity inputs contain NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def torch_outputs(model, inputs: np.ndarray, batch: int = PARITY_BATCH) -> Dict[str, np.ndarray]:
    """Run the PyTorch model on ``inputs`` in chunks; returns output name -> float32 array."""
    import torch

    from lumbar_edge.training.model import OUTPUT_NAMES

    model.eval()
    chunks: Dict[str, list] = {name: [] for name in OUTPUT_NAMES}
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            outs = model(torch.from_numpy(inputs[i:i + batch]))
            for name, value in zip(OUTPUT_NAMES, outs):
                chunks[name].append(value.float().numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}


def ort_session(path: Union[str, Path], threads: Optional[int] = None, optimize: bool = True):
    """An ONNX Runtime CPU session for ``path``; raises :class:`ExportError` when ORT refuses it.

    ``optimize=False`` disables ORT's graph rewrites, so the model runs as written (used to check
    that a reduced-precision graph runs op by op on the CPU, not only after fusions).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        # The runtime's own session settings, so that accuracy is measured on the graph it runs.
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(DISABLED_OPTIMIZERS))
    except Exception as exc:  # ORT raises its own Fail/NotImplemented/InvalidGraph types
        raise ExportError(f"ONNX Runtime (CPU) cannot load {Path(path).name}: {str(exc).splitlines()[0]}") from exc


def ort_outputs(session_or_path, inputs: np.ndarray, batch: int = PARITY_BATCH) -> Dict[str, np.ndarray]:
    """Run an ONNX model (a session or a path) on ``inputs`` in chunks; name -> float32 array."""
    session = ort_session(session_or_path) if isinstance(session_or_path, (str, Path)) else session_or_path
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    chunks: Dict[str, list] = {name: [] for name in names}
    for i in range(0, len(inputs), batch):
        try:
            outs = session.run(names, {input_name: inputs[i:i + batch]})
        except Exception as exc:  # ORT runtime failures (unsupported kernel, shape mismatch)
            raise ExportError(f"ONNX Runtime failed to run the model: {str(exc).splitlines()[0]}") from exc
        for name, value in zip(names, outs):
            chunks[name].append(np.asarray(value, dtype=np.float32))
    return {k: np.concatenate(v) for k, v in chunks.items()}


def compare_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                    tolerances: Mapping[str, float], *, num_inputs: int, synthetic_inputs: bool,
                    reference_name: str = "pytorch") -> ParityReport:
    """Max abs difference per output of ``candidate`` against ``reference`` (shapes must match).

    Raises :class:`ExportError` when an output is missing or has another shape.
    """
    max_abs: Dict[str, float] = {}
    for name, ref in reference.items():
        if name not in candidate:
            raise ExportError(f"the exported model has no output {name!r} (it has {', '.join(candidate)})")
        cand = candidate[name]
        if cand.shape != ref.shape:
            raise ExportError(f"output {name!r} has shape {list(cand.shape)}, expected {list(ref.shape)}")
        diff = np.abs(cand.astype(np.float64) - ref.astype(np.float64))
        max_abs[name] = float(diff.max()) if not np.isnan(diff).any() else float("nan")
    return ParityReport(max_abs=max_abs, tolerances=dict(tolerances), num_inputs=num_inputs,
                        synthetic_inputs=synthetic_inputs, reference=reference_name)


def check_parity(model, onnx_path: Union[str, Path], inputs: np.ndarray,
                 tolerances: Mapping[str, float] = FP32_TOLERANCES, synthetic_inputs: bool = False) -> ParityReport:
    """Run ``model`` (PyTorch) and ``onnx_path`` (ORT, CPU) on ``inputs``; compare every output.

    Returns the :class:`ParityReport`; raises :class:`ParityError` (with the report) when any
    output's max abs difference exceeds its tolerance.
    """
    reference = torch_outputs(model, inputs)
    candidate = ort_outputs(onnx_path, inputs)
    report = compare_outputs(reference, candidate, tolerances, num_inputs=len(inputs),
                             synthetic_inputs=synthetic_inputs)
    if not report.ok:
        bad = ", ".join(f"{k} {v:.3g} > {report.tolerances[k]:.1g}" for k, v in report.failures.items())
        raise ParityError(f"{Path(onnx_path).name} does not match PyTorch: max |diff| {bad}", report.to_dict())
    return report


def tidy_graph(model: "onnx.ModelProto") -> int:
    """Remove ``Identity`` nodes that merely alias an initializer; returns how many were removed.

    The TorchScript exporter's constant folding deduplicates equal initializers (zero biases, the
    attention gammas) and re-exposes them through Identity nodes. Consumers are rewired to the
    initializer itself. Identities that feed a graph output are kept (the output name must stay).
    """
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias: Dict[str, str] = {}
    keep = []
    for node in graph.node:
        if (node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in initializers
                and node.output[0] not in outputs):
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    if not alias:
        return 0
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)
    # value_info of the removed names would describe tensors that no longer exist.
    stale = [vi for vi in graph.value_info if vi.name in alias]
    for vi in stale:
        graph.value_info.remove(vi)
    return len(alias)


def check_and_infer(model: "onnx.ModelProto", what: str) -> "onnx.ModelProto":
    """``onnx.checker.check_model(full_check=True)`` then strict shape inference.

    Returns the model with inferred ``value_info``; raises :class:`ExportError` naming ``what``.
    """
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{what} fails the ONNX checker: {str(exc).splitlines()[0]}") from exc
    return inferred


def verify_io(model: "onnx.ModelProto", in_channels: int, height: int, width: int) -> None:
    """Check the graph's input/output names, element types and shapes against the contract.

    Raises :class:`ExportError` on any difference.
    """
    from onnx import TensorProto

    graph = model.graph
    if len(graph.input) != 1 or graph.input[0].name != "image":
        raise ExportError(f"the graph must have the one input 'image', has {[i.name for i in graph.input]}")
    names = [o.name for o in graph.output]
    if names != ["heatmap", "offset", "severity"]:
        raise ExportError(f"the graph outputs must be heatmap, offset, severity; got {names}")
    for value in list(graph.input) + list(graph.output):
        ttype = value.type.tensor_type
        if ttype.elem_type != TensorProto.FLOAT:
            raise ExportError(f"{value.name} must be float32, is {TensorProto.DataType.Name(ttype.elem_type)}")
        batch = ttype.shape.dim[0]
        if batch.dim_param != "batch":
            raise ExportError(f"{value.name}: the batch axis must be dynamic and named 'batch'")
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]]
    if dims != [in_channels, height, width]:
        raise ExportError(f"input 'image' has shape [batch, {dims}], expected [batch, {in_channels}, {height}, {width}]")
    for out in graph.output:
        rest = out.type.tensor_type.shape.dim[1:]
        if any(not d.HasField("dim_value") for d in rest):
            raise ExportError(f"output {out.name} has a non-static channel or spatial size")


def export_model(model, path: Union[str, Path], in_channels: int, height: int, width: int,
                 opset: int = DEFAULT_OPSET, doc: str = "", metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Export a PyTorch network to ONNX at ``path`` (written atomically), tidy, check and infer.

    Only the batch axis is dynamic. Raises :class:`ExportError` when the exporter fails, the opset
    is below :data:`MIN_OPSET`, or the graph fails the checker or the I/O contract.
    """
    import torch

    from lumbar_edge.training.model import INPUT_NAME, OUTPUT_NAMES

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    path = Path(path)
    dummy = torch.from_numpy(synthetic_batch(in_channels, height, width, n=2))
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    tmp = path.with_name(path.name + ".tmp")
    model.eval()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is chosen on purpose (see the module docstring).
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(model, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True, dynamo=False)
        proto = onnx.load(str(tmp))
    except (RuntimeError, ValueError, TypeError, torch.onnx.errors.OnnxExporterError) as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {str(exc).splitlines()[0]}") from exc
    tidy_graph(proto)
    proto.doc_string = doc or "lumbar-edge keypoint and severity network"
    proto.producer_name = "lumbar-edge"
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    proto = check_and_infer(proto, path.name)
    verify_io(proto, in_channels, height, width)
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


def opset_of(model: "onnx.ModelProto") -> int:
    """The default-domain opset version of a model."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def export_checkpoint(checkpoint: Union[str, Path], path: Union[str, Path], opset: int = DEFAULT_OPSET,
                      inputs: Optional[np.ndarray] = None, tolerances: Mapping[str, float] = FP32_TOLERANCES,
                      model_name: str = "") -> OnnxExport:
    """Export a training checkpoint to an FP32 ONNX file and check its parity with PyTorch.

    ``inputs``: real preprocessed slices [N, C, H, W] (float32) for the parity check; when None a
    deterministic synthetic batch is used and the report says so. Raises
    :class:`~lumbar_edge.errors.InputError` for a bad checkpoint, :class:`ExportError` when the
    export or checks fail, :class:`ParityError` when an output drifts beyond its tolerance (the
    file is removed then, so no unchecked model is left behind).
    """
    from lumbar_edge import __version__
    from lumbar_edge.preprocess import PreprocessConfig

    model, state = load_checkpoint_model(checkpoint)
    pre = PreprocessConfig.from_dict(state["preprocess"])
    if model.config.in_channels != pre.in_channels:
        raise ExportError(f"checkpoint {checkpoint}: model takes {model.config.in_channels} channels but its "
                          f"preprocessing makes {pre.in_channels}")
    synthetic = inputs is None
    data = (synthetic_batch(pre.in_channels, pre.height, pre.width, n=2) if synthetic
            else _validate_inputs(inputs, pre.in_channels, pre.height, pre.width))
    path = Path(path)
    # The graph has no concatenation before a convolution (exact; see fold), and parity is
    # checked against the unchanged network, so the fold is measured with every export.
    from .fold import export_network

    export_model(export_network(model, pre.height, pre.width), path, pre.in_channels, pre.height,
                 pre.width, opset=opset,
                 metadata={"lumbar_edge_version": __version__, "model_name": model_name,
                           "checkpoint_epoch": str(state.get("epoch", ""))})
    try:
        report = check_parity(model, path, data, tolerances, synthetic_inputs=synthetic)
    except ExportError:
        path.unlink(missing_ok=True)
        raise
    return OnnxExport(path=path, opset=opset, input_shape=("batch", pre.in_channels, pre.height, pre.width),
                      parity=report)


__all__ = ["ExportError", "ParityError", "ParityReport", "OnnxExport", "FP32_TOLERANCES", "DEFAULT_OPSET",
           "load_checkpoint_model", "synthetic_batch", "torch_outputs", "ort_session", "ort_outputs",
           "compare_outputs", "check_parity", "tidy_graph", "check_and_infer", "verify_io", "export_model",
           "export_checkpoint", "opset_of"]
