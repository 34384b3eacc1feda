"""Tests for training.augment: keypoints must follow the pixels, flips must swap sides."""
import numpy as np
import pytest
import torch

from lumbar_edge.training.augment import AugmentConfig, augment_batch, clahe, flip_pairs, random_affine

H = W = 96


def _blobs(points, sigma=2.0):
    yy, xx = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    img = torch.zeros(H, W)
    for x, y in points:
        img += torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return img


def _centroid_near(img, p, radius=8.0):
    yy, xx = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    wgt = img * (((xx - p[0]) ** 2 + (yy - p[1]) ** 2) < radius ** 2)
    return float((wgt * xx).sum() / wgt.sum()), float((wgt * yy).sum() / wgt.sum())


def test_random_affine_moves_keypoints_with_the_pixels():
    gen = torch.Generator().manual_seed(3)
    pts = torch.tensor([[[25.0, 30.0], [70.0, 65.0]]] * 6)
    imgs = torch.stack([_blobs(p)[None] for p in pts])
    out, new_pts = random_affine(imgs, pts, AugmentConfig(rotate_deg=25, scale=(0.8, 1.2), shift=0.1), gen)
    assert not torch.allclose(new_pts, pts)
    for i in range(6):
        for p in new_pts[i]:
            cx, cy = _centroid_near(out[i, 0], p)
            assert abs(cx - float(p[0])) < 0.05 and abs(cy - float(p[1])) < 0.05


def test_flip_only_touches_images_with_a_left_right_pair_and_swaps_it():
    gen = torch.Generator().manual_seed(0)
    pts = torch.tensor([[[20.0, 50.0], [70.0, 50.0], [40.0, 10.0]]] * 2)
    imgs = torch.stack([_blobs(p)[None] for p in pts])
    present = torch.tensor([[True, False, True]] * 2)
    sev = torch.tensor([[2, 0, 1]] * 2)
    out, p2, pr2, s2 = flip_pairs(imgs, pts, present, sev, [None, (0, 1)], AugmentConfig(flip_prob=1.0), gen)
    assert torch.equal(out[0], imgs[0]) and torch.equal(p2[0], pts[0])
    assert torch.equal(out[1], torch.flip(imgs[1], dims=[-1]))
    # The left keypoint (channel 0) became the right one (channel 1), mirrored.
    assert p2[1, 1].tolist() == [W - 1 - 20.0, 50.0] and pr2[1].tolist() == [False, True, True]
    assert s2[1].tolist() == [0, 2, 1]
    assert p2[1, 2].tolist() == [W - 1 - 40.0, 10.0]


def test_augment_batch_keeps_standardisation_and_is_seeded():
    imgs = (torch.rand(3, 2, H, W) - 0.5) / 0.25
    pts = torch.rand(3, 4, 2) * 90
    args = (torch.ones(3, 4, dtype=torch.bool), torch.zeros(3, 4, dtype=torch.long), [None, None, (0, 1)], 0.5, 0.25)
    a = augment_batch(imgs, pts, *args, AugmentConfig(clahe_prob=0.5), torch.Generator().manual_seed(1))
    b = augment_batch(imgs, pts, *args, AugmentConfig(clahe_prob=0.5), torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    x01 = a[0] * 0.25 + 0.5
    assert float(x01.min()) >= -1e-6 and float(x01.max()) <= 1 + 1e-6


def test_clahe_raises_local_contrast_and_stays_in_range():
    rng = np.random.default_rng(0)
    img = (0.45 + 0.1 * rng.random((64, 64))).astype(np.float32)  # a low-contrast image
    out = clahe(img, tiles=4, clip=3.0)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    assert out.std() > 2 * img.std()
    # Monotone within a tile region: brighter input pixels never map darker in the same place.
    order = np.argsort(img[:16, :16].ravel())
    assert np.all(np.diff(out[:16, :16].ravel()[order]) >= -0.05)
