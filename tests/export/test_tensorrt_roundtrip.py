"""A TensorRT engine round trip on a GPU (marked ``gpu``): built with the full TensorRT from a real
bundle's ONNX (version-compatible, so the lean runtime may run it), deserialised with
``tensorrt_lean``, run with and without CUDA graphs at two alternating batch sizes, and compared
with ONNX Runtime on the same images within the precision's tolerance.

Skipped where there is no GPU, or where the full TensorRT (the builder), the lean runtime or
pycuda does not import; each skip names what is missing.
"""
import numpy as np
import pytest

from lumbar_edge.bundle import Bundle
from lumbar_edge.decode import decode_numpy

pytestmark = pytest.mark.gpu

#: precision -> (atol of the raw heatmaps against ONNX Runtime FP32, share of peaks that agree)
TOLERANCE = {"fp32": (2e-3, 1.0), "fp16": (5e-2, 0.8)}


@pytest.fixture(scope="module")
def engine_bundle(tiny_checkpoint, tmp_path_factory):
    pytest.importorskip("pycuda", reason="pycuda is not installed")
    pytest.importorskip("tensorrt", reason="the full TensorRT (the builder) is not installed")
    pytest.importorskip("tensorrt_lean", reason="the TensorRT lean runtime (tensorrt_lean) is not installed")
    from lumbar_edge.export.build import export_bundle
    from lumbar_edge.export.tensorrt_build import build_engine

    out = tmp_path_factory.mktemp("trt_bundle") / "bundle"
    export_bundle(tiny_checkpoint, out, ("fp32", "fp16"), progress=False)
    for precision in TOLERANCE:
        build_engine(out, precision, max_batch=8, version_compatible=True, progress=False)
    return Bundle.load(out)


@pytest.mark.parametrize("precision", sorted(TOLERANCE))
def test_engine_built_with_tensorrt_runs_on_the_lean_runtime_like_onnxruntime(engine_bundle, precision):
    from lumbar_edge.backends.ort import OrtEngine
    from lumbar_edge.backends.tensorrt import TensorRTEngine
    from lumbar_edge.export.onnx_export import synthetic_batch

    bundle = engine_bundle
    atol, agree = TOLERANCE[precision]
    images = synthetic_batch(bundle.in_channels, *bundle.input_size, n=6, seed=5)
    groups = np.asarray(bundle.layout.keypoint_groups(), dtype=np.int32)
    batches = (images, images[:2], images, images[:2])  # alternating sizes: replays on their own contexts
    with OrtEngine.from_bundle(bundle, "fp32") as ref:
        want = {len(b): (ref.infer(b), ref.infer_decoded(b, groups)) for b in batches[:2]}
    entry = next(e for e in bundle.engines if e["precision"] == precision)
    assert entry["version_compatible"] is True
    layout = bundle.layout
    for graphs in (False, True):
        engine = TensorRTEngine(bundle.engine_path(entry), precision=precision, version_compatible=True,
                                cuda_graphs=graphs, runtime="tensorrt_lean", max_batch=8,
                                num_keypoints=layout.num_keypoints, num_conditions=layout.num_conditions,
                                stride=bundle.stride)
        with engine:
            for batch in batches:
                got = engine.infer_decoded(batch, groups)
                raw = engine.infer(batch)  # the plain context's shape changes between graph replays
                # The kernel decodes the engine's outputs exactly as numpy does.
                mine = decode_numpy(raw["heatmap"], raw["offset"], raw["severity"], groups, stride=bundle.stride)
                np.testing.assert_array_equal(got.index, mine.index)
                np.testing.assert_allclose(got.probs, mine.probs, rtol=1e-5, atol=1e-6)
                ref_raw, ref_dec = want[len(batch)]
                np.testing.assert_allclose(raw["heatmap"], ref_raw["heatmap"], atol=atol)
                assert float(np.mean(got.index == ref_dec.index)) >= agree
            described = engine.describe()
            if graphs:
                assert set(engine.graph_status.values()) == {"graph"}, engine.graph_status
                assert described["graph_contexts"] == [2, 6]
            else:
                assert described["graph_contexts"] == []
