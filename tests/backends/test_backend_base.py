"""The Engine base class: lifecycle, input checks, output contract, availability.

``BlockEngine`` is a real (numpy) backend, not a mock: it computes stride-4 outputs from the
input blocks, so the checks are exercised on genuine arrays.
"""
import numpy as np
import pytest

from lumbar_edge.backends.base import Engine, EngineError
from lumbar_edge.errors import InputError, MissingDependencyError


class BlockEngine(Engine):
    """Outputs from 4x4 block means: heatmap channel k = (k + 1) x the channel-mean block,
    offsets the per-channel block means tiled, severity their negatives."""

    name = "numpy-block"

    def __init__(self, k=3, groups=2, channels=2, size=(16, 24), fixed_batch=None, mangle=None, **kwargs):
        super().__init__(**kwargs)
        self.k, self.groups, self.channels, self.size, self.fixed_batch = k, groups, channels, size, fixed_batch
        self.mangle = mangle
        self.calls = []

    def _activate(self):
        self.calls.append("activate")
        self.input_shape = (self.fixed_batch, self.channels) + self.size

    def _infer(self, images):
        n, c, h, w = images.shape
        blocks = images.reshape(n, c, h // 4, 4, w // 4, 4).mean(axis=(3, 5))
        mean = blocks.mean(axis=1, keepdims=True)
        out = {
            "heatmap": (mean * np.arange(1, self.k + 1, dtype=np.float32)[None, :, None, None]).astype(np.float32),
            "offset": np.repeat(mean, 2 * self.k, axis=1).astype(np.float32),
            "severity": -np.repeat(mean, 3 * self.groups, axis=1).astype(np.float32),
        }
        return self.mangle(out) if self.mangle else out

    def _deactivate(self):
        self.calls.append("deactivate")


def batch(n=2, c=2, h=16, w=24, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


def test_infer_returns_checked_outputs():
    with BlockEngine() as engine:
        images = batch(3)
        out = engine.infer(images)
    assert set(out) == {"heatmap", "offset", "severity"}
    assert out["heatmap"].shape == (3, 3, 4, 6) and out["offset"].shape == (3, 6, 4, 6)
    assert out["severity"].shape == (3, 6, 4, 6)
    expected = images.reshape(3, 2, 4, 4, 6, 4).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(out["heatmap"][:, 2], 3 * expected, rtol=1e-5, atol=1e-6)


def test_infer_before_activate_and_after_deactivate_is_an_engine_error():
    engine = BlockEngine()
    with pytest.raises(EngineError, match="not activated"):
        engine.infer(batch())
    engine.activate()
    engine.deactivate()
    with pytest.raises(EngineError, match="activate"):
        engine.infer(batch())


def test_activate_and_deactivate_are_idempotent():
    engine = BlockEngine()
    engine.deactivate()  # before activation: nothing happens
    assert engine.activate() is engine and engine.activate() is engine
    assert engine.is_active
    engine.deactivate()
    engine.deactivate()
    assert engine.calls == ["activate", "deactivate"] and not engine.is_active
    with engine:
        with engine:  # nested use does not re-activate
            pass
    assert engine.calls == ["activate", "deactivate", "activate", "deactivate"]


@pytest.mark.parametrize("bad, message", [
    (batch().astype(np.float64), "float32"),
    (batch().tolist(), "numpy array"),
    (batch()[0], r"\[N, C, H, W\]"),
    (np.asfortranarray(batch()), "C-contiguous"),
    (batch()[:, :, :, ::2].copy(), "axis 3: 12 != 24"),
    (batch(c=3), "axis 1: 3 != 2"),
    (batch(h=20), "axis 2"),
    (batch(n=0), "batch size 0"),
    (batch(n=5), "batch size 5 is outside 1..4"),
])
def test_bad_inputs_are_input_errors(bad, message):
    with BlockEngine(max_batch=4) as engine:
        with pytest.raises(InputError, match=message):
            engine.infer(bad)


def test_a_fixed_batch_model_takes_only_that_batch():
    with BlockEngine(fixed_batch=2) as engine:
        assert engine.infer(batch(2))["heatmap"].shape[0] == 2
        with pytest.raises(InputError, match="axis 0: 1 != 2"):
            engine.infer(batch(1))


def _drop(key):
    return lambda out: {k: v for k, v in out.items() if k != key}


def _set(key, fn):
    return lambda out: {**out, key: fn(out[key])}


@pytest.mark.parametrize("mangle, message", [
    (lambda out: [out["heatmap"]], "not a dict"),
    (_drop("offset"), "no offset output"),
    (_set("heatmap", lambda a: a.astype(np.float16)), "heatmap output must be a float32"),
    (_set("severity", lambda a: a.tolist()), "severity output must be"),
    (_set("offset", lambda a: a[:, :-1]), r"offset output has shape \[2, 5, 4, 6\], expected \[2, 6, 4, 6\]"),
    (_set("heatmap", lambda a: np.ascontiguousarray(a[:, :, :3])), r"heatmap output has shape \[2, 3, 3, 6\]"),
    (_set("offset", lambda a: a[:, :, :, :5]), "offset output has shape"),
    (_set("severity", lambda a: a[:, :4]), "not 3 per condition"),
    (_set("severity", lambda a: a[:1]), r"severity output has shape \[1, 6, 4, 6\]"),
    (_set("heatmap", lambda a: a[:, :, :, :, None]), "float32 \\[N, ch, h, w\\]"),
])
def test_outputs_breaking_the_contract_are_engine_errors(mangle, message):
    with BlockEngine(mangle=mangle) as engine:
        with pytest.raises(EngineError, match=message):
            engine.infer(batch())


def test_outputs_are_checked_against_the_layout_when_known():
    with BlockEngine(k=3, groups=2, num_keypoints=5) as engine:
        with pytest.raises(EngineError, match="3 keypoint channels; the bundle's layout has 5"):
            engine.infer(batch())
    with BlockEngine(k=3, groups=2, num_keypoints=3, num_conditions=1) as engine:
        with pytest.raises(EngineError, match="needs 3 x 1"):
            engine.infer(batch())


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_max_batch_must_be_a_positive_integer(value):
    with pytest.raises(InputError):
        BlockEngine(max_batch=value)


class NeedsMissingPackage(BlockEngine):
    name = "needs-missing"
    DEPENDENCIES = (("numpy", "numpy"), ("lumbar_edge_no_such_module_xyz", "no-such-package"))
    EXTRA = "trt"


class NoDevice(BlockEngine):
    name = "no-device"

    @classmethod
    def unavailable_reason(cls):
        return super().unavailable_reason() or "no CUDA GPU is visible"


def test_availability_names_missing_packages_and_the_extra():
    assert BlockEngine.is_available() and BlockEngine.missing_dependencies() == []
    assert NeedsMissingPackage.missing_dependencies() == ["no-such-package"]
    assert not NeedsMissingPackage.is_available()
    assert "lumbar-edge[trt]" in NeedsMissingPackage.unavailable_reason()
    engine = NeedsMissingPackage()
    with pytest.raises(MissingDependencyError, match=r"needs-missing backend needs no-such-package.*lumbar-edge\[trt\]"):
        engine.activate()
    assert not engine.is_active and engine.calls == []


def test_a_backend_unusable_for_another_reason_says_why():
    assert not NoDevice.is_available()
    with pytest.raises(EngineError, match="no CUDA GPU"):
        NoDevice().activate()


def test_the_base_class_cannot_open_bundles_and_is_abstract():
    with pytest.raises(EngineError, match="cannot open model bundles"):
        BlockEngine.from_bundle(object())
    with pytest.raises(TypeError):
        Engine()


def test_infer_decoded_defaults_to_the_numpy_decoder():
    decode = pytest.importorskip("lumbar_edge.decode", reason="lumbar_edge.decode is not in this tree yet")
    groups = np.array([0, 1, 1], dtype=np.int32)
    with BlockEngine() as engine:
        images = batch(2)
        decoded = engine.infer_decoded(images, groups)
        out = engine.infer(images)
        with pytest.raises(InputError, match="groups"):
            engine.infer_decoded(images, [0, 1])
        with pytest.raises(InputError, match="groups"):
            engine.infer_decoded(images, [0, 1, 2])
    reference = decode.decode_numpy(out["heatmap"], out["offset"], out["severity"], groups, stride=4)
    for field in ("x", "y", "score", "probs"):
        np.testing.assert_array_equal(getattr(decoded, field), getattr(reference, field))
