"""From per-slice peaks to the 25 condition-level findings.

Per view, the model runs on slices of the chosen series; for each keypoint channel the slice whose
heatmap peak scores highest wins, and its peak (mapped back to the source pixel grid and to
patient mm) and severity probabilities become the finding. Two facts come from geometry rather
than pixels:

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


def best_slice(peaks: Sequence[SlicePeaks], k: int) -> Optional[SlicePeaks]:
    """The slice whose channel ``k`` peak scores highest (the first on a tie); None if no slices."""
    best = None
    for p in peaks:
        if best is None or p.score[k] > best.score[k]:
            best = p
    return best


Reading = Tuple[Keypoint, Tuple[float, float, float]]


def sagittal_t2_findings(series, peaks: Sequence[SlicePeaks]) -> Dict[str, Reading]:
    """Spinal canal stenosis per level: the best slice per level channel."""
    out: Dict[str, Reading] = {}
    for k, level in enumerate(LEVELS):
        p = best_slice(peaks, k)
        if p is not None:
            out[level] = (keypoint_of(series, p, k), tuple(float(v) for v in p.probs[k]))
    return out


def slice_centre_x_mm(instance) -> float:
    """Patient x (LPS, + = left) of the centre of a slice."""
    rows, cols = instance.rows, instance.columns
    mm = np.asarray(instance.geometry.pixel_to_patient((cols - 1) / 2.0, (rows - 1) / 2.0), dtype=np.float64).reshape(-1)
    return float(mm[0])


def sagittal_t1_findings(series, peaks: Sequence[SlicePeaks], midline_x_mm: Optional[float]) -> Dict[Tuple[str, str], Reading]:
    """Neural foraminal narrowing per (side, level): the best slice on each side of the midline."""
    if not peaks:
        return {}
    xs = [slice_centre_x_mm(p.instance) for p in peaks]
    midline = float(np.mean(xs)) if midline_x_mm is None else midline_x_mm
    sides = {"left": [p for p, x in zip(peaks, xs) if x > midline], "right": [p for p, x in zip(peaks, xs) if x < midline]}
    out: Dict[Tuple[str, str], Reading] = {}
    for side, side_peaks in sides.items():
        for k, level in enumerate(LEVELS):
            p = best_slice(side_peaks, k)
            if p is not None:
                out[(side, level)] = (keypoint_of(series, p, k), tuple(float(v) for v in p.probs[k]))
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
