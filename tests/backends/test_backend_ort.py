"""The ONNX Runtime engine on small models built here with onnx.helper, checked against numpy."""
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx_models import C, H, W, build_model, images, reference, tiny_bundle_of  # noqa: E402

from lumbar_edge.backends import open_engine  # noqa: E402
from lumbar_edge.backends.base import EngineError  # noqa: E402
from lumbar_edge.backends.ort import OrtEngine  # noqa: E402
from lumbar_edge.bundle import BundleError  # noqa: E402
from lumbar_edge.errors import InputError  # noqa: E402
from lumbar_edge.labels import HeadLayout  # noqa: E402


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


def test_open_engine_on_atiny_bundle_of(tmp_path):
    layout = HeadLayout(views=("sagittal_t2",))  # K = 5, one condition
    build_model(tmp_path / "model.onnx", k=5, groups=1)
    wts = build_model(tmp_path / "model.int8.onnx", k=5, groups=1, seed=3)
    bundle = tiny_bundle_of(tmp_path, layout, [("fp32", "model.onnx"), ("int8", "model.int8.onnx")])
    # INT8 is preferred on the CPU when the bundle has it, whatever the manifest's order.
    engine = open_engine(bundle, "onnxruntime", threads=1)
    assert isinstance(engine, OrtEngine) and not engine.is_active
    assert engine.precision == "int8" and engine.model_path.name == "model.int8.onnx" and engine.threads == 1
    with engine:
        x = images(2)
        np.testing.assert_allclose(engine.infer(x)["heatmap"], reference(x, wts)["heatmap"], rtol=1e-4, atol=1e-4)
    assert open_engine(bundle, "onnxruntime", "fp32").model_path.name == "model.onnx"
    with pytest.raises(BundleError, match="no fp16 model"):
        open_engine(bundle, "onnxruntime", precision="fp16")


def test_a_model_that_disagrees_with_the_bundle_layout_is_caught(tmp_path):
    build_model(tmp_path / "model.onnx", k=3, groups=1)
    bundle = tiny_bundle_of(tmp_path, HeadLayout(views=("sagittal_t2",)), [("fp32", "model.onnx")])
    with open_engine(bundle, "onnxruntime") as engine:
        with pytest.raises(EngineError, match="3 keypoint channels; the bundle's layout has 5"):
            engine.infer(images(1))
