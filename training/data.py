"""The RSNA 2024 layout as training samples, read through lumbar-edge's own ingestion.

Training, INT8 calibration and inference see identical pixels because all three go through
:mod:`lumbar_edge.dicom` (decode, rescale, slice order) and :mod:`lumbar_edge.preprocess`.

A sample is one model input: ``in_channels`` neighbouring slices around a labelled instance, its
keypoints in model-input pixels, which are present, their severity classes, and which heatmap
channels its view supervises (:class:`~lumbar_edge.labels.HeadLayout`):

- sagittal T2/STIR: one sample per labelled instance of the canal points; a level counts as
  present when its label lies on that instance or a neighbour (the canal is the same there);
- sagittal T1: one sample per labelled foramen instance; the five channels are side-agnostic and
  the severity is that of the labelled side;
- axial T2: one sample per labelled instance, left and right subarticular channels.

Sagittal series also give negative samples (a slice far from every label, all keypoints absent),
so the heatmaps learn to stay low where the structure is not in the slice, which inference relies
on when it picks the best slice. Splits are by study, never by slice.
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
from lumbar_edge.preprocess import PreprocessConfig, channel_indices, preprocess_stack
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
    """One model input with its keypoint targets (model-input pixels)."""

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


def _view_of_series(dataset: RsnaDataset, study_id: str, series) -> Optional[str]:
    desc = dataset.descriptions.get((study_id, series.series_id))
    if desc is not None:
        return _DESCRIPTION_VIEW.get(desc.lower())
    return {"sagittal_t1": "sagittal_t1", "sagittal_t2": "sagittal_t2", "axial_t2": "axial_t2"}.get(
        getattr(series.kind, "value", str(series.kind)).lower())


def _series_samples(dataset: RsnaDataset, study_id: str, series, view: str, coords: List[Coordinate],
                    layout: HeadLayout, config: PreprocessConfig, negatives: bool) -> List[Sample]:
    """Samples of one series: one per labelled instance, plus a negative for sagittal views."""
    k_total = layout.num_keypoints
    c0, c1 = layout.channels[view]
    study_labels = dataset.labels.get(study_id, {})
    numbers = [inst.instance_number for inst in series.instances]
    index_of = {n: i for i, n in enumerate(numbers)}
    usable = [c for c in coords if c.instance_number in index_of]
    for c in coords:
        if c.instance_number not in index_of:
            log.warning("study %s series %s: labelled instance %d is not in the series; label skipped",
                        study_id, series.series_id, c.instance_number)
    labelled = sorted({index_of[c.instance_number] for c in usable})
    centres: List[Tuple[int, bool]] = [(i, True) for i in labelled]
    if negatives and view != "axial_t2" and labelled and len(numbers) >= 7:
        if view == "sagittal_t1" and len(labelled) >= 2:
            candidate = (labelled[0] + labelled[-1]) // 2  # the midline between the two sides
        else:
            candidate = 0 if abs(0 - labelled[0]) > abs(len(numbers) - 1 - labelled[-1]) else len(numbers) - 1
        if min(abs(candidate - i) for i in labelled) >= 3:
            centres.append((candidate, False))
    out = []
    for centre, positive in centres:
        idx = channel_indices(len(numbers), centre, config.in_channels)
        try:
            stack = np.stack([series.pixels(i) for i in idx])
        except LumbarEdgeError as exc:
            log.warning("study %s series %s: %s; slice skipped", study_id, series.series_id, exc)
            continue
        image, box = preprocess_stack(stack, config)
        points = np.full((k_total, 2), np.nan, dtype=np.float32)
        present = np.zeros(k_total, dtype=bool)
        severity = np.full(k_total, -1, dtype=np.int64)
        extra: dict = {"sides": {}}
        if positive:
            for c in usable:
                dist = abs(index_of[c.instance_number] - centre)
                if view == "axial_t2":
                    if dist != 0:
                        continue
                    ch = c0 + (0 if c.condition.startswith("left") else 1)
                else:
                    if dist > 1:
                        continue
                    ch = c0 + LEVELS.index(c.level)
                    if present[ch] and dist > 0:
                        continue  # a label on this very instance wins over a neighbour's
                points[ch] = box.to_model(c.x, c.y)
                present[ch] = True
                if view == "sagittal_t1":
                    extra["sides"][ch] = "left" if c.condition.startswith("left") else "right"
                elif view == "axial_t2":
                    extra["level"] = c.level
                severity[ch] = study_labels.get(f"{c.condition}_{c.level}", -1)
        mask = np.zeros(k_total, dtype=np.float32)
        mask[c0:c1] = 1.0
        spacing = float(np.mean(series.instances[centre].geometry.pixel_spacing))
        out.append(Sample(image=image, points=points, present=present, severity=severity, channel_mask=mask,
                          flip_pair=(c0, c0 + 1) if view == "axial_t2" else None, study_id=study_id, view=view,
                          series_id=series.series_id, instance_number=numbers[centre],
                          mm_per_pixel=spacing / box.scale_x, extra=extra))
    return out


def build_samples(dataset: RsnaDataset, layout: HeadLayout, config: PreprocessConfig,
                  study_ids: Optional[Iterable[str]] = None, negatives: bool = True,
                  progress: bool = False) -> List[Sample]:
    """Scan each study through :mod:`lumbar_edge.dicom` and turn its labels into samples.

    Studies without images or without the needed series are skipped with a warning, not fatal.
    """
    from lumbar_edge.dicom import scan_path

    ids = list(study_ids) if study_ids is not None else dataset.study_ids
    by_study: Dict[str, List[Coordinate]] = {}
    for c in dataset.coordinates:
        by_study.setdefault(c.study_id, []).append(c)
    samples: List[Sample] = []
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
                    samples.extend(_series_samples(dataset, study_id, series, view, coords, layout, config, negatives))
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


__all__ = ["RsnaDataset", "Coordinate", "Sample", "build_samples", "split_studies", "condition_targets", "CONDITIONS"]
