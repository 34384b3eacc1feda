"""The OpenVINO engine on small models built here, checked against numpy (the exported model's
INT8 file is checked against ONNX Runtime in tests/export/test_openvino_int8.py)."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("openvino")
from onnx_models import C, H, W, build_model, images, reference, tiny_bundle_of  # noqa: E402

from lumbar_edge.backends import activate_engine, open_engine  # noqa: E402
from lumbar_edge.backends.base import EngineError  # noqa: E402
from lumbar_edge.backends.openvino import (ISA_FLAGS, OpenVinoEngine, cpu_isa,  # noqa: E402
                                          device_capabilities, int8_accuracy_problem)
from lumbar_edge.backends.ort import OrtEngine  # noqa: E402
from lumbar_edge.errors import InputError  # noqa: E402
from lumbar_edge.labels import HeadLayout  # noqa: E402


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny.onnx"
    return path, build_model(path)


@pytest.mark.parametrize("hint", ["latency", "throughput"])
def test_infer_matches_numpy_for_dynamic_batches(model, hint):
    path, wts = model
    with OpenVinoEngine(path, threads=2, hint=hint) as engine:
        assert engine.input_shape == (None, C, H, W)
        kept = []
        for n in (1, 3, 7):
            x = images(n, seed=n)
            out = engine.infer(x)
            kept.append((x, out))
            for key, value in reference(x, wts).items():
                assert out[key].dtype == np.float32 and out[key].shape == value.shape
                np.testing.assert_allclose(out[key], value, rtol=1e-4, atol=1e-4)
        # Outputs are the caller's: later runs (which reuse the requests' buffers) leave them be.
        for x, out in kept:
            np.testing.assert_allclose(out["heatmap"], reference(x, wts)["heatmap"], rtol=1e-4, atol=1e-4)


def test_one_dynamic_compile_serves_every_batch_and_compiles_are_cached(model, tmp_path):
    path, wts = model
    cache = tmp_path / "cache"
    with OpenVinoEngine(path, cache_dir=cache) as engine:
        assert engine.describe()["batch"] == "dynamic"
        for n in (3, 4, 7, 2):
            x = images(n, seed=n)
            out = engine.infer(x)
            assert out["heatmap"].shape[0] == n
            np.testing.assert_allclose(out["heatmap"], reference(x, wts)["heatmap"], rtol=1e-4, atol=1e-4)
        assert engine.describe()["compiled_batches"] == "dynamic"
        assert len(engine._entries) == 1, "one compile, at activation, for every batch"
        assert engine.describe()["cache_dir"] == str(cache)
    assert any(cache.iterdir()), "OpenVINO wrote its compiled models into the cache"
    with OpenVinoEngine(path, cache_dir=None) as engine:
        engine.infer(images(1))
        assert engine.describe()["cache_dir"] is None


def test_an_export_from_before_the_fold_runs_padded_to_a_power_of_two(tmp_path):
    # Its coordinate channels (nodes under /coords) made OpenVINO's dynamic-batch INT8 wrong: such
    # a model gets one static compile per padded shape.
    path = tmp_path / "legacy.onnx"
    wts = build_model(path, node_prefix="/coords/")
    with OpenVinoEngine(path, cache_dir=None) as engine:
        assert engine.describe()["batch"] == "static per shape"
        assert engine.describe()["compiled_batches"] == [1]  # compiled at activation
        for n in (3, 4, 7, 2):
            x = images(n, seed=n)
            out = engine.infer(x)
            assert out["heatmap"].shape[0] == n  # the padding never leaks into the outputs
            np.testing.assert_allclose(out["heatmap"], reference(x, wts)["heatmap"], rtol=1e-4, atol=1e-4)
        # 3 and 4 share the batch-4 compile, 7 runs at 8, 2 at 2: four compiles, not five.
        assert engine.describe()["compiled_batches"] == [1, 2, 4, 8]


def test_defaults_and_description(model):
    path, _ = model
    engine = OpenVinoEngine(path)
    assert engine.device == "CPU" and engine.hint == "latency" and engine.threads >= 1
    with engine:
        info = engine.describe()
    assert info["backend"] == "openvino" and info["precision"] == "fp32" and info["input_shape"] == [None, C, H, W]
    # FP32 means FP32 whatever the CPU offers (OpenVINO's CPU default is BF16 where the CPU has it).
    assert info["inference_precision"] == "f32"
    assert info["requests"] == 1 and info["execution_devices"] == ["CPU"] and info["openvino"]
    assert not engine.is_active
    with OpenVinoEngine(path, hint="throughput", threads=2) as engine:
        assert engine.describe()["requests"] >= 1 and engine.describe()["streams"] >= 1


def test_fixed_batch_and_wrong_sizes_are_input_errors(tmp_path):
    path = tmp_path / "fixed.onnx"
    build_model(path, batch=2)
    with OpenVinoEngine(path) as engine:
        assert engine.input_shape == (2, C, H, W)
        assert engine.infer(images(2))["heatmap"].shape == (2, 3, 4, 6)
        with pytest.raises(InputError, match="axis 0: 3 != 2"):
            engine.infer(images(3))
        with pytest.raises(InputError, match=r"do not fit the model input \[2, 2, 16, 24\]"):
            engine.infer(images(2, h=20))
        with pytest.raises(InputError, match="must be float32"):
            engine.infer(images(2).astype(np.float64))
    with pytest.raises(EngineError, match="fixed batch of 2, above max_batch 1"):
        OpenVinoEngine(path, max_batch=1).activate()


def test_a_model_without_the_contract_outputs_is_refused(tmp_path):
    path = tmp_path / "named.onnx"
    build_model(path, names=("hm", "offset", "sev"))
    with pytest.raises(EngineError, match="no heatmap, severity output.*it has hm, offset, sev"):
        OpenVinoEngine(path).activate()


def test_unreadable_models_missing_files_and_absent_devices(tmp_path, model):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(EngineError, match="OpenVINO cannot read garbage.onnx"):
        OpenVinoEngine(garbage).activate()
    with pytest.raises(InputError, match="no ONNX model"):
        OpenVinoEngine(tmp_path / "missing.onnx").activate()
    with pytest.raises(EngineError, match=r"no device 'NPU7' here; available: .*CPU"):
        OpenVinoEngine(model[0], device="NPU7").activate()


def test_fp16_runs_only_where_the_device_computes_in_fp16(model):
    engine = OpenVinoEngine(model[0], precision="fp16")
    if "FP16" in device_capabilities("CPU"):
        with engine:
            assert engine.describe()["inference_precision"] == "f16"
    else:
        with pytest.raises(EngineError, match="does not compute in FP16"):
            engine.activate()


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"threads": "2"}, {"hint": "fast"}, {"device": ""},
                                    {"precision": "bf16"}])
def test_bad_options_are_input_errors(model, kwargs):
    with pytest.raises(InputError):
        OpenVinoEngine(model[0], **kwargs)


def test_the_module_imports_without_openvino():
    code = ("import sys, lumbar_edge.backends, lumbar_edge.backends.openvino;"
            "print(','.join(m for m in ('openvino', 'onnxruntime', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _accuracy(ort_peaks, ov_peaks, ort_score=None, ov_score=None, isa=None):
    """An INT8 model's ``accuracy_vs_fp32`` record as the export writes it (the parts read here)."""
    record = {"outputs": {"peak_agreement": ort_peaks},
              "openvino": {"version": "2026.4.1", "measured_on": {"isa": isa if isa is not None else cpu_isa()},
                           "outputs": {"peak_agreement": ov_peaks}}}
    if ort_score is not None:
        record["deltas"] = {"score": ort_score}
        record["openvino"]["deltas"] = {"score": ov_score}
    return record


