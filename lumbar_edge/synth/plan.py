"""Planning one study: identifiers, grades, anatomy, series geometry and protocols, labels.

Everything about study ``index`` of a dataset made with ``seed`` comes from random streams
seeded by ``(seed, index)`` alone, so any process can plan or render any study and get the same
result, and study ``i`` is the same whether a dataset has 3 or 300 studies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..labels import CONDITIONS, LEVELS, SEVERITIES, condition_title, level_title
from .anatomy import Anatomy, build_anatomy, rotation
from .options import SynthOptions
from .render import Acquisition, SeriesGeometry
from .severity import sample_grades, sample_narrowing, sample_unlabelled
from .variants import (Variant, disc_stack_dirs, extra_series_ids, flip_geometry, split_ranges, storage_flips,
                       variant_for)

_ID_LOW, _ID_HIGH = 1_000_000, 4_294_967_295

#: Which series each condition is labelled on (RSNA convention).
CONDITION_SERIES = {
    "spinal_canal_stenosis": "sagittal_t2",
    "left_neural_foraminal_narrowing": "sagittal_t1",
    "right_neural_foraminal_narrowing": "sagittal_t1",
    "left_subarticular_stenosis": "axial_t2",
    "right_subarticular_stenosis": "axial_t2",
}
SERIES_KINDS = ("sagittal_t1", "sagittal_t2", "axial_t2")
CSV_DESCRIPTION = {"sagittal_t1": "Sagittal T1", "sagittal_t2": "Sagittal T2/STIR", "axial_t2": "Axial T2"}


def _entropy(seed: int, index: int, stream: int) -> List[int]:
    # SeedSequence takes non-negative integers only; keep the sign as its own word.
    return [abs(int(seed)), 1 if seed < 0 else 0, int(index), int(stream)]


def study_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The random stream ``stream`` of study ``index`` (0 ids, 1 grades, 2 anatomy, 3 protocol,
    4 noise, 5 patient, 6 variant)."""
    return np.random.default_rng(np.random.SeedSequence(_entropy(seed, index, stream)))


def allocate_ids(seed: int, n_studies: int) -> List[Tuple[int, Tuple[int, int, int]]]:
    """``(study_id, (sagittal T1, sagittal T2, axial series ids))`` for studies ``0..n-1``.

    Ids are positive integers like RSNA's, unique within the dataset: a (very rare) clash is
    resolved by drawing again from the study's own stream, in study order, so the result is
    deterministic.
    """
    used = set()
    out = []
    for i in range(n_studies):
        rng = study_rng(seed, i, 0)
        ids = []
        for _ in range(4):
            v = int(rng.integers(_ID_LOW, _ID_HIGH))
            while v in used:
                v = int(rng.integers(_ID_LOW, _ID_HIGH))
            used.add(v)
            ids.append(v)
        out.append((ids[0], (ids[1], ids[2], ids[3])))
    return out


@dataclass(frozen=True)
class SeriesPlan:
    """One series: what it is, where its slices lie, and how it was acquired."""

    kind: str  # sagittal_t1, sagittal_t2, axial_t2 (labels.VIEWS series_kind)
    series_id: int
    series_number: int
    sequence: str  # T1, T2 or STIR
    dicom_description: str
    geometry: SeriesGeometry
    acquisition: Acquisition
    timing: Dict[str, object]
    series_time: str
    #: InstanceNumber of the first slice: a series of several stacks is several plans sharing
    #: series_id, numbered on from one stack to the next.
    first_instance: int = 1
    #: False for a series the labels are not placed on (the stopped or earlier repeat of a
    #: sagittal T2): labels go on the series a reader would use.
    labelled: bool = True
    #: (flip rows, flip columns) of the stored slices against ``render_geometry``, the plain
    #: orientation they are rendered in: a study stored flipped (another patient position) holds
    #: the plain study's very pixels, moved, so its points can be compared exactly.
    stored_flips: Tuple[bool, bool] = (False, False)
    render_geometry: Optional[SeriesGeometry] = None

    @property
    def description(self) -> str:
        """The RSNA ``train_series_descriptions.csv`` form."""
        return CSV_DESCRIPTION[self.kind]


