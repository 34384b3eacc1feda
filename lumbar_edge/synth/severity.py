"""Severity grades per condition and level, with the structure of the real data.

A latent Gaussian "degeneration" score per condition-level is the sum of a study effect (some
spines are worse overall), a smooth per-level effect (neighbouring levels are alike), a shared
left/right effect for the paired conditions, a level offset (L4/L5 and L5/S1 are worse) and
noise; two thresholds cut it into Normal/Mild, Moderate and Severe. The thresholds are solved
exactly from the Gaussian mixture so the overall shares match ``SynthOptions.severity_prior``.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import numpy as np

from ..labels import CONDITIONS, LEVELS

_LEVEL_OFFSET = (-1.0, -0.6, -0.1, 0.6, 0.45)
_CONDITION_OFFSET = {"spinal_canal_stenosis": -0.15, "left_neural_foraminal_narrowing": 0.1,
                     "right_neural_foraminal_narrowing": 0.1, "left_subarticular_stenosis": 0.0,
                     "right_subarticular_stenosis": 0.0}
_STUDY_SD, _LEVEL_SD, _LEVEL_RHO, _SIDE_SD, _NOISE_SD = 0.7, 0.6, 0.5, 0.45, 0.55

#: Range of the local narrowing factor (remaining fraction of the normal space) per grade:
#: ~100% / ~60% / ~30%.
NARROWING = ((0.85, 1.05), (0.52, 0.68), (0.24, 0.38))


def _paired(condition: str) -> bool:
    return condition.startswith(("left_", "right_"))


def _latent_sd(condition: str) -> float:
    var = _STUDY_SD ** 2 + _LEVEL_SD ** 2 + _NOISE_SD ** 2 + (_SIDE_SD ** 2 if _paired(condition) else 0.0)
    return math.sqrt(var)


def _mixture_cdf(t: float) -> float:
    total = 0.0
    for c in CONDITIONS:
        sd = _latent_sd(c)
        for li in range(len(LEVELS)):
            mean = _LEVEL_OFFSET[li] + _CONDITION_OFFSET[c]
            total += 0.5 * (1.0 + math.erf((t - mean) / (sd * math.sqrt(2.0))))
    return total / (len(CONDITIONS) * len(LEVELS))


def _solve(target: float) -> float:
    lo, hi = -20.0, 20.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _mixture_cdf(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def thresholds(prior: Sequence[float]) -> Tuple[float, float]:
    """The two latent cut points giving overall shares ``prior`` (Normal/Mild, Moderate, Severe)."""
    return _solve(prior[0]), _solve(prior[0] + prior[1])


def sample_grades(rng: np.random.Generator, prior: Sequence[float]) -> Dict[Tuple[str, str], int]:
    """Draw the 25 grades (0 Normal/Mild, 1 Moderate, 2 Severe) keyed by ``(condition, level)``."""
    t1, t2 = thresholds(prior)
    n = len(LEVELS)
    study = rng.normal(0.0, _STUDY_SD)
    level = np.empty(n)
    level[0] = rng.normal(0.0, _LEVEL_SD)
    innov = _LEVEL_SD * math.sqrt(1.0 - _LEVEL_RHO ** 2)
    for i in range(1, n):
        level[i] = _LEVEL_RHO * level[i - 1] + rng.normal(0.0, innov)
    side = {kind: rng.normal(0.0, _SIDE_SD, n) for kind in ("foraminal", "subarticular")}
    grades = {}
    for c in CONDITIONS:
        noise = rng.normal(0.0, _NOISE_SD, n)
        for li, lv in enumerate(LEVELS):
            z = _LEVEL_OFFSET[li] + _CONDITION_OFFSET[c] + study + level[li] + noise[li]
            if _paired(c):
                z += side["foraminal" if "foraminal" in c else "subarticular"][li]
            grades[(c, lv)] = 0 if z < t1 else (1 if z < t2 else 2)
    return grades


def sample_narrowing(rng: np.random.Generator, grades: Dict[Tuple[str, str], int]) -> Dict[Tuple[str, str], float]:
    """The remaining fraction of normal space for each condition-level, drawn within its grade."""
    out = {}
    for key in sorted(grades):
        lo, hi = NARROWING[grades[key]]
        out[key] = float(rng.uniform(lo, hi))
    return out


def sample_unlabelled(rng: np.random.Generator, fraction: float) -> Tuple[Tuple[str, str], ...]:
    """Condition-levels left unlabelled in this study: none for most studies; for a ``fraction``
    of them either one whole condition (a missing series read) or one to four random entries."""
    if rng.random() >= fraction:
        return ()
    keys = [(c, lv) for c in CONDITIONS for lv in LEVELS]
    if rng.random() < 0.4:
        c = CONDITIONS[int(rng.integers(len(CONDITIONS)))]
        return tuple((c, lv) for lv in LEVELS)
    picks = rng.choice(len(keys), size=int(rng.integers(1, 5)), replace=False)
    return tuple(keys[i] for i in sorted(picks))
