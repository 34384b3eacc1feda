"""The GPU benchmarks and suite script run (or skip with their reason) on any machine."""
import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["decode_bench", "backend_bench"])
def test_benchmark_runs_or_skips_with_a_reason(module, tmp_path):
    from lumbar_edge.backends.torch_cuda import TorchCudaEngine

    if TorchCudaEngine.unavailable_reason() is None:
        pytest.skip("a GPU is present: the benchmark itself runs in benchmarks/gpu_suite.sh")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", f"lumbar_edge.benchmarks.{module}", "--iters", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["skipped"] and "skipped:" in proc.stdout
