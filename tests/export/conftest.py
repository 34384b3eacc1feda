"""Shared fixtures: a tiny checkpoint (64x64, width 8) in the training checkpoint format, its FP32 ONNX."""
import numpy as np
import pytest

SIZE = 64


def make_checkpoint(path, size=SIZE, seed=0, **model_options):
    """Write a checkpoint dict as ``training.train.save_checkpoint`` does, for a tiny network whose
    attention gammas, BatchNorm statistics and head weights are not at their identity/zero init
    (so every part of the graph affects the outputs). ``model_options``: other ModelConfig fields
    (``coord_channels=True``...)."""
    import torch

    from lumbar_edge.labels import HeadLayout
    from lumbar_edge.preprocess import PreprocessConfig
    from lumbar_edge.training.model import ModelConfig, build_model

    layout = HeadLayout(views=("sagittal_t2",))
    cfg = ModelConfig(width=8, decoder_channels=16, low_level_channels=8, head_channels=8, in_channels=3,
                      num_keypoints=layout.num_keypoints, num_conditions=layout.num_conditions, **model_options)
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        model.attention.pam.gamma.fill_(0.5)
        model.attention.cam.gamma.fill_(0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        for head in (model.heatmap_head, model.offset_head, model.severity_head):
            torch.nn.init.normal_(head.out.weight, std=0.1)
    state = {"format": "lumbar-edge-checkpoint/1", "model": model.state_dict(), "epoch": 3, "best_score": 0.9,
             "metrics": {"val_score": 0.9, "val_loc_px_median": 2.0},
             "train_config": {"data": str(path.parent / "no-such-data"), "size": size},
             "model_config": cfg.to_dict(), "layout": layout.to_dict(),
             "preprocess": PreprocessConfig(height=size, width=size, in_channels=3).to_dict()}
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="session")
def slices():
    """Stand-ins for preprocessed slices [N, 3, 64, 64] (standardised smooth images)."""
    from lumbar_edge.export.onnx_export import synthetic_batch

    return synthetic_batch(3, SIZE, SIZE, n=6, seed=7)


@pytest.fixture(scope="session")
def fp32_onnx(tiny_checkpoint, slices, tmp_path_factory):
    from lumbar_edge.export.onnx_export import export_checkpoint

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_checkpoint(tiny_checkpoint, path, inputs=slices)
    return path


@pytest.fixture(scope="session")
def calib():
    from lumbar_edge.export.onnx_export import synthetic_batch

    return synthetic_batch(3, SIZE, SIZE, n=8, seed=11)


@pytest.fixture(scope="session")
def int8_onnx(fp32_onnx, calib, tmp_path_factory):
    from lumbar_edge.export.int8 import quantize_int8

    path = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    report = quantize_int8(fp32_onnx, path, calib)
    return path, report


def max_abs(a, b):
    return {k: float(np.abs(a[k] - b[k]).max()) for k in a}