@dataclass(frozen=True)
class LabelPoint:
    """One label: a condition-level, its grade, and where it is (patient mm and pixels)."""

    condition: str
    level: str
    grade: int
    labelled: bool
    patient: Tuple[float, float, float]
    series_id: int
    instance_number: int
    x: float
    y: float
    plane_distance_mm: float

    @property
    def severity(self) -> str:
        return SEVERITIES[self.grade]


@dataclass(frozen=True)
class StudyPlan:
    """Everything about one study except its pixels."""

    seed: int
    index: int
    study_id: int
    patient: Dict[str, str]
    study_date: str
    study_time: str
    field_strength: float
    series: Tuple[SeriesPlan, ...]
    anatomy: Anatomy
    grades: Dict[Tuple[str, str], int]
    narrowing: Dict[Tuple[str, str], float]
    labels: Tuple[LabelPoint, ...]
    variant: Variant = Variant()

    def series_of(self, kind: str) -> SeriesPlan:
        """The (first) labelled series plan of ``kind``; raises KeyError."""
        for s in self.series:
            if s.kind == kind and s.labelled:
                return s
        raise KeyError(kind)

    def label(self, condition: str, level: str) -> LabelPoint:
        for lab in self.labels:
            if lab.condition == condition and lab.level == level:
                return lab
        raise KeyError((condition, level))

    def train_row(self) -> Dict[str, str]:
        """The ``train.csv`` row: study_id and the 25 columns ('' where unlabelled)."""
        row = {"study_id": str(self.study_id)}
        for lab in self.labels:
            row[f"{lab.condition}_{lab.level}"] = lab.severity if lab.labelled else ""
        return row

    def coordinate_rows(self) -> List[Dict[str, str]]:
        """The ``train_label_coordinates.csv`` rows of the labelled condition-levels."""
        return [{"study_id": str(self.study_id), "series_id": str(lab.series_id),
                 "instance_number": str(lab.instance_number), "condition": condition_title(lab.condition),
                 "level": level_title(lab.level), "x": f"{lab.x:.6f}", "y": f"{lab.y:.6f}"}
                for lab in self.labels if lab.labelled]

    def truth(self) -> Dict[str, object]:
        """Ground truth for ``synth_truth.json``: 3D points (mm), grades, narrowing, sizes."""
        n_slices: Dict[int, int] = {}
        for s in self.series:
            n_slices[s.series_id] = n_slices.get(s.series_id, 0) + s.geometry.n_slices
        return {
            "study_id": self.study_id,
            "index": self.index,
            "series": {s.kind: {"series_id": s.series_id, "sequence": s.sequence,
                                "n_slices": n_slices[s.series_id], "rows": s.geometry.rows,
                                "cols": s.geometry.cols} for s in reversed(self.series) if s.labelled},
            "variant": self.variant.to_dict(),
            "keypoints": [{"condition": lab.condition, "level": lab.level, "severity": lab.severity,
                           "labelled": lab.labelled, "narrowing": round(self.narrowing[(lab.condition, lab.level)], 4),
                           "xyz_mm": [round(v, 4) for v in lab.patient], "series_id": lab.series_id,
                           "instance_number": lab.instance_number, "x": round(lab.x, 4), "y": round(lab.y, 4)}
                          for lab in self.labels],
            "discs": {lv: [round(float(v), 4) for v in self.anatomy.to_patient(*self.anatomy.discs[lv])]
                      for lv in LEVELS},
            "anatomy": {k: round(float(v), 4) for k, v in self.anatomy.params.items()},
        }


def _fit_centre(centre: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray, fov: float,
                points: Sequence[np.ndarray], margin: float) -> np.ndarray:
    """Shift the in-plane ``centre`` just enough that every point lies inside the field of view,
    ``margin`` mm from its edges (or centre the points when they cannot all fit)."""
    half = fov / 2 - margin
    for axis in (row_dir, col_dir):
        offs = [float((p - centre) @ axis) for p in points]
        lo, hi = min(offs), max(offs)
        if hi - lo > 2 * half:
            shift = 0.5 * (lo + hi)
        elif hi > half:
            shift = hi - half
        elif lo < -half:
            shift = lo + half
        else:
            shift = 0.0
        centre = centre + shift * axis
    return centre


