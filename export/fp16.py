"""FP32 -> FP16 conversion of an exported ONNX graph, with FP32 I/O and an FP32 block list.

TensorRT 11 builds strongly typed networks: the precision of every layer is the precision of its
tensors in the ONNX file, so FP16 is decided here, not by a builder flag. The conversion:

- every float32 tensor computed by a node outside the block list becomes float16 (initializers
  are converted, ``Constant`` values and ``Cast(to=FLOAT)`` targets follow their node);
- nodes in the block list (by op type, or by name prefix for a whole module) compute in float32;
  ``Cast`` nodes are inserted wherever a tensor crosses between the two precisions;
- the graph input ``image`` and the outputs stay float32 (a ``Cast`` after the input and before
  each output), so callers, the decoder and the bundle contract do not change with precision;
- inputs that the ONNX spec or the numerics require as they are keep their type (``Resize``
  ``roi``/``scales``; integer ``sizes`` are not float and never change).

Default block list, and why:
- ``Softmax``, ``ReduceMean``/``ReduceSum``/``ReduceMax``, ``GlobalAveragePool``: reductions
  accumulate, and softmax over the 1024 positions of PAM at 512x512 loses the small weights.
- the whole channel-attention module (``/attention/cam/`` nodes): its energy ``X Xᵀ`` sums
  H/16·W/16 squared activations per entry and exceeds the FP16 maximum (65504) at 512x512.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Set, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ExportError
from .onnx_export import check_and_infer

#: Op types kept in FP32 by default (see the module docstring).
DEFAULT_FP16_BLOCK_OPS: Tuple[str, ...] = ("Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
                                           "ReduceL2", "ReduceLogSumExp", "GlobalAveragePool")
#: Node-name prefixes kept in FP32 by default (TorchScript export names nodes by module path).
DEFAULT_FP16_BLOCK_PREFIXES: Tuple[str, ...] = ("/attention/cam/",)
#: Per op type, the input positions whose float type must not change (ONNX spec: Resize scales
#: are float32 only; roi has its own type variable, kept as exported).
_KEEP_INPUT_TYPE = {"Resize": {1, 2}, "Upsample": {1}}
_FLOAT_MAX16 = float(np.finfo(np.float16).max)


@dataclass
class Fp16Report:
    """What :func:`convert_to_fp16` did: blocked nodes, inserted casts, clamped weights."""

    blocked_nodes: List[str]
    block_ops: List[str]
    block_prefixes: List[str]
    casts_inserted: int
    initializers_converted: int
    values_clamped: int
    extra: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"block_ops": list(self.block_ops), "block_prefixes": list(self.block_prefixes),
                "blocked_nodes": list(self.blocked_nodes), "casts_inserted": self.casts_inserted,
                "initializers_converted": self.initializers_converted, "values_clamped": self.values_clamped,
                **self.extra}


def _to_fp16_array(array: np.ndarray) -> Tuple[np.ndarray, int]:
    """float32 -> float16, clamping finite values beyond the FP16 range (returns the count)."""
    finite = np.isfinite(array)
    over = finite & (np.abs(array) > _FLOAT_MAX16)
    clamped = np.where(over, np.sign(array) * _FLOAT_MAX16, array)
    return clamped.astype(np.float16), int(over.sum())


def _float_tensors(model: onnx.ModelProto) -> Set[str]:
    """Names of all float32 tensors of the (shape-inferred) graph."""
    graph = model.graph
    names = {init.name for init in graph.initializer if init.data_type == TensorProto.FLOAT}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            names.add(value.name)
    return names


def convert_to_fp16(src: Union[str, Path, onnx.ModelProto], dst: Union[str, Path],
                    block_ops: Sequence[str] = DEFAULT_FP16_BLOCK_OPS,
                    block_prefixes: Sequence[str] = DEFAULT_FP16_BLOCK_PREFIXES,
                    block_nodes: Iterable[str] = ()) -> Fp16Report:
    """Write an FP16 copy of the FP32 model ``src`` to ``dst`` (atomically); returns a report.

    ``block_ops`` (op types), ``block_prefixes`` (node-name prefixes) and ``block_nodes`` (exact
    node names) stay in FP32. The graph input and outputs stay float32. Raises
    :class:`ExportError` when the source has no float32 input or the result fails the checker.
    """
    model = onnx.load(str(src)) if not isinstance(src, onnx.ModelProto) else src
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = model.graph
    floats = _float_tensors(model)
    if not any(i.type.tensor_type.elem_type == TensorProto.FLOAT for i in graph.input):
        raise ExportError("convert_to_fp16 needs an FP32 model (its input is not float32)")
    explicit = set(block_nodes)
    block_ops_set = set(block_ops)

    def blocked(node: onnx.NodeProto) -> bool:
        return (node.op_type in block_ops_set or node.name in explicit
                or any(node.name.startswith(p) for p in block_prefixes))

    # 1. Decide each node's precision and each float tensor's produced precision.
    node_fp16 = [not blocked(n) for n in graph.node]
    # Only the nodes that compute on float tensors (not shape arithmetic) are worth reporting.
    blocked_names = [n.name for n, fp16 in zip(graph.node, node_fp16)
                     if not fp16 and any(o in floats for o in n.output)]
    produced: Dict[str, int] = {}  # tensor -> TensorProto elem type it is produced with
    for inp in graph.input:
        produced[inp.name] = inp.type.tensor_type.elem_type
    initializers = {init.name: init for init in graph.initializer}

    # Which precisions each float initializer is needed in.
    init_needs: Dict[str, Set[int]] = {}
    for node, fp16 in zip(graph.node, node_fp16):
        keep = _KEEP_INPUT_TYPE.get(node.op_type, set())
        for pos, name in enumerate(node.input):
            if name in initializers and name in floats and pos not in keep:
                init_needs.setdefault(name, set()).add(TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT)

    converted, clamped_total = 0, 0
    new_inits: List[onnx.TensorProto] = []
    fp16_alias: Dict[str, str] = {}  # fp32 initializer name -> name of its fp16 copy
    for init in graph.initializer:
        needs = init_needs.get(init.name, set())
        if TensorProto.FLOAT16 in needs:
            half, clamped = _to_fp16_array(numpy_helper.to_array(init))
            clamped_total += clamped
            converted += 1
            if TensorProto.FLOAT in needs:
                name = init.name + "_fp16"
                new_inits.append(numpy_helper.from_array(half, name))
                fp16_alias[init.name] = name
                produced[init.name] = TensorProto.FLOAT
            else:
                new = numpy_helper.from_array(half, init.name)
                init.CopyFrom(new)
                produced[init.name] = TensorProto.FLOAT16
        else:
            produced[init.name] = init.data_type
    graph.initializer.extend(new_inits)

    # 2. Retype node attributes and walk the nodes in order, inserting casts where needed.
    casts: Dict[Tuple[str, int], str] = {}
    new_nodes: List[onnx.NodeProto] = []

    def cast_to(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            out = f"{name}_cast_{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{name}/Cast_{suffix}"))
            casts[key] = out
        return casts[key]

    for node, fp16 in zip(graph.node, node_fp16):
        want = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
        keep = _KEEP_INPUT_TYPE.get(node.op_type, set())
        if fp16:
            for attr in node.attribute:
                if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
                elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                    half, clamped = _to_fp16_array(numpy_helper.to_array(attr.t))
                    clamped_total += clamped
                    attr.t.CopyFrom(numpy_helper.from_array(half, attr.t.name))
        for pos, name in enumerate(node.input):
            if not name or name not in floats or pos in keep:
                continue
            if name in fp16_alias and want == TensorProto.FLOAT16:
                node.input[pos] = fp16_alias[name]
                continue
            have = produced.get(name)
            if have in (TensorProto.FLOAT, TensorProto.FLOAT16) and have != want:
                node.input[pos] = cast_to(name, want)
        new_nodes.append(node)
        for name in node.output:
            if name in floats:
                # A Cast's output type is its "to"; every other float output follows the node.
                if node.op_type == "Cast":
                    to = next(a.i for a in node.attribute if a.name == "to")
                    produced[name] = to
                else:
                    produced[name] = want

    # 3. Outputs stay float32: rename an FP16 producer's output and cast back under the old name.
    for out in graph.output:
        if produced.get(out.name) == TensorProto.FLOAT16:
            inner = f"{out.name}_fp16"
            for node in new_nodes:
                for i, name in enumerate(node.output):
                    if name == out.name:
                        node.output[i] = inner
                for i, name in enumerate(node.input):
                    if name == out.name:
                        node.input[i] = inner
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=TensorProto.FLOAT,
                                              name=f"{out.name}/Cast_fp32"))
            casts[(inner, TensorProto.FLOAT)] = out.name

    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # stale float32 annotations; re-inferred below
    result = check_and_infer(model, Path(dst).name)
    tmp = Path(dst).with_name(Path(dst).name + ".tmp")
    onnx.save(result, str(tmp))
    tmp.replace(dst)
    return Fp16Report(blocked_nodes=blocked_names, block_ops=list(block_ops), block_prefixes=list(block_prefixes),
                      casts_inserted=len(casts), initializers_converted=converted, values_clamped=clamped_total)


def fp16_summary(path: Union[str, Path]) -> dict:
    """Counts of float16/float32 initializers and the I/O element types of an ONNX file."""
    model = onnx.load(str(path))
    kinds: Dict[str, int] = {}
    for init in model.graph.initializer:
        name = TensorProto.DataType.Name(init.data_type)
        kinds[name] = kinds.get(name, 0) + 1
    io = {v.name: TensorProto.DataType.Name(v.type.tensor_type.elem_type)
          for v in list(model.graph.input) + list(model.graph.output)}
    return {"initializers": kinds, "io": io}


__all__ = ["convert_to_fp16", "Fp16Report", "fp16_summary", "DEFAULT_FP16_BLOCK_OPS", "DEFAULT_FP16_BLOCK_PREFIXES"]
