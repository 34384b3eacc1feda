"""Suite-wide pytest hooks.

Tests marked ``gpu`` (see pytest.ini) are skipped, with the reason shown by ``-ra``, when this
machine has no NVIDIA GPU. A GPU counts as present when ``nvidia-smi -L`` lists one or, where
there is no nvidia-smi (Jetson), when pycuda reports a CUDA device. Tests that need a package
besides the GPU (pycuda, tensorrt, torch) still skip themselves when it is missing.
"""
import shutil
import subprocess

import pytest


def _gpu_missing_reason() -> "str | None":
    """None when a GPU is present, else why not (one line)."""
    reasons = []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        reasons.append("nvidia-smi is not on PATH")
    else:
        try:
            proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"nvidia-smi failed ({exc})")
        else:
            if proc.returncode == 0 and any(line.startswith("GPU ") for line in proc.stdout.splitlines()):
                return None
            reasons.append(f"nvidia-smi -L lists no GPU (exit {proc.returncode})")
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as exc:
        reasons.append(f"pycuda is not usable ({exc})")
    else:
        try:
            cuda.init()
            count = cuda.Device.count()
        except cuda.Error as exc:
            reasons.append(f"cuInit failed ({exc})")
        else:
            if count > 0:
                return None
            reasons.append("pycuda reports 0 CUDA devices")
    return "no NVIDIA GPU: " + "; ".join(reasons)


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    reason = _gpu_missing_reason()  # probed once per session, and only when gpu tests were collected
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_rsna(tmp_path_factory):
    """Two small RSNA-layout datasets made by the project's own generator: (train, val) folders.

    Shared by the training, export, pipeline and infer tests; session-scoped because rendering
    even tiny studies takes a few seconds.
    """
    from lumbar_edge.synth import SynthOptions, synthesize

    root = tmp_path_factory.mktemp("tiny_rsna")
    opts = SynthOptions.tiny(partly_unlabelled_fraction=0.0)
    synthesize(root / "train", n_studies=4, seed=11, workers=1, options=opts)
    synthesize(root / "val", n_studies=2, seed=12, workers=1, options=opts)
    return root / "train", root / "val"


@pytest.fixture(scope="session")
def tiny_bundle(tiny_rsna, tmp_path_factory):
    """A real ONNX bundle (FP32 + model.pt) of a tiny model trained one epoch on ``tiny_rsna``
    (pipeline, infer and bench tests: the plumbing runs for real, the accuracy is not the point)."""
    from lumbar_edge.export.build import export_bundle
    from lumbar_edge.training.train import TrainConfig, train

    train_dir, val_dir = tiny_rsna
    root = tmp_path_factory.mktemp("bundle")
    train(TrainConfig(data=str(train_dir), out=str(root / "run"), val_data=str(val_dir), size=64, epochs=1,
                      batch_size=4, width=8, decoder_channels=16, seed=1), progress=False)
    export_bundle(root / "run" / "best.pt", root / "bundle", ("fp32",), progress=False)
    return root / "bundle"


@pytest.fixture(scope="session", autouse=True)
def _runtime_cache_in_a_temporary_folder(tmp_path_factory):
    """Runtime caches (OpenVINO's compiled models) go to a folder of this test session, not the
    user's ~/.cache."""
    import os

    old = os.environ.get("LUMBAR_EDGE_CACHE_DIR")
    os.environ["LUMBAR_EDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("LUMBAR_EDGE_CACHE_DIR", None)
    else:
        os.environ["LUMBAR_EDGE_CACHE_DIR"] = old
