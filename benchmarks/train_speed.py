"""Benchmark: one training step of a preset (forward, the three losses, backward, AdamW) against the
same step as plain PyTorch writes it (the named baseline: FP32, default memory layout), in one run,
on the device the preset trains on; and what an epoch of the preset's sampling then costs.

The step is the real one (:func:`lumbar_edge.training.train.make_batch` targets, ``KeypointLoss``,
the preset's network); the batch is random, since speed does not depend on pixel values. The
preset runs channels-last with the mixed precision ``lumbar-edge train`` picks for the device
(:func:`lumbar_edge.training.train.mixed_precision`: FP16 on CUDA, BF16 on CPUs with native BF16).
The epoch estimate is ``ceil(slices per epoch / batch) x seconds per step`` with the slices an
epoch draws from each study (:class:`lumbar_edge.training.data.SamplingConfig`: three labelled
series per study), validation and data loading left out.

Usage: ``python -m lumbar_edge.benchmarks.train_speed --preset cpu-demo [--steps 5] [--studies 32]
[--json FILE]``. A preset whose device is missing (gpu-full without CUDA) prints why and exits 0.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Dict, List, Optional

import numpy as np

from lumbar_edge.benchmarks.common import fmt_ratio, median_ms, ratio, write_json


def skip_reason(preset: str) -> Optional[str]:
    """Why ``preset`` cannot be timed here, or ``None``."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install lumbar-edge[train])"
    from lumbar_edge.training.presets import PRESETS

    if preset == "gpu-full" and not torch.cuda.is_available():
        return "the gpu-full preset trains on CUDA and torch sees no CUDA GPU"
    if preset not in PRESETS:
        return f"unknown preset {preset!r}"
    return None


def slices_per_study(sampling) -> int:
    """Slices one study gives an epoch: one labelled series of each view."""
    return int(sum(sum(sampling.counts(view)) for view in ("sagittal_t2", "sagittal_t1", "axial_t2")))


def run(preset: str, steps: int = 5, studies: int = 32) -> List[Dict[str, object]]:
    """Rows for the preset's step and the baseline's, with the epoch estimate."""
    import torch

    from lumbar_edge.training.data import Sample
    from lumbar_edge.training.losses import KeypointLoss
    from lumbar_edge.training.model import build_model
    from lumbar_edge.training.targets import TargetConfig
    from lumbar_edge.training.train import make_batch, mixed_precision, preset_config, resolve_device

    cfg = preset_config(preset, data="unused", out="unused")
    device = resolve_device(cfg.device)
    layout = cfg.layout
    rng = np.random.default_rng(0)
    size, k = cfg.size, layout.num_keypoints
    samples = []
    for i in range(cfg.batch_size):
        view = layout.views[i % len(layout.views)]
        c0, c1 = layout.channels[view]
        present = np.zeros(k, dtype=bool)
        present[c0:c1] = True
        mask = present.astype(np.float32)
        samples.append(Sample(image=rng.standard_normal((cfg.in_channels, size, size)).astype(np.float32),
                              points=rng.uniform(8, size - 8, (k, 2)).astype(np.float32), present=present,
                              severity=rng.integers(0, 3, k), channel_mask=mask, flip_pair=None, study_id="0",
                              view=view, series_id="0", instance_number=1, mm_per_pixel=1.0))
    images, targets = make_batch(samples, cfg, None, TargetConfig(stride=4, sigma=cfg.sigma))
    targets = {name: t.to(device) for name, t in targets.items()}
    loss_fn = KeypointLoss(heatmap=cfg.heatmap_loss, keypoint_groups=layout.keypoint_groups())
    amp_dtype = mixed_precision(device) if cfg.amp else None
    mixed = "" if amp_dtype is None else f", {str(amp_dtype).replace('torch.', '')} autocast"
    rows = []
    for name, channels_last, dtype in (("plain PyTorch: FP32, default layout (baseline)", False, None),
                                       (f"lumbar-edge {preset}: channels-last{mixed}", True, amp_dtype)):
        amp = dtype is not None
        torch.manual_seed(0)
        model = build_model(cfg.model_config()).to(device).train()
        x = images.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

        def step():
            with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=amp):
                outputs = model(x)
            total, _ = loss_fn(tuple(o.float() for o in outputs), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize()

        ms = median_ms(step, steps, 2)
        per_epoch = math.ceil(slices_per_study(cfg.sampling) * studies / cfg.batch_size)
        rows.append({"name": name, "device": str(device), "batch": cfg.batch_size, "size": size,
                     "backbone": cfg.backbone, "ms_per_step": ms, "images_per_s": cfg.batch_size / (ms / 1e3),
                     "steps_per_epoch": per_epoch, "epoch_s": per_epoch * ms / 1e3,
                     "training_s": cfg.epochs * per_epoch * ms / 1e3, "epochs": cfg.epochs, "studies": studies})
    rows[1]["speedup"] = ratio(rows[0]["ms_per_step"] / 1e3, rows[1]["ms_per_step"] / 1e3)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after 2 warm-up steps")
    parser.add_argument("--studies", type=int, default=32, help="studies in the training set, for the epoch estimate")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    reason = skip_reason(args.preset)
    if reason:
        print(f"train_speed: skipped: {reason}")
        write_json(args.json, {"preset": args.preset, "skipped": reason})
        return 0
    rows = run(args.preset, args.steps, args.studies)
    print(f"{'step':<52}{'ms/step':>10}{'img/s':>8}{'epoch s':>9}{'training min':>14}")
    for r in rows:
        print(f"{r['name']:<52}{r['ms_per_step']:>10.0f}{r['images_per_s']:>8.1f}{r['epoch_s']:>9.0f}"
              f"{r['training_s'] / 60:>14.1f}")
    print(f"{rows[1]['name']} vs the baseline: {fmt_ratio(rows[1].get('speedup'))}; {rows[0]['steps_per_epoch']} steps "
          f"an epoch for {args.studies} studies, {rows[0]['epochs']} epochs, on {rows[0]['device']}")
    write_json(args.json, {"preset": args.preset, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
