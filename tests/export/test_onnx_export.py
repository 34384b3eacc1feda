"""FP32 ONNX export: graph contract, checker, parity with PyTorch, corruption detected."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lumbar_edge.errors import InputError, LumbarEdgeError
from lumbar_edge.export.errors import ExportError, ParityError
from lumbar_edge.export.onnx_export import (FP32_TOLERANCES, check_parity, export_checkpoint, load_checkpoint_model,
                                            ort_outputs, synthetic_batch)

SIZE = 64


def test_graph_contract(fp32_onnx):
    model = onnx.load(str(fp32_onnx))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["heatmap", "offset", "severity"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, SIZE, SIZE]
    out_dims = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim[1:]] for o in model.graph.output}
    assert out_dims == {"heatmap": [5, 16, 16], "offset": [10, 16, 16], "severity": [3, 16, 16]}
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # The exporter's initializer-aliasing Identity nodes are tidied away.
    assert not any(n.op_type == "Identity" for n in model.graph.node)
    assert len(model.graph.value_info) > 0  # shape inference ran


def test_dynamic_batch_runs(fp32_onnx):
    for n in (1, 3):
        outs = ort_outputs(fp32_onnx, synthetic_batch(3, SIZE, SIZE, n=n))
        assert outs["heatmap"].shape == (n, 5, 16, 16)


def test_parity_within_tolerance_on_real_like_slices(tiny_checkpoint, slices, tmp_path):
    result = export_checkpoint(tiny_checkpoint, tmp_path / "m.onnx", inputs=slices)
    assert not result.parity.synthetic_inputs and result.parity.num_inputs == len(slices)
    assert result.parity.ok
    for name, value in result.parity.max_abs.items():
        assert value <= FP32_TOLERANCES[name]


def test_synthetic_inputs_are_reported(tiny_checkpoint, tmp_path):
    result = export_checkpoint(tiny_checkpoint, tmp_path / "m.onnx")
    assert result.parity.synthetic_inputs
    assert "synthetic" in result.parity.describe()


def test_corrupted_initializer_fails_parity(tiny_checkpoint, fp32_onnx, slices, tmp_path):
    model = onnx.load(str(fp32_onnx))
    init = next(i for i in model.graph.initializer if i.name == "heatmap_head.out.bias")
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.01, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    torch_model, _ = load_checkpoint_model(tiny_checkpoint)
    with pytest.raises(ParityError) as info:
        check_parity(torch_model, bad, slices)
    assert "heatmap" in str(info.value) and isinstance(info.value, LumbarEdgeError)
    assert info.value.report["max_abs"]["heatmap"] == pytest.approx(0.01, abs=2e-3)
    # The untouched outputs still match.
    assert info.value.report["max_abs"]["offset"] <= FP32_TOLERANCES["offset"]


def test_bad_inputs_and_checkpoint(tiny_checkpoint, tmp_path):
    with pytest.raises(ExportError, match=r"\[N, 3, 64, 64\]"):
        export_checkpoint(tiny_checkpoint, tmp_path / "m.onnx", inputs=np.zeros((2, 1, 64, 64), np.float32))
    with pytest.raises(ExportError, match="opset"):
        export_checkpoint(tiny_checkpoint, tmp_path / "m.onnx", opset=11)
    with pytest.raises(InputError):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
