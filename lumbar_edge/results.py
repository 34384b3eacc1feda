"""What the pipeline produces for a study: 25 findings, each with probabilities and a keypoint.

These domain objects are what every writer (JSON, CSV, PNG overlays, DICOM SR) consumes; they
hold no pixels and no framework types, only plain numbers and strings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

from .labels import CONDITIONS, LEVELS, SEVERITIES, SEVERITY_COLUMNS

#: Version of the per-study JSON report schema; bump on any incompatible change.
REPORT_SCHEMA_VERSION = "1.0"

NOT_FOR_CLINICAL_USE = ("NOT FOR CLINICAL USE: research software; the bundled models are trained on "
                        "synthetic phantom data only.")


@dataclass(frozen=True)
class SliceHeatmaps:
    """The model's heatmaps of one slice (``maps``: column name -> map on the model's output
    grid) and the grid they are on: the :class:`~lumbar_edge.preprocess.Letterbox` the slice's
    input was made with and the :class:`~lumbar_edge.dicom.orient.Reorientation` applied to
    the stored slice first (None: as stored). Overlays need both to put a map on the stored
    slice."""

    maps: Dict[str, object]
    letterbox: object
    orient: object = None


@dataclass(frozen=True)
class Keypoint:
    """Where a finding was read: a pixel of one source slice, and the same point in patient mm."""

    series_uid: str
    series_id: str
    sop_uid: str
    instance_number: int
    x: float  # column, source pixels (pixel centres at integers)
    y: float  # row
    patient_mm: Tuple[float, float, float]  # DICOM patient coordinates (LPS)
    score: float  # heatmap peak probability in [0, 1]
    #: The 0-based frame of a multi-frame (Enhanced MR) source; None for a single-frame one.
    #: ``instance_number`` is then the 1-based frame number (ReferencedFrameNumber).
    frame: Optional[int] = None

    @property
    def slice_key(self) -> Tuple[str, ...]:
        """The key of its source slice in :attr:`StudyResult.slices` (see :func:`slice_key`)."""
        return slice_key(self.series_uid, self.sop_uid, self.frame)


def slice_key(series_uid: str, sop_uid: str, frame: Optional[int] = None) -> Tuple[str, ...]:
    """The key naming one source slice: ``(series_uid, sop_uid)`` for a single-frame instance,
    ``(series_uid, sop_uid, frame)`` for a frame of a multi-frame one (whose frames share one
    SOPInstanceUID)."""
    return (series_uid, sop_uid) if frame is None else (series_uid, sop_uid, frame)


@dataclass(frozen=True)
class Finding:
    """One of the 25 condition-level predictions.

    ``probabilities`` are (normal/mild, moderate, severe) and sum to 1. ``source`` is ``"model"``
    when read from the network, ``"prior"`` when the needed series or keypoint was missing and
    the class prior stands in (the keypoint is then ``None``).
    """

    condition: str
    level: str
    probabilities: Tuple[float, float, float]
    keypoint: Optional[Keypoint]
    source: str = "model"

    @property
    def column(self) -> str:
        return f"{self.condition}_{self.level}"

    @property
    def severity(self) -> str:
        p = self.probabilities
        return SEVERITIES[max(range(3), key=lambda i: p[i])]


@dataclass
class StudyResult:
    """The pipeline's answer for one study."""

    study_id: str
    study_uid: str
    findings: List[Finding]
    series_used: Dict[str, str] = field(default_factory=dict)  # view -> SeriesInstanceUID
    #: Views served by several series together (axial T2 from series covering different discs):
    #: view -> every SeriesInstanceUID used, the one in ``series_used`` first.
    series_used_all: Dict[str, List[str]] = field(default_factory=dict)
    #: Why a view's series was chosen where there was a choice (repeated series, several stacks).
    selection: Dict[str, str] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)  # stage -> seconds
    model: str = ""
    backend: str = ""
    #: sha256 of the model file the engine ran (the bundle's entry for its precision): with
    #: ``model`` and ``backend``, which grader made the report (resumed and merged runs check it).
    model_sha256: str = ""
    #: Source pixels of the slices the keypoints were read on, {slice_key: 2-D float32} (slice_key:
    #: (series_uid, sop_uid), plus the frame for a multi-frame source), kept for the overlay
    #: writer; not part of the JSON report.
    slices: Dict[Tuple[str, str], object] = field(default_factory=dict, repr=False)
    #: The pixel height / width in mm of those slices whose pixels are not square (overlays
    #: show them in mm proportions); a slice not in it has square pixels.
    slice_aspects: Dict[Tuple[str, str], float] = field(default_factory=dict, repr=False)
    #: Optional per-keypoint heatmaps for overlays, {slice_key: SliceHeatmaps}.
    heatmaps: Dict[Tuple[str, str], "SliceHeatmaps"] = field(default_factory=dict, repr=False)

    def finding(self, condition: str, level: str) -> Finding:
        """The finding for ``condition`` at ``level``; raises ``KeyError`` if absent."""
        for f in self.findings:
            if f.condition == condition and f.level == level:
                return f
        raise KeyError(f"{condition}_{level}")

    def submission_rows(self) -> List[Tuple[str, float, float, float]]:
        """Rows of the competition's submission CSV: (row_id, normal_mild, moderate, severe)."""
        return [(f"{self.study_id}_{f.column}", *f.probabilities) for f in self.findings]

    def to_dict(self) -> dict:
        """The versioned JSON report (schema ``REPORT_SCHEMA_VERSION``)."""
        return {
            "schema": "lumbar-edge/study-report",
            "schema_version": REPORT_SCHEMA_VERSION,
            "disclaimer": NOT_FOR_CLINICAL_USE,
            "study_id": self.study_id,
            "study_uid": self.study_uid,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "backend": self.backend,
            "series_used": dict(self.series_used),
            "series_used_all": {k: list(v) for k, v in self.series_used_all.items()},
            "selection": dict(self.selection),
            "findings": [
                {
                    "condition": f.condition,
                    "level": f.level,
                    "row_id": f"{self.study_id}_{f.column}",
                    "severity": f.severity,
                    "probabilities": dict(zip(SEVERITY_COLUMNS, f.probabilities)),
                    "source": f.source,
                    "keypoint": None if f.keypoint is None else asdict(f.keypoint),
                }
                for f in self.findings
            ],
            "warnings": list(self.warnings),
            "timings_s": dict(self.timings),
        }


def ordered_columns() -> List[Tuple[str, str]]:
    """(condition, level) pairs in the competition's column order."""
    return [(c, lv) for c in CONDITIONS for lv in LEVELS]
