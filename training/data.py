"""The RSNA 2024 layout as training samples, read through lumbar-edge's own ingestion.

Training, INT8 calibration and inference see identical pixels because all three go through
:mod:`lumbar_edge.dicom` (decode, rescale, slice order) and :mod:`lumbar_edge.preprocess`.

Every slice of a labelled series can be a sample (:class:`LabelledSeries`). A sample is one model
input: ``in_channels`` neighbouring slices around a centre slice, and for each heatmap channel of
the series' view the label projected onto that slice with a **through-plane weight**: each label
is a 3D point (its pixel on the labelled instance, mapped to patient mm), and a slice at distance
``d`` from it along the slice normal supervises that keypoint with weight ``exp(-d^2 / 2 s^2)``
(``s`` = :attr:`SamplingConfig.sigma_mm`, a few mm): the labelled slice with 1, its neighbours
with less, slices farther than ``3 s`` not at all (the channel must stay low there). The
heatmap target's peak is that weight, so off-slices learn low scores and the study-level choice
can pick the slice whose peak is highest. The views:

- sagittal T2/STIR: the five canal levels (the labels lie on the midline slice);
- sagittal T1: the five foramina channels are side-agnostic, each slice takes the nearer side's
  label of a level, and the severity is that side's;
- axial T2: left and right subarticular channels; each slice takes the nearest level's labels.

Which slices an epoch trains on is drawn by :func:`epoch_plan`: labelled slices (a sagittal T2
series has one, drawn three times; a T1 series two, each drawn twice; an axial series five, two
drawn: the sagittal views are where the slice and the level must be found), neighbours of
labelled slices, and hard negatives at least two slices from every label (lateral sagittal T2
slices, where the canal channels fired on the foramina; medial and lateral T1 slices; axial
slices between discs). Splits are by study, never by slice.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from lumbar_edge.errors import InputError, LumbarEdgeError
from lumbar_edge.labels import (CONDITIONS, LABEL_COLUMNS, LEVELS, VIEWS, HeadLayout, condition_from_title,
                                level_from_title, severity_index)
from lumbar_edge.dicom.orient import reorientation_for
from lumbar_edge.preprocess import PreprocessConfig, pixel_aspect, preprocess_stack
from lumbar_edge.progress import Progress

log = logging.getLogger("lumbar_edge.training")

_DESCRIPTION_VIEW = {"sagittal t2/stir": "sagittal_t2", "sagittal t1": "sagittal_t1", "axial t2": "axial_t2"}
_CONDITION_VIEW = {
    "spinal_canal_stenosis": "sagittal_t2",
    "left_neural_foraminal_narrowing": "sagittal_t1",
    "right_neural_foraminal_narrowing": "sagittal_t1",
    "left_subarticular_stenosis": "axial_t2",
    "right_subarticular_stenosis": "axial_t2",
}


@dataclass(frozen=True)
class Coordinate:
    study_id: str
    series_id: str
    instance_number: int
    condition: str  # column form, e.g. left_neural_foraminal_narrowing
    level: str  # column form, e.g. l4_l5
    x: float
    y: float


def _read_csv(path: Path, required: Sequence[str]) -> List[dict]:
    if not path.is_file():
        raise InputError(f"missing {path.name} in {path.parent} (not an RSNA-layout dataset?)")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path} lacks the column(s) {', '.join(missing)}")
        return list(reader)


@dataclass
class RsnaDataset:
    """The three CSVs of an RSNA-layout folder, parsed and cross-checked."""

    root: Path
    labels: Dict[str, Dict[str, int]]  # study_id -> column -> severity class, -1 when empty
    coordinates: List[Coordinate]
    descriptions: Dict[Tuple[str, str], str]  # (study_id, series_id) -> description

    @classmethod
    def load(cls, root: Path) -> "RsnaDataset":
        """Read ``train.csv``, ``train_label_coordinates.csv`` and ``train_series_descriptions.csv``.

        Raises :class:`InputError` on a missing file or column, or an unknown label value.
        """
        root = Path(root)
        labels: Dict[str, Dict[str, int]] = {}
        for row in _read_csv(root / "train.csv", ["study_id", *LABEL_COLUMNS]):
            values = {}
            for col in LABEL_COLUMNS:
                text = (row[col] or "").strip()
                try:
                    values[col] = severity_index(text) if text else -1
                except KeyError:
                    raise InputError(f"train.csv: study {row['study_id']} has an unknown value {text!r} in {col}") from None
            labels[row["study_id"].strip()] = values
        coords = []
        for row in _read_csv(root / "train_label_coordinates.csv",
                             ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]):
            try:
                coords.append(Coordinate(row["study_id"].strip(), row["series_id"].strip(), int(float(row["instance_number"])),
                                         condition_from_title(row["condition"]), level_from_title(row["level"]),
                                         float(row["x"]), float(row["y"])))
            except ValueError:
                raise InputError(f"train_label_coordinates.csv: a row of study {row['study_id']} has a non-numeric value") from None
        descriptions = {(r["study_id"].strip(), r["series_id"].strip()): r["series_description"].strip()
                        for r in _read_csv(root / "train_series_descriptions.csv", ["study_id", "series_id", "series_description"])}
        return cls(root=root, labels=labels, coordinates=coords, descriptions=descriptions)

    @property
    def study_ids(self) -> List[str]:
        return sorted(self.labels, key=lambda s: (len(s), s))

    def study_dir(self, study_id: str) -> Path:
        return self.root / "train_images" / study_id


@dataclass
class Sample:
    """One model input with its keypoint targets (model-input pixels).

    ``weight`` [K] is each keypoint's through-plane weight in [0, 1] (1 on the labelled slice, 0
    where the keypoint is not supervised); ``present`` is ``weight > 0``.
    """

    image: np.ndarray  # [C, H, W] float32, preprocessed
    points: np.ndarray  # [K, 2] float32, NaN where absent
    present: np.ndarray  # [K] bool
    severity: np.ndarray  # [K] int64, -1 unlabelled/absent
    channel_mask: np.ndarray  # [K] float32
    flip_pair: Optional[Tuple[int, int]]
    study_id: str
    view: str
    series_id: str
    instance_number: int
    mm_per_pixel: float  # model-input pixel size in mm, for localisation errors in mm
    extra: dict = field(default_factory=dict)
    weight: Optional[np.ndarray] = None  # [K] float32; None = present as 1

    def __post_init__(self) -> None:
        if self.weight is None:
            self.weight = self.present.astype(np.float32)

    @property
    def on_slice(self) -> np.ndarray:
        """[K] bool: keypoints labelled on this very slice (weight 1)."""
        return self.weight >= ON_SLICE_WEIGHT


#: A keypoint with at least this through-plane weight is on its labelled slice.
ON_SLICE_WEIGHT = 0.999


@dataclass(frozen=True)
class SamplingConfig:
    """How an epoch draws slices from each labelled series, and how labels spread through-plane.

    ``sigma_mm``: the through-plane Gaussian of the target weight (patient mm along the slice
    normal); a label farther than ``3 * sigma_mm`` from a slice is not supervised there.
    Per view (``sagittal_t2``, ``sagittal_t1``, ``axial_t2``), each a tuple ordered like
    :data:`SAMPLING_VIEWS`, the draws from one series in one epoch: ``positives`` (labelled
    slices: each once before any is repeated), ``neighbours`` (slices next to a labelled one) and
    ``negatives`` (slices at least ``negative_gap`` slices from every labelled one). Raises
    :class:`InputError` for invalid values.
    """

    sigma_mm: float = 2.5
    positives: Tuple[int, int, int] = (3, 4, 2)
    neighbours: Tuple[int, int, int] = (1, 2, 0)
    negatives: Tuple[int, int, int] = (2, 1, 1)
    negative_gap: int = 2

    def __post_init__(self) -> None:
        if not (self.sigma_mm > 0 and np.isfinite(self.sigma_mm)):
            raise InputError(f"the through-plane sigma must be a positive number of mm, got {self.sigma_mm!r}")
        for name in ("positives", "neighbours", "negatives"):
            value = getattr(self, name)
            if len(value) != len(SAMPLING_VIEWS) or any(int(v) != v or v < 0 for v in value):
                raise InputError(f"sampling {name} needs {len(SAMPLING_VIEWS)} counts >= 0 "
                                 f"({', '.join(SAMPLING_VIEWS)}), got {value!r}")
        if int(self.negative_gap) != self.negative_gap or self.negative_gap < 1:
            raise InputError(f"sampling negative_gap must be a whole number >= 1, got {self.negative_gap!r}")

    def counts(self, view: str) -> Tuple[int, int, int]:
        """``(positives, neighbours, negatives)`` of ``view``."""
        i = SAMPLING_VIEWS.index(view)
        return int(self.positives[i]), int(self.neighbours[i]), int(self.negatives[i])

    def to_dict(self) -> dict:
        return {"sigma_mm": self.sigma_mm, "positives": list(self.positives),
                "neighbours": list(self.neighbours), "negatives": list(self.negatives),
                "negative_gap": self.negative_gap}

    @classmethod
    def from_dict(cls, data: dict) -> "SamplingConfig":
        known = {"sigma_mm", "positives", "neighbours", "negatives", "negative_gap"}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown sampling options: {', '.join(sorted(unknown))}")
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**d)


SAMPLING_VIEWS: Tuple[str, str, str] = ("sagittal_t2", "sagittal_t1", "axial_t2")


@dataclass(frozen=True)
class LabelPoint:
    """One label of a series as a 3D point, with the heatmap channel it supervises."""

    channel: int
    patient_mm: Tuple[float, float, float]
    severity: int
    condition: str
    level: str
    slice_index: int  # sorted index of the labelled instance


def _view_of_series(dataset: RsnaDataset, study_id: str, series) -> Optional[str]:
    desc = dataset.descriptions.get((study_id, series.series_id))
    if desc is not None:
        return _DESCRIPTION_VIEW.get(desc.lower())
    return {"sagittal_t1": "sagittal_t1", "sagittal_t2": "sagittal_t2", "axial_t2": "axial_t2"}.get(
        getattr(series.kind, "value", str(series.kind)).lower())


class LabelledSeries:
    """A labelled series of one study, able to give the training sample of any of its slices.

    Built by :func:`build_series`; holds the :class:`lumbar_edge.dicom.Series` (pixels are
    decoded on demand, so a large dataset does not sit in memory) and its labels in patient mm.
    """

    def __init__(self, study_id: str, series, view: str, points: Sequence[LabelPoint], layout: HeadLayout,
                 cache_pixels: bool = False):
        self.cache_pixels = cache_pixels
        self._pixels: Dict[int, np.ndarray] = {}
        self.study_id = study_id
        self.series = series
        self.view = view
        self.points = tuple(points)
        self.layout = layout
        self.num_slices = len(series.instances)
        self.labelled_slices: Tuple[int, ...] = tuple(sorted({p.slice_index for p in self.points}))
        xyz = np.array([p.patient_mm for p in self.points], dtype=np.float64).reshape(-1, 3)
        # Per slice, every label's pixel position and signed distance from the slice plane.
        self._projections = []
        for inst in series.instances:
            x, y, d = inst.geometry.patient_to_pixel(xyz)
            self._projections.append(np.stack([np.atleast_1d(x), np.atleast_1d(y), np.atleast_1d(d)], -1))

    @property
    def series_id(self) -> str:
        return self.series.series_id

    def pixels(self, index: int) -> np.ndarray:
        """Slice ``index`` decoded (once, with ``cache_pixels``: a small dataset read many times)."""
        if not self.cache_pixels:
            return self.series.pixels(index)
        arr = self._pixels.get(index)
        if arr is None:
            arr = self._pixels[index] = self.series.pixels(index)
        return arr

    def neighbour_slices(self) -> List[int]:
        """Slices next to a labelled slice that carry no label themselves."""
        labelled = set(self.labelled_slices)
        out = {i + step for i in labelled for step in (-1, 1)}
        return sorted(i for i in out if 0 <= i < self.num_slices and i not in labelled)

    def negative_slices(self, gap: int) -> List[int]:
        """Slices at least ``gap`` slices away from every labelled slice."""
        return [i for i in range(self.num_slices) if all(abs(i - j) >= gap for j in self.labelled_slices)]

    def sample(self, index: int, config: PreprocessConfig, sigma_mm: Optional[float]) -> Sample:
        """The sample centred on slice ``index``.

        ``sigma_mm`` None supervises only the labels of this very slice (validation: an oracle
        slice choice); a number spreads every label through-plane as the module docstring says.
        Raises :class:`LumbarEdgeError` (from pixel decoding) for an unreadable slice.
        """
        k_total = self.layout.num_keypoints
        c0, c1 = self.layout.channels[self.view]
        idx = self.series.neighbour_indices(index, config.in_channels)
        # The slices turned to the trained orientation as inference turns them (IOP decides:
        # a series stored head-down or mirrored is learnt as the runtime will show it), and the
        # labels, given on the stored grid, turned with them.
        inst = self.series.instances[index]
        orient = reorientation_for(inst.image_orientation, self.series.plane, inst.rows, inst.columns)
        image, box = preprocess_stack(orient.apply(np.stack([self.pixels(i) for i in idx])), config,
                                      pixel_aspect(inst.pixel_spacing, orient.transpose))
        points = np.full((k_total, 2), np.nan, dtype=np.float32)
        weight = np.zeros(k_total, dtype=np.float32)
        severity = np.full(k_total, -1, dtype=np.int64)
        extra: dict = {"sides": {}}
        best_d = np.full(k_total, np.inf)
        proj = self._projections[index]
        for p, (x, y, d) in zip(self.points, proj):
            if sigma_mm is None:
                if p.slice_index != index:
                    continue
                w = 1.0
            else:
                if abs(d) > 3.0 * sigma_mm and p.slice_index != index:
                    continue
                w = 1.0 if p.slice_index == index else float(np.exp(-0.5 * (d / sigma_mm) ** 2))
            ch = p.channel
            # Several labels can map to one channel (left and right foramina of a level, the
            # subarticular zones of five levels): the one nearest this slice supervises it.
            if abs(d) >= best_d[ch]:
                continue
            best_d[ch] = abs(d)
            points[ch] = box.to_model(*orient.to_reoriented(x, y))
            weight[ch] = w
            severity[ch] = p.severity
            if self.view == "sagittal_t1":
                extra["sides"][ch] = "left" if p.condition.startswith("left") else "right"
            elif self.view == "axial_t2":
                extra["level"] = p.level
        if self.view == "axial_t2" and "level" not in extra:
            # A slice between discs: the level it is nearest, for bookkeeping only.
            nearest = int(np.argmin(np.abs(proj[:, 2]))) if len(proj) else None
            if nearest is not None:
                extra["level"] = self.points[nearest].level
        mask = np.zeros(k_total, dtype=np.float32)
        mask[c0:c1] = 1.0
        spacing = float(np.mean(self.series.instances[index].geometry.pixel_spacing))
        return Sample(image=image, points=points, present=weight > 0, severity=severity, channel_mask=mask,
                      flip_pair=(c0, c0 + 1) if self.view == "axial_t2" else None, study_id=self.study_id,
                      view=self.view, series_id=self.series.series_id,
                      instance_number=self.series.instances[index].instance_number,
                      mm_per_pixel=spacing / box.scale_x, extra=extra, weight=weight)


def _series_points(dataset: RsnaDataset, study_id: str, series, view: str, coords: List[Coordinate],
                   layout: HeadLayout) -> List[LabelPoint]:
    c0, _ = layout.channels[view]
    study_labels = dataset.labels.get(study_id, {})
    index_of = {inst.instance_number: i for i, inst in enumerate(series.instances)}
    points = []
    for c in coords:
        i = index_of.get(c.instance_number)
        if i is None:
            log.warning("study %s series %s: labelled instance %d is not in the series; label skipped",
                        study_id, series.series_id, c.instance_number)
            continue
        if view == "axial_t2":
            ch = c0 + (0 if c.condition.startswith("left") else 1)
        else:
            ch = c0 + LEVELS.index(c.level)
        xyz = np.asarray(series.instances[i].geometry.pixel_to_patient(c.x, c.y), dtype=np.float64).reshape(3)
        points.append(LabelPoint(ch, (float(xyz[0]), float(xyz[1]), float(xyz[2])),
                                 study_labels.get(f"{c.condition}_{c.level}", -1), c.condition, c.level, i))
    return points


def build_series(dataset: RsnaDataset, layout: HeadLayout, study_ids: Optional[Iterable[str]] = None,
                 progress: bool = False, cache_pixels: bool = False) -> List[LabelledSeries]:
    """Scan each study through :mod:`lumbar_edge.dicom` and keep its labelled series
    (``cache_pixels``: each keeps the slices it decodes, see :meth:`LabelledSeries.pixels`).

    Studies without images or without the needed series are skipped with a warning, not fatal.
    Raises :class:`InputError` when no labelled series is found at all.
    """
    from lumbar_edge.dicom import scan_path

    ids = list(study_ids) if study_ids is not None else dataset.study_ids
    by_study: Dict[str, List[Coordinate]] = {}
    for c in dataset.coordinates:
        by_study.setdefault(c.study_id, []).append(c)
    out: List[LabelledSeries] = []
    with Progress(len(ids), "reading studies", enabled=progress) as bar:
        for study_id in ids:
            bar.update()
            folder = dataset.study_dir(study_id)
            if not folder.is_dir():
                log.warning("study %s: no folder %s; skipped", study_id, folder)
                continue
            scan = scan_path(folder, workers=2, progress=False)
            for study in scan.studies:
                for series in study.series:
                    view = _view_of_series(dataset, study_id, series)
                    if view is None or view not in layout.views:
                        continue
                    coords = [c for c in by_study.get(study_id, [])
                              if c.series_id == series.series_id and _CONDITION_VIEW.get(c.condition) == view]
                    if not coords:
                        continue
                    if any(inst.geometry is None for inst in series.instances):
                        log.warning("study %s series %s: slices without geometry; series skipped", study_id,
                                    series.series_id)
                        continue
                    points = _series_points(dataset, study_id, series, view, coords, layout)
                    if points:
                        out.append(LabelledSeries(study_id, series, view, points, layout, cache_pixels))
    if not out:
        raise InputError(f"no labelled slices found under {dataset.root} for the views {', '.join(layout.views)}")
    return out


def epoch_plan(series: Sequence[LabelledSeries], sampling: SamplingConfig, rng: np.random.Generator
               ) -> List[Tuple[int, int]]:
    """The ``(series index, slice index)`` pairs one epoch trains on, shuffled.

    Per series (see :class:`SamplingConfig`): ``positives`` labelled slices (all of them in
    random order, again as needed), ``neighbours`` slices next to labelled ones and
    ``negatives`` slices at least ``negative_gap`` slices from every label, the last two drawn
    without replacement (fewer when the series has fewer). The plan's length is the same every
    epoch, so a learning-rate schedule can be laid out in advance.
    """
    plan: List[Tuple[int, int]] = []
    for s_index, s in enumerate(series):
        n_pos, n_near, n_neg = sampling.counts(s.view)
        labelled = list(s.labelled_slices)
        cycles = -(-n_pos // len(labelled)) if labelled else 0
        drawn = [labelled[int(j)] for _ in range(cycles) for j in rng.permutation(len(labelled))]
        plan.extend((s_index, i) for i in drawn[:n_pos])
        for pool, n in ((s.neighbour_slices(), n_near), (s.negative_slices(sampling.negative_gap), n_neg)):
            if n and pool:
                picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
                plan.extend((s_index, pool[int(j)]) for j in sorted(picks))
    order = rng.permutation(len(plan))
    return [plan[int(j)] for j in order]


def build_samples(dataset: RsnaDataset, layout: HeadLayout, config: PreprocessConfig,
                  study_ids: Optional[Iterable[str]] = None, negatives: bool = True,
                  progress: bool = False) -> List[Sample]:
    """Samples of the labelled slices, each supervising only its own labels (validation and
    export checks: the slice choice is left out), plus with ``negatives`` one slice per
    series far from every label (INT8 calibration sees what inference sees: slices with and
    without the structures).

    Studies without images or without the needed series are skipped with a warning, not fatal.
    """
    series = build_series(dataset, layout, study_ids, progress=progress)
    samples: List[Sample] = []
    for s in series:
        centres = list(s.labelled_slices)
        if negatives:
            pool = s.negative_slices(3)
            if pool:
                # The slice farthest from the labels: the edge of a sagittal T2 stack, the midline
                # of a T1 stack, the space between two axial levels.
                gaps = [min(abs(i - j) for j in s.labelled_slices) for i in pool]
                centres.append(pool[int(np.argmax(gaps))])
        for centre in centres:
            try:
                samples.append(s.sample(centre, config, None))
            except LumbarEdgeError as exc:
                log.warning("study %s series %s: %s; slice skipped", s.study_id, s.series_id, exc)
    if not samples:
        raise InputError(f"no labelled slices found under {dataset.root} for the views {', '.join(layout.views)}")
    return samples


def split_studies(study_ids: Sequence[str], val_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """Split study ids (never slices) into train and validation sets, reproducibly."""
    ids = sorted(study_ids, key=lambda s: (len(s), s))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction > 0 and len(ids) > 1:
        n_val = min(max(n_val, 1), len(ids) - 1)
    val = sorted((ids[i] for i in order[:n_val]), key=lambda s: (len(s), s))
    train = sorted((ids[i] for i in order[n_val:]), key=lambda s: (len(s), s))
    return train, val


def condition_targets(dataset: RsnaDataset, study_ids: Iterable[str]) -> Dict[str, Dict[str, int]]:
    """The 25 severity labels of the given studies (-1 for missing), for the competition metric."""
    return {s: dataset.labels[s] for s in study_ids if s in dataset.labels}


__all__ = ["RsnaDataset", "Coordinate", "Sample", "SamplingConfig", "LabelledSeries", "build_series", "epoch_plan",
           "build_samples", "split_studies", "condition_targets", "CONDITIONS"]
