"""The findings as a DICOM Comprehensive Structured Report.

Content tree (Comprehensive SR, SOP class 1.2.840.10008.5.1.4.1.1.88.33)::

    CONTAINER  (18748-4, LN, "Diagnostic imaging report")                      root, SEPARATE
      HAS OBS CONTEXT  CODE    Observer Type = Device
      HAS OBS CONTEXT  UIDREF  Device Observer UID / TEXT Name, Manufacturer, Model Name
      CONTAINS  TEXT   Algorithm Name, Algorithm Version, Comment (not for clinical use)
      CONTAINS  CONTAINER (99LUMBAR SCS, "Spinal canal stenosis")          one per finding (25)
        HAS CONCEPT MOD  CODE  Finding Site = (99LUMBAR L4-L5, "L4/L5 intervertebral disc level")
        CONTAINS  CODE   Severity = Normal/Mild | Moderate | Severe (the most probable grade)
        CONTAINS  NUM    Probability of normal/mild, of moderate, of severe      (UCUM "1")
        CONTAINS  TEXT   Basis of finding: "model" or "class prior (...)"
        CONTAINS  NUM    Keypoint detection score                       (model findings only)
        CONTAINS  SCOORD POINT (column, row) "Keypoint"                 (model findings only)
          SELECTED FROM  IMAGE  the MR slice the keypoint was read on (SOP class + instance,
                                and ReferencedFrameNumber for a frame of an Enhanced MR object)

Condition, level and grade codes are this project's own (coding scheme ``99LUMBAR``, declared
in the Coding Scheme Identification Sequence); the structural codes are DCM, LN, SCT and UCUM.
SCOORD coordinates follow PS3.3 C.18.6.1.2: the top left corner of the top left pixel is
(0, 0), so a keypoint at pixel centre (x, y) is the point (x + 0.5, y + 0.5). Every referenced
instance is listed in the Current Requested Procedure Evidence Sequence.
"""
from __future__ import annotations

import datetime as _dt
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import MRImageStorage

from ..labels import LEVELS, SEVERITIES, level_title
from ..results import NOT_FOR_CLINICAL_USE, Finding, StudyResult
from .dicom_common import ResultUids, new_result_dataset

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SCHEME = "99LUMBAR"
SR_SERIES_NUMBER = 9101

Code = Tuple[str, str, str]  # (value, scheme designator, meaning)

