"""Domain objects of a folder scan: studies, series, instances and the files that were skipped.

They hold header values only; pixels are decoded on request (:meth:`Instance.pixel_array`,
:meth:`Series.pixels`), so a scan of thousands of files stays cheap.
"""
from __future__ import annotations

import enum
import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .geometry import Plane, SliceGeometry


class SeriesKind(str, enum.Enum):
    """What a series is for the models; the values match the model view names."""

    SAGITTAL_T1 = "sagittal_t1"
    SAGITTAL_T2 = "sagittal_t2"  # T2 or STIR (RSNA's "Sagittal T2/STIR")
    AXIAL_T2 = "axial_t2"
    OTHER = "other"

    @property
    def label(self) -> str:
        """The RSNA series description of this kind ("Sagittal T2/STIR"), or "other"."""
        return {"sagittal_t1": "Sagittal T1", "sagittal_t2": "Sagittal T2/STIR", "axial_t2": "Axial T2"}.get(
            self.value, "other")


class Weighting(str, enum.Enum):
    """The contrast weighting of an MR series, from its sequence timing."""

    T1 = "T1"
    T2 = "T2"
    STIR = "STIR"
    PD = "PD"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SkippedFile:
    """A file (or folder) the scan did not use. ``category`` is a short code for counting
    (``not_dicom``, ``unreadable``, ``no_pixel_data``, ``duplicate`` ...); ``reason`` is the
    one-line explanation shown to the user."""

    path: Path
    reason: str
    category: str = "other"

    def to_dict(self) -> dict:
        return {"path": str(self.path), "reason": self.reason, "category": self.category}


@dataclass(eq=False)
class Instance:
    """One image file of a series (header values only; pixels are decoded on request).

    ``file`` is the path as a string, ``path`` the same as a Path (made on first use: a scan
    creates thousands of instances). ``image_position``, ``image_orientation`` and ``pixel_spacing`` are the raw tag values
    (None when absent); ``geometry`` is built from them on first use (None without position or
    orientation; a missing PixelSpacing counts as 1 mm so positions stay right).
    """

    file: str
    sop_uid: str
    instance_number: int
    rows: int
    columns: int
    image_position: Optional[Tuple[float, float, float]] = None
    image_orientation: Optional[Tuple[float, ...]] = None
    pixel_spacing: Optional[Tuple[float, float]] = None
    photometric: str = "MONOCHROME2"
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    transfer_syntax_uid: str = ""
    bits_stored: int = 16
    pixel_representation: int = 0
    #: PixelPaddingValue / PixelPaddingRangeLimit as stored values (None when absent): pixels
    #: in that range are background the scanner filled in, not anatomy.
    pixel_padding_value: Optional[int] = None
    pixel_padding_range_limit: Optional[int] = None
    #: The 0-based frame of a multi-frame (Enhanced MR) file; None for a single-frame file.
    frame: Optional[int] = None
    #: Which stack of its series the slice belongs to (0 for a series of one parallel stack).
    stack: int = 0
    #: mm along the series normal (set when the series is sorted; None without geometry).
    position: Optional[float] = None

    @functools.cached_property
    def path(self) -> Path:
        return Path(self.file)

    @functools.cached_property
    def geometry(self) -> Optional[SliceGeometry]:
        """The slice's patient-space geometry, or None when position or orientation is missing
        or unusable. (Built lazily: a scan creates thousands of instances and most callers look
        at the geometry of a few.)"""
        if self.image_position is None or self.image_orientation is None:
            return None
        try:
            return SliceGeometry.from_tags(self.image_position, self.image_orientation, self.pixel_spacing or (1.0, 1.0))
        except ValueError:
            return None

    def pixel_array(self) -> np.ndarray:
        """The image as float32 [rows, columns], rescaled to modality values (RescaleSlope and
        RescaleIntercept applied), MONOCHROME1 inverted so that higher is brighter, and padding
        pixels (PixelPaddingValue) NaN.

        Reads the file now. Raises MissingDependencyError when its transfer syntax needs a codec
        plugin that is not installed (``lumbar-edge[codecs]``), DicomError when the file cannot
        be read or its pixel data cannot be decoded.
        """
        from .pixels import decode_instance

        return decode_instance(self)

    def to_dict(self) -> dict:
        return {"path": self.file, "sop_uid": self.sop_uid, "frame": self.frame, "instance_number": self.instance_number,
                "rows": self.rows, "columns": self.columns, "position_mm": self.position,
                "transfer_syntax_uid": self.transfer_syntax_uid, "photometric": self.photometric,
                "rescale_slope": self.rescale_slope, "rescale_intercept": self.rescale_intercept,
                "geometry": self.geometry.to_dict() if self.geometry is not None else None}


