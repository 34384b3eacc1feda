"""The ONNX Runtime engine on small models built here with onnx.helper, checked against numpy."""
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lumbar_edge.backends import open_engine  # noqa: E402
from lumbar_edge.backends.base import EngineError  # noqa: E402
from lumbar_edge.backends.ort import OrtEngine  # noqa: E402
from lumbar_edge.bundle import Bundle, BundleError  # noqa: E402
from lumbar_edge.errors import InputError  # noqa: E402
from lumbar_edge.labels import HeadLayout  # noqa: E402
from lumbar_edge.preprocess import PreprocessConfig  # noqa: E402

C, H, W = 2, 16, 24


def weights(k, groups, c=C, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"wh": f(k, c, 4, 4), "bh": f(k), "wo": f(2 * k, c, 4, 4), "bo": f(2 * k),
            "ws": f(3 * groups, c, 1, 1), "bs": f(3 * groups)}


def build_model(path, k=3, groups=1, batch="N", c=C, h=H, w=W, names=("heatmap", "offset", "severity"), seed=0):
    """image [N, C, H, W] -> heatmap = Conv4x4/4, offset = Conv4x4/4, severity = Conv1x1(AveragePool4/4)."""
    wts = weights(k, groups, c, seed)
    inits = [numpy_helper.from_array(v, name=n) for n, v in wts.items()]
    nodes = [
        helper.make_node("Conv", ["image", "wh", "bh"], [names[0]], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["image", "wo", "bo"], [names[1]], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["pooled", "ws", "bs"], [names[2]], kernel_shape=[1, 1]),
    ]
    out_dims = lambda ch: [batch, ch, h // 4, w // 4]  # noqa: E731
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, c, h, w])],
        [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, out_dims(k)),
         helper.make_tensor_value_info(names[1], TensorProto.FLOAT, out_dims(2 * k)),
         helper.make_tensor_value_info(names[2], TensorProto.FLOAT, out_dims(3 * groups))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return wts


def reference(images, wts):
    """The same graph in numpy: stride-4 4x4 convolutions are sums over 4x4 blocks."""
    n, c, h, w = images.shape
    blocks = images.astype(np.float64).reshape(n, c, h // 4, 4, w // 4, 4)
    conv = lambda wk, b: np.einsum("nciajb,kcab->nkij", blocks, wk) + b[None, :, None, None]  # noqa: E731
    pooled = blocks.mean(axis=(3, 5))
    sev = np.einsum("ncij,kc->nkij", pooled, wts["ws"][:, :, 0, 0]) + wts["bs"][None, :, None, None]
    return {"heatmap": conv(wts["wh"], wts["bh"]), "offset": conv(wts["wo"], wts["bo"]), "severity": sev}


def images(n, seed=1, c=C, h=H, w=W):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny.onnx"
    return path, build_model(path)


def test_infer_matches_numpy_for_dynamic_batches(model):
    path, wts = model
    with OrtEngine(path, threads=1) as engine:
        assert engine.input_shape == (None, C, H, W) and engine.input_name == "image"
        for n in (1, 3, 7):
            x = images(n, seed=n)
            out = engine.infer(x)
            ref = reference(x, wts)
            for key in ("heatmap", "offset", "severity"):
                assert out[key].dtype == np.float32
                np.testing.assert_allclose(out[key], ref[key], rtol=1e-4, atol=1e-4)


def test_defaults_threads_providers_and_description(model):
    path, _ = model
    engine = OrtEngine(path)
    assert engine.threads >= 1 and engine.providers == ["CPUExecutionProvider"]
    assert engine.name == "onnxruntime" and engine.precision == "fp32"
    with engine:
        assert engine.active_providers == ["CPUExecutionProvider"]
        info = engine.describe()
    assert info["input_shape"] == [None, C, H, W] and info["threads"] == engine.threads
    assert engine.active_providers == [] and not engine.is_active


def test_threads_do_not_spin_unless_ort_defaults_are_asked_for(model):
    # The runtime's session turns ORT's busy-waiting off (other pipeline threads need the CPU);
    # the benchmarks' baseline (c) asks for ONNX Runtime's own defaults and keeps it on.
    path, _ = model
    x = images(3)
    outputs = {}
    for defaults in (False, True):
        with OrtEngine(path, ort_defaults=defaults) as engine:
            options = engine._session.get_session_options()
            if defaults:
                with pytest.raises(RuntimeError):  # ORT: no such entry, i.e. its default (spinning)
                    options.get_session_config_entry("session.intra_op.allow_spinning")
            else:
                assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
            assert engine.describe()["ort_defaults"] is defaults
            outputs[defaults] = engine.infer(x)
    for name in outputs[False]:
        np.testing.assert_allclose(outputs[False][name], outputs[True][name], rtol=1e-5, atol=1e-5)


def test_fixed_batch_and_wrong_sizes_are_input_errors(tmp_path):
    path = tmp_path / "fixed.onnx"
    build_model(path, batch=2)
    with OrtEngine(path) as engine:
        assert engine.input_shape == (2, C, H, W)
        assert engine.infer(images(2))["heatmap"].shape == (2, 3, 4, 6)
        with pytest.raises(InputError, match="axis 0: 3 != 2"):
            engine.infer(images(3))
        with pytest.raises(InputError, match=r"do not fit the model input \[2, 2, 16, 24\]"):
            engine.infer(images(2, h=20))
    with pytest.raises(EngineError, match="fixed batch of 2, above max_batch 1"):
        OrtEngine(path, max_batch=1).activate()


def test_batch_over_max_is_refused(model):
    path, _ = model
    with OrtEngine(path, max_batch=2) as engine:
        with pytest.raises(InputError, match="outside 1..2"):
            engine.infer(images(3))


def test_a_model_without_the_contract_outputs_is_refused(tmp_path):
    path = tmp_path / "named.onnx"
    build_model(path, names=("hm", "offset", "sev"))
    with pytest.raises(EngineError, match="no heatmap, severity output.*it has hm, offset, sev"):
        OrtEngine(path).activate()


def test_unreadable_models_and_unknown_providers(tmp_path, model):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(EngineError, match="cannot load garbage.onnx"):
        OrtEngine(garbage).activate()
    with pytest.raises(InputError, match="no ONNX model"):
        OrtEngine(tmp_path / "missing.onnx").activate()
    with pytest.raises(EngineError, match="has no NoSuchExecutionProvider; available: .*CPUExecutionProvider"):
        OrtEngine(model[0], providers=["NoSuchExecutionProvider"]).activate()


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"threads": "2"}, {"providers": "CPUExecutionProvider"},
                                    {"providers": []}])
