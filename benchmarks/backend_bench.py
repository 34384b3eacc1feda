"""Benchmark: the torch CUDA backend (FP16, channels-last, CUDA graphs, decode kernel) against
eager FP32 PyTorch (the named baseline), batch 1, on the default network (ResNet-18 DeepLabV3+
with attention, 256 px, the 17 keypoint channels / 3 condition groups of all views), randomly
initialised (speed does not depend on the weights).

Both are timed end to end per batch, in one run: a host float32 batch in, decoded peaks on the host
out. The baseline runs ``model(x)`` in FP32 eagerly, copies the three maps back and decodes them
with numpy (what a plain PyTorch script does); the backend is
:meth:`lumbar_edge.backends.torch_cuda.TorchCudaEngine.infer_decoded`. Median of ``--iters`` after
warm-up. Without a GPU, torch with CUDA or pycuda it prints why and exits 0.

Usage: ``python -m lumbar_edge.benchmarks.backend_bench [--batch 1] [--iters 50] [--json FILE]``
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from lumbar_edge.benchmarks.common import median_ms


def skip_reason() -> Optional[str]:
    """Why this benchmark cannot run here, or ``None``."""
    from lumbar_edge.backends.torch_cuda import TorchCudaEngine

    return TorchCudaEngine.unavailable_reason()


def run(batch: int = 1, iters: int = 50, size: int = 256) -> List[Dict[str, object]]:
    """The benchmark's rows. Needs a GPU (see :func:`skip_reason`)."""
    import torch

    from lumbar_edge.backends.torch_cuda import TorchCudaEngine
    from lumbar_edge.decode import decode_numpy
    from lumbar_edge.labels import ALL_VIEWS
    from lumbar_edge.training.model import ModelConfig, build_model

    groups = np.asarray(ALL_VIEWS.keypoint_groups(), dtype=np.int32)
    cfg = ModelConfig(num_keypoints=len(groups), num_conditions=ALL_VIEWS.num_conditions)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images = np.random.default_rng(0).standard_normal((batch, cfg.in_channels, size, size)).astype(np.float32)
    rows: List[Dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pt"
        torch.save(model.state_dict(), weights)
        eager = model.to("cuda:0")

        def baseline():
            with torch.inference_mode():
                hm, off, sev = eager(torch.from_numpy(images).to("cuda:0"))
                return decode_numpy(hm.cpu().numpy(), off.cpu().numpy(), sev.cpu().numpy(), groups, stride=4)

        t_base = median_ms(baseline, iters, 5)
        want = baseline()
        del eager
        torch.cuda.empty_cache()
        configs = (("torch fp16 + graphs + kernel", "fp16", True), ("torch fp16 eager + kernel", "fp16", False))
        results = {}
        for label, precision, graphs in configs:
            with TorchCudaEngine(weights, cfg.to_dict(), images.shape[1:], precision=precision, cuda_graphs=graphs,
                                 max_batch=max(batch, 1), num_keypoints=len(groups),
                                 num_conditions=ALL_VIEWS.num_conditions) as engine:
                got = engine.infer_decoded(images, groups)
                results[label] = (median_ms(lambda: engine.infer_decoded(images, groups), iters, 5),
                                  float(np.mean(got.index == want.index)))
    rows.append({"bench": "backend", "batch": batch, "way": "eager fp32 torch + numpy decode (baseline)",
                 "ms": round(t_base, 3), "speedup_vs_eager_fp32": 1.0, "peak_agreement": 1.0})
    for label, (ms, agree) in results.items():
        rows.append({"bench": "backend", "batch": batch, "way": label, "ms": round(ms, 3),
                     "speedup_vs_eager_fp32": round(t_base / ms, 2), "peak_agreement": round(agree, 3)})
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--json", default=None, help="Write the rows (or the skip reason) here as JSON.")
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason:
        result: Dict[str, object] = {"bench": "backend", "skipped": reason}
        print(f"backend benchmark skipped: {reason}")
    else:
        rows = run(args.batch, args.iters)
        result = {"bench": "backend", "rows": rows}
        for row in rows:
            print(f"backend batch {row['batch']} {row['way']:<44} {row['ms']:9.3f} ms  "
                  f"{row['speedup_vs_eager_fp32']:.2f}x vs eager FP32")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
