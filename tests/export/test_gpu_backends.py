"""GPU tests of the runtime backends (marked ``gpu``; skipped without a GPU or the package they
need): the torch CUDA backend end to end on a synthetic study, its decode kernel on the output
tensors in place against the numpy decoder, and the TensorRT lean runtime's initialisation. CPU
tests of the torch backend's refusals run everywhere."""
import subprocess
import sys

import numpy as np
import pytest

from lumbar_edge.backends.base import EngineError
from lumbar_edge.backends.torch_cuda import TorchCudaEngine
from lumbar_edge.bundle import Bundle
from lumbar_edge.decode import decode_numpy


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, tmp_path_factory):
    from lumbar_edge.export.build import export_bundle

    out = tmp_path_factory.mktemp("gpu_bundle") / "bundle"
    export_bundle(tiny_checkpoint, out, ("fp32", "fp16"), progress=False)
    return Bundle.load(out)


def test_bundles_carry_the_fp32_weights_for_the_torch_backend(bundle):
    import torch

    assert bundle.weights_path.name == "model.pt" and bundle.manifest["weights"]["sha256"]
    state = torch.load(bundle.weights_path, map_location="cpu", weights_only=True)
    assert any(k.startswith("heatmap_head") for k in state)


def test_torch_backend_refusals_and_reason_without_a_gpu(bundle):
    with pytest.raises(EngineError, match="runs fp16 or fp32, not int8"):
        TorchCudaEngine.from_bundle(bundle, "int8")
    weightless = Bundle(bundle.root, {k: v for k, v in bundle.manifest.items() if k != "weights"})
    with pytest.raises(EngineError, match="no PyTorch weights"):
        TorchCudaEngine.from_bundle(weightless)
    reason = TorchCudaEngine.unavailable_reason()
    if reason is not None:
        assert "pycuda" in reason or "GPU" in reason or "CPU-only" in reason
        from lumbar_edge.backends import select_backend

        assert f"torch: {reason}" in select_backend("auto")[1]


def _tf32_state(torch):
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fp32_forward_runs_with_tf32_off_and_restores_the_flags(bundle, precision):
    # Defect 2: PyTorch's default runs FP32 convolutions in TF32 (0.023 heatmap error on the tiny
    # model against atol 2e-3). The engine's real _forward is run on the CPU with a probe network
    # that records the flags while it runs (the flags are what cuDNN reads on a GPU).
    import torch

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(_tf32_state(torch))
            n = x.shape[0]
            return torch.zeros(n, 1, 2, 2, dtype=x.dtype), torch.zeros(n, 2, 2, 2, dtype=x.dtype), \
                torch.zeros(n, 3, 2, 2, dtype=x.dtype)

    before = _tf32_state(torch)
    engine = TorchCudaEngine.from_bundle(bundle, precision)
    engine._model, engine._format = Probe(), torch.contiguous_format
    engine._dtype = torch.float32 if precision == "fp32" else torch.float16
    out = engine._forward(torch.zeros(2, 3, 8, 8))
    assert out["heatmap"].shape == (2, 1, 2, 2)
    ieee = ("ieee", "ieee") if isinstance(before[0], str) else (False, False)
    assert seen == [ieee if precision == "fp32" else before]
    assert _tf32_state(torch) == before
    assert engine.describe()["fp32_math"] == ("ieee (TF32 off)" if precision == "fp32" else "n/a (fp16)")


def _agreement(a, b):
    return float(np.mean(a.index == b.index))


@pytest.mark.gpu
def test_torch_backend_end_to_end(bundle, tiny_rsna):
    pytest.importorskip("pycuda", reason="pycuda is not installed")
    reason = TorchCudaEngine.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from lumbar_edge.backends.ort import OrtEngine
    from lumbar_edge.dicom import scan_path
    from lumbar_edge.export.onnx_export import synthetic_batch
    from lumbar_edge.pipeline import Pipeline

    images = synthetic_batch(3, 64, 64, n=5, seed=3)
    groups = np.asarray(bundle.layout.keypoint_groups(), dtype=np.int32)
    with OrtEngine.from_bundle(bundle, "fp32") as ref:
        want_raw = ref.infer(images)
        want = ref.infer_decoded(images, groups)
    for precision, graphs in (("fp32", False), ("fp32", True), ("fp16", True)):
        with TorchCudaEngine.from_bundle(bundle, precision, cuda_graphs=graphs) as engine:
            for batch in (images, images[:2], images):  # a second batch size, then a graph replay
                got = engine.infer_decoded(batch, groups)
                raw = engine.infer(batch)
                # The kernel on the device tensors decodes exactly as numpy on the same outputs.
                ref_dec = decode_numpy(raw["heatmap"], raw["offset"], raw["severity"], groups, stride=4)
                np.testing.assert_array_equal(got.index, ref_dec.index)
                np.testing.assert_allclose(got.probs, ref_dec.probs, rtol=1e-5, atol=1e-6)
            if graphs:
                assert engine.describe()["graphs"] == [2, 5]
            if precision == "fp32":
                np.testing.assert_allclose(raw["heatmap"], want_raw["heatmap"], atol=2e-3)
                assert _agreement(got, want) == 1.0
            else:
                assert _agreement(got, want) >= 0.8
    _, val_dir = tiny_rsna
    study = scan_path(val_dir / "train_images", progress=False).studies[0]
    with Pipeline.load(bundle.root, backend="torch") as pipe:
        result = pipe.run_study(study)
        assert pipe.engine.name == "torch"
    assert len(result.findings) == 25


@pytest.mark.gpu
def test_tensorrt_lean_runtime_initialises_on_the_gpu():
    pytest.importorskip("tensorrt_lean", reason="tensorrt_lean is not installed")
    pytest.importorskip("pycuda", reason="pycuda is not installed")
    code = ("import tensorrt_lean as trt\n"
            "from lumbar_edge.backends.cuda_resources import PrimaryContext\n"
            "from lumbar_edge.backends.tensorrt import missing_names\n"
            "assert missing_names(trt) == []\n"
            "with PrimaryContext(0) as ctx, ctx.current():\n"
            "    rt = trt.Runtime(trt.Logger(trt.Logger.ERROR))\n"
            "    rt.engine_host_code_allowed = True\n"
            "    assert rt.engine_host_code_allowed\n"
            "    assert rt.deserialize_cuda_engine(b'not an engine') is None\n"
            "print('LEAN OK', trt.__version__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "LEAN OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_pipeline_says_which_backend_auto_picked_and_why(bundle):
    from lumbar_edge.backends import AUTO_ORDER, select_backend
    from lumbar_edge.pipeline import Pipeline

    name, _ = select_backend("auto")
    with Pipeline.load(bundle.root, backend="auto") as pipe:
        reason = pipe.backend_reason
        # The first available backend, unless its engine cannot run this bundle (then a later one).
        assert pipe.engine.name in AUTO_ORDER[AUTO_ORDER.index(name):]
    assert reason.startswith(f"{pipe.engine.name} (auto: first usable of {', '.join(AUTO_ORDER)}")
    if pipe.engine.name != "tensorrt":
        assert "skipped tensorrt: " in reason
    with Pipeline.load(bundle.root, backend="onnxruntime") as pipe:
        assert pipe.backend_reason == "onnxruntime (requested)"
