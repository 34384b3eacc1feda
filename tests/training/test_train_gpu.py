"""Training on a CUDA GPU with AMP (marked ``gpu``: skipped with its reason elsewhere).

Runs the real loop on the tiny synthetic studies with AMP on and off and prints the figures the
training issue asks for (seconds per epoch, losses); run with ``-s`` to see them.
"""
import math

import pytest
import torch

from lumbar_edge.training.train import TrainConfig, train

pytestmark = pytest.mark.gpu


def _cfg(data, val, out, **kw):
    base = dict(data=str(data), out=str(out), val_data=str(val), size=128, epochs=2, batch_size=8, width=16,
                decoder_channels=32, seed=5, device="cuda")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def cuda_torch():
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} sees no CUDA GPU")
    return torch.cuda.get_device_name(0)


def test_amp_training_steps_on_the_gpu(cuda_torch, tiny_rsna, tmp_path):
    train_dir, val_dir = tiny_rsna
    runs = {}
    for amp in (True, False):
        result = train(_cfg(train_dir, val_dir, tmp_path / f"amp{int(amp)}", amp=amp), progress=False)
        assert len(result.history) == 2
        for epoch in result.history:
            assert all(math.isfinite(v) for k, v in epoch.items() if k.startswith("train_")), epoch
        # AMP computes in FP16 but keeps FP32 master weights: the checkpoint holds FP32 tensors.
        state = torch.load(result.out / "last.pt", map_location="cpu", weights_only=True)
        floats = [t for t in state["model"].values() if t.is_floating_point()]
        assert floats and all(t.dtype == torch.float32 for t in floats)
        runs[amp] = result
    print(f"\ntraining on {cuda_torch} (torch {torch.__version__}), tiny studies, 128 px, 2 epochs:")
    for amp, result in runs.items():
        last = result.history[-1]
        print(f"  amp={amp}: {result.seconds:.1f} s, train loss {last['train_loss']:.3f}, "
              f"val score {last.get('val_score', float('nan')):.3f}")
