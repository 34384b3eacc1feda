"""benchmarks/train_speed.py: a preset's training step against plain FP32 PyTorch, in one run."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")


def test_the_cpu_preset_is_timed_against_the_baseline_and_projects_its_training_time(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, "-m", "lumbar_edge.benchmarks.train_speed", "--preset", "cpu-demo",
                           "--steps", "1", "--studies", "4", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    baseline, ours = doc["rows"]
    assert "baseline" in baseline["name"] and "cpu-demo" in ours["name"]
    assert ours["batch"] == 8 and ours["size"] == 256 and ours["backbone"] == "resnet18"
    from lumbar_edge.training.train import preset_config
    from lumbar_edge.benchmarks.train_speed import slices_per_study

    cfg = preset_config("cpu-demo", data="x", out="y")
    assert ours["steps_per_epoch"] == -(-slices_per_study(cfg.sampling) * 4 // 8)
    assert ours["training_s"] == pytest.approx(cfg.epochs * ours["steps_per_epoch"] * ours["ms_per_step"] / 1e3)
    assert ours["speedup"] == pytest.approx(baseline["ms_per_step"] / ours["ms_per_step"])
    assert "vs the baseline" in proc.stdout


def test_a_preset_whose_device_is_missing_says_why():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present: gpu-full is timed in benchmarks/gpu_suite.sh")
    proc = subprocess.run([sys.executable, "-m", "lumbar_edge.benchmarks.train_speed", "--preset", "gpu-full"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "skipped: the gpu-full preset trains on CUDA" in proc.stdout
