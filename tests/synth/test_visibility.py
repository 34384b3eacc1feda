"""The grades are visible locally in the rendered (noisy) images, and not readable from shortcuts.

Measurements are made on rendered slices the way a reader would: the thecal sac's AP width on
the labelled sagittal T2/STIR slice (CSF above a threshold), the bright fat area around the
foramen centre on the labelled sagittal T1 slice, and the bright (fat + CSF) area of the lateral
recess on the labelled axial slice. Shortcut checks: one pixel at the label point and the
global mean intensity must not tell the grades apart.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import pytest

from lumbar_edge.labels import CONDITIONS, LEVELS
from lumbar_edge.synth import SynthOptions, plan_study
from lumbar_edge.synth.plan import study_rng
from lumbar_edge.synth.render import render_slice
from synth_helpers import auc, bilinear

SEED = 5
N_STUDIES = 36
OPTIONS = SynthOptions(sagittal_matrix=(192,), axial_matrix=(192,))


def _direction(plan, key, geometry, along: str):
    """Pixel step (dx, dy) per mm of the spine's posterior (``d``) or cranial (``s``) axis at a
    label point, on ``geometry``'s slices."""
    an = plan.anatomy
    x, s, d = an.keypoints[key]
    p0 = an.to_patient(x, s, d)
    p1 = an.to_patient(x, s + (along == "s"), d + (along == "d"))
    v = p1 - p0
    return (float(v @ np.asarray(geometry.row_dir)) / geometry.spacing[1],
            float(v @ np.asarray(geometry.col_dir)) / geometry.spacing[0])


def _run_length(profile: np.ndarray, above: float, step: float) -> float:
    # Length (mm) of the run of samples above the threshold that contains the middle sample.
    mask = profile > above
    c = len(profile) // 2
    if not mask[c]:
        return 0.0
    lo = c
    while lo > 0 and mask[lo - 1]:
        lo -= 1
    hi = c
    while hi < len(mask) - 1 and mask[hi + 1]:
        hi += 1
    return (hi - lo + 1) * step


def _disk_area(img: np.ndarray, x: float, y: float, radius_px: float, threshold: float, pixel_mm: float) -> float:
    rows, cols = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    inside = (cols - x) ** 2 + (rows - y) ** 2 <= radius_px ** 2
    return float(np.count_nonzero(inside & (img > threshold))) * pixel_mm ** 2


@pytest.fixture(scope="module")
def measurements() -> Dict[str, Dict[str, List]]:
    """Per condition family: grades, the local measurement, the raw pixel at the label point and
    the study's global mean, over the labels of N_STUDIES studies."""
    out = {k: {"grade": [], "size": [], "pixel": [], "study": []} for k in ("canal", "foramen", "recess")}
    study_means, study_scores = [], []
    for i in range(N_STUDIES):
        plan = plan_study(SEED, i, OPTIONS)
        rng = study_rng(SEED, i, 99)
        cache = {}

        def slice_of(kind, number):
            if (kind, number) not in cache:
                s = plan.series_of(kind)
                cache[(kind, number)] = render_slice(plan.anatomy, s.geometry, number - 1, s.acquisition,
                                                     rng).astype(np.float64)
            return cache[(kind, number)]

        for lv in LEVELS:
            # Canal: AP run of CSF through the label point, threshold relative to the CSF level
            # along the canal (mostly normal sac).
            key = ("spinal_canal_stenosis", lv)
            lab = plan.label(*key)
            g = plan.series_of("sagittal_t2").geometry
            img = slice_of("sagittal_t2", lab.instance_number)
            dx, dy = _direction(plan, key, g, "d")
            ts = np.arange(-12.0, 12.01, 0.25)
            profile = bilinear(img, lab.x + ts * dx, lab.y + ts * dy)
            ax, ay = _direction(plan, key, g, "s")
            along = np.arange(-60.0, 60.0, 0.5)
            ref = np.percentile(bilinear(img, lab.x + along * ax, lab.y + along * ay), 75)
            out["canal"]["grade"].append(lab.grade)
            out["canal"]["size"].append(_run_length(profile, 0.8 * ref, 0.25))
            out["canal"]["pixel"].append(img[int(round(lab.y)), int(round(lab.x))])
            out["canal"]["study"].append(i)
            for side in ("left", "right"):
                # Foramen: bright (fat) area within 10 mm of the foramen centre on T1; fat is
                # the brightest tissue on T1, so the reference is the slice's 99th percentile.
                lab = plan.label(f"{side}_neural_foraminal_narrowing", lv)
                g = plan.series_of("sagittal_t1").geometry
                img = slice_of("sagittal_t1", lab.instance_number)
                ref = np.percentile(img, 99)
                out["foramen"]["grade"].append(lab.grade)
                out["foramen"]["size"].append(_disk_area(img, lab.x, lab.y, 10.0 / g.spacing[0], 0.75 * ref, g.spacing[0]))
                out["foramen"]["pixel"].append(img[int(round(lab.y)), int(round(lab.x))])
                out["foramen"]["study"].append(i)
                # Lateral recess: bright (fat or CSF) area within 4 mm of the label point on T2,
                # threshold half the CSF level (95th percentile near the canal).
                lab = plan.label(f"{side}_subarticular_stenosis", lv)
                g = plan.series_of("axial_t2").geometry
                img = slice_of("axial_t2", lab.instance_number)
                r = int(round(20.0 / g.spacing[0]))
                y0, x0 = int(round(lab.y)), int(round(lab.x))
                ref = np.percentile(img[max(0, y0 - r):y0 + r, max(0, x0 - r):x0 + r], 95)
                out["recess"]["grade"].append(lab.grade)
                out["recess"]["size"].append(_disk_area(img, lab.x, lab.y, 4.0 / g.spacing[0], 0.5 * ref, g.spacing[0]))
                out["recess"]["pixel"].append(img[y0, x0])
                out["recess"]["study"].append(i)
        study_means.append(float(np.mean([v.mean() for v in cache.values()])))
        study_scores.append(sum(plan.grades[(c, lv)] for c in CONDITIONS for lv in LEVELS))
    out["global"] = {"mean": study_means, "score": study_scores}
    return out


