"""Series classification: sagittal T1, sagittal T2/STIR, axial T2 or other.

Declarative: :data:`DEFAULT_RULES` is an ordered tuple of :class:`ClassificationRule`; the first
rule whose conditions hold decides. Two passes:

1. Tags: the plane (from ImageOrientationPatient) and the sequence timing and type
   (RepetitionTime, EchoTime, InversionTime, ScanningSequence, ScanOptions, SequenceName,
   ImageType). A condition on a missing tag does not hold.
2. Description: only when no rule matched on the tags (tags missing, or timing between the
   ranges), each rule's SeriesDescription pattern is tried, with its plane condition (a series
   without orientation passes it, as the pattern names the plane).

Nothing matched: OTHER, weighting UNKNOWN. Pass ``rules=`` to :func:`classify_series` or
``scan_path`` to replace the defaults (for a site whose protocol uses other timings).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Tuple

from .geometry import Plane
from .model import SeriesKind, Weighting

#: A closed-open interval [low, high) in milliseconds; None on either side means unbounded.
Range = Tuple[Optional[float], Optional[float]]


def _in_range(value: Optional[float], bounds: Optional[Range]) -> bool:
    if bounds is None:
        return True
    if value is None or not math.isfinite(value):
        return False
    lo, hi = bounds
    return (lo is None or value >= lo) and (hi is None or value < hi)


@dataclass(frozen=True)
class SequenceInfo:
    """The header values classification looks at (one series; times in ms, None when absent)."""

    repetition_time: Optional[float] = None
    echo_time: Optional[float] = None
    inversion_time: Optional[float] = None
    scanning_sequence: Tuple[str, ...] = ()  # e.g. ("SE",), ("IR", "SE")
    sequence_variant: Tuple[str, ...] = ()
    scan_options: Tuple[str, ...] = ()
    sequence_name: str = ""
    image_type: Tuple[str, ...] = ()
    description: str = ""
    n_slices: int = 1

    @property
    def is_inversion_recovery(self) -> Optional[bool]:
        """True when any tag says inversion recovery; False when the sequence tags are present
        and none does; None when nothing is known."""
        if "IR" in self.scanning_sequence or "IR" in self.scan_options:
            return True
        if self.inversion_time is not None and self.inversion_time > 0:
            return True
        # Siemens names its (S)TIR sequences "*tir..."; GE and Philips set ScanningSequence IR.
        if "tir" in self.sequence_name.lower():
            return True
        if self.scanning_sequence or self.sequence_name:
            return False
        return None

    @classmethod
    def from_mapping(cls, tags: Mapping[str, Any], n_slices: int = 1) -> "SequenceInfo":
        """Build from DICOM keywords (a pydicom Dataset or a dict): RepetitionTime, EchoTime,
        InversionTime, ScanningSequence, SequenceVariant, ScanOptions, SequenceName, ImageType,
        SeriesDescription. Values that do not parse are treated as absent."""
        return cls(
            repetition_time=_number(tags.get("RepetitionTime")),
            echo_time=_number(tags.get("EchoTime")),
            inversion_time=_number(tags.get("InversionTime")),
            scanning_sequence=_codes(tags.get("ScanningSequence")),
            sequence_variant=_codes(tags.get("SequenceVariant")),
            scan_options=_codes(tags.get("ScanOptions")),
            sequence_name=_text(tags.get("SequenceName")),
            image_type=_codes(tags.get("ImageType")),
            description=_text(tags.get("SeriesDescription")),
            n_slices=n_slices,
        )

    def to_dict(self) -> dict:
        return {"TR": self.repetition_time, "TE": self.echo_time, "TI": self.inversion_time,
                "ScanningSequence": list(self.scanning_sequence), "ScanOptions": list(self.scan_options),
                "SequenceName": self.sequence_name, "ImageType": list(self.image_type)}


def _number(value: Any) -> Optional[float]:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
        if value is None:
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _codes(value: Any) -> Tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        parts = re.split(r"[\\,\s]+", value)
    else:
        parts = [str(v) for v in value]
    return tuple(p.strip().upper() for p in parts if p and p.strip())


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


@dataclass(frozen=True)
class ClassificationRule:
    """One rule: a series that meets every condition set here is ``kind`` with ``weighting``.

    Conditions (None / empty: not checked): ``planes`` the series plane is one of these;
    ``tr_ms``, ``te_ms``, ``ti_ms`` RepetitionTime, EchoTime, InversionTime lie in [low, high);
    ``inversion`` the sequence is (True) or is not (False) an inversion recovery;
    ``image_type`` this value is in ImageType (e.g. LOCALIZER). ``description`` is a
    case-insensitive regular expression searched in SeriesDescription in the fallback pass only.
    A rule without any tag condition never matches in the tag pass.
    """

    name: str
    kind: SeriesKind
    weighting: Weighting
    planes: Tuple[Plane, ...] = ()
    tr_ms: Optional[Range] = None
    te_ms: Optional[Range] = None
    ti_ms: Optional[Range] = None
    inversion: Optional[bool] = None
    image_type: Optional[str] = None
    description: Optional[str] = None
    _pattern: Optional["re.Pattern[str]"] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SeriesKind(self.kind))
        object.__setattr__(self, "weighting", Weighting(self.weighting))
        object.__setattr__(self, "planes", tuple(Plane(p) for p in self.planes))
        if self.description is not None:
            try:
                object.__setattr__(self, "_pattern", re.compile(self.description, re.IGNORECASE))
            except re.error as exc:
                raise ValueError(f"rule {self.name!r}: bad description pattern {self.description!r}: {exc}") from None

    @property
    def has_tag_conditions(self) -> bool:
        return any(c is not None for c in (self.tr_ms, self.te_ms, self.ti_ms, self.inversion, self.image_type))

    def plane_ok(self, plane: Plane, *, unknown_passes: bool = False) -> bool:
        if not self.planes:
            return True
        return plane in self.planes or (unknown_passes and plane is Plane.UNKNOWN)

    def matches_tags(self, plane: Plane, seq: SequenceInfo) -> bool:
        """Whether the plane and the sequence tags meet every tag condition of this rule."""
        if not self.has_tag_conditions or not self.plane_ok(plane):
            return False
        if self.image_type is not None and self.image_type.upper() not in seq.image_type:
            return False
        if self.inversion is not None and seq.is_inversion_recovery is not self.inversion:
            return False
        return (_in_range(seq.repetition_time, self.tr_ms) and _in_range(seq.echo_time, self.te_ms)
                and _in_range(seq.inversion_time, self.ti_ms))

    def matches_description(self, plane: Plane, seq: SequenceInfo) -> bool:
        """Whether the description pattern is found in SeriesDescription (and the plane fits)."""
        if self._pattern is None or not seq.description:
            return False
        return self.plane_ok(plane, unknown_passes=True) and self._pattern.search(seq.description) is not None


@dataclass(frozen=True)
class Classification:
    """The outcome for one series: its kind and weighting, which rule decided and on what basis
    (``tags``, ``description`` or ``none``)."""

    kind: SeriesKind
    weighting: Weighting
    rule: Optional[str]
    basis: str


_LONG_TR: Range = (1500.0, None)
_LONG_TE: Range = (60.0, None)
_SHORT_TR: Range = (0.0, 1000.0)
# Spin-echo T1 runs TR ~300-800 ms; a TR of a few ms is a gradient-echo localizer or 3D sequence,
# not the 2D sagittal T1 the models read.
_SE_T1_TR: Range = (100.0, 1000.0)
_SHORT_TE: Range = (0.0, 30.0)
_STIR_TI: Range = (50.0, 350.0)  # STIR nulls fat at ~150 ms at 1.5 T, ~220 ms at 3 T
_T1_FLAIR_TI: Range = (350.0, 1500.0)
# Description fragments; "t1" must not match "t10" etc.
_SAG = r"(sag)"
_AX = r"(ax|tra)"
_T1 = r"t1(?![0-9])"
_T2 = r"(t2(?![0-9])|stir)"

DEFAULT_RULES: Tuple[ClassificationRule, ...] = (
    ClassificationRule("localizer", SeriesKind.OTHER, Weighting.UNKNOWN, image_type="LOCALIZER",
                       description=r"(locali[sz]er|scout|survey|pilot)"),
    ClassificationRule("sagittal STIR", SeriesKind.SAGITTAL_T2, Weighting.STIR, planes=(Plane.SAGITTAL,),
                       inversion=True, ti_ms=_STIR_TI, description=rf"{_SAG}.*stir|stir.*{_SAG}"),
    ClassificationRule("sagittal T2", SeriesKind.SAGITTAL_T2, Weighting.T2, planes=(Plane.SAGITTAL,),
                       tr_ms=_LONG_TR, te_ms=_LONG_TE, description=rf"{_SAG}.*{_T2}|{_T2}.*{_SAG}"),
    ClassificationRule("sagittal T1", SeriesKind.SAGITTAL_T1, Weighting.T1, planes=(Plane.SAGITTAL,),
                       tr_ms=_SE_T1_TR, te_ms=_SHORT_TE, description=rf"{_SAG}.*{_T1}|{_T1}.*{_SAG}"),
    ClassificationRule("sagittal T1 FLAIR", SeriesKind.SAGITTAL_T1, Weighting.T1, planes=(Plane.SAGITTAL,),
                       inversion=True, ti_ms=_T1_FLAIR_TI, te_ms=_SHORT_TE),
    ClassificationRule("axial T2", SeriesKind.AXIAL_T2, Weighting.T2, planes=(Plane.AXIAL,),
                       tr_ms=_LONG_TR, te_ms=_LONG_TE, description=rf"{_AX}.*{_T2}|{_T2}.*{_AX}"),
    # Any other plane: still report the weighting.
    ClassificationRule("STIR", SeriesKind.OTHER, Weighting.STIR, inversion=True, ti_ms=_STIR_TI, description=r"stir"),
    ClassificationRule("T2", SeriesKind.OTHER, Weighting.T2, tr_ms=_LONG_TR, te_ms=_LONG_TE, description=r"t2(?![0-9])"),
    ClassificationRule("T1", SeriesKind.OTHER, Weighting.T1, tr_ms=_SHORT_TR, te_ms=_SHORT_TE, description=_T1),
    ClassificationRule("T1 FLAIR", SeriesKind.OTHER, Weighting.T1, inversion=True, ti_ms=_T1_FLAIR_TI, te_ms=_SHORT_TE),
    ClassificationRule("PD", SeriesKind.OTHER, Weighting.PD, tr_ms=_LONG_TR, te_ms=(0.0, 40.0),
                       description=r"(pd(?![a-z])|proton)"),
)


def classify_series(plane: Plane, sequence: "SequenceInfo | Mapping[str, Any]",
                    rules: Optional[Sequence[ClassificationRule]] = None) -> Classification:
    """Classify a series from its plane and sequence tags (``SequenceInfo`` or a mapping of
    DICOM keywords such as a pydicom Dataset), with ``rules`` (default :data:`DEFAULT_RULES`).

    Raises TypeError when an entry of ``rules`` is not a ClassificationRule.
    """
    rules = DEFAULT_RULES if rules is None else tuple(rules)
    for rule in rules:
        if not isinstance(rule, ClassificationRule):
            raise TypeError(f"rules must be ClassificationRule objects, got {type(rule).__name__}")
    seq = sequence if isinstance(sequence, SequenceInfo) else SequenceInfo.from_mapping(sequence)
    plane = Plane(plane)
    for rule in rules:
        if rule.matches_tags(plane, seq):
            return Classification(rule.kind, rule.weighting, rule.name, "tags")
    for rule in rules:
        if rule.matches_description(plane, seq):
            return Classification(rule.kind, rule.weighting, rule.name, "description")
    return Classification(SeriesKind.OTHER, Weighting.UNKNOWN, None, "none")