DOCUMENT_TITLE: Code = ("18748-4", "LN", "Diagnostic imaging report")
OBSERVER_TYPE: Code = ("121005", "DCM", "Observer Type")
DEVICE: Code = ("121007", "DCM", "Device")
DEVICE_OBSERVER_UID: Code = ("121012", "DCM", "Device Observer UID")
DEVICE_OBSERVER_NAME: Code = ("121013", "DCM", "Device Observer Name")
DEVICE_OBSERVER_MANUFACTURER: Code = ("121014", "DCM", "Device Observer Manufacturer")
DEVICE_OBSERVER_MODEL: Code = ("121015", "DCM", "Device Observer Model Name")
ALGORITHM_NAME: Code = ("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION: Code = ("111003", "DCM", "Algorithm Version")
COMMENT: Code = ("121106", "DCM", "Comment")
FINDING_SITE: Code = ("363698007", "SCT", "Finding Site")
SEVERITY: Code = ("246112005", "SCT", "Severity")
NO_UNITS: Code = ("1", "UCUM", "no units")

CONDITION_CODES: Mapping[str, Code] = {
    "spinal_canal_stenosis": ("SCS", SCHEME, "Spinal canal stenosis"),
    "left_neural_foraminal_narrowing": ("LNFN", SCHEME, "Left neural foraminal narrowing"),
    "right_neural_foraminal_narrowing": ("RNFN", SCHEME, "Right neural foraminal narrowing"),
    "left_subarticular_stenosis": ("LSS", SCHEME, "Left subarticular stenosis"),
    "right_subarticular_stenosis": ("RSS", SCHEME, "Right subarticular stenosis"),
}
LEVEL_CODES: Mapping[str, Code] = {
    lv: (level_title(lv).replace("/", "-"), SCHEME, f"{level_title(lv)} intervertebral disc level") for lv in LEVELS}
GRADE_CODES: Tuple[Code, ...] = (("NORMAL-MILD", SCHEME, "Normal/Mild"), ("MODERATE", SCHEME, "Moderate"),
                                 ("SEVERE", SCHEME, "Severe"))
PROBABILITY_CODES: Tuple[Code, ...] = (("P-NORMAL-MILD", SCHEME, "Probability of normal/mild"),
                                       ("P-MODERATE", SCHEME, "Probability of moderate"),
                                       ("P-SEVERE", SCHEME, "Probability of severe"))
BASIS: Code = ("BASIS", SCHEME, "Basis of finding")
KEYPOINT: Code = ("KEYPOINT", SCHEME, "Keypoint")
KEYPOINT_SCORE: Code = ("KEYPOINT-SCORE", SCHEME, "Keypoint detection score")


# -- content items ---------------------------------------------------------------------------------

def code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _item(relationship: Optional[str], value_type: str, concept: Optional[Code], **values) -> Dataset:
    """A content item; ``values`` are its value attributes by keyword."""
    item = Dataset()
    if relationship is not None:
        item.RelationshipType = relationship
    item.ValueType = value_type
    if concept is not None:
        item.ConceptNameCodeSequence = DicomSequence([code_item(concept)])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def text(relationship: str, concept: Code, value: str) -> Dataset:
    return _item(relationship, "TEXT", concept, TextValue=value)


def code(relationship: str, concept: Code, value: Code) -> Dataset:
    return _item(relationship, "CODE", concept, ConceptCodeSequence=DicomSequence([code_item(value)]))


def uidref(relationship: str, concept: Code, value: str) -> Dataset:
    return _item(relationship, "UIDREF", concept, UID=value)


def num(relationship: str, concept: Code, value: float, unit: Code = NO_UNITS) -> Dataset:
    item = _item(relationship, "NUM", concept)
    measured = Dataset()
    measured.NumericValue = _decimal_string(value)
    measured.FloatingPointValue = float(value)
    measured.MeasurementUnitsCodeSequence = DicomSequence([code_item(unit)])
    item.MeasuredValueSequence = DicomSequence([measured])
    return item


def container(relationship: Optional[str], concept: Code, children: Sequence[Dataset]) -> Dataset:
    return _item(relationship, "CONTAINER", concept, ContinuityOfContent="SEPARATE",
                 ContentSequence=DicomSequence(list(children)))


def image_reference(relationship: str, sop_class_uid: str, sop_instance_uid: str,
                    frame: Optional[int] = None) -> Dataset:
    """An IMAGE content item; ``frame`` (0-based) of a multi-frame image is referenced as its
    1-based ReferencedFrameNumber."""
    item = _item(relationship, "IMAGE", None)
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class_uid
    ref.ReferencedSOPInstanceUID = sop_instance_uid
    if frame is not None:
        ref.ReferencedFrameNumber = int(frame) + 1
    item.ReferencedSOPSequence = DicomSequence([ref])
    return item


def point(relationship: str, concept: Code, column: float, row: float, image: Dataset) -> Dataset:
    return _item(relationship, "SCOORD", concept, GraphicType="POINT", GraphicData=[float(column), float(row)],
                 ContentSequence=DicomSequence([image]))


def _decimal_string(value: float) -> str:
    """A DS (at most 16 characters) as close to ``value`` as fits."""
    for digits in range(12, 0, -1):
        out = f"{float(value):.{digits}g}"
        if len(out) <= 16:
            return out
    return "0"


# -- the report ------------------------------------------------------------------------------------

def keypoint_scoord(finding: Finding) -> Tuple[float, float]:
    """The SR point (column, row) of a finding's keypoint: pixel centres are at +0.5."""
    kp = finding.keypoint
    return kp.x + 0.5, kp.y + 0.5


def finding_container(finding: Finding, sop_classes: Mapping[str, str]) -> Dataset:
    """The CONTAINER of one finding (see the module docstring)."""
    grade = max(range(3), key=lambda i: finding.probabilities[i])
    children = [code("HAS CONCEPT MOD", FINDING_SITE, LEVEL_CODES[finding.level]),
                code("CONTAINS", SEVERITY, GRADE_CODES[grade])]
    children += [num("CONTAINS", PROBABILITY_CODES[i], p) for i, p in enumerate(finding.probabilities)]
    if finding.keypoint is None:
        children.append(text("CONTAINS", BASIS, "class prior (the series or keypoint this finding needs "
                                                "was not found)"))
    else:
        kp = finding.keypoint
        column, row = keypoint_scoord(finding)
        children.append(text("CONTAINS", BASIS, "model"))
        children.append(num("CONTAINS", KEYPOINT_SCORE, kp.score))
        children.append(point("CONTAINS", KEYPOINT, column, row,
                              image_reference("SELECTED FROM", sop_classes.get(kp.sop_uid, MRImageStorage), kp.sop_uid,
                                              kp.frame)))
    return container("CONTAINS", CONDITION_CODES[finding.condition], children)


def evidence_sequence(result: StudyResult, sop_classes: Mapping[str, str]) -> DicomSequence:
    """Hierarchical SOP Instance Reference of every instance the report references."""
    by_series: Dict[str, List[str]] = {}
    for f in result.findings:
        if f.keypoint is not None and f.keypoint.sop_uid not in by_series.setdefault(f.keypoint.series_uid, []):
            by_series[f.keypoint.series_uid].append(f.keypoint.sop_uid)
    series_items = []
    for series_uid, sops in by_series.items():
        refs = []
        for sop in sops:
            ref = Dataset()
            ref.ReferencedSOPClassUID = sop_classes.get(sop, MRImageStorage)
            ref.ReferencedSOPInstanceUID = sop
            refs.append(ref)
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedSOPSequence = DicomSequence(refs)
        series_items.append(series)
    if not series_items:
        return DicomSequence([])
    study = Dataset()
    study.StudyInstanceUID = result.study_uid
    study.ReferencedSeriesSequence = DicomSequence(series_items)
    return DicomSequence([study])


def build_sr(result: StudyResult, source: Dataset, uids: ResultUids, *, model_name: str,
             sop_classes: Optional[Mapping[str, str]] = None, revision: int = 1,
             now: Optional[_dt.datetime] = None) -> Dataset:
    """The Comprehensive SR of ``result``, in the study of ``source`` (any instance of it).

    ``sop_classes`` maps the referenced SOPInstanceUIDs to their SOP classes (MR Image Storage
    where not given).
    """
    sop_classes = dict(sop_classes or {})
    now = now or _dt.datetime.now()
    description = "lumbar-edge findings" + (f" (revision {revision})" if revision > 1 else "")
    ds = new_result_dataset(source, sop_class_uid=COMPREHENSIVE_SR, sop_instance_uid=uids.sr_instance,
                            series_uid=uids.sr_series, modality="SR", series_number=SR_SERIES_NUMBER + 10 * (revision - 1),
                            series_description=description, instance_number=1, model_name=model_name, now=now)
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence([])
    ds.PerformedProcedureCodeSequence = DicomSequence([])
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PreliminaryFlag = "PRELIMINARY"
    evidence = evidence_sequence(result, sop_classes)
    if len(evidence):
        ds.CurrentRequestedProcedureEvidenceSequence = evidence
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "lumbar-edge codes"
    scheme.CodingSchemeResponsibleOrganization = "lumbar-edge"
    ds.CodingSchemeIdentificationSequence = DicomSequence([scheme])

    children = [
        code("HAS OBS CONTEXT", OBSERVER_TYPE, DEVICE),
        uidref("HAS OBS CONTEXT", DEVICE_OBSERVER_UID, uids.device),
        text("HAS OBS CONTEXT", DEVICE_OBSERVER_NAME, "lumbar-edge"),
        text("HAS OBS CONTEXT", DEVICE_OBSERVER_MANUFACTURER, "lumbar-edge"),
        text("HAS OBS CONTEXT", DEVICE_OBSERVER_MODEL, model_name[:64] or "lumbar-edge model"),
        text("CONTAINS", ALGORITHM_NAME, f"lumbar-edge {model_name}"),
        text("CONTAINS", ALGORITHM_VERSION, f"{ds.SoftwareVersions} ({result.backend})"),
        text("CONTAINS", COMMENT, NOT_FOR_CLINICAL_USE),
    ]
    children += [finding_container(f, sop_classes) for f in result.findings]
    root = container(None, DOCUMENT_TITLE, children)
    for keyword in ("ValueType", "ConceptNameCodeSequence", "ContinuityOfContent", "ContentSequence"):
        setattr(ds, keyword, root[keyword].value)
    return ds


def read_sr_findings(ds: Dataset) -> List[dict]:
    """The findings of an SR made by :func:`build_sr`, as dicts: ``condition``, ``level``,
    ``severity``, ``probabilities`` (3 floats), ``point`` ((column, row) or None),
    ``sop_uid`` (the referenced instance or None) and ``frame_number`` (its 1-based
    ReferencedFrameNumber, None for a single-frame image). For tests and downstream readers."""
    conditions = {c[0]: name for name, c in CONDITION_CODES.items()}
    levels = {c[0]: name for name, c in LEVEL_CODES.items()}
    grades = {c[0]: SEVERITIES[i] for i, c in enumerate(GRADE_CODES)}
    probs_index = {c[0]: i for i, c in enumerate(PROBABILITY_CODES)}
    out = []
    for item in ds.ContentSequence:
        concept = item.ConceptNameCodeSequence[0].CodeValue
        if item.ValueType != "CONTAINER" or concept not in conditions:
            continue
        entry = {"condition": conditions[concept], "level": None, "severity": None, "probabilities": [None] * 3,
                 "point": None, "sop_uid": None, "frame_number": None, "basis": None}
        for child in item.ContentSequence:
            name = child.ConceptNameCodeSequence[0].CodeValue
            if name == FINDING_SITE[0]:
                entry["level"] = levels[child.ConceptCodeSequence[0].CodeValue]
            elif name == SEVERITY[0]:
                entry["severity"] = grades[child.ConceptCodeSequence[0].CodeValue]
            elif name in probs_index:
                entry["probabilities"][probs_index[name]] = float(child.MeasuredValueSequence[0].FloatingPointValue)
            elif name == BASIS[0]:
                entry["basis"] = child.TextValue
            elif name == KEYPOINT[0]:
                entry["point"] = tuple(float(v) for v in child.GraphicData)
                ref = child.ContentSequence[0].ReferencedSOPSequence[0]
                entry["sop_uid"] = ref.ReferencedSOPInstanceUID
                if "ReferencedFrameNumber" in ref:
                    entry["frame_number"] = int(ref.ReferencedFrameNumber)
        out.append(entry)
    return out
