"""The TensorRT runtime backend on a machine without a GPU (CI): every TensorRT name it uses
exists in the real lean-runtime bindings (``tensorrt_lean``, ``pip install tensorrt-lean-cu13``),
engine selection refuses engines made for another GPU or TensorRT version in one line, and with
no GPU the backend fails with a clear message rather than a crash (in a subprocess, so a native
abort would fail the test rather than end the run)."""
import subprocess
import sys
import textwrap

import pytest

from lumbar_edge.backends import select_backend
from lumbar_edge.backends.base import EngineError
from lumbar_edge.backends.tensorrt import (REQUIRED_NAMES, TensorRTEngine, engine_mismatch, missing_names,
                                           select_engine_entry)


@pytest.fixture(scope="module")
def trt_lean():
    return pytest.importorskip("tensorrt_lean", reason="tensorrt_lean is not installed (pip install tensorrt-lean-cu13)")


def test_every_tensorrt_name_the_backend_uses_exists_in_tensorrt_lean(trt_lean):
    assert missing_names(trt_lean) == []
    # The same check spelled out, so a failure names the owner and attribute.
    for owner, names in REQUIRED_NAMES.items():
        obj = trt_lean if owner == "module" else getattr(trt_lean, owner)
        for name in names:
            assert hasattr(obj, name), f"tensorrt_lean.{owner}.{name} is missing"
    assert trt_lean.__version__.split(".")[0] in ("10", "11")


def test_the_names_cover_the_name_based_io_api():
    used = {n for names in REQUIRED_NAMES.values() for n in names}
    for name in ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype", "set_input_shape",
                 "set_tensor_address", "execute_async_v3", "engine_host_code_allowed"):
        assert name in used


def test_missing_names_reports_owner_and_attribute(trt_lean):
    class Partial:
        __version__ = "11.0.0"
        Runtime = trt_lean.Runtime
    missing = missing_names(Partial)
    assert "Logger" in missing and "ICudaEngine" in missing and "Runtime.DLA_core" not in missing


ENTRY = {"file": "model.fp16.sm87.trt10.engine", "precision": "fp16", "tensorrt_version": "10.3.0.30",
         "compute_capability": "8.7", "version_compatible": False}


def test_engine_compatibility_rules():
    assert engine_mismatch(ENTRY, "10.3.0.30", "8.7") is None
    assert "built for sm 8.7, this GPU is sm 9.0" in engine_mismatch(ENTRY, "10.3.0.30", "9.0")
    assert "built with TensorRT 10.3.0.30, this is 10.7.0" in engine_mismatch(ENTRY, "10.7.0", "8.7")
    assert "lean runtime" in engine_mismatch(ENTRY, "10.3.0.30", "8.7", lean=True)
    vc = dict(ENTRY, version_compatible=True)
    assert engine_mismatch(vc, "10.8.0", "8.7", lean=True) is None
    assert "at least as new" in engine_mismatch(vc, "10.1.0", "8.7")
    assert "at least as new" in engine_mismatch(vc, "11.4.0.106", "8.7")


def test_selection_refuses_other_gpus_in_one_line_with_the_rebuild_hint():
    with pytest.raises(EngineError) as info:
        select_engine_entry([ENTRY], None, "11.4.0.106", "9.0", "NVIDIA H100")
    text = str(info.value)
    assert "\n" not in text
    assert "NVIDIA H100 (sm 9.0" in text and "model.fp16.sm87.trt10.engine: built for sm 8.7" in text
    assert "lumbar-edge export" in text
    with pytest.raises(EngineError, match="the bundle has no int8 engine"):
        select_engine_entry([ENTRY], "int8", "10.3.0.30", "8.7")
    fp32 = dict(ENTRY, precision="fp32", file="model.fp32.sm87.trt10.engine")
    assert select_engine_entry([fp32, ENTRY], None, "10.3.0.30", "8.7")["precision"] == "fp16"
    assert select_engine_entry([fp32, ENTRY], "fp32", "10.3.0.30", "8.7")["file"] == fp32["file"]


def test_auto_skips_tensorrt_with_its_reason():
    reason = TensorRTEngine.unavailable_reason()
    if reason is None:
        pytest.skip("this machine can run the TensorRT backend")
    name, why = select_backend("auto")
    assert name != "tensorrt"
    assert f"tensorrt: {reason}" in why


