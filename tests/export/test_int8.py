"""INT8 Q/DQ: symmetric, per-channel weights, runs in ORT (CPU); the checker catches asymmetric models."""
import numpy as np
import onnx
import pytest

from lumbar_edge.export.errors import ExportError
from lumbar_edge.export.int8 import DEFAULT_INT8_EXCLUDE_NODES, check_qdq, quantize_int8
from lumbar_edge.export.onnx_export import ort_outputs, ort_session


def test_int8_qdq_rules(int8_onnx, calib):
    path, report = int8_onnx
    assert report.num_slices == len(calib) and report.method == "minmax"
    qdq = check_qdq(path)
    assert qdq.ok, qdq.problems
    assert qdq.opset >= 13 and not qdq.nonzero_zero_points
    assert qdq.weights_per_channel >= 35 and qdq.weights_per_tensor == 0
    assert qdq.activations_per_tensor > 0 and qdq.quantize_nodes > 0
    model = onnx.load(str(path))
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    # Excluded nodes compute in float: their weights are not behind a DequantizeLinear.
    dq_inputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for node in model.graph.node:
        if node.name in DEFAULT_INT8_EXCLUDE_NODES:
            assert node.input[1] not in dq_inputs
        if node.name == "/attention/cam/Softmax":
            assert node.input[0] not in dq_inputs
    assert set(DEFAULT_INT8_EXCLUDE_NODES) <= set(report.excluded_nodes)


def test_int8_runs_in_ort(fp32_onnx, int8_onnx, slices):
    path, _ = int8_onnx
    ref = ort_outputs(fp32_onnx, slices[:2])
    for optimize in (True, False):
        out = ort_outputs(ort_session(path, optimize=optimize), slices[:2])
        for name in ref:
            assert out[name].shape == ref[name].shape and np.isfinite(out[name]).all()


def _ort_optimized_op_counts(path, tmp_path, disabled_optimizers):
    """The op types ONNX Runtime's CPU provider actually runs after its graph rewrites."""
    import collections

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # EXTENDED: the Q/DQ fusions, without the machine-specific NCHWc layout rewrites.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                         disabled_optimizers=list(disabled_optimizers))
    return collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


def test_every_quantized_conv_fuses_into_qlinearconv_in_the_runtime_session(int8_onnx, tmp_path):
    """With one DequantizeLinear per consumer and the runtime's session settings, every
    convolution with INT8 weights runs as QLinearConv; only the excluded float ones stay Conv.
    (With ORT's default rewrites, common-subexpression elimination re-shares the DQs and the
    convolutions after a branching activation stay in float.)"""
    from lumbar_edge.backends.ort import DISABLED_OPTIMIZERS

    path, report = int8_onnx
    model = onnx.load(str(path))
    float_convs = sum(1 for n in model.graph.node if n.op_type == "Conv" and n.name in report.excluded_nodes)
    quantized_convs = sum(1 for n in model.graph.node if n.op_type == "Conv") - float_convs
    ours = _ort_optimized_op_counts(path, tmp_path, DISABLED_OPTIMIZERS)
    assert ours["QLinearConv"] >= quantized_convs - 3  # the PAM's query/key/value feed reshapes, not a Q
    assert ours["Conv"] <= float_convs + 3
    default = _ort_optimized_op_counts(path, tmp_path, ())
    assert default["QLinearConv"] < ours["QLinearConv"]


def test_checker_catches_asymmetric(fp32_onnx, calib, tmp_path):
    bad = tmp_path / "asym.onnx"
    quantize_int8(fp32_onnx, bad, calib[:4], activation_symmetric=False)
    qdq = check_qdq(bad)
    assert not qdq.ok and qdq.nonzero_zero_points
    assert any("non-zero zero point" in p for p in qdq.problems)


def test_checker_rejects_float_model(fp32_onnx):
    assert not check_qdq(fp32_onnx).ok


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_methods(fp32_onnx, calib, tmp_path, method):
    dst = tmp_path / f"{method}.onnx"
    report = quantize_int8(fp32_onnx, dst, list(calib[:4]), method=method)
    assert report.method == method and report.num_slices == 4
    assert check_qdq(dst).ok


def test_bad_calibration(fp32_onnx, tmp_path):
    with pytest.raises(ExportError, match="method"):
        quantize_int8(fp32_onnx, tmp_path / "x.onnx", np.zeros((1, 3, 64, 64), np.float32), method="kl")
    with pytest.raises(ExportError, match="shape"):
        quantize_int8(fp32_onnx, tmp_path / "x.onnx", np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ExportError, match="no calibration"):
        quantize_int8(fp32_onnx, tmp_path / "x.onnx", np.zeros((0, 3, 64, 64), np.float32))
    assert not (tmp_path / "x.onnx").exists()
