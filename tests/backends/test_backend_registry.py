"""Backend registry: auto selection, named selection and its errors."""
import numpy as np
import pytest

from lumbar_edge.backends import (AUTO_ORDER, BACKENDS, backend_names, get_backend_class, open_engine,
                                  select_backend)
from lumbar_edge.backends.base import Engine, EngineError
from lumbar_edge.backends.ort import OrtEngine
from lumbar_edge.errors import MissingDependencyError


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


NotAnEngine = object

REGISTRY = dict(BACKENDS, fakegpu=(__name__, "MissingPackageEngine"), nogpu=(__name__, "NoGpuEngine"),
                broken=(__name__, "NotAnEngine"))


def test_auto_picks_onnxruntime_here_and_says_why():
    name, reason = select_backend("auto")
    assert name == "onnxruntime"
    assert AUTO_ORDER == ("tensorrt", "torch", "onnxruntime")
    assert "tensorrt" in reason and "torch" in reason and "first available" in reason


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
