"""From per-slice peaks to the 25 condition-level findings.

Per view, the model runs on slices of the chosen series and each keypoint channel gives one peak
per slice. A peak's score is read as a through-plane profile (:func:`through_plane_scores`): the
network is trained to score a structure highest on the slice through it and less on the slices
beside it, so a slice whose neighbours see the same structure at the same place is supported by
them, and a lone peak on a lateral slice is not. On the sagittal views the five levels are then
chosen together: one slice's peak per level, the levels in anatomical order from L1/L2 down to
L5/S1 at least :data:`LEVEL_STEP_MM` apart, maximising the sum of the peaks' log scores plus the
log priors below (:func:`assign_ordered`). Taking each level's best-scoring peak on its own let a
model that confuses neighbouring levels put two or three of them on one disc; where no ordered
choice exists, each level keeps its own best peak and the report says which levels share a point
(:func:`shared_points`). The chosen peak (mapped back to the source pixel grid and to patient mm)
and its severity probabilities become the finding. What patient-space geometry adds (the
sagittal T1 and T2 series and the axial series of a study share one patient coordinate system):

- **Midline** (:func:`foramina_midline`): halfway between the two foramina found on the sagittal
  T1 series. The canal is looked for near it (:func:`midline_prior`), so parasagittal T2 slices
  through the foramina, which look like the canal to a network, do not take the canal points.
- **Foramen side** (sagittal T1): left and right foramina are mirror images on parasagittal
  slices, so a slice's side is where it lies against the midline (DICOM LPS: +x is the patient's
  left); the canal's mean x, or the centre of the T1 stack, stands in without a foramina midline.
- **Foramen level** (:func:`level_prior`): each level's foramina lie beside that level's canal
  segment, so the canal levels of the T2 series hold the T1 levels where the network would name
  the foramina one level off.
- **Axial level**: per disc level, the axial slice whose plane is nearest that disc (the canal
  point found on the sagittal T2 series, in patient mm), taken from whichever axial series or
  stack has it: one parallel stack, several stacks angled along their discs, or several series
  covering different discs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .dicom.geometry import slice_spacing
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
    #: How the stored slice was turned to the trained orientation before the model saw it
    #: (a :class:`~lumbar_edge.dicom.orient.Reorientation`); None: as stored.
    orient: object = None


def keypoint_of(series, peaks: SlicePeaks, k: int) -> Keypoint:
    """The :class:`Keypoint` of channel ``k`` of ``peaks``: pixels of the stored slice (as the
    DICOM file holds it, whatever orientation the model saw) and patient mm."""
    x, y = peaks.letterbox.to_source(peaks.xy[k, 0], peaks.xy[k, 1])
    if peaks.orient is not None:
        x, y = peaks.orient.to_stored(x, y)
    mm = np.asarray(peaks.instance.geometry.pixel_to_patient(float(x), float(y)), dtype=np.float64).reshape(-1)[:3]
    return Keypoint(series_uid=series.series_uid, series_id=str(series.series_id), sop_uid=peaks.instance.sop_uid,
                    instance_number=int(peaks.instance.instance_number), x=float(x), y=float(y),
                    patient_mm=(float(mm[0]), float(mm[1]), float(mm[2])), score=float(peaks.score[k]),
                    frame=getattr(peaks.instance, "frame", None))


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


@dataclass(frozen=True)
class AggregationConfig:
    """How the study-level choice of slice and peak is made.

    ``level_step_mm``: least head-foot distance between consecutive levels (:func:`assign_ordered`).
    ``profile_sigma_mm``: the through-plane reach of :func:`through_plane_scores` (0: each
    slice's own score alone); ``profile_radius_mm``: another slice supports a peak only where its
    own peak of that channel lies within this in-plane distance.
    ``midline_sigma_mm``: how far (left-right, Gaussian sigma) a canal keypoint may lie from the
    midline found between the two foramina of the sagittal T1 series (:func:`foramina_midline`);
    ``foramen_gap_mm``: the range of left-right distances between those two foramina.
    ``level_sigma_mm``: how far along the spine (Gaussian sigma) a foramen may lie from the canal
    keypoint of its level (:func:`level_prior`). 0 switches a prior off.
    """

    level_step_mm: float = LEVEL_STEP_MM
    profile_sigma_mm: float = 2.5
    profile_radius_mm: float = 6.0
    midline_sigma_mm: float = 8.0
    level_sigma_mm: float = 10.0
    foramen_gap_mm: Tuple[float, float] = (15.0, 80.0)


def through_plane_scores(points_mm: np.ndarray, scores: np.ndarray, normal, sigma_mm: float,
                         radius_mm: float) -> np.ndarray:
    """Each peak's score as a through-plane profile: the Gaussian-weighted mean (``sigma_mm``
    along the slice normal) of the scores of the same channel on the slices around it, a slice
    counting only where its peak lies within ``radius_mm`` of this one in the slice plane (else
    it adds 0). The network scores a structure highest on the slice through its centre and less
    on the slices beside it, so the profile peaks there even when several neighbouring slices
    score alike, and a lone peak (a lateral slice lighting up on another structure) is
    discounted. Slices beyond the stack count as 0.

    ``points_mm`` [K, n, 3] patient mm of channel k's peak on each of n slices; ``scores`` [K, n];
    ``normal`` the slice normal. Returns [K, n] in the range of the scores.
    """
    pts = np.asarray(points_mm, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if sigma_mm <= 0 or s.size == 0:
        return s.copy()
    n_vec = np.asarray(normal, dtype=np.float64).reshape(3)
    n_vec = n_vec / np.linalg.norm(n_vec)
    delta = pts[:, :, None, :] - pts[:, None, :, :]                   # [K, n, n, 3]
    along = delta @ n_vec                                              # [K, n, n]
    in_plane = np.linalg.norm(delta - along[..., None] * n_vec, axis=-1)
    # Slice positions along the normal (the peaks of one slice share its plane).
    position = pts @ n_vec                                             # [K, n]
    gap = position[0][:, None] - position[0][None, :]                  # [n, n]
    weight = np.exp(-0.5 * (gap / sigma_mm) ** 2)
    # The kernel's full mass, as if the stack went on with the same spacing: slices missing at
    # the ends of the stack then count as 0 rather than being ignored.
    # (Steps between slices in one plane, which the scan leaves out, do not count: a median step
    # of ~0 would make the kernel's reach unbounded.)
    spacing = slice_spacing(position[0]) or 0.0
    if spacing > 0:
        reach = int(np.ceil(3 * sigma_mm / spacing))
        mass = float(np.exp(-0.5 * ((np.arange(-reach, reach + 1) * spacing) / sigma_mm) ** 2).sum())
    else:
        mass = 1.0
    agree = in_plane <= radius_mm
    return (weight[None] * agree * s[:, None, :]).sum(-1) / mass


def _series_normal(series, peaks: Sequence[SlicePeaks]) -> np.ndarray:
    normal = getattr(series, "normal", None)
    if normal is None:
        normal = peaks[0].instance.geometry.normal
    return np.asarray(normal, dtype=np.float64)


#: A log prior over candidates: ``prior(points_mm [K, n, 3]) -> [K, n]`` added to the log scores.
Prior = Callable[[np.ndarray], np.ndarray]


def midline_prior(midline_x_mm: Optional[float], sigma_mm: float) -> Optional[Prior]:
    """Gaussian log prior on a keypoint's left-right distance (patient x) from the midline."""
    if midline_x_mm is None or sigma_mm <= 0:
        return None
    return lambda points: -0.5 * ((points[..., 0] - midline_x_mm) / sigma_mm) ** 2


