"""Backend registry: auto selection, named selection and its errors."""
import numpy as np
import pytest

from onnx_models import build_model, tiny_bundle_of

from lumbar_edge.backends import (AUTO_ORDER, BACKENDS, activate_engine, backend_names, get_backend_class,
                                  open_engine, select_backend)
from lumbar_edge.backends.base import Engine, EngineError
from lumbar_edge.backends.openvino import OpenVinoEngine
from lumbar_edge.backends.ort import OrtEngine
from lumbar_edge.bundle import BundleError
from lumbar_edge.errors import InputError, MissingDependencyError
from lumbar_edge.labels import HeadLayout


class _Stub(Engine):
    """Never activated in these tests; only its availability is asked."""

    def _activate(self):
        self.input_shape = (None, 1, 8, 8)

    def _infer(self, images):
        n = images.shape[0]
        return {"heatmap": np.zeros((n, 1, 2, 2), np.float32), "offset": np.zeros((n, 2, 2, 2), np.float32),
                "severity": np.zeros((n, 3, 2, 2), np.float32)}

    def _deactivate(self):
        pass


class MissingPackageEngine(_Stub):
    name = "fakegpu"
    DEPENDENCIES = (("lumbar_edge_no_such_module_xyz", "no-such-package"),)
    EXTRA = "trt"


class NoGpuEngine(_Stub):
    name = "nogpu"

    @classmethod
    def unavailable_reason(cls):
        return "no CUDA GPU is visible"


class CannotRunBundleEngine(_Stub):
    """Available here, but its engine cannot run the bundle (a GPU backend whose bundle has no
    engine for this GPU, a runtime that rejects the model)."""
    name = "picky"
    opened = []

    @classmethod
    def from_bundle(cls, bundle, precision=None, *, threads=None):
        cls.opened.append(threads)
        return cls()

    def _activate(self):
        raise EngineError("the bundle has no engine for this GPU")


class NoEngineFileEngine(_Stub):
    name = "nofile"

    @classmethod
    def from_bundle(cls, bundle, precision=None, **options):
        raise BundleError("bundle tiny has no TensorRT engine")


class MissingFileEngine(_Stub):
    name = "missingfile"

    @classmethod
    def from_bundle(cls, bundle, precision=None, **options):
        raise InputError("no ONNX model at /nowhere/model.onnx")


NotAnEngine = object

REGISTRY = dict(BACKENDS, fakegpu=(__name__, "MissingPackageEngine"), nogpu=(__name__, "NoGpuEngine"),
                broken=(__name__, "NotAnEngine"), picky=(__name__, "CannotRunBundleEngine"),
                nofile=(__name__, "NoEngineFileEngine"), missingfile=(__name__, "MissingFileEngine"))


def test_auto_picks_the_fastest_installed_cpu_engine_here_and_says_why():
    # No NVIDIA GPU here: OpenVINO where the openvino extra is installed, else ONNX Runtime.
    name, reason = select_backend("auto")
    assert name == ("openvino" if OpenVinoEngine.is_available() else "onnxruntime")
    assert AUTO_ORDER == ("tensorrt", "torch", "openvino", "onnxruntime")
    assert "tensorrt" in reason and "torch" in reason and "first available" in reason


@pytest.fixture
def bundle(tmp_path):
    build_model(tmp_path / "model.onnx", k=5, groups=1)
    return tiny_bundle_of(tmp_path, HeadLayout(views=("sagittal_t2",)), [("fp32", "model.onnx")])


def test_activate_engine_passes_over_backends_that_cannot_run_the_bundle(bundle):
    CannotRunBundleEngine.opened.clear()
    engine, reason = activate_engine(bundle, "auto", available_order=("nogpu", "nofile", "picky", "onnxruntime"),
                                     registry=REGISTRY, threads=1, hint="latency")
    with engine:
        assert isinstance(engine, OrtEngine) and engine.is_active and engine.threads == 1
    assert reason.startswith("onnxruntime (auto: first usable of nogpu, nofile, picky, onnxruntime")
    assert "nogpu: no CUDA GPU" in reason and "nofile: bundle tiny has no TensorRT engine" in reason
    assert "picky: the bundle has no engine for this GPU" in reason
    # Options a backend has no parameter for (hint) are dropped, the others passed.
    assert CannotRunBundleEngine.opened == [1]


def test_activate_engine_raises_for_a_named_backend_and_when_none_is_usable(bundle):
    with pytest.raises(EngineError, match="no engine for this GPU"):
        activate_engine(bundle, "picky", registry=REGISTRY)
    with pytest.raises(EngineError, match="no inference backend can run this bundle here.*nofile.*picky"):
        activate_engine(bundle, "auto", available_order=("nofile", "picky"), registry=REGISTRY)
    # A user error no other backend would fix is raised at once.
    with pytest.raises(InputError, match="no ONNX model"):
        activate_engine(bundle, "auto", available_order=("missingfile", "onnxruntime"), registry=REGISTRY)


def test_an_openvino_device_is_refused_by_other_backends(bundle):
    with pytest.raises(InputError, match="'GPU' names an OpenVINO device; it applies to the openvino backend only"):
        activate_engine(bundle, "onnxruntime", device="GPU")


def test_a_named_backend_is_checked_and_returned():
    assert select_backend("onnxruntime") == ("onnxruntime", "onnxruntime (requested)")
    assert get_backend_class("onnxruntime") is OrtEngine
    assert backend_names()[-1] == "onnxruntime" and "tensorrt" in backend_names()


def test_unknown_backends_are_named_with_the_known_ones():
    with pytest.raises(EngineError, match=r"unknown backend 'tensorrtt'; this lumbar-edge has: .*onnxruntime"):
        select_backend("tensorrtt")
    with pytest.raises(EngineError, match="unknown backend"):
        get_backend_class("")


def test_a_backend_without_its_packages_names_them_and_the_extra():
    with pytest.raises(MissingDependencyError, match=r"fakegpu backend needs no-such-package.*lumbar-edge\[trt\]"):
        get_backend_class("fakegpu", REGISTRY)
    with pytest.raises(MissingDependencyError):
        select_backend("fakegpu", registry=REGISTRY)


def test_a_backend_unusable_for_another_reason_says_why():
    with pytest.raises(EngineError, match="nogpu backend cannot run here: no CUDA GPU"):
        select_backend("nogpu", registry=REGISTRY)


def test_auto_skips_unavailable_backends_with_reasons():
    name, reason = select_backend("auto", ("fakegpu", "nogpu", "onnxruntime"), REGISTRY)
    assert name == "onnxruntime"
    assert "no-such-package" in reason and "no CUDA GPU" in reason
    with pytest.raises(EngineError, match="no inference backend is available.*no-such-package.*no CUDA GPU"):
        select_backend("auto", ("fakegpu", "nogpu"), REGISTRY)


def test_a_registered_name_that_is_not_an_engine_is_refused():
    with pytest.raises(EngineError, match="not an Engine"):
        get_backend_class("broken", REGISTRY)


def test_open_engine_refuses_an_unknown_backend_before_touching_the_bundle():
    with pytest.raises(EngineError, match="unknown backend"):
        open_engine(object(), backend="cuda")