def _stack(centre: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray, stack_dir: np.ndarray, n: int,
           step: float, matrix: int, pixel: float) -> Tuple[Tuple[float, float, float], ...]:
    out = []
    for k in range(n):
        c = centre + (k - (n - 1) / 2) * step * stack_dir
        ipp = c - (matrix - 1) / 2 * pixel * row_dir - (matrix - 1) / 2 * pixel * col_dir
        out.append(tuple(float(round(v, 4)) for v in ipp))
    return tuple(out)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _clean_dir(v: np.ndarray) -> Tuple[float, float, float]:
    # Stored IOP is rounded to 6 decimals; keep the in-memory geometry identical to the file.
    return tuple(float(round(x, 6)) for x in v)


def _acquisition(rng: np.random.Generator, sequence: str, centre: np.ndarray, options: SynthOptions) -> Acquisition:
    gain = float(rng.uniform(900.0, 2400.0)) * (16.0 if options.bits_stored == 16 else 1.0)
    return Acquisition(sequence=sequence, gain=gain, noise=float(rng.uniform(*options.noise)),
                       bias_linear=tuple(float(v) for v in rng.normal(0.0, 0.12, 3)),
                       bias_quadratic=tuple(float(v) for v in rng.normal(0.0, 0.05, 3)),
                       bias_centre=tuple(float(v) for v in centre + rng.normal(0.0, 20.0, 3)),
                       bits_stored=options.bits_stored)


def _timing(rng: np.random.Generator, sequence: str, axial: bool) -> Dict[str, object]:
    if sequence == "T1":
        return {"RepetitionTime": round(float(rng.uniform(400, 700)), 1), "EchoTime": round(float(rng.uniform(8, 15)), 2),
                "EchoTrainLength": int(rng.integers(3, 6)), "ScanningSequence": ["SE"],
                "SequenceVariant": ["SK", "SP", "OSP"], "ScanOptions": ["PFP"], "SequenceName": "*tse2d1_3",
                "FlipAngle": 150.0}
    if sequence == "STIR":
        return {"RepetitionTime": round(float(rng.uniform(3300, 3800)), 1), "EchoTime": round(float(rng.uniform(30, 60)), 2),
                "InversionTime": round(float(rng.uniform(150, 200)), 1), "EchoTrainLength": int(rng.integers(9, 16)),
                "ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "ScanOptions": ["IR"],
                "SequenceName": "*tir2d1_13", "FlipAngle": 150.0}
    tr = (3000, 5000) if axial else (2500, 4500)
    te = (80, 110) if axial else (80, 120)
    return {"RepetitionTime": round(float(rng.uniform(*tr)), 1), "EchoTime": round(float(rng.uniform(*te)), 2),
            "EchoTrainLength": int(rng.integers(15, 26)), "ScanningSequence": ["SE"],
            "SequenceVariant": ["SK", "SP", "OSP"], "ScanOptions": ["PFP"], "SequenceName": "*tse2d1_17",
            "FlipAngle": 150.0}