def level_prior(anchors: Dict[str, Sequence[float]], sigma_mm: float) -> Optional[Prior]:
    """Gaussian log prior tying level k's candidates to the point ``anchors[LEVELS[k]]`` (patient
    mm) found on another view: their distance along the spine there, i.e. along the line through
    the anchors of the levels above and below. Sagittal T1 and T2 series of one study share
    patient space, and a level's foramina lie beside its canal segment while the next level is
    30-45 mm away along the spine, so a view whose network names the structures one level off is
    held to the levels the other view found. Levels without an anchor get no prior."""
    if sigma_mm <= 0 or not anchors:
        return None
    have = [lv for lv in LEVELS if lv in anchors]
    pts = {lv: np.asarray(anchors[lv], dtype=np.float64).reshape(3) for lv in have}

    def axis(level: str) -> np.ndarray:
        i = have.index(level)
        d = pts[have[max(i - 1, 0)]] - pts[have[min(i + 1, len(have) - 1)]]
        n = float(np.linalg.norm(d))
        return d / n if n > 0 else np.array([0.0, 0.0, 1.0])

    axes = {lv: axis(lv) for lv in have}

    def prior(points: np.ndarray) -> np.ndarray:
        out = np.zeros(points.shape[:-1])
        for k, lv in enumerate(LEVELS):
            if lv in pts and k < points.shape[0]:
                out[k] = -0.5 * (((points[k] - pts[lv]) @ axes[lv]) / sigma_mm) ** 2
        return out

    return prior


