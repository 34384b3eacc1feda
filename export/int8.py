"""INT8 post-training quantization to a Q/DQ ONNX model that TensorRT builds as explicit INT8.

TensorRT (strongly typed, explicit quantization) needs: ``QuantizeLinear``/``DequantizeLinear``
pairs, symmetric scales (zero points 0), INT8 weights quantized per output channel (axis 0) and
INT8 activations per tensor, opset 13 or newer. ONNX Runtime's ``quantize_static`` writes exactly
that with ``QuantFormat.QDQ``, ``per_channel=True``, INT8 for both, and the ``ActivationSymmetric``
and ``WeightSymmetric`` options; :func:`check_qdq` verifies a file against these rules.

Calibration runs the FP32 model over preprocessed slices (the project's own preprocessing,
through :func:`calibration_inputs_from_folder` or arrays from the caller), one slice per step.

What stays in floating point, and why (:data:`DEFAULT_INT8_EXCLUDE_PREFIXES`,
:data:`DEFAULT_INT8_EXCLUDE_ALL_PREFIXES`, :data:`DEFAULT_INT8_EXCLUDE_NODES`,
:data:`DEFAULT_INT8_OP_TYPES`):
- the attention arithmetic (``/attention/pam/`` MatMul/Softmax/Mul/Add and all of
  ``/attention/cam/``): activation-by-activation products with a softmax after them; a per-tensor
  INT8 scale cannot hold both the large energies and the small attention weights;
- the three heads' final 1x1 convolutions (``/heatmap_head/out/Conv`` ...): their outputs are the
  logits and sub-cell offsets the decoder reads directly; they are tiny (1x1, few channels), so
  keeping them FP costs nothing and protects localisation;
- the Adds of the export's split convolutions (``lumbar_edge.export.fold``: a convolution over a
  concatenation is exported as one convolution per part, summed, plus a constant map for the
  coordinate channels; node names contain :data:`CONCAT_CONV_MARK`): partial sums of one layer
  and a bias, not residual joins. ASPP's projection, split over five branches, stays in float
  altogether (tiny at stride 32; its five partial sums each rounded cost accuracy), and models
  exported before the fold (coordinate channels as ``/coords`` nodes) keep those nodes in float
  (:data:`DEFAULT_INT8_EXCLUDE_ALL_PREFIXES`): a constant ramp, nothing to calibrate;
- biases (``QuantizeBias: False``): TensorRT fuses float biases into INT8 convolutions and does
  not take INT32 ``DequantizeLinear`` bias inputs.
Only the ops TensorRT runs in INT8 are quantized: Conv, Add (residual joins), MaxPool, Concat,
Resize, GlobalAveragePool.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from lumbar_edge.progress import Progress

from .errors import ExportError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_INT8_OP_TYPES = ("Conv", "Add", "MaxPool", "Concat", "Resize", "GlobalAveragePool")
DEFAULT_INT8_EXCLUDE_NODES = ("/heatmap_head/out/Conv", "/offset_head/out/Conv", "/severity_head/out/Conv")
DEFAULT_INT8_EXCLUDE_PREFIXES = ("/attention/pam/", "/attention/cam/")
#: Nodes kept in floating point whatever their op type: the coordinate channels of an export from
#: before the fold are a constant ramp resized to the feature map (``CoordChannels``), nothing an
#: activation scale should round; ASPP's projection (``/aspp/concat_conv/``, split over its five
#: branches by the export's fold) would otherwise round each branch's partial sum on its own. It
#: runs at 1/32 of the input's size (8x8 at 256 px): in float it costs nothing measurable, and on
#: the demo's trained network it brought the INT8 heatmap's mean error against FP32 (96 held-out
#: slices) from 0.160 to 0.124 on ONNX Runtime and from 0.128 to 0.094 on OpenVINO.
DEFAULT_INT8_EXCLUDE_ALL_PREFIXES = ("/coords", "/aspp/concat_conv/")
#: Add nodes whose name contains this are the export's split-convolution sums (``fold.ConcatConv``).
CONCAT_CONV_MARK = "/concat_conv/"
#: The attention prefixes exclude only these op types (the PAM's 1x1 query/key/value convs quantize well).
_ATTENTION_MATH_OPS = {"MatMul", "Softmax", "Mul", "Add", "Sub", "ReduceMax"}
#: TensorRT explicit quantization: QuantizeLinear/DequantizeLinear need opset 13+.
MIN_QDQ_OPSET = 13


@dataclass
class Int8Report:
    """How an INT8 model was made: calibration and exclusions."""

    method: str
    num_slices: int
    excluded_nodes: List[str]
    op_types: List[str]
    source: Optional[str] = None
    extra: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "num_slices": self.num_slices, "source": self.source,
                "excluded_nodes": list(self.excluded_nodes), "quantized_op_types": list(self.op_types),
                "activation": "int8 per-tensor symmetric", "weights": "int8 per-channel (axis 0) symmetric",
                "bias": "float", **self.extra}


@dataclass
class QdqReport:
    """What :func:`check_qdq` found; ``ok`` when every rule holds (``problems`` lists the rest)."""

    opset: int
    quantize_nodes: int
    dequantize_nodes: int
    weights_per_channel: int
    weights_per_tensor: int
    activations_per_tensor: int
    nonzero_zero_points: List[str]
    problems: List[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "opset": self.opset, "quantize_nodes": self.quantize_nodes,
                "dequantize_nodes": self.dequantize_nodes, "weights_per_channel": self.weights_per_channel,
                "weights_per_tensor": self.weights_per_tensor, "activations_per_tensor": self.activations_per_tensor,
                "nonzero_zero_points": list(self.nonzero_zero_points), "problems": list(self.problems)}


def _as_slices(inputs: Union[np.ndarray, Iterable[np.ndarray]]) -> Iterator[np.ndarray]:
    """Yield [1, C, H, W] float32 arrays from an array [N, C, H, W] or an iterable of [C,H,W]/[n,C,H,W]."""
    for item in (inputs if not isinstance(inputs, np.ndarray) or inputs.ndim != 4 else iter(inputs)):
        arr = np.asarray(item, dtype=np.float32)
        if arr.ndim == 3:
            yield np.ascontiguousarray(arr[None])
        elif arr.ndim == 4:
            for row in arr:
                yield np.ascontiguousarray(row[None])
        else:
            raise ExportError(f"calibration inputs must be [C, H, W] or [N, C, H, W] arrays, got shape {list(arr.shape)}")


def _data_reader(inputs, input_name: str, shape: Sequence[int], max_slices: Optional[int], progress: bool):
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        """Feeds calibration slices one at a time, checking shape and finiteness."""

        def __init__(self):
            self.count = 0
            self._iter = _as_slices(inputs)
            self._bar = Progress(max_slices, "calibrating", enabled=progress)

        def get_next(self):
            if max_slices is not None and self.count >= max_slices:
                self._bar.close()
                return None
            batch = next(self._iter, None)
            if batch is None:
                self._bar.close()
                return None
            if tuple(batch.shape[1:]) != tuple(shape):
                raise ExportError(f"calibration slice has shape {list(batch.shape[1:])}, the model takes {list(shape)}")
            if not np.isfinite(batch).all():
                raise ExportError(f"calibration slice {self.count} contains NaN or infinite values")
            self.count += 1
            self._bar.update()
            return {input_name: batch}

    return _Reader()


def _strip_unused_domains(model: onnx.ModelProto) -> None:
    """Drop opset imports no node uses (quant_pre_process adds ORT's private domains)."""
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _excluded(model: onnx.ModelProto, exclude_nodes: Sequence[str], exclude_prefixes: Sequence[str]) -> List[str]:
    names = set(exclude_nodes)
    out = []
    for node in model.graph.node:
        by_prefix = (any(node.name.startswith(p) for p in exclude_prefixes) and node.op_type in _ATTENTION_MATH_OPS) \
            or any(node.name.startswith(p) for p in DEFAULT_INT8_EXCLUDE_ALL_PREFIXES) \
            or (node.op_type == "Add" and CONCAT_CONV_MARK in node.name)
        if node.name in names or by_prefix:
            out.append(node.name)
    return out


def quantize_int8(fp32_path: Union[str, Path], dst: Union[str, Path], calibration_inputs,
                  method: str = "minmax", max_slices: Optional[int] = None, *,
                  op_types: Sequence[str] = DEFAULT_INT8_OP_TYPES,
                  exclude_nodes: Sequence[str] = DEFAULT_INT8_EXCLUDE_NODES,
                  exclude_prefixes: Sequence[str] = DEFAULT_INT8_EXCLUDE_PREFIXES,
                  activation_symmetric: bool = True, percentile: float = 99.999,
                  source: Optional[str] = None, progress: bool = False) -> Int8Report:
    """Calibrate ``fp32_path`` on ``calibration_inputs`` and write a Q/DQ INT8 model to ``dst``.

    ``calibration_inputs``: an array [N, C, H, W] or an iterable of [C, H, W] / [n, C, H, W]
    preprocessed slices. ``method``: ``minmax`` (default), ``entropy`` or ``percentile``.
    ``activation_symmetric=False`` exists only so tests can make a model :func:`check_qdq`
    rejects. Raises :class:`ExportError` on an unknown method, no or misshaped calibration data,
    or a quantizer failure; the result is written atomically.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = method.lower()
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ExportError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    fp32_path, dst = Path(fp32_path), Path(dst)
    source_model = onnx.load(str(fp32_path))
    graph_input = source_model.graph.input[0]
    shape = [d.dim_value for d in graph_input.type.tensor_type.shape.dim[1:]]

    with tempfile.TemporaryDirectory(prefix="lumbar-edge-int8-", dir=dst.parent) as tmpdir:
        tmp = Path(tmpdir)
        prepared = tmp / "prepared.onnx"
        # Symbolic shape inference + constant folding: calibration then sees every tensor's shape
        # and the shape-computing subgraphs become initializers (fewer nodes for the quantizer).
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        except Exception as exc:  # ORT's pre-processing raises assorted types
            raise ExportError(f"quantization pre-processing failed: {str(exc).splitlines()[0]}") from exc
        excluded = _excluded(onnx.load(str(prepared)), exclude_nodes, exclude_prefixes)
        reader = _data_reader(calibration_inputs, graph_input.name, shape, max_slices, progress)
        # DedicatedQDQPair: every consumer gets its own DequantizeLinear. ONNX Runtime fuses
        # DQ -> Conv -> Q into QLinearConv only when the DQ feeds that one node; with shared DQs
        # (residual inputs, the ASPP branches, the three heads) more than half of the
        # convolutions stayed in float on the CPU. TensorRT reads either form the same way.
        extra = {"ActivationSymmetric": activation_symmetric, "WeightSymmetric": True, "QuantizeBias": False,
                 "DedicatedQDQPair": True}
        if method == "percentile":
            extra["CalibPercentile"] = percentile
        out = tmp / "int8.onnx"
        try:
            quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method], op_types_to_quantize=list(op_types),
                            nodes_to_exclude=excluded, extra_options=extra)
        except ExportError:
            raise
        except Exception as exc:  # the quantizer raises ValueError/RuntimeError/ORT failures
            if reader.count == 0:
                raise ExportError("no calibration slices were given") from exc
            raise ExportError(f"INT8 quantization failed: {str(exc).splitlines()[0]}") from exc
        if reader.count == 0:
            raise ExportError("no calibration slices were given")
        model = onnx.load(str(out))
        _strip_unused_domains(model)
        model.producer_name = "lumbar-edge"
        onnx.checker.check_model(model, full_check=False)
        staged = dst.with_name(dst.name + ".tmp")
        onnx.save(model, str(staged))
        staged.replace(dst)
    return Int8Report(method=method, num_slices=reader.count, excluded_nodes=excluded, op_types=list(op_types),
                      source=source, extra={"percentile": percentile} if method == "percentile" else {})


def check_qdq(model_path: Union[str, Path, onnx.ModelProto]) -> QdqReport:
    """Check a Q/DQ model against TensorRT's explicit-quantization rules; never raises on findings.

    Rules: opset >= 13; every QuantizeLinear/DequantizeLinear zero point is INT8 and 0
    (symmetric); every weight (a DequantizeLinear whose input is an INT8 initializer of rank >= 2)
    is per channel along axis 0 (one scale per output channel); every activation QuantizeLinear is
    per tensor (scalar scale). Raises :class:`ExportError` only when the file cannot be read.
    """
    try:
        model = model_path if isinstance(model_path, onnx.ModelProto) else onnx.load(str(model_path))
    except Exception as exc:  # protobuf DecodeError, OSError
        raise ExportError(f"cannot read {model_path}: {str(exc).splitlines()[0]}") from exc
    inits = {i.name: i for i in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    problems: List[str] = []
    nonzero: List[str] = []
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    per_channel = per_tensor_w = act = 0
    if opset < MIN_QDQ_OPSET:
        problems.append(f"opset {opset} < {MIN_QDQ_OPSET}")
    for node in model.graph.node:
        if node.op_type not in counts:
            continue
        counts[node.op_type] += 1
        label = node.name or node.output[0]
        if len(node.input) < 3 or not node.input[2]:
            # Without a zero point the type defaults to uint8 (asymmetric range).
            problems.append(f"{label}: no zero point (defaults to uint8)")
            continue
        zp_init = inits.get(node.input[2])
        if zp_init is None:
            problems.append(f"{label}: zero point is not a constant initializer")
            continue
        zp = numpy_helper.to_array(zp_init)
        if zp_init.data_type != TensorProto.INT8:
            problems.append(f"{label}: zero point type {TensorProto.DataType.Name(zp_init.data_type)}, expected INT8")
        if np.any(zp != 0):
            nonzero.append(label)
        scale_init = inits.get(node.input[1])
        scale_size = int(np.prod(scale_init.dims)) if scale_init is not None else -1
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        source = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and source is not None and len(source.dims) >= 2:
            if scale_size == source.dims[0] and (axis == 0 or scale_size == 1):
                per_channel += 1  # one output channel: a single scale is per channel too
            elif scale_size == 1:
                per_tensor_w += 1
                problems.append(f"{label}: weight {source.name} is quantized per tensor, expected per channel")
            else:
                problems.append(f"{label}: weight {source.name} scales along axis {axis} ({scale_size}), "
                                f"expected axis 0 ({source.dims[0]})")
            if source.data_type != TensorProto.INT8:
                problems.append(f"{label}: weight {source.name} is {TensorProto.DataType.Name(source.data_type)}, expected INT8")
        elif node.op_type == "QuantizeLinear":
            if scale_size != 1:
                problems.append(f"{label}: activation {node.input[0]} is quantized per channel, expected per tensor")
            else:
                act += 1
    if nonzero:
        problems.append(f"{len(nonzero)} Q/DQ nodes have a non-zero zero point (asymmetric), e.g. {nonzero[0]}")
    if counts["QuantizeLinear"] == 0 or counts["DequantizeLinear"] == 0:
        problems.append("no QuantizeLinear/DequantizeLinear nodes: not a Q/DQ model")
    return QdqReport(opset=opset, quantize_nodes=counts["QuantizeLinear"], dequantize_nodes=counts["DequantizeLinear"],
                     weights_per_channel=per_channel, weights_per_tensor=per_tensor_w, activations_per_tensor=act,
                     nonzero_zero_points=nonzero, problems=problems)


def calibration_inputs_from_folder(path: Union[str, Path], preprocess, layout, max_slices: int = 256,
                                   seed: int = 0, progress: bool = False) -> np.ndarray:
    """Preprocessed calibration slices [N, C, H, W] from an RSNA-layout folder.

    Uses the training package's reader (``RsnaDataset`` + ``build_samples``, so the pixels are the
    ones training and inference see), labelled and negative slices of the views in ``layout``;
    at most ``max_slices`` chosen at random (``seed``) but spread evenly over the studies. Raises
    :class:`~lumbar_edge.errors.InputError` for a folder that is not an RSNA dataset or has no
    usable slices.
    """
    from lumbar_edge.training.data import RsnaDataset, build_samples

    if max_slices < 1:
        raise ExportError(f"max_slices must be at least 1, got {max_slices}")
    dataset = RsnaDataset.load(Path(path))
    samples = build_samples(dataset, layout, preprocess, negatives=True, progress=progress)
    rng = np.random.default_rng(seed)
    by_study: Dict[str, List[int]] = {}
    for i, s in enumerate(samples):
        by_study.setdefault(s.study_id, []).append(i)
    queues = [list(rng.permutation(v)) for _, v in sorted(by_study.items())]
    chosen: List[int] = []
    # Round-robin over studies so a few long studies do not fill the whole budget.
    while len(chosen) < max_slices and any(queues):
        for q in queues:
            if q and len(chosen) < max_slices:
                chosen.append(int(q.pop()))
    return np.stack([samples[i].image for i in sorted(chosen)]).astype(np.float32)


__all__ = ["quantize_int8", "check_qdq", "calibration_inputs_from_folder", "Int8Report", "QdqReport",
           "CALIBRATION_METHODS", "DEFAULT_INT8_OP_TYPES", "DEFAULT_INT8_EXCLUDE_NODES",
           "DEFAULT_INT8_EXCLUDE_PREFIXES"]