@dataclass(eq=False)
class Series:
    """One series: its instances sorted along the slice normal, and what it was classified as.

    A series is one or more *stacks* of parallel slices: lumbar axials are often acquired as
    several short stacks, each angled along its own disc. ``instances`` holds the stacks one
    after another (:attr:`stacks` gives their index ranges), each in ascending position along its
    own normal (series without geometry: by instance number); ``normal`` is the first stack's,
    ``spacing`` the median distance between consecutive slices of a stack (mm).
    ``classified_by`` says whether the sequence tags, the description or nothing decided the kind.
    ``warnings`` are what the report should say when the series is used (a slice left out, a
    pixel spacing taken from ImagerPixelSpacing); ``problem`` is set when the series cannot be
    used at all, with the reason.
    """

    series_uid: str
    series_id: str
    series_number: Optional[int]
    description: str
    kind: SeriesKind
    plane: Plane
    weighting: Weighting
    instances: List[Instance]
    spacing: Optional[float]
    rows: int
    columns: int
    pixel_spacing: Optional[Tuple[float, float]]
    normal: Optional[np.ndarray]
    modality: str = ""
    classified_by: str = "tags"
    rule: Optional[str] = None  # the name of the classification rule that matched
    sequence: Dict[str, object] = field(default_factory=dict)  # TR, TE, TI, ScanningSequence ...
    warnings: List[str] = field(default_factory=list)
    problem: Optional[str] = None

    @property
    def stacks(self) -> List[Tuple[int, int]]:
        """``(start, end)`` index ranges of the stacks in :attr:`instances`, in order."""
        out: List[Tuple[int, int]] = []
        start = 0
        for i in range(1, len(self.instances) + 1):
            if i == len(self.instances) or self.instances[i].stack != self.instances[start].stack:
                out.append((start, i))
                start = i
        return out

    def stack_range(self, index: int) -> Tuple[int, int]:
        """The ``(start, end)`` range of the stack holding sorted index ``index``; raises IndexError."""
        if not 0 <= index < len(self.instances):
            raise IndexError(f"slice index {index} is outside a series of {len(self.instances)} slices")
        stack = self.instances[index].stack
        start, end = index, index + 1
        while start > 0 and self.instances[start - 1].stack == stack:
            start -= 1
        while end < len(self.instances) and self.instances[end].stack == stack:
            end += 1
        return start, end

    def neighbour_indices(self, centre: int, count: int) -> List[int]:
        """The ``count`` slice indices a 2.5D input stacks around ``centre``: its neighbours in its
        own stack (a neighbour in another, differently angled stack is not the next slice),
        repeated at the stack's ends as :func:`~lumbar_edge.preprocess.channel_indices` does."""
        from ..preprocess import channel_indices

        start, end = self.stack_range(centre)
        return [start + i for i in channel_indices(end - start, centre - start, count)]

    @property
    def positions(self) -> List[Optional[float]]:
        """Slice positions (mm along ``normal``) in the sorted order."""
        return [inst.position for inst in self.instances]

    @property
    def instance_numbers(self) -> List[int]:
        """Instance numbers in the sorted order (the slice order as the scanner numbered it)."""
        return [inst.instance_number for inst in self.instances]

    def instance_by_number(self, number: int) -> Instance:
        """The instance with InstanceNumber ``number``; raises KeyError when there is none."""
        for inst in self.instances:
            if inst.instance_number == number:
                return inst
        raise KeyError(f"series {self.series_id} has no instance number {number}")

    def index_of_number(self, number: int) -> int:
        """The sorted index of the instance with InstanceNumber ``number``; raises KeyError."""
        for i, inst in enumerate(self.instances):
            if inst.instance_number == number:
                return i
        raise KeyError(f"series {self.series_id} has no instance number {number}")

    def pixels(self, index: int) -> np.ndarray:
        """Decode the slice at sorted ``index`` (float32, see :meth:`Instance.pixel_array`).

        Raises IndexError for an index outside the series, and what ``pixel_array`` raises.
        """
        return self.instances[index].pixel_array()

    def volume(self) -> np.ndarray:
        """All slices decoded and stacked in sorted order: float32 [slices, rows, columns]."""
        return np.stack([inst.pixel_array() for inst in self.instances])

    def to_dict(self) -> dict:
        return {"series_uid": self.series_uid, "series_id": self.series_id, "series_number": self.series_number,
                "description": self.description, "modality": self.modality, "kind": self.kind.value,
                "plane": self.plane.value, "weighting": self.weighting.value, "classified_by": self.classified_by,
                "rule": self.rule, "sequence": dict(self.sequence), "slices": len(self.instances), "rows": self.rows,
                "columns": self.columns, "pixel_spacing": list(self.pixel_spacing) if self.pixel_spacing else None,
                "spacing_mm": self.spacing, "normal": self.normal.tolist() if self.normal is not None else None,
                "stacks": len(self.stacks), "warnings": list(self.warnings), "problem": self.problem,
                "instances": [inst.to_dict() for inst in self.instances]}


