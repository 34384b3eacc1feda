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


def test_the_suite_table_gives_a_figure_or_a_named_reason_for_every_step(tmp_path):
    from lumbar_edge.benchmarks.suite_table import STEPS, render_table, rows

    (tmp_path / "steps.tsv").write_text(
        "pytest_gpu\t1\t40\t\n"
        "decode_bench\t1\t3\t\n"            # crashed: its log's last line is the reason
        "backend_bench\t124\t60\t\n"        # timed out
        "train_speed\t0\t5\t\n"             # ran, but the benchmark skipped itself
        "make_bundle\t0\t0\tskipped: no NVIDIA GPU\n"
        "bench\t0\t30\t\n")                 # end_to_end and scaling never started
    (tmp_path / "pytest_gpu.json").write_text(json.dumps({"summary": "1 failed, 80 passed in 30s"}))
    (tmp_path / "decode_bench.log").write_text("Traceback ...\nRuntimeError: the decode kernel differs from numpy\n")
    (tmp_path / "train_speed.json").write_text(json.dumps({"preset": "gpu-full", "skipped": "CUDA is not available"}))
    ok = {"backend": "torch", "precision": "fp16", "batch": 8, "status": "ok", "reason": None,
          "latency_s": {"p50": 0.0123}, "throughput": {"slices_per_s": 812.4}, "engine": {"fp32_math": "n/a (fp16)"}}
    na = {"backend": "tensorrt", "precision": None, "batch": None, "status": "n/a",
          "reason": "the bundle has no model this backend runs (no TensorRT engine; build one with export --engine)"}
    (tmp_path / "bench.json").write_text(json.dumps({"rows": [ok, na]}))
    table = rows(tmp_path)
    by_step = {}
    for step, cfg, figure, note in table:
        by_step.setdefault(step, []).append((cfg, figure, note))
        assert figure.strip(), f"row {step} {cfg} has neither a figure nor a reason"
    assert by_step["pytest -m gpu"] == [("", "1 failed, 80 passed in 30s", "exit 1")]
    assert by_step["decode_bench"] == [("", "failed (exit 1) after 3 s: RuntimeError: the decode kernel differs from "
                                            "numpy", "")]
    assert by_step["backend_bench"][0][1] == "timed out after 60 s"
    assert by_step["train_speed"] == [("", "skipped: CUDA is not available", "")]
    assert by_step["make_bundle"] == [("", "skipped: no NVIDIA GPU", "")]
    assert by_step["bench"] == [("torch/fp16 b8", "p50 12 ms", "812 slices/s; n/a (fp16)"),
                                ("tensorrt/None", "n/a: " + na["reason"], "")]
    assert by_step["end_to_end"] == by_step["scaling"] == [("", "not run: the suite ended before this step", "")]
    assert len(by_step) == len(STEPS)
    assert render_table(table, "42").startswith("=== lumbar-edge GPU suite (42 s) ===\npytest -m gpu")


@pytest.mark.slow
def test_gpu_suite_runs_to_the_end_here_and_ends_with_a_table_of_reasons(tmp_path):
    from pathlib import Path

    from lumbar_edge.backends.cuda_resources import gpu_missing_reason

    if gpu_missing_reason() is None:
        pytest.skip("a GPU is present: the suite runs for real in a device session")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    table = proc.stdout[proc.stdout.index("=== lumbar-edge GPU suite"):].splitlines()[1:]
    steps = [line.split()[0] for line in table]
    assert steps == ["pytest", "decode_bench", "backend_bench", "train_speed", "make_bundle", "bench", "end_to_end",
                     "scaling"]
    assert "skipped" in table[0] or "passed" in table[0]
    assert all("skipped: " in line for line in table[1:]), table
    assert (tmp_path / "steps.tsv").is_file() and (tmp_path / "table.txt").is_file()
