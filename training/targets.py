"""Training targets at the model's output stride: Gaussian heatmaps, sub-cell offsets, severities.

Conventions (shared with :mod:`lumbar_edge.decode`): a keypoint at model-input coordinates
``(x, y)`` (pixel centres at integers) falls in output cell ``(ix, iy) = floor((x, y) / stride)``;
the offset target is ``(x / stride - ix, y / stride - iy)`` in [0, 1), so decoding gives back
``x = (ix + dx) * stride``. The Gaussian is centred on the integer cell, as in CenterNet, so the
heatmap's argmax is the cell whose offset was trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np


@dataclass(frozen=True)
class TargetConfig:
    stride: int = 4
    sigma: float = 1.5  # in output cells


def make_targets(points: np.ndarray, present: np.ndarray, severity: np.ndarray, channel_mask: np.ndarray,
                 out_h: int, out_w: int, config: TargetConfig = TargetConfig()) -> Dict[str, np.ndarray]:
    """Targets for one image.

    ``points`` [K, 2] model-input (x, y); ``present`` [K] bool (keypoint on this image) or float
    through-plane weights in [0, 1] (:mod:`.data`: 1 on the labelled slice, less on slices beside
    it, 0 = absent); ``severity`` [K] int class 0/1/2 or -1 when unlabelled; ``channel_mask`` [K]
    float, 1 for the channels of the image's view (other views' channels are not supervised). A
    present keypoint outside the output map counts as absent.

    Returns ``heatmap`` [K, h, w] float32 in [0, 1]: a Gaussian whose peak, at each present
    keypoint's cell, is the keypoint's weight (exactly 1 on its labelled slice);
    ``keypoint_index`` [K] int64 (iy * w + ix), ``keypoint_mask`` [K] float32 (the weight),
    ``offset`` [K, 2] float32, ``severity`` [K] int64 (-1 where the keypoint is absent),
    ``channel_mask`` [K] float32.
    """
    k = len(points)
    heatmap = np.zeros((k, out_h, out_w), dtype=np.float32)
    index = np.zeros(k, dtype=np.int64)
    mask = np.zeros(k, dtype=np.float32)
    offset = np.zeros((k, 2), dtype=np.float32)
    sev = np.full(k, -1, dtype=np.int64)
    ys = np.arange(out_h, dtype=np.float32)[:, None]
    xs = np.arange(out_w, dtype=np.float32)[None, :]
    radius = int(np.ceil(3 * config.sigma))
    weight = np.clip(np.asarray(present, dtype=np.float32), 0.0, 1.0)
    for i in range(k):
        if not weight[i] > 0 or not np.all(np.isfinite(points[i])):
            continue
        cx, cy = points[i, 0] / config.stride, points[i, 1] / config.stride
        ix, iy = int(np.floor(cx)), int(np.floor(cy))
        if not (0 <= ix < out_w and 0 <= iy < out_h):
            continue
        y0, y1 = max(0, iy - radius), min(out_h, iy + radius + 1)
        x0, x1 = max(0, ix - radius), min(out_w, ix + radius + 1)
        g = weight[i] * np.exp(-((xs[:, x0:x1] - ix) ** 2 + (ys[y0:y1] - iy) ** 2) / (2 * config.sigma ** 2))
        heatmap[i, y0:y1, x0:x1] = np.maximum(heatmap[i, y0:y1, x0:x1], g)
        index[i] = iy * out_w + ix
        mask[i] = weight[i]
        offset[i] = (cx - ix, cy - iy)
        sev[i] = int(severity[i])
    return {
        "heatmap": heatmap,
        "keypoint_index": index,
        "keypoint_mask": mask,
        "offset": offset,
        "severity": sev,
        "channel_mask": np.asarray(channel_mask, dtype=np.float32),
    }


def collate_targets(items) -> Dict[str, np.ndarray]:
    """Stack per-image target dicts into batch arrays."""
    return {key: np.stack([it[key] for it in items]) for key in items[0]}
