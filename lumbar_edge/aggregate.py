"""From per-slice peaks to the 25 condition-level findings.

Per view, the model runs on slices of the chosen series and each keypoint channel gives one peak
per slice. On the sagittal views the five levels are then chosen together: one slice's peak per
level, the levels in anatomical order from L1/L2 down to L5/S1 at least :data:`LEVEL_STEP_MM`
apart, maximising the sum of the peaks' log scores (:func:`assign_ordered`). Taking each
level's best-scoring peak on its own let a model that confuses neighbouring levels put two or
three of them on one disc (on the demo's 8 held-out studies every study had such a pair); where
no ordered choice exists, each level keeps its own best peak and the report says which levels
share a point (:func:`shared_points`). The chosen peak (mapped back to the source pixel grid
and to patient mm) and its severity probabilities become the finding. Two facts come from
geometry rather than pixels:

- **Foramen side** (sagittal T1): left and right foramina are mirror images on parasagittal
  slices, so a slice's side is where it lies in patient space against the midline (DICOM LPS:
  +x is the patient's left). The midline is the canal found on the sagittal T2 series, or the
  centre of the T1 stack when there is none.
- **Axial level**: an axial slice shows the level whose disc (the canal point found on the sagittal
  T2 series, in patient mm) is nearest its plane.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .labels import LEVELS
from .preprocess import Letterbox
from .results import Keypoint


@dataclass
class SlicePeaks:
    """The decoded peaks of one slice for one view's channels."""

    slice_index: int  # index into the series' sorted instances
    instance: object  # lumbar_edge.dicom.Instance
    letterbox: Letterbox
    xy: np.ndarray  # [K, 2] model-input pixels
    score: np.ndarray  # [K]
    probs: np.ndarray  # [K, 3]


def keypoint_of(series, peaks: SlicePeaks, k: int) -> Keypoint:
    """The :class:`Keypoint` of channel ``k`` of ``peaks``: source pixels and patient mm."""
    x, y = peaks.letterbox.to_source(peaks.xy[k, 0], peaks.xy[k, 1])
    mm = np.asarray(peaks.instance.geometry.pixel_to_patient(float(x), float(y)), dtype=np.float64).reshape(-1)[:3]
    return Keypoint(series_uid=series.series_uid, series_id=str(series.series_id), sop_uid=peaks.instance.sop_uid,
                    instance_number=int(peaks.instance.instance_number), x=float(x), y=float(y),
                    patient_mm=(float(mm[0]), float(mm[1]), float(mm[2])), score=float(peaks.score[k]))


Reading = Tuple[Keypoint, Tuple[float, float, float]]

#: Least distance (patient mm, along the head-foot axis) between consecutive levels' keypoints.
#: Adult lumbar discs lie 30-45 mm apart; two thirds of the smallest gap leaves room for
#: curvature and small patients while keeping two levels off one disc.
LEVEL_STEP_MM = 20.0


def assign_ordered(height_mm: np.ndarray, log_score: np.ndarray, min_step_mm: float = LEVEL_STEP_MM
                   ) -> Optional[List[int]]:
    """One candidate per level so that each level lies at least ``min_step_mm`` below the one
    before it, with the largest total log score; None when no such choice exists.

    ``height_mm`` and ``log_score`` are ``[levels, candidates]``: candidate ``i`` of level ``k``
    sits at height ``height_mm[k, i]`` (patient z: + is towards the head) and scores
    ``log_score[k, i]``. Dynamic programming over the levels, O(levels x candidates^2).
    Raises ``ValueError`` for arrays of different or non-2-D shapes.
    """
    height = np.asarray(height_mm, dtype=np.float64)
    score = np.asarray(log_score, dtype=np.float64)
    if height.ndim != 2 or height.shape != score.shape:
        raise ValueError(f"height and score must be [levels, candidates] of one shape, got {height.shape}, {score.shape}")
    levels, n = height.shape
    if levels == 0 or n == 0:
        return None
    best = score[0].copy()
    back = np.full((levels, n), -1, dtype=np.int64)
    for k in range(1, levels):
        # allowed[j, i]: candidate i of level k lies far enough below candidate j of level k-1.
        allowed = (height[k - 1][:, None] - height[k][None, :]) >= min_step_mm
        total = np.where(allowed, best[:, None], -np.inf)
        back[k] = np.argmax(total, axis=0)
        best = total[back[k], np.arange(n)] + score[k]
    if not np.isfinite(best).any():
        return None
    chosen = [int(np.argmax(best))]
    for k in range(levels - 1, 0, -1):
        chosen.append(int(back[k, chosen[-1]]))
    return chosen[::-1]


