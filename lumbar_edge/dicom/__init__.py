"""DICOM study ingestion: scan a folder, group studies and series, classify series, sort slices
by geometry, decode pixels lazily, map pixels to patient space.

Entry point: :func:`scan_path` -> :class:`ScanResult`; :func:`format_scan` renders it as text.
"""
from .classify import DEFAULT_RULES, Classification, ClassificationRule, SequenceInfo, classify_series
from .geometry import Plane, SliceGeometry, plane_of_normal
from .model import Instance, ScanResult, Series, SeriesKind, SkippedFile, Study, Weighting
from .scan import scan_path
from .summary import format_scan

__all__ = [
    "scan_path", "format_scan", "ScanResult", "Study", "Series", "Instance", "SkippedFile", "SliceGeometry",
    "SeriesKind", "Plane", "Weighting", "ClassificationRule", "DEFAULT_RULES", "classify_series",
    "Classification", "SequenceInfo", "plane_of_normal",
]