def _sum(*priors: Optional[Prior]) -> Optional[Prior]:
    used = [p for p in priors if p is not None]
    if not used:
        return None
    return lambda points: sum(p(points) for p in used)


def _points(readings: Dict[str, Reading]) -> Dict[str, Tuple[float, float, float]]:
    return {lv: r[0].patient_mm for lv, r in readings.items()}


def ordered_levels(series, peaks: Sequence[SlicePeaks], config: AggregationConfig = AggregationConfig(),
                   prior: Optional[Prior] = None) -> Dict[str, Reading]:
    """The five levels' readings from ``peaks`` (channel k = ``LEVELS[k]``): through-plane
    consistent scores (:func:`through_plane_scores`), plus ``prior`` where given, then the levels
    chosen together by :func:`assign_ordered`; each level's own best when no ordered choice exists."""
    return _choose_levels(series, peaks, config, prior)[0]


def _choose_levels(series, peaks: Sequence[SlicePeaks], config: AggregationConfig,
                   prior: Optional[Prior]) -> Tuple[Dict[str, Reading], float]:
    """:func:`ordered_levels` and the chosen peaks' summed through-plane log scores (no prior)."""
    if not peaks:
        return {}, 0.0
    keypoints = [[keypoint_of(series, p, k) for p in peaks] for k in range(len(LEVELS))]
    points = np.array([[kp.patient_mm for kp in row] for row in keypoints], dtype=np.float64)
    height = points[..., 2]
    raw = np.array([[float(p.score[k]) for p in peaks] for k in range(len(LEVELS))])
    consistent = through_plane_scores(points, raw, _series_normal(series, peaks), config.profile_sigma_mm,
                                      config.profile_radius_mm)
    evidence = np.log(np.clip(consistent, 1e-9, None))
    log_score = evidence if prior is None else evidence + prior(points)
    chosen = assign_ordered(height, log_score, config.level_step_mm)
    if chosen is None:
        chosen = [int(np.argmax(log_score[k])) for k in range(len(LEVELS))]
    readings = {level: (keypoints[k][i], tuple(float(v) for v in peaks[i].probs[k]))
                for k, (level, i) in enumerate(zip(LEVELS, chosen))}
    return readings, float(sum(evidence[k, i] for k, i in enumerate(chosen)))


def sagittal_t2_findings(series, peaks: Sequence[SlicePeaks], config: AggregationConfig = AggregationConfig(),
                         midline_x_mm: Optional[float] = None) -> Dict[str, Reading]:
    """Spinal canal stenosis per level: the five level channels chosen together in anatomical
    order (:func:`ordered_levels`), near the midline where one is known (:func:`midline_prior`)."""
    return ordered_levels(series, peaks, config, midline_prior(midline_x_mm, config.midline_sigma_mm))


def foramina_midline(series, peaks: Sequence[SlicePeaks], config: AggregationConfig = AggregationConfig()
                     ) -> Optional[float]:
    """The patient x of the midline, halfway between the two foramina of a sagittal T1 series.

    Each slice's foramen score is the mean of its level channels' through-plane consistent
    scores; the two foramina are the pair of slices with the highest summed score whose
    left-right distance is within ``config.foramen_gap_mm``. None without such a pair."""
    if len(peaks) < 2:
        return None
    keypoints = [[keypoint_of(series, p, k) for p in peaks] for k in range(len(LEVELS))]
    points = np.array([[kp.patient_mm for kp in row] for row in keypoints], dtype=np.float64)
    raw = np.array([[float(p.score[k]) for p in peaks] for k in range(len(LEVELS))])
    score = through_plane_scores(points, raw, _series_normal(series, peaks), config.profile_sigma_mm,
                                 config.profile_radius_mm).mean(axis=0)
    xs = np.array([slice_centre_x_mm(p.instance) for p in peaks])
    gap = np.abs(xs[:, None] - xs[None, :])
    lo, hi = config.foramen_gap_mm
    total = np.where((gap >= lo) & (gap <= hi), score[:, None] + score[None, :], -np.inf)
    if not np.isfinite(total).any():
        return None
    i, j = np.unravel_index(int(np.argmax(total)), total.shape)
    return float(0.5 * (xs[i] + xs[j]))