def ordered_levels(series, peaks: Sequence[SlicePeaks], min_step_mm: float = LEVEL_STEP_MM) -> Dict[str, Reading]:
    """The five levels' readings from ``peaks`` (channel k = ``LEVELS[k]``) chosen together by
    :func:`assign_ordered`; each level's own best peak when no ordered choice exists."""
    if not peaks:
        return {}
    keypoints = [[keypoint_of(series, p, k) for p in peaks] for k in range(len(LEVELS))]
    height = np.array([[kp.patient_mm[2] for kp in row] for row in keypoints])
    log_score = np.log(np.clip(np.array([[float(p.score[k]) for p in peaks] for k in range(len(LEVELS))]), 1e-9, None))
    chosen = assign_ordered(height, log_score, min_step_mm)
    if chosen is None:
        chosen = [int(np.argmax(log_score[k])) for k in range(len(LEVELS))]
    return {level: (keypoints[k][i], tuple(float(v) for v in peaks[i].probs[k]))
            for k, (level, i) in enumerate(zip(LEVELS, chosen))}


def sagittal_t2_findings(series, peaks: Sequence[SlicePeaks]) -> Dict[str, Reading]:
    """Spinal canal stenosis per level: the five level channels chosen together in anatomical
    order (:func:`ordered_levels`)."""
    return ordered_levels(series, peaks)


def slice_centre_x_mm(instance) -> float:
    """Patient x (LPS, + = left) of the centre of a slice."""
    rows, cols = instance.rows, instance.columns
    mm = np.asarray(instance.geometry.pixel_to_patient((cols - 1) / 2.0, (rows - 1) / 2.0), dtype=np.float64).reshape(-1)
    return float(mm[0])


def sagittal_t1_findings(series, peaks: Sequence[SlicePeaks], midline_x_mm: Optional[float]) -> Dict[Tuple[str, str], Reading]:
    """Neural foraminal narrowing per (side, level): on each side of the midline, the five levels
    chosen together in anatomical order (:func:`ordered_levels`)."""
    if not peaks:
        return {}
    xs = [slice_centre_x_mm(p.instance) for p in peaks]
    midline = float(np.mean(xs)) if midline_x_mm is None else midline_x_mm
    sides = {"left": [p for p, x in zip(peaks, xs) if x > midline], "right": [p for p, x in zip(peaks, xs) if x < midline]}
    out: Dict[Tuple[str, str], Reading] = {}
    for side, side_peaks in sides.items():
        for level, reading in ordered_levels(series, side_peaks).items():
            out[(side, level)] = reading
    return out


def axial_slices_for_levels(series, disc_mm: Dict[str, Tuple[float, float, float]],
                            max_distance_mm: Optional[float] = None) -> Dict[str, int]:
    """For each level with a disc point, the axial slice whose plane is nearest it.

    A level is left out when even the nearest slice is farther than ``max_distance_mm``
    (default: two slice spacings plus 2 mm), i.e. the axial stack does not cover that disc.
    """
    if max_distance_mm is None:
        max_distance_mm = 2.0 * float(series.spacing or 4.0) + 2.0
    out: Dict[str, int] = {}
    for level, point in disc_mm.items():
        best, best_d = None, None
        for i, inst in enumerate(series.instances):
            _x, _y, d = inst.geometry.patient_to_pixel(np.asarray(point, dtype=np.float64))
            d = abs(float(np.asarray(d).reshape(-1)[0]))
            if best_d is None or d < best_d:
                best, best_d = i, d
        if best is not None and best_d <= max_distance_mm:
            out[level] = best
    return out


def axial_findings(series, peaks_by_level: Dict[str, SlicePeaks]) -> Dict[Tuple[str, str], Reading]:
    """Subarticular stenosis per (side, level): channel 0 is the left zone, 1 the right."""
    out: Dict[Tuple[str, str], Reading] = {}
    for level, p in peaks_by_level.items():
        for k, side in enumerate(("left", "right")):
            out[(side, level)] = (keypoint_of(series, p, k), tuple(float(v) for v in p.probs[k]))
    return out


#: Closer than this (patient mm) two levels' keypoints cannot both be right: lumbar discs lie
#: some 30-45 mm apart along the spine in adults.
SHARED_POINT_MM = 10.0


def shared_points(keypoints: Dict[str, Keypoint], min_mm: float = SHARED_POINT_MM) -> List[List[str]]:
    """Groups (two or more, in ``keypoints``' order) of levels whose keypoints lie within
    ``min_mm`` of another of the group in patient space: places where the model put several
    levels on one structure, so at most one of them is the level it names."""
    names = list(keypoints)
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    points = [np.asarray(keypoints[n].patient_mm, dtype=np.float64) for n in names]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if np.linalg.norm(points[i] - points[j]) < min_mm:
                parent[root(j)] = root(i)
    groups: Dict[int, List[str]] = {}
    for i, name in enumerate(names):
        groups.setdefault(root(i), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def midline_from_canal(readings: Dict[str, Reading]) -> Optional[float]:
    """Mean patient x of the canal keypoints, the midline for sorting foramina into sides."""
    xs: List[float] = [kp.patient_mm[0] for kp, _ in readings.values()]
    return float(np.mean(xs)) if xs else None