def plan_study(seed: int, index: int, options: Optional[SynthOptions] = None,
               ids: Optional[Tuple[int, Tuple[int, int, int]]] = None) -> StudyPlan:
    """Plan study ``index`` of the dataset made with ``seed`` (no pixels rendered).

    ``ids`` are the study's ``(study_id, series ids)`` from :func:`allocate_ids`; computed when
    not given. Raises :class:`~lumbar_edge.errors.InputError` for invalid options.
    """
    options = options or SynthOptions()
    if ids is None:
        ids = allocate_ids(seed, index + 1)[index]
    study_id, series_ids = ids

    rng = study_rng(seed, index, 1)
    grades = sample_grades(rng, options.severity_prior)
    narrowing = sample_narrowing(rng, grades)
    unlabelled = set(sample_unlabelled(rng, options.partly_unlabelled_fraction))
    degeneration = {}
    for li, lv in enumerate(LEVELS):
        mean_grade = float(np.mean([grades[(c, lv)] for c in CONDITIONS]))
        degeneration[lv] = float(np.clip(0.1 + 0.15 * mean_grade + 0.06 * li + rng.normal(0.0, 0.12), 0.0, 0.9))

    anatomy = build_anatomy(study_rng(seed, index, 2), narrowing, degeneration)

    rng = study_rng(seed, index, 3)
    sc = anatomy.params["scale"]
    kp = {key: anatomy.keypoint_patient(key) for key in anatomy.keypoints}
    canal_pts = [kp[("spinal_canal_stenosis", lv)] for lv in LEVELS]
    foramen_pts = [kp[(c, lv)] for c in CONDITIONS if "foraminal" in c for lv in LEVELS]
    sub_pts = [kp[(c, lv)] for c in CONDITIONS if "subarticular" in c for lv in LEVELS]
    disc_pts = [anatomy.to_patient(*anatomy.discs[lv]) for lv in LEVELS]

    # --- sagittal stack, planned once like a technologist would, then per series details.
    # The stack follows the spine's own tilt and rotation (as planned on a coronal localizer),
    # up to a degree or so, and may be rotated in plane by a few degrees.
    r_sag = anatomy.pose.rotation @ rotation(float(np.clip(rng.normal(0, 2.5), -5, 5)),
                                             float(np.clip(rng.normal(0, 0.8), -1.5, 1.5)),
                                             float(np.clip(rng.normal(0, 0.8), -1.5, 1.5)))
    sag_row, sag_col, sag_dir = r_sag @ [0.0, 1.0, 0.0], r_sag @ [0.0, 0.0, -1.0], r_sag @ [1.0, 0.0, 0.0]
    sag_row, sag_col = np.asarray(_clean_dir(sag_row)), np.asarray(_clean_dir(sag_col))
    sag_centre = np.mean(canal_pts + disc_pts, axis=0) + rng.normal(0.0, 5.0, 3)
    offsets = [abs(float((p - sag_centre) @ sag_dir)) for p in foramen_pts]
    sag_need = 2.0 * (max(offsets) + 4.0)

    stir = bool(rng.random() < options.stir_probability)
    field_strength = float(rng.choice([1.5, 3.0]))
    first = int(rng.integers(2, 7))
    numbers = {"sagittal_t1": first, "sagittal_t2": first + 1, "axial_t2": first + int(rng.integers(2, 5))}
    if rng.random() < 0.4:
        numbers["sagittal_t1"], numbers["sagittal_t2"] = numbers["sagittal_t2"], numbers["sagittal_t1"]

    series: List[SeriesPlan] = []
    hour, minute = int(rng.integers(7, 19)), int(rng.integers(0, 60))
    for kind, series_id in zip(SERIES_KINDS, series_ids):
        if kind.startswith("sagittal"):
            sequence = "T1" if kind == "sagittal_t1" else ("STIR" if stir else "T2")
            matrix = int(rng.choice(options.sagittal_matrix))
            fov = float(rng.uniform(*options.sagittal_fov_mm)) * sc
            n = int(rng.integers(options.sagittal_slices[0], options.sagittal_slices[1] + 1))
            thickness = round(float(rng.uniform(*options.sagittal_thickness_mm)), 2)
            step = round(max(thickness + float(rng.uniform(0.3, 1.0)), sag_need / (n - 1)), 3)
            pixel = round(fov / matrix, 6)
            targets = canal_pts if kind == "sagittal_t2" else foramen_pts
            centre = _fit_centre(sag_centre + rng.normal(0.0, 4.0) * sag_row + rng.normal(0.0, 4.0) * sag_col,
                                 sag_row, sag_col, fov, targets + disc_pts, 0.08 * fov)
            row_dir, col_dir, stack_dir = sag_row, sag_col, sag_dir
        else:
            sequence = "T2"
            matrix = int(rng.choice(options.axial_matrix))
            fov = float(rng.uniform(*options.axial_fov_mm))
            axis = _unit(disc_pts[0] - disc_pts[-1])
            pitch = float(np.clip(math.degrees(math.atan2(-axis[1], axis[2])) + rng.normal(0, 3.0), -20, 20))
            r_ax = rotation(pitch, float(np.clip(rng.normal(0, 1.5), -3, 3)), float(np.clip(rng.normal(0, 2.0), -4, 4)))
            row_dir = np.asarray(_clean_dir(r_ax @ [1.0, 0.0, 0.0]))
            col_dir = np.asarray(_clean_dir(r_ax @ [0.0, 1.0, 0.0]))
            normal = _unit(np.cross(row_dir, col_dir))
            stack_dir = -normal  # instance 1 is the most superior slice
            mid = np.mean(canal_pts, axis=0)
            along = [float((p - mid) @ normal) for p in sub_pts + canal_pts]
            margin = 8.0
            top, bottom = max(along) + margin, min(along) - margin
            coverage = top - bottom
            n = int(np.clip(round(coverage / rng.uniform(4.2, 5.0)) + 1, *options.axial_slices))
            step = round(coverage / (n - 1), 3)
            thickness = float(options.axial_thickness_mm)
            pixel = round(fov / matrix, 6)
            # In plane: centred a little in front of the canal, so body, canal and muscles show.
            ap = _unit(col_dir)
            base = mid + (0.5 * (top + bottom)) * normal - 12.0 * ap
            centre = _fit_centre(base + rng.normal(0.0, 4.0) * row_dir + rng.normal(0.0, 4.0) * col_dir,
                                 row_dir, col_dir, fov, [p - float((p - base) @ normal) * normal for p in sub_pts],
                                 0.1 * fov)
        positions = _stack(centre, row_dir, col_dir, stack_dir, n, step, matrix, pixel)
        geometry = SeriesGeometry(rows=matrix, cols=matrix, spacing=(pixel, pixel), row_dir=_clean_dir(row_dir),
                                  col_dir=_clean_dir(col_dir), positions=positions, thickness=thickness,
                                  slice_spacing=step)
        acq = _acquisition(rng, sequence, centre, options)
        timing = _timing(rng, sequence, kind == "axial_t2")
        desc = {"sagittal_t1": "SAG T1 TSE", "sagittal_t2": "SAG STIR" if stir else "SAG T2 TSE",
                "axial_t2": "AX T2 TSE"}[kind]
        minute += int(rng.integers(3, 7))
        series.append(SeriesPlan(kind, series_id, numbers[kind], sequence, desc, geometry, acq, timing,
                                 f"{hour + minute // 60:02d}{minute % 60:02d}{int(rng.integers(0, 60)):02d}"))

    vrng = study_rng(seed, index, 6)
    variant = variant_for(options, seed, index)
    if not variant.is_plain:
        series = _apply_variant(variant, series, vrng, disc_pts, kp, sc)

    labels = []
    for c in CONDITIONS:
        for lv in LEVELS:
            p = kp[(c, lv)]
            # The label goes on the slice nearest the point among every labelled plan of the
            # condition's kind (several for axial stacks or split series).
            best = None
            for s in series:
                if s.kind == CONDITION_SERIES[c] and s.labelled:
                    k = s.geometry.nearest_slice(p)
                    x, y, dist = s.geometry.project(p, k)
                    if best is None or abs(dist) < abs(best[4]):
                        best = (s, k, x, y, dist)
            s, k, x, y, dist = best
            labels.append(LabelPoint(c, lv, grades[(c, lv)], (c, lv) not in unlabelled,
                                     tuple(float(v) for v in p), s.series_id, s.first_instance + k, x, y, dist))

    prng = study_rng(seed, index, 5)
    study_day = date(2019, 1, 1) + timedelta(days=int(prng.integers(0, 5 * 365)))
    age = int(prng.integers(25, 86))
    birth = study_day - timedelta(days=int(age * 365.25 + prng.integers(0, 365)))
    patient = {"PatientName": f"SYNTH^{index + 1:04d}", "PatientID": f"SYNTH{study_id}",
               "PatientBirthDate": birth.strftime("%Y%m%d"), "PatientSex": str(prng.choice(["F", "M"])),
               "PatientAge": f"{age:03d}Y", "PatientWeight": f"{float(prng.uniform(50, 110)):.1f}",
               "PatientSize": f"{float(prng.uniform(1.55, 1.95)):.2f}"}
    return StudyPlan(seed, index, study_id, patient, study_day.strftime("%Y%m%d"), f"{hour:02d}{0:02d}00",
                     field_strength, tuple(series), anatomy, grades, narrowing, tuple(labels), variant)