def test_without_a_gpu_the_backend_fails_clearly_in_a_subprocess(tmp_path):
    if TensorRTEngine.unavailable_reason() is None:
        pytest.skip("this machine can run the TensorRT backend")
    engine_file = tmp_path / "model.engine"
    engine_file.write_bytes(b"not an engine")
    code = textwrap.dedent(f"""
        from lumbar_edge.backends import select_backend
        from lumbar_edge.backends.tensorrt import TensorRTEngine
        from lumbar_edge.errors import LumbarEdgeError
        for attempt in (lambda: select_backend("tensorrt"), lambda: TensorRTEngine({str(engine_file)!r}).activate()):
            try:
                attempt()
            except LumbarEdgeError as exc:
                print("REFUSED:", type(exc).__name__, exc)
            else:
                print("UNEXPECTED: it ran")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("REFUSED", "UNEXPECTED"))]
    assert len(lines) == 2 and all(line.startswith("REFUSED") for line in lines), proc.stdout
    assert "tensorrt backend" in lines[0]
    assert "Traceback" not in proc.stderr


def test_the_lean_runtime_module_imports_without_a_gpu(trt_lean):
    # The bindings load on a CPU-only machine; Runtime() needs CUDA and is exercised by the gpu tests.
    assert trt_lean.Runtime.__name__ == "Runtime"


def test_gpu_backend_modules_import_no_gpu_package():
    code = ("import sys, lumbar_edge.backends.tensorrt, lumbar_edge.backends.torch_cuda, "
            "lumbar_edge.backends.cuda_resources, lumbar_edge.export.tensorrt_build\n"
            "print(','.join(m for m in ('torch', 'tensorrt', 'tensorrt_lean', 'pycuda') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


class _AvailableTensorRT(TensorRTEngine):
    """The real TensorRT backend, reported available as on a GPU machine: ``from_bundle`` runs its
    real engine selection (tensorrt_lean's version) against the bundle."""

    @classmethod
    def unavailable_reason(cls):
        return None

    @classmethod
    def missing_dependencies(cls):
        return []


def test_auto_falls_through_tensorrt_when_the_bundle_has_no_engine_for_the_gpu(trt_lean, tmp_path, monkeypatch):
    # Defect 1: a random-weights bundle (make_bundle) has ONNX models but no TensorRT engine;
    # auto must pass over tensorrt with its reason and run the next backend, not raise.
    from onnx_models import build_model, tiny_bundle_of

    from lumbar_edge.backends import BACKENDS, activate_engine
    from lumbar_edge.backends import cuda_resources
    from lumbar_edge.backends.ort import OrtEngine
    from lumbar_edge.labels import HeadLayout

    monkeypatch.setattr(cuda_resources, "device_info", lambda device=0: ("Jetson AGX Orin", (8, 7), True))
    build_model(tmp_path / "model.onnx", k=5, groups=1)
    bundle = tiny_bundle_of(tmp_path, HeadLayout(views=("sagittal_t2",)), [("fp32", "model.onnx")])
    assert bundle.engines == []
    registry = dict(BACKENDS, tensorrt=(__name__, "_AvailableTensorRT"))
    engine, reason = activate_engine(bundle, "auto", available_order=("tensorrt", "onnxruntime"), registry=registry)
    with engine:
        assert isinstance(engine, OrtEngine) and engine.is_active
    assert reason.startswith("onnxruntime (auto: first usable of tensorrt, onnxruntime; skipped tensorrt: "
                             "no TensorRT engine in the bundle runs on Jetson AGX Orin (sm 8.7, TensorRT lean runtime "
                             f"{trt_lean.__version__}): the bundle has no engine")
    # Named, the same bundle is refused in one line (nothing silently replaced).
    with pytest.raises(EngineError, match="no TensorRT engine in the bundle runs on Jetson AGX Orin"):
        activate_engine(bundle, "tensorrt", registry=registry)


@pytest.mark.parametrize("error", ["CudaDecodeError", "CudaError", "EngineError"])
def test_a_failed_capture_falls_back_to_plain_enqueueing(error):
    # Defect 4: the decode kernel's launch refused during capture raises CudaDecodeError, which
    # is not an EngineError; it must not escape infer_decoded.
    from lumbar_edge.backends import cuda_resources
    from lumbar_edge.backends.tensorrt import GRAPH_FALLBACK_ERRORS, capture_or_plain
    from lumbar_edge.decode_cuda import CudaDecodeError

    cls = {"CudaDecodeError": CudaDecodeError, "CudaError": cuda_resources.CudaError, "EngineError": EngineError}[error]
    assert issubclass(cls, GRAPH_FALLBACK_ERRORS)

    def capture():
        raise cls("CUDA decoder: launching decode_peaks_f16 failed: operation not permitted when stream is capturing")

    graph, status = capture_or_plain(capture)
    assert graph is None and status.startswith("plain (CUDA decoder: launching decode_peaks_f16 failed")
    assert capture_or_plain(lambda: "graph object") == ("graph object", "graph")


def test_a_bug_during_capture_is_not_hidden():
    from lumbar_edge.backends.tensorrt import capture_or_plain

    def capture():
        raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):
        capture_or_plain(capture)


def test_runtime_choice_is_checked():
    from lumbar_edge.errors import InputError

    assert TensorRTEngine("x.engine", runtime="tensorrt_lean").runtime == "tensorrt_lean"
    with pytest.raises(InputError, match="runtime must be one of tensorrt, tensorrt_lean"):
        TensorRTEngine("x.engine", runtime="tensorrt_full")