def slice_centre_x_mm(instance) -> float:
    """Patient x (LPS, + = left) of the centre of a slice."""
    rows, cols = instance.rows, instance.columns
    mm = np.asarray(instance.geometry.pixel_to_patient((cols - 1) / 2.0, (rows - 1) / 2.0), dtype=np.float64).reshape(-1)
    return float(mm[0])


def split_sides(peaks: Sequence[SlicePeaks], midline_x_mm: Optional[float]) -> Dict[str, List[SlicePeaks]]:
    """The sagittal T1 slices left (+x, LPS) and right of the midline (the stack's centre when
    none is given)."""
    xs = [slice_centre_x_mm(p.instance) for p in peaks]
    midline = float(np.mean(xs)) if midline_x_mm is None else midline_x_mm
    return {"left": [p for p, x in zip(peaks, xs) if x > midline], "right": [p for p, x in zip(peaks, xs) if x < midline]}


def sagittal_t1_findings(series, peaks: Sequence[SlicePeaks], midline_x_mm: Optional[float],
                         config: AggregationConfig = AggregationConfig(),
                         canal: Optional[Dict[str, Reading]] = None) -> Dict[Tuple[str, str], Reading]:
    """Neural foraminal narrowing per (side, level): on each side of the midline
    (:func:`split_sides`), the five levels chosen together in anatomical order
    (:func:`ordered_levels`), each held near its canal keypoint where ``canal`` is given
    (:func:`level_prior`)."""
    prior = level_prior(_points(canal or {}), config.level_sigma_mm)
    return {(side, level): reading for side, side_peaks in split_sides(peaks, midline_x_mm).items()
            for level, reading in ordered_levels(series, side_peaks, config, prior).items()}


def sagittal_levels(t2_series=None, t2_peaks: Sequence[SlicePeaks] = (), t1_series=None,
                    t1_peaks: Sequence[SlicePeaks] = (), config: AggregationConfig = AggregationConfig()
                    ) -> Tuple[Dict[str, Reading], Dict[Tuple[str, str], Reading], Optional[float]]:
    """The canal levels of the sagittal T2 series and the foramina of the sagittal T1 series,
    chosen so that they agree: ``(canal, foramina, midline x)``.

    The canal is looked for near the midline between the foramina (:func:`foramina_midline`).
    Then two readings of the study are compared: the canal's levels leading (each side's
    foramina held to them, :func:`level_prior`), or the foramina's (each side chosen on its own,
    the canal held to the two sides' mean). The one with the larger joint log score wins: the
    chosen peaks' through-plane log scores of all three (canal, left, right), the midline prior,
    and the agreement of each side with the canal. So whichever view the network read more
    surely sets the levels, and one view's level error is not copied into the other. Either view
    may be missing (empty peaks): the other is read on its own.
    """
    t2_peaks, t1_peaks = list(t2_peaks), list(t1_peaks)
    midline = foramina_midline(t1_series, t1_peaks, config) if t1_peaks else None
    on_midline = midline_prior(midline, config.midline_sigma_mm)
    canal, canal_ev = _choose_levels(t2_series, t2_peaks, config, on_midline) if t2_peaks else ({}, 0.0)
    if not t1_peaks:
        return canal, {}, midline
    sides = split_sides(t1_peaks, midline if midline is not None else midline_from_canal(canal))
    if not canal:
        free = {side: ordered_levels(t1_series, p, config) for side, p in sides.items()}
        return canal, {(side, lv): r for side, rs in free.items() for lv, r in rs.items()}, midline

    def joint(canal_readings, canal_evidence, side_choice) -> float:
        agree = level_prior(_points(canal_readings), config.level_sigma_mm)
        total = canal_evidence
        if on_midline is not None:
            total += float(on_midline(np.array([canal_readings[lv][0].patient_mm for lv in LEVELS])).sum())
        for readings, evidence in side_choice.values():
            total += evidence
            if agree is not None and readings:
                pts = np.array([readings[lv][0].patient_mm for lv in LEVELS])[:, None, :]
                total += float(agree(pts).sum())
        return total

    held = level_prior(_points(canal), config.level_sigma_mm)
    canal_leads = {side: _choose_levels(t1_series, p, config, held) for side, p in sides.items()}
    free = {side: _choose_levels(t1_series, p, config, None) for side, p in sides.items()}
    anchors = {lv: np.mean([rs[lv][0].patient_mm for rs, _ in free.values() if lv in rs], axis=0)
               for lv in LEVELS if any(lv in rs for rs, _ in free.values())}
    canal_b, canal_b_ev = _choose_levels(t2_series, t2_peaks, config,
                                         _sum(on_midline, level_prior(anchors, config.level_sigma_mm)))
    if joint(canal_b, canal_b_ev, free) > joint(canal, canal_ev, canal_leads):
        canal, chosen = canal_b, free
    else:
        chosen = canal_leads
    return canal, {(side, lv): r for side, (rs, _) in chosen.items() for lv, r in rs.items()}, midline