def _apply_variant(variant: Variant, series: List[SeriesPlan], rng: np.random.Generator,
                   disc_pts: Sequence[np.ndarray], kp: Dict[Tuple[str, str], np.ndarray], sc: float) -> List[SeriesPlan]:
    """The plain study's series plans changed as ``variant`` says (see :mod:`.variants`). New
    plans go after the plain ones, so the plain series render with the plain noise draws."""
    import dataclasses

    out = list(series)
    extra: List[SeriesPlan] = []
    numbers = [s.series_number for s in out]
    new_ids = iter(extra_series_ids(rng, [s.series_id for s in out], 4, _ID_LOW, _ID_HIGH))
    ax_i = next(i for i, s in enumerate(out) if s.kind == "axial_t2")
    ax = out[ax_i]
    g = ax.geometry
    if variant.axial_layout == "split":
        parts = []
        for j, (a, b) in enumerate(split_ranges(g.n_slices)):
            geometry = dataclasses.replace(g, positions=g.positions[a:b])
            parts.append(dataclasses.replace(ax, geometry=geometry, series_id=ax.series_id if j == 0 else next(new_ids),
                                             series_number=ax.series_number if j == 0 else max(numbers) + 1))
        out[ax_i:ax_i + 1] = parts
    elif variant.axial_layout == "stacks":
        stacks, first = [], 1
        matrix, pixel, fov = g.rows, g.spacing[0], g.rows * g.spacing[0]
        for k, lv in enumerate(LEVELS):
            row, col, normal = disc_stack_dirs(disc_pts, k)
            row, col = np.asarray(_clean_dir(row)), np.asarray(_clean_dir(col))
            n = int(rng.integers(3, 6))
            step = round(float(rng.uniform(4.2, 5.0)), 3)
            subs = [kp[(c, lv)] for c in CONDITIONS if "subarticular" in c]
            disc = np.asarray(disc_pts[k], dtype=np.float64)
            base = kp[("spinal_canal_stenosis", lv)] - 12.0 * sc * col
            base = base - float((base - disc) @ normal) * normal  # in the disc's plane
            centre = _fit_centre(base + rng.normal(0.0, 3.0) * row + rng.normal(0.0, 3.0) * col, row, col, fov,
                                 [p - float((p - disc) @ normal) * normal for p in subs], 0.1 * fov)
            positions = _stack(centre, row, col, -normal, n, step, matrix, pixel)
            geometry = SeriesGeometry(rows=matrix, cols=matrix, spacing=g.spacing, row_dir=_clean_dir(row),
                                      col_dir=_clean_dir(col), positions=positions, thickness=g.thickness,
                                      slice_spacing=step)
            stacks.append(dataclasses.replace(ax, geometry=geometry, first_instance=first))
            first += n
        out[ax_i:ax_i + 1] = stacks
    if variant.repeat_sagittal:
        t2_i = next(i for i, s in enumerate(out) if s.kind == "sagittal_t2")
        t2 = out[t2_i]
        gt = t2.geometry
        # The earlier attempt: stopped part-way (covering less of the spine) or complete (the
        # later series then decides); the plain series becomes the later repeat.
        stopped = bool(rng.random() < 0.5)
        m = max(3, int(round(gt.n_slices * float(rng.uniform(0.55, 0.75))))) if stopped else gt.n_slices
        earlier = dataclasses.replace(t2, geometry=dataclasses.replace(gt, positions=gt.positions[:m]),
                                      series_id=next(new_ids), labelled=False)
        out[t2_i] = dataclasses.replace(t2, series_number=max(numbers + [s.series_number for s in out]) + 1)
        extra.append(earlier)
    out = out + extra
    if variant.patient_position != "HFS":
        out = [dataclasses.replace(s, geometry=flip_geometry(s.geometry, *storage_flips(variant.patient_position, s.kind)),
                                   stored_flips=storage_flips(variant.patient_position, s.kind), render_geometry=s.geometry)
               for s in out]
    return out
