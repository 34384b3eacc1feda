"""Benchmark: decoding the model's output maps, from maps on the GPU to decoded peaks on the host.

Three ways, in one run on the same device maps (the default network's 17 keypoint channels and 3
condition groups at 256 px input, i.e. 64x64 maps, FP32):

* ``kernel``: the project's CUDA decode kernel (pycuda) reading the maps in place, then the packed
  records copied back;
* ``torch_ops``: PyTorch tensor ops on the GPU (argmax, gather, softmax), records copied back;
* ``host_numpy``: the three maps copied to the host, then :func:`lumbar_edge.decode.decode_numpy`.

Each is timed end to end (synchronised every call: the host needs the result) as the median of
``--iters`` calls after warm-up; the ratios are against the kernel at the same batch size. The peak
indices of both GPU ways are checked against numpy first. Without a GPU (or torch with CUDA, or
pycuda) it prints why and exits 0.

Usage: ``python -m lumbar_edge.benchmarks.decode_bench [--batch 1,16] [--iters 200] [--json FILE]``
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from lumbar_edge.benchmarks.common import median_ms


def skip_reason() -> Optional[str]:
    """Why this benchmark cannot run here, or ``None``."""
    from lumbar_edge.backends.cuda_resources import gpu_missing_reason

    reason = gpu_missing_reason()
    if reason:
        return reason
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA"
    return None


def torch_decode(hm, off, sev, groups_t, stride: float):
    """The decode as PyTorch tensor ops: packed [N, K, 8] records on the device (same fields as the
    kernel; the score is the sigmoid of the peak logit)."""
    import torch

    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    logit, idx = flat.max(dim=-1)
    ix, iy = (idx % w).float(), torch.div(idx, w, rounding_mode="floor").float()
    offs = off.reshape(n, k, 2, h * w).gather(-1, idx[:, :, None, None].expand(n, k, 2, 1))[..., 0]
    c = sev.shape[1] // 3
    sev_g = sev.reshape(n, c, 3, h * w)[:, groups_t]  # [n, k, 3, hw]
    probs = torch.softmax(sev_g.gather(-1, idx[:, :, None, None].expand(n, k, 3, 1))[..., 0].float(), dim=-1)
    x = (ix + offs[..., 0].float() + 0.5) * stride - 0.5
    y = (iy + offs[..., 1].float() + 0.5) * stride - 0.5
    return torch.stack([x, y, torch.sigmoid(logit.float()), probs[..., 0], probs[..., 1], probs[..., 2],
                        idx.float(), logit.float()], dim=-1)


def run(batches: Sequence[int] = (1, 16), iters: int = 200, size: int = 256) -> List[Dict[str, object]]:
    """The rows of the benchmark (one per batch size and way). Needs a GPU (see :func:`skip_reason`)."""
    import torch

    from lumbar_edge.backends.cuda_resources import PrimaryContext
    from lumbar_edge.decode import decode_numpy
    from lumbar_edge.decode_cuda import CudaDecoder
    from lumbar_edge.labels import ALL_VIEWS

    groups = np.asarray(ALL_VIEWS.keypoint_groups(), dtype=np.int32)
    k, c, hw = len(groups), ALL_VIEWS.num_conditions, size // 4
    device = torch.device("cuda:0")
    torch.cuda.init()
    rows: List[Dict[str, object]] = []
    with PrimaryContext(0) as ctx, ctx.current():
        decoder = CudaDecoder()
        try:
            groups_t = torch.as_tensor(groups, dtype=torch.long, device=device)
            for n in batches:
                gen = torch.Generator(device=device).manual_seed(n)
                hm = torch.randn((n, k, hw, hw), device=device, generator=gen) * 4
                off = torch.rand((n, 2 * k, hw, hw), device=device, generator=gen)
                sev = torch.randn((n, 3 * c, hw, hw), device=device, generator=gen) * 4
                torch.cuda.synchronize()

                def kernel():
                    decoder.decode(hm.data_ptr(), off.data_ptr(), sev.data_ptr(), n, k, hw, hw, groups, "float32",
                                   None, num_conditions=c)
                    return decoder.download(n, k, hw)

                def ops():
                    return torch_decode(hm, off, sev, groups_t, 4.0).cpu().numpy()

                def host():
                    return decode_numpy(hm.cpu().numpy(), off.cpu().numpy(), sev.cpu().numpy(), groups, stride=4)

                want = host()
                if not np.array_equal(kernel().index, want.index):
                    raise RuntimeError("the decode kernel's peaks differ from numpy's")
                if not np.array_equal(ops()[..., 6].astype(np.int64), want.index):
                    raise RuntimeError("the PyTorch decode's peaks differ from numpy's")
                t_kernel = median_ms(kernel, iters, 20)
                t_ops = median_ms(ops, iters, 20)
                t_host = median_ms(host, max(10, iters // 10), 3)
                for way, ms in (("kernel", t_kernel), ("torch_ops", t_ops), ("host_numpy", t_host)):
                    rows.append({"bench": "decode", "batch": n, "way": way, "ms": round(ms, 4),
                                 "kernel_speedup": round(ms / t_kernel, 2),
                                 "maps": f"{n}x({k}+{2 * k}+{3 * c})x{hw}x{hw} fp32"})
        finally:
            decoder.free()
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="1,16")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--json", default=None, help="Write the rows (or the skip reason) here as JSON.")
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason:
        result: Dict[str, object] = {"bench": "decode", "skipped": reason}
        print(f"decode benchmark skipped: {reason}")
    else:
        rows = run([int(b) for b in args.batch.split(",")], args.iters)
        result = {"bench": "decode", "rows": rows}
        for row in rows:
            print(f"decode batch {row['batch']:>3} {row['way']:<11} {row['ms']:9.4f} ms  "
                  f"kernel is {row['kernel_speedup']:.1f}x faster")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