def axial_slices_for_levels(candidates, disc_mm: Dict[str, Tuple[float, float, float]],
                            max_distance_mm: Optional[float] = None) -> Dict[str, Tuple[object, int]]:
    """For each level with a disc point, ``(series, index)`` of the axial slice nearest it.

    ``candidates`` is one axial series or a list of them; every slice of every stack competes,
    so angled per-disc stacks and series covering different discs are all used. A level
    is left out when even the nearest slice is farther than ``max_distance_mm`` (default: two of
    that series' slice spacings plus 2 mm), i.e. no axial slice covers that disc. On equal
    distances the earlier candidate wins.
    """
    if not isinstance(candidates, (list, tuple)):
        candidates = [candidates]
    out: Dict[str, Tuple[object, int]] = {}
    for level, point in disc_mm.items():
        p = np.asarray(point, dtype=np.float64)
        best, best_d = None, None
        for series in candidates:
            limit = max_distance_mm if max_distance_mm is not None else 2.0 * float(series.spacing or 4.0) + 2.0
            for i, inst in enumerate(series.instances):
                geometry = inst.geometry
                if geometry is None:
                    continue
                d = abs(float(np.asarray(geometry.patient_to_pixel(p)[2]).reshape(-1)[0]))
                if d > limit:
                    continue
                if best_d is None or d < best_d:
                    best, best_d = (series, i), d
        if best is not None:
            out[level] = best
    return out


def axial_findings(series, peaks_by_level: Dict[str, SlicePeaks]) -> Dict[Tuple[str, str], Reading]:
    """Subarticular stenosis per (side, level): channel 0 is the left zone, 1 the right.

    ``series`` is the series of every level's peaks, or a mapping level -> series when the
    levels come from several series."""
    out: Dict[Tuple[str, str], Reading] = {}
    for level, p in peaks_by_level.items():
        s = series[level] if isinstance(series, dict) else series
        for k, side in enumerate(("left", "right")):
            out[(side, level)] = (keypoint_of(s, p, k), tuple(float(v) for v in p.probs[k]))
    return out


#: Closer than this (patient mm) two levels' keypoints cannot both be right: lumbar discs lie
#: some 30-45 mm apart along the spine in adults.
SHARED_POINT_MM = 10.0
#: The words every shared-point warning of a report carries (:func:`shared_point_warning`).
SHARED_POINT_PHRASE = " were placed within "


def shared_point_warning(view_label: str, level_titles: Sequence[str]) -> str:
    """The report warning for levels of one view that the model put on one point."""
    return (f"{view_label}: {', '.join(level_titles)}{SHARED_POINT_PHRASE}{SHARED_POINT_MM:g} mm of each other, "
            f"where discs lie 30-45 mm apart; the model did not tell these levels apart, so their locations "
            f"(and which level each grade describes) are unreliable")


def is_shared_point_warning(text: str) -> bool:
    """Whether a report warning is one of :func:`shared_point_warning`'s."""
    return SHARED_POINT_PHRASE in text


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
