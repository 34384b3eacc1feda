"""FP16 conversion: FP16 weights, FP32 I/O, block list kept in FP32, runs in ORT (CPU) close to FP32."""
import numpy as np
import onnx
from onnx import TensorProto

from lumbar_edge.export.accuracy import output_deltas
from lumbar_edge.export.fp16 import convert_to_fp16, fp16_summary
from lumbar_edge.export.onnx_export import ort_outputs, ort_session


def test_fp16_model(fp32_onnx, slices, tmp_path):
    dst = tmp_path / "model.fp16.onnx"
    report = convert_to_fp16(fp32_onnx, dst)
    model = onnx.load(str(dst))
    onnx.checker.check_model(model, full_check=True)
    summary = fp16_summary(dst)
    assert set(summary["io"].values()) == {"FLOAT"}
    # Every weight is FP16; a weight also read by FP32-blocked nodes keeps an FP32 copy (the
    # attention gamma, which the exporter shares between PAM and CAM since both are 0.5 here).
    assert summary["initializers"]["FLOAT16"] >= 40
    fp32_inits = [i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT]
    assert fp32_inits and all(name.endswith("gamma") for name in fp32_inits)
    assert "/attention/pam/Softmax" in report.blocked_nodes and "/attention/cam/MatMul" in report.blocked_nodes
    assert report.values_clamped == 0
    # The Resize nodes keep their (empty/float) roi and scales and integer sizes untouched.
    for node in model.graph.node:
        if node.op_type == "Resize":
            assert node.input[1] == "" and node.input[2] == ""

    ref = ort_outputs(fp32_onnx, slices)
    for optimize in (True, False):  # as written, and after ORT's fusions
        out = ort_outputs(ort_session(dst, optimize=optimize), slices)
        for name in ref:
            assert out[name].dtype == np.float32
            # The untrained test network has large activations, so FP16 rounding shows (a few % of
            # the output range at worst, far less on average); a conversion bug gives O(range).
            scale = float(np.abs(ref[name]).max())
            diff = np.abs(out[name] - ref[name])
            assert diff.max() <= 0.08 * scale and diff.mean() <= 0.005 * scale, name
    deltas = output_deltas(fp32_onnx, dst, slices, groups=[0] * 5)
    assert deltas["peak_agreement"] >= 0.9 and deltas["severity_agreement"] >= 0.9


def test_custom_block_list(fp32_onnx, tmp_path):
    dst = tmp_path / "m.onnx"
    report = convert_to_fp16(fp32_onnx, dst, block_ops=(), block_prefixes=(), block_nodes=["/heatmap_head/out/Conv"])
    assert report.blocked_nodes == ["/heatmap_head/out/Conv"]
    model = onnx.load(str(dst))
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert any(n.name.endswith("/Cast_fp32") and "heatmap_head" not in n.name for n in casts)
    ort_outputs(dst, np.zeros((1, 3, 64, 64), np.float32))
