"""The per-study JSON report: ``{study_id}.json``, the schema of :meth:`StudyResult.to_dict`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from ..results import Finding, Keypoint, StudyResult
from ._io import ReportError, atomic_write_bytes, safe_name


def study_json_name(study_id: object) -> str:
    """The report's file name for ``study_id`` (made safe for any file system)."""
    return f"{safe_name(study_id)}.json"


def write_study_json(result: StudyResult, out_dir: Union[str, Path]) -> Path:
    """Write ``result`` as ``out_dir/{study_id}.json`` (atomically; the folder is created).

    The document is ``result.to_dict()``: schema name and version, the not-for-clinical-use
    disclaimer, the 25 findings with probabilities and keypoints, warnings and timings. Strict
    JSON: raises :class:`ReportError` when the result holds NaN or infinite numbers, and
    ``OSError`` when the file cannot be written.
    """
    doc = result.to_dict()
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except ValueError as exc:
        raise ReportError(f"study {result.study_id}: the report holds a non-finite number ({exc})") from exc
    return atomic_write_bytes(Path(out_dir) / study_json_name(result.study_id), (text + "\n").encode("utf-8"))


def read_study_json(path: Union[str, Path]) -> dict:
    """Read a report written by :func:`write_study_json`; raises :class:`ReportError` when the
    file is not JSON or not a lumbar-edge study report, ``OSError`` when it cannot be read."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path} is not a JSON report ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != "lumbar-edge/study-report":
        raise ReportError(f"{path} is not a lumbar-edge study report")
    return doc


def result_from_report(doc: dict) -> StudyResult:
    """The :class:`StudyResult` a report document holds: ids, findings with their probabilities
    and keypoints, series, warnings, timings and grader (no pixels or heatmaps, which a report
    does not keep). ``write_submission_csv`` of it writes what it wrote for the original.

    Raises :class:`ReportError` when the document lacks a field or holds one of the wrong type.
    """
    try:
        findings = []
        for f in doc["findings"]:
            kp = f["keypoint"]
            keypoint = None if kp is None else Keypoint(
                series_uid=str(kp["series_uid"]), series_id=str(kp["series_id"]), sop_uid=str(kp["sop_uid"]),
                instance_number=int(kp["instance_number"]), x=float(kp["x"]), y=float(kp["y"]),
                patient_mm=tuple(float(v) for v in kp["patient_mm"]), score=float(kp["score"]),
                frame=None if kp.get("frame") is None else int(kp["frame"]))
            probs = f["probabilities"]
            findings.append(Finding(str(f["condition"]), str(f["level"]),
                                    (float(probs["normal_mild"]), float(probs["moderate"]), float(probs["severe"])),
                                    keypoint, source=str(f["source"])))
        return StudyResult(study_id=str(doc["study_id"]), study_uid=str(doc["study_uid"]), findings=findings,
                           series_used=dict(doc.get("series_used") or {}),
                           series_used_all={k: list(v) for k, v in (doc.get("series_used_all") or {}).items()},
                           selection=dict(doc.get("selection") or {}), warnings=list(doc.get("warnings") or []),
                           timings=dict(doc.get("timings_s") or {}), model=str(doc.get("model", "")),
                           backend=str(doc.get("backend", "")), model_sha256=str(doc.get("model_sha256", "")))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportError(f"study report of {doc.get('study_id', '?') if isinstance(doc, dict) else '?'} is "
                          f"incomplete ({type(exc).__name__}: {exc})") from exc
