"""The GPU benchmarks and suite script run (or skip with their reason) on any machine."""
import json
import subprocess
import sys

import numpy as np
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


def test_the_torch_decode_of_the_benchmark_matches_numpy_on_every_field():
    # decode_bench's PyTorch way runs on any device: on the CPU it must give numpy's records,
    # every field (its old formula (ix + dx + 0.5) * s - 0.5 differed in x and y, unchecked).
    import torch

    from lumbar_edge.benchmarks.decode_bench import field_mismatches, torch_decode
    from lumbar_edge.decode import Decoded, decode_numpy

    rng = np.random.default_rng(7)
    n, k, c, h, w = 3, 5, 2, 16, 24
    hm = (rng.standard_normal((n, k, h, w)) * 4).astype(np.float32)
    off = rng.random((n, 2 * k, h, w), dtype=np.float32)
    sev = (rng.standard_normal((n, 3 * c, h, w)) * 4).astype(np.float32)
    groups = np.array([0, 1, 1, 0, 1], dtype=np.int32)
    want = decode_numpy(hm, off, sev, groups, stride=4)
    packed = torch_decode(torch.from_numpy(hm), torch.from_numpy(off), torch.from_numpy(sev),
                          torch.as_tensor(groups, dtype=torch.long), 4.0).numpy()
    got = Decoded.from_packed(packed, w)
    assert field_mismatches(got, want) == []
    # The comparison sees each field: the old formula's x, a wrong severity group.
    old_x = packed.copy()
    old_x[..., 0] = (got.ix + (got.x / 4 - got.ix) + 0.5) * 4 - 0.5  # (ix + dx + 0.5) * s - 0.5
    shifted = Decoded.from_packed(old_x, w)
    assert [m.split(":")[0] for m in field_mismatches(shifted, want)] == ["x"]
    swapped = torch_decode(torch.from_numpy(hm), torch.from_numpy(off), torch.from_numpy(sev),
                           torch.as_tensor(1 - groups, dtype=torch.long), 4.0).numpy()
    assert [m.split(":")[0] for m in field_mismatches(Decoded.from_packed(swapped, w), want)] == ["probs"]
