"""Batch augmentation on preprocessed images that keeps keypoints right.

Runs on torch tensors after :func:`lumbar_edge.preprocess.preprocess_stack`, so it works on the
standardised images and converts back to [0, 1] internally: geometric changes pad with the same
0 that the letterbox pads with, and intensity changes act on the windowed values.

Geometric: scale, small rotation and shift about the image centre (``affine_grid`` /
``grid_sample``, pixel centres aligned), applied identically to the keypoints. A horizontal flip is
applied only to images whose view has a left/right channel pair (axial): it mirrors the image and
swaps those channels, which is the one flip that keeps the labels true. Sagittal images are never
flipped, because that would turn the spine to face backwards without changing any label.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    scale: Tuple[float, float] = (0.85, 1.15)
    rotate_deg: float = 10.0
    shift: float = 0.06  # fraction of the image size
    flip_prob: float = 0.5
    gamma: Tuple[float, float] = (0.7, 1.4)
    contrast: Tuple[float, float] = (0.8, 1.2)
    brightness: float = 0.08
    noise: float = 0.03
    clahe_prob: float = 0.0


def _affine_params(n: int, h: int, w: int, cfg: AugmentConfig, gen: torch.Generator):
    s = torch.empty(n).uniform_(*cfg.scale, generator=gen)
    theta = torch.empty(n).uniform_(-cfg.rotate_deg, cfg.rotate_deg, generator=gen) * math.pi / 180
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * cfg.shift * torch.tensor([w, h], dtype=torch.float32)
    return s, theta, shift


def random_affine(images: torch.Tensor, points: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator):
    """Scale/rotate/shift ``images`` [N, C, H, W] (values in [0, 1], zero background) and ``points``
    [N, K, 2] (x, y model-input pixels) by the same random pixel-space map
    ``p_out = c + s * R(theta) (p_in - c) + shift``. Returns the new images and points."""
    n, _c, h, w = images.shape
    s, theta, shift = _affine_params(n, h, w, cfg, gen)
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # [N, 2, 2]
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float32)
    new_points = centre + s[:, None, None] * torch.einsum("nij,nkj->nki", rot, points - centre) + shift[:, None, :]
    # affine_grid maps output to input in normalised coordinates n = 2 (p - c) / size; so
    # n_in = D^-1 (1/s) R^T D n_out - D^-1 (1/s) R^T shift, with D = diag(w/2, h/2).
    d = torch.tensor([w / 2, h / 2], dtype=torch.float32)
    inv = rot.transpose(1, 2) / s[:, None, None]
    a = inv * d[None, None, :] / d[None, :, None]
    b = -torch.einsum("nij,nj->ni", inv, shift) / d
    grid = F.affine_grid(torch.cat([a, b[:, :, None]], dim=2), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out, new_points


def flip_pairs(images: torch.Tensor, points: torch.Tensor, present: torch.Tensor, severity: torch.Tensor,
               pairs: Sequence[Optional[Tuple[int, int]]], cfg: AugmentConfig, gen: torch.Generator):
    """Mirror the images that have a left/right channel pair (``pairs[i]`` not None) with
    probability ``flip_prob``, swapping that pair's points, presence and severity."""
    n, _c, _h, w = images.shape
    do = (torch.rand(n, generator=gen) < cfg.flip_prob).tolist()
    images, points, present, severity = images.clone(), points.clone(), present.clone(), severity.clone()
    for i in range(n):
        if not do[i] or pairs[i] is None:
            continue
        a, b = pairs[i]
        images[i] = torch.flip(images[i], dims=[-1])
        points[i, :, 0] = (w - 1) - points[i, :, 0]
        for t in (points, present, severity):
            t[i, [a, b]] = t[i, [b, a]]
    return images, points, present, severity


def random_intensity(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random gamma, contrast, brightness and Gaussian noise on [0, 1] images, per image."""
    n = images.shape[0]
    shape = (n, 1, 1, 1)
    gamma = torch.empty(shape).uniform_(*cfg.gamma, generator=gen)
    contrast = torch.empty(shape).uniform_(*cfg.contrast, generator=gen)
    bright = torch.empty(shape).uniform_(-cfg.brightness, cfg.brightness, generator=gen)
    out = images.clamp(0, 1) ** gamma
    out = (out - 0.5) * contrast + 0.5 + bright
    out = out + torch.randn(images.shape, generator=gen) * cfg.noise
    return out.clamp(0, 1)


def clahe(image: np.ndarray, tiles: int = 8, clip: float = 2.0, bins: int = 256) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a [0, 1] image (numpy).

    Per tile, the histogram is clipped at ``clip`` times its mean and the excess spread evenly;
    each pixel's value is the bilinear blend of the four nearest tiles' mappings.
    """
    h, w = image.shape
    q = np.clip((image * (bins - 1)).round().astype(np.int64), 0, bins - 1)
    ty, tx = np.linspace(0, h, tiles + 1).astype(int), np.linspace(0, w, tiles + 1).astype(int)
    maps = np.empty((tiles, tiles, bins), dtype=np.float32)
    for i in range(tiles):
        for j in range(tiles):
            hist = np.bincount(q[ty[i]:ty[i + 1], tx[j]:tx[j + 1]].ravel(), minlength=bins).astype(np.float64)
            limit = max(1.0, clip * hist.sum() / bins)
            excess = np.maximum(hist - limit, 0).sum()
            hist = np.minimum(hist, limit) + excess / bins
            cdf = np.cumsum(hist)
            maps[i, j] = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1e-9)
    # Tile centres, and each pixel's position between them.
    cy = (ty[:-1] + ty[1:]) / 2 - 0.5
    cx = (tx[:-1] + tx[1:]) / 2 - 0.5
    fy = np.clip(np.interp(np.arange(h), cy, np.arange(tiles)), 0, tiles - 1)
    fx = np.clip(np.interp(np.arange(w), cx, np.arange(tiles)), 0, tiles - 1)
    y0, x0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
    y1, x1 = np.minimum(y0 + 1, tiles - 1), np.minimum(x0 + 1, tiles - 1)
    wy, wx = (fy - y0)[:, None], (fx - x0)[None, :]
    m00 = maps[y0[:, None], x0[None, :], q]
    m01 = maps[y0[:, None], x1[None, :], q]
    m10 = maps[y1[:, None], x0[None, :], q]
    m11 = maps[y1[:, None], x1[None, :], q]
    return ((m00 * (1 - wx) + m01 * wx) * (1 - wy) + (m10 * (1 - wx) + m11 * wx) * wy).astype(np.float32)


def augment_batch(images: torch.Tensor, points: torch.Tensor, present: torch.Tensor, severity: torch.Tensor,
                  pairs: Sequence[Optional[Tuple[int, int]]], mean: float, std: float, cfg: AugmentConfig,
                  gen: torch.Generator):
    """Augment one standardised batch; returns (images, points, present, severity), images standardised."""
    x01 = images * std + mean
    if cfg.clahe_prob > 0:
        pick = (torch.rand(x01.shape[0], generator=gen) < cfg.clahe_prob).tolist()
        x01 = x01.clone()
        for i, yes in enumerate(pick):
            if yes:
                for c in range(x01.shape[1]):
                    x01[i, c] = torch.from_numpy(clahe(x01[i, c].clamp(0, 1).numpy()))
    x01, points, present, severity = flip_pairs(x01, points, present, severity, pairs, cfg, gen)
    x01, points = random_affine(x01, points, cfg, gen)
    x01 = random_intensity(x01, cfg, gen)
    return (x01 - mean) / std, points, present, severity
