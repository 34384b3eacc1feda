"""Shared helpers of the synth tests (a plain module: test folders are not packages here)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

TINY_SEED = 11
TINY_STUDIES = 3


def read_csv(path: Path):
    """(header, rows as dicts) of a CSV file."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``img`` sampled at float pixel positions (x = column, y = row), edges clamped."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x0 = np.clip(np.floor(x).astype(int), 0, img.shape[1] - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, img.shape[0] - 2)
    fx = np.clip(x - x0, 0.0, 1.0)
    fy = np.clip(y - y0, 0.0, 1.0)
    return (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
            + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)


def auc(negatives, positives) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    a = np.asarray(negatives, dtype=np.float64)[:, None]
    b = np.asarray(positives, dtype=np.float64)[None, :]
    return float(np.mean((b > a) + 0.5 * (b == a)))
