"""Writers for :class:`~lumbar_edge.results.StudyResult`: the per-study JSON report, the
competition's submission CSV and PNG overlays. All outputs are written atomically.

Pure numpy and the standard library: no imaging package is needed (see :mod:`.png`).
"""
from ._io import ReportError, atomic_write_bytes
from .csv_report import read_submission_csv, write_submission_csv
from .json_report import read_study_json, result_from_report, study_json_name, write_study_json
from .overlay import OverlayImage, overlay_images, render_overlay, write_overlays
from .png import encode_png, write_png

__all__ = ["ReportError", "atomic_write_bytes", "write_study_json", "read_study_json",
           "result_from_report", "study_json_name", "write_submission_csv",
           "read_submission_csv", "render_overlay", "write_overlays", "overlay_images", "OverlayImage", "encode_png", "write_png"]