@dataclass(eq=False)
class Study:
    """One study: its series (ordered by series number) and patient/study header values."""

    study_uid: str
    study_id: str
    series: List[Series]
    patient_id: str = ""
    study_date: str = ""
    study_description: str = ""

    def series_of_kind(self, kind: SeriesKind) -> List[Series]:
        """The series classified as ``kind`` (a SeriesKind or its value), in series order."""
        kind = SeriesKind(kind)
        return [s for s in self.series if s.kind is kind]

    def to_dict(self) -> dict:
        return {"study_uid": self.study_uid, "study_id": self.study_id, "patient_id": self.patient_id,
                "study_date": self.study_date, "study_description": self.study_description,
                "series": [s.to_dict() for s in self.series]}


@dataclass(eq=False)
class ScanResult:
    """What a folder scan found: the studies, and every file or folder skipped with its reason."""

    root: Path
    studies: List[Study]
    skipped: List[SkippedFile]
    n_files: int  # files looked at (every non-folder entry met while walking)
    seconds: float = 0.0

    @property
    def n_instances(self) -> int:
        return sum(len(se.instances) for st in self.studies for se in st.series)

    @property
    def n_series(self) -> int:
        return sum(len(st.series) for st in self.studies)

    def skip_counts(self) -> Dict[str, int]:
        """How many entries were skipped per category, most frequent first."""
        return dict(Counter(s.category for s in self.skipped).most_common())

    def summary(self) -> str:
        """One line: studies, series, images, files, time and skips per category."""
        from .summary import summary_line

        return summary_line(self)

    def to_dict(self) -> dict:
        """A JSON-serialisable form of the whole scan."""
        return {"root": str(self.root), "n_files": self.n_files, "n_studies": len(self.studies),
                "n_series": self.n_series, "n_instances": self.n_instances, "seconds": round(self.seconds, 4),
                "skip_counts": self.skip_counts(), "summary": self.summary(),
                "studies": [st.to_dict() for st in self.studies], "skipped": [s.to_dict() for s in self.skipped]}