def _two_precision_bundle(tmp_path, accuracy=None):
    layout = HeadLayout(views=("sagittal_t2",))
    build_model(tmp_path / "model.onnx", k=5, groups=1)
    wts = build_model(tmp_path / "model.int8.onnx", k=5, groups=1, seed=3)
    bundle = tiny_bundle_of(tmp_path, layout, [("fp32", "model.onnx"), ("int8", "model.int8.onnx")])
    if accuracy is not None:
        bundle.manifest["models"][1]["accuracy_vs_fp32"] = accuracy
    return bundle, wts


@pytest.mark.parametrize("accuracy, why", [
    (None, "did not measure OpenVINO's INT8 accuracy"),
    (_accuracy(0.94, 0.68), "heatmap peaks in FP32's cell for 68% of keypoints against ONNX Runtime's 94%"),
    (_accuracy(0.94, 0.93, 0.003, 0.08), "validation score \\+0.080 from FP32 against ONNX Runtime's \\+0.003"),
    # As accurate, but measured on a CPU of another kind (OpenVINO's INT8 kernels depend on it).
    (_accuracy(0.94, 0.94, isa=["avx2", "avx512f", "avx512_vnni", "not_this_cpu"]),
     "measured OpenVINO's INT8 accuracy on a CPU with avx2, avx512f, avx512_vnni, not_this_cpu, and this one has"),
])
def test_int8_is_not_chosen_by_default_unless_the_export_measured_it_as_accurate(tmp_path, accuracy, why):
    bundle, _ = _two_precision_bundle(tmp_path, accuracy)
    assert int8_accuracy_problem(bundle) is not None
    with pytest.raises(EngineError, match=f"INT8 is not chosen by default for tiny: .*{why}.*--precision int8"):
        OpenVinoEngine.from_bundle(bundle)
    # Asked for by name it runs; auto moves on to ONNX Runtime's INT8 and says why.
    assert OpenVinoEngine.from_bundle(bundle, "int8").precision == "int8"
    engine, reason = activate_engine(bundle, "auto", available_order=("openvino", "onnxruntime"))
    with engine:
        assert isinstance(engine, OrtEngine) and engine.precision == "int8"
    assert "skipped openvino: OpenVINO's INT8 is not chosen by default" in reason


