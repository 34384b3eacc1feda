"""Benchmark: decoding the model's output maps, from maps on the GPU to decoded peaks on the host.

Three ways, in one run on the same device maps (the default network's 17 keypoint channels and 3
condition groups at 256 px input, i.e. 64x64 maps, FP32):

* ``kernel``: the project's CUDA decode kernel (pycuda) reading the maps in place, then the packed
  records copied back;
* ``torch_ops``: PyTorch tensor ops on the GPU (argmax, gather, softmax), records copied back;
* ``host_numpy``: the three maps copied to the host, then :func:`lumbar_edge.decode.decode_numpy`.

Each is timed end to end (synchronised every call: the host needs the result) as the median of
``--iters`` calls after warm-up; the ratios are against the kernel at the same batch size. Both GPU
ways are first checked against numpy on every field of the record (peak index and cell, x, y,
logit exactly; score and the three severity probabilities within 1e-5 relative): all three use
one formula, ``x = (ix + dx) * stride`` (:mod:`lumbar_edge.decode`). Without a GPU (or torch with
CUDA, or pycuda) it prints why and exits 0.

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
    """The decode as PyTorch tensor ops (any device): packed float32 [N, K, 8] records in the
    layout of :data:`lumbar_edge.decode.PACKED_FIELDS` (the index slot holds the int32 bits), with
    the kernel's and numpy's formula ``x = (ix + dx) * stride``. Ties and NaN follow
    ``torch.max``, not the kernel's order: compare on inputs without them."""
    import torch

    n, k, h, w = hm.shape
    logit, idx = hm.reshape(n, k, h * w).max(dim=-1)
    ix, iy = (idx % w).float(), torch.div(idx, w, rounding_mode="floor").float()
    offs = off.reshape(n, k, 2, h * w).gather(-1, idx[:, :, None, None].expand(n, k, 2, 1))[..., 0].float()
    c = sev.shape[1] // 3
    sev_g = sev.reshape(n, c, 3, h * w)[:, groups_t]  # [n, k, 3, hw]
    probs = torch.softmax(sev_g.gather(-1, idx[:, :, None, None].expand(n, k, 3, 1))[..., 0].float(), dim=-1)
    x = (ix + offs[..., 0]) * stride
    y = (iy + offs[..., 1]) * stride
    logit = logit.float()
    packed = torch.stack([x, y, torch.sigmoid(logit), probs[..., 0], probs[..., 1], probs[..., 2],
                          torch.zeros_like(x), logit], dim=-1).contiguous()
    packed.view(torch.int32)[..., 6] = idx.to(torch.int32)
    return packed


#: Fields compared bit for bit, and within 1e-5 relative (each side's expf may differ by an ulp).
EXACT_FIELDS = ("index", "ix", "iy", "x", "y", "logit")
CLOSE_FIELDS = ("score", "probs")


def field_mismatches(got, want, rtol: float = 1e-5) -> List[str]:
    """The fields of :class:`~lumbar_edge.decode.Decoded` ``got`` that differ from ``want``, each
    as ``"field: how"``; empty when every field agrees."""
    bad = []
    for field in EXACT_FIELDS + CLOSE_FIELDS:
        a, b = np.asarray(getattr(got, field)), np.asarray(getattr(want, field))
        if a.shape != b.shape:
            bad.append(f"{field}: shape {list(a.shape)} vs {list(b.shape)}")
            continue
        same = (np.array_equal(a, b, equal_nan=True) if field in EXACT_FIELDS
                else np.allclose(a, b, rtol=rtol, atol=1e-30, equal_nan=True))
        if not same:
            diff = np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)))
            bad.append(f"{field}: {int(np.sum(~np.isclose(a, b, rtol=rtol, atol=0, equal_nan=True)))} differ, "
                       f"max |difference| {diff:.3g}")
    return bad


def run(batches: Sequence[int] = (1, 16), iters: int = 200, size: int = 256) -> List[Dict[str, object]]:
    """The rows of the benchmark (one per batch size and way). Needs a GPU (see :func:`skip_reason`)."""
    import torch

    from lumbar_edge.backends.cuda_resources import PrimaryContext
    from lumbar_edge.decode import Decoded, decode_numpy
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
                for way, got in (("the decode kernel", kernel()), ("the PyTorch decode", Decoded.from_packed(ops(), hw))):
                    bad = field_mismatches(got, want)
                    if bad:
                        raise RuntimeError(f"{way} differs from numpy at batch {n}: {'; '.join(bad)}")
                t_kernel = median_ms(kernel, iters, 20)
                t_ops = median_ms(ops, iters, 20)
                t_host = median_ms(host, max(10, iters // 10), 3)
                for way, ms in (("kernel", t_kernel), ("torch_ops", t_ops), ("host_numpy", t_host)):
                    rows.append({"bench": "decode", "batch": n, "way": way, "ms": round(ms, 4),
                                 "kernel_speedup": round(ms / t_kernel, 2),
                                 "maps": f"{n}x({k}+{2 * k}+{3 * c})x{hw}x{hw} fp32",
                                 "checked": "every field equal to numpy (x, y, score, severity, index, logit)"})
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