def _by_grade(m, what):
    grade = np.asarray(m["grade"])
    values = np.asarray(m[what], dtype=np.float64)
    return [values[grade == g] for g in range(3)]


@pytest.mark.parametrize("family", ["canal", "foramen", "recess"])
def test_narrowing_is_visible_and_graded(measurements, family):
    groups = _by_grade(measurements[family], "size")
    assert all(len(g) >= 5 for g in groups), [len(g) for g in groups]
    medians = [float(np.median(g)) for g in groups]
    # Monotone: Normal/Mild > Moderate > Severe, by clear margins.
    assert medians[0] > 1.25 * medians[1] > 1.25 * 1.2 * medians[2], medians
    # And separable: a reader thresholding the measurement tells Normal from Severe.
    separation = auc(groups[2], groups[0])
    print(f"{family}: medians {medians}, AUC normal vs severe {separation:.2f}")
    assert separation > 0.9


def test_canal_width_matches_the_grades(measurements):
    normal, moderate, severe = (float(np.median(g)) for g in _by_grade(measurements["canal"], "size"))
    # ~100% / ~60% / ~30% of the normal sac (10-13 mm).
    assert 8.0 < normal < 15.0
    assert 0.45 < moderate / normal < 0.75
    assert 0.15 < severe / normal < 0.45


@pytest.mark.parametrize("family", ["canal", "foramen", "recess"])
def test_one_pixel_at_the_label_does_not_tell_the_grade(measurements, family):
    normal, _, severe = _by_grade(measurements[family], "pixel")
    # The label point stays inside the (narrowed) space: its value varies more between studies
    # than between grades.
    spread = max(np.subtract(*np.percentile(normal, [75, 25])), np.subtract(*np.percentile(severe, [75, 25])))
    gap = abs(np.median(severe) - np.median(normal))
    separation = auc(normal, severe)
    print(f"{family}: median gap {gap:.0f}, within-class IQR {spread:.0f}, AUC {separation:.2f}")
    assert gap < spread
    assert 0.2 < separation < 0.8


def test_global_intensity_does_not_tell_the_grades(measurements):
    g = measurements["global"]
    r = np.corrcoef(g["mean"], g["score"])[0, 1]
    assert abs(r) < 0.35, r
    # Per-study intensity varies a lot (gain, bias, contrast): more than any grade effect.
    assert np.std(g["mean"]) / np.mean(g["mean"]) > 0.1