def test_cpu_isa_reads_the_flags_of_this_cpu():
    import platform

    isa = cpu_isa()
    assert isa and all(isinstance(f, str) and f for f in isa)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        flags = None
    assert isa == ([f for f in ISA_FLAGS if f in flags] if flags else [platform.machine() or "unknown"])


def test_int8_measured_as_accurate_is_the_default(tmp_path):
    bundle, _ = _two_precision_bundle(tmp_path, _accuracy(0.94, 0.92, 0.003, 0.01))
    assert int8_accuracy_problem(bundle) is None
    assert OpenVinoEngine.from_bundle(bundle).precision == "int8"


def test_bundle_precisions_and_options(tmp_path):
    bundle, wts = _two_precision_bundle(tmp_path, _accuracy(0.94, 0.94))
    engine = open_engine(bundle, "openvino", threads=1, hint="throughput")
    assert isinstance(engine, OpenVinoEngine) and engine.precision == "int8" and engine.hint == "throughput"
    with engine:
        x = images(2)
        np.testing.assert_allclose(engine.infer(x)["heatmap"], reference(x, wts)["heatmap"], rtol=1e-4, atol=1e-4)
    assert OpenVinoEngine.precisions_for(bundle) == ["fp32", "int8"]
    # The device is OpenVINO's; naming it makes auto mean openvino, and another backend refuses it.
    engine, reason = activate_engine(bundle, "auto", "fp32", device="CPU")
    with engine:
        assert isinstance(engine, OpenVinoEngine) and reason == "openvino (requested)"
    with pytest.raises(InputError, match="applies to the openvino backend only"):
        open_engine(bundle, "onnxruntime", device="CPU")


def _one_study(root):
    return next(p for p in sorted((root / "train_images").iterdir()) if p.is_dir())


def test_a_study_on_openvino_grades_as_on_onnx_runtime(tiny_rsna, tiny_bundle):
    """The whole pipeline on a real exported bundle (FP32 on both, so the comparison does not
    depend on two INT8 implementations): same findings, sources, keypoints and probabilities."""
    from lumbar_edge.pipeline import Pipeline

    study = _one_study(tiny_rsna[1])
    results = {}
    for backend in ("openvino", "onnxruntime"):
        with Pipeline.load(tiny_bundle, backend=backend, precision="fp32") as pipe:
            assert pipe.engine.name == backend and pipe.backend_reason == f"{backend} (requested)"
            results[backend] = pipe.run_study(study)
    ov, ort = results["openvino"], results["onnxruntime"]
    assert ov.backend == "openvino/fp32" and len(ov.findings) == len(ort.findings) == 25
    for a, b in zip(ov.findings, ort.findings):
        assert (a.condition, a.level, a.source) == (b.condition, b.level, b.source)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-3)
        assert (a.keypoint is None) == (b.keypoint is None)
        if a.keypoint is not None:
            assert a.keypoint.sop_uid == b.keypoint.sop_uid
            assert abs(a.keypoint.x - b.keypoint.x) < 0.05 and abs(a.keypoint.y - b.keypoint.y) < 0.05


def test_infer_uses_openvino_without_a_flag_and_refuses_bad_devices(tiny_rsna, tiny_bundle, tmp_path, capsys):
    from lumbar_edge.cli import main

    study = _one_study(tiny_rsna[1])
    out = tmp_path / "out"
    assert main(["infer", str(study), "--model", str(tiny_bundle), "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "backend: openvino (auto: first usable of tensorrt, torch, openvino, onnxruntime" in text
    assert "on openvino (fp32)" in text
    assert len((out / "submission.csv").read_text().splitlines()) == 1 + 25
    code = main(["infer", str(study), "--model", str(tiny_bundle), "--out", str(tmp_path / "o2"), "--device", "NPU7",
                 "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no device 'NPU7' here; available:" in err
    code = main(["infer", str(study), "--model", str(tiny_bundle), "--out", str(tmp_path / "o3"), "--device", "CPU",
                 "--backend", "onnxruntime", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "applies to the openvino backend only" in err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