def test_bad_options_are_input_errors(model, kwargs):
    with pytest.raises(InputError):
        OrtEngine(model[0], **kwargs)


def test_availability():
    assert OrtEngine.is_available() and OrtEngine.missing_dependencies() == []


def test_backend_modules_import_without_onnxruntime():
    code = ("import sys, lumbar_edge.backends, lumbar_edge.backends.ort, lumbar_edge.report;"
            "print(','.join(m for m in ('onnxruntime', 'torch', 'tensorrt', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _bundle(tmp_path, layout, models):
    """A Bundle object over a folder with the given ONNX files (the constructor does not verify:
    only the parts open_engine reads are needed)."""
    manifest = {"name": "tiny", "input": {"name": "image", "channels": C, "height": H, "width": W},
                "preprocess": PreprocessConfig(height=H, width=W, in_channels=C).to_dict(),
                "layout": layout.to_dict(), "models": [{"precision": p, "file": f} for p, f in models]}
    return Bundle(tmp_path, manifest)


def test_open_engine_on_a_bundle(tmp_path):
    layout = HeadLayout(views=("sagittal_t2",))  # K = 5, one condition
    build_model(tmp_path / "model.onnx", k=5, groups=1)
    wts = build_model(tmp_path / "model.int8.onnx", k=5, groups=1, seed=3)
    bundle = _bundle(tmp_path, layout, [("fp32", "model.onnx"), ("int8", "model.int8.onnx")])
    # INT8 is preferred on the CPU when the bundle has it, whatever the manifest's order.
    engine = open_engine(bundle, threads=1)
    assert isinstance(engine, OrtEngine) and not engine.is_active
    assert engine.precision == "int8" and engine.model_path.name == "model.int8.onnx" and engine.threads == 1
    with engine:
        x = images(2)
        np.testing.assert_allclose(engine.infer(x)["heatmap"], reference(x, wts)["heatmap"], rtol=1e-4, atol=1e-4)
    assert open_engine(bundle, "onnxruntime", "fp32").model_path.name == "model.onnx"
    with pytest.raises(BundleError, match="no fp16 model"):
        open_engine(bundle, precision="fp16")


def test_a_model_that_disagrees_with_the_bundle_layout_is_caught(tmp_path):
    build_model(tmp_path / "model.onnx", k=3, groups=1)
    bundle = _bundle(tmp_path, HeadLayout(views=("sagittal_t2",)), [("fp32", "model.onnx")])
    with open_engine(bundle) as engine:
        with pytest.raises(EngineError, match="3 keypoint channels; the bundle's layout has 5"):
            engine.infer(images(1))
