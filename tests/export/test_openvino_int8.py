"""The export's INT8 Q/DQ file on OpenVINO: one quantisation for TensorRT, ONNX Runtime and
OpenVINO. OpenVINO compiles it (the export's coordinate channels and split convolutions
included), runs every quantized convolution in INT8, and stays within quantisation error of ONNX
Runtime on the same file."""
import numpy as np
import onnx
import pytest

pytest.importorskip("openvino")

from conftest import SIZE, make_checkpoint  # noqa: E402

from lumbar_edge.backends.openvino import OpenVinoEngine  # noqa: E402
from lumbar_edge.backends.ort import OrtEngine  # noqa: E402
from lumbar_edge.export.accuracy import openvino_outputs, output_deltas  # noqa: E402
from lumbar_edge.export.onnx_export import ort_outputs  # noqa: E402


@pytest.fixture(scope="module")
def coord_models(tmp_path_factory, slices, calib):
    """FP32 and INT8 ONNX of the tiny network with coordinate channels (the demo preset's model)."""
    from lumbar_edge.export.int8 import quantize_int8
    from lumbar_edge.export.onnx_export import export_checkpoint

    root = tmp_path_factory.mktemp("coords")
    ckpt = make_checkpoint(root / "best.pt", coord_channels=True)
    fp32 = root / "model.onnx"
    export_checkpoint(ckpt, fp32, inputs=slices)
    int8 = root / "model.int8.onnx"
    quantize_int8(fp32, int8, calib)
    return fp32, int8


def test_openvino_compiles_the_int8_file_and_runs_every_quantized_convolution_in_int8(coord_models):
    fp32, int8 = coord_models
    graph = onnx.load(str(int8)).graph
    # The export folds the coordinate channels into constant maps (export/fold.py): no ramp is
    # computed in the graph, and no Add of the Q/DQ file joins a map to a quantized tensor in INT8.
    assert not [n.name for n in graph.node if n.op_type in ("Resize", "Expand") and n.name.startswith("/coords")]
    float_convs = 3 + 5  # the heads' output layers and ASPP's projection (5 parts), kept in float by the export
    with OpenVinoEngine(int8, precision="int8") as engine:
        int8_convs, convs = (int(v) for v in engine.describe()["int8_convolutions"].split(" of "))
    # Before the fold, OpenVINO kept the convolutions reading the ramps in float (static shapes) or
    # ran them wrongly (dynamic batch); before the split, the ones reading a concatenation ran
    # with three times ONNX Runtime's error on AVX2 CPUs (benchmarks/RESULTS.md).
    assert convs > float_convs and int8_convs == convs - float_convs


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_openvino_matches_onnx_runtime_on_the_same_file(coord_models, slices, which):
    path = coord_models[0] if which == "fp32" else coord_models[1]
    x = np.ascontiguousarray(slices, dtype=np.float32)
    with OpenVinoEngine(path, precision=which) as ov, OrtEngine(path, precision=which) as ort:
        a, b = ov.infer(x), ort.infer(x)
    if which == "fp32":
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-3)
        return
    with OrtEngine(coord_models[0]) as ort:
        ref = ort.infer(x)
    for key in a:
        # Two INT8 implementations round differently; what must hold is that OpenVINO's error
        # against FP32 is of the size of ONNX Runtime's on the same Q/DQ file (this tiny random
        # network quantizes coarsely: both are far from FP32 on some cells).
        ov_error = float(np.abs(a[key] - ref[key]).mean())
        ort_error = float(np.abs(b[key] - ref[key]).mean())
        assert 0 < ov_error <= 2 * ort_error, (key, ov_error, ort_error)


def test_the_accuracy_helpers_compare_openvino_with_the_fp32_reference(coord_models, slices):
    fp32, int8 = coord_models
    reference = ort_outputs(fp32, slices)
    same = output_deltas(reference, openvino_outputs(fp32, "fp32", slices), stride=4)
    # FP32 on both: the same peaks but for a near-tie on this tiny random network.
    assert same["peak_agreement"] >= 0.9 and same["max_abs"]["heatmap"] < 1e-3 and same["num_inputs"] == len(slices)
    reduced = output_deltas(reference, openvino_outputs(int8, "int8", slices), stride=4)
    assert 0 < reduced["max_abs"]["heatmap"] and reduced["num_inputs"] == len(slices)
    assert set(reduced["max_abs"]) == {"heatmap", "offset", "severity"}
    assert SIZE == slices.shape[-1]
