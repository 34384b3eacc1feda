"""Series classification: declarative rules over plane and sequence tags, description fallback."""
import dataclasses

import pytest

from lumbar_edge.dicom import (DEFAULT_RULES, ClassificationRule, Plane, SeriesKind, Weighting, classify_series,
                               scan_path)
from lumbar_edge.dicom.classify import SequenceInfo


@pytest.mark.parametrize("tags, plane, kind, weighting", [
    (dict(RepetitionTime=550, EchoTime=9, ScanningSequence="SE"), Plane.SAGITTAL, SeriesKind.SAGITTAL_T1, Weighting.T1),
    (dict(RepetitionTime=3500, EchoTime=100, ScanningSequence="SE"), Plane.SAGITTAL, SeriesKind.SAGITTAL_T2,
     Weighting.T2),
    (dict(RepetitionTime=4000, EchoTime=45, InversionTime=160, ScanningSequence=["IR", "SE"]), Plane.SAGITTAL,
     SeriesKind.SAGITTAL_T2, Weighting.STIR),
    (dict(RepetitionTime=4000, EchoTime=45, InversionTime=220, SequenceName="*tir2d1_13"), Plane.SAGITTAL,
     SeriesKind.SAGITTAL_T2, Weighting.STIR),  # Siemens names its STIR "tir"
    (dict(RepetitionTime=2200, EchoTime=12, InversionTime=860, ScanningSequence=["IR", "SE"]), Plane.SAGITTAL,
     SeriesKind.SAGITTAL_T1, Weighting.T1),  # T1 FLAIR
    (dict(RepetitionTime=4200, EchoTime=95), Plane.AXIAL, SeriesKind.AXIAL_T2, Weighting.T2),
    (dict(RepetitionTime=600, EchoTime=10), Plane.AXIAL, SeriesKind.OTHER, Weighting.T1),
    (dict(RepetitionTime=3800, EchoTime=90), Plane.CORONAL, SeriesKind.OTHER, Weighting.T2),
    (dict(RepetitionTime=3000, EchoTime=20), Plane.SAGITTAL, SeriesKind.OTHER, Weighting.PD),
    (dict(RepetitionTime=12, EchoTime=3.7, ScanningSequence="GR"), Plane.SAGITTAL, SeriesKind.OTHER, Weighting.T1),
    (dict(RepetitionTime=550, EchoTime=9, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]), Plane.SAGITTAL,
     SeriesKind.OTHER, Weighting.UNKNOWN),
    (dict(RepetitionTime=3500, EchoTime=100), Plane.MIXED, SeriesKind.OTHER, Weighting.T2),
])
def test_tags_decide_without_a_description(tags, plane, kind, weighting):
    result = classify_series(plane, tags)
    assert (result.kind, result.weighting, result.basis) == (kind, weighting, "tags")


def test_description_is_the_fallback_when_tags_are_missing():
    result = classify_series(Plane.SAGITTAL, {"SeriesDescription": "SAG T2 FSE"})
    assert (result.kind, result.weighting, result.basis) == (SeriesKind.SAGITTAL_T2, Weighting.T2, "description")
    result = classify_series(Plane.UNKNOWN, {"SeriesDescription": "Axial T2"})
    assert result.kind is SeriesKind.AXIAL_T2
    result = classify_series(Plane.SAGITTAL, {"SeriesDescription": "Sag STIR"})
    assert (result.kind, result.weighting) == (SeriesKind.SAGITTAL_T2, Weighting.STIR)
    # The description cannot override the plane read from the orientation.
    result = classify_series(Plane.AXIAL, {"SeriesDescription": "Sagittal T1"})
    assert result.kind is SeriesKind.OTHER and result.weighting is Weighting.T1


def test_description_is_ignored_when_tags_decide():
    # Tags say sagittal T1; a wrong description must not turn it into T2.
    result = classify_series(Plane.SAGITTAL, {"RepetitionTime": 500, "EchoTime": 10, "SeriesDescription": "Sag T2"})
    assert result.kind is SeriesKind.SAGITTAL_T1 and result.basis == "tags"


def test_ambiguous_timing_falls_back_to_the_description():
    tags = {"RepetitionTime": 1200, "EchoTime": 45, "SeriesDescription": "t2_tse_sag"}
    result = classify_series(Plane.SAGITTAL, tags)
    assert (result.kind, result.basis) == (SeriesKind.SAGITTAL_T2, "description")


def test_inversion_without_inversion_time_is_not_stir():
    # The STIR rule needs TI in its range: a missing TI does not hold, and TR 4000 / TE 45 is
    # between the T2 and PD ranges, so nothing matches and there is no description to fall to.
    result = classify_series(Plane.SAGITTAL, {"RepetitionTime": 4000, "EchoTime": 45, "SequenceName": "*tir2d1"})
    assert (result.kind, result.basis) == (SeriesKind.OTHER, "none")
    assert SequenceInfo(sequence_name="*tir2d1").is_inversion_recovery is True
    assert SequenceInfo(scanning_sequence=("SE",)).is_inversion_recovery is False
    assert SequenceInfo().is_inversion_recovery is None


def test_nothing_known_is_other_unknown():
    result = classify_series(Plane.SAGITTAL, {})
    assert (result.kind, result.weighting, result.rule, result.basis) == (
        SeriesKind.OTHER, Weighting.UNKNOWN, None, "none")


def test_rules_are_overridable():
    # A site whose sagittal T2 runs a TE of 50 ms: the default calls it ambiguous (other).
    tags = SequenceInfo(repetition_time=3000, echo_time=50)
    assert classify_series(Plane.SAGITTAL, tags).kind is SeriesKind.OTHER
    site_t2 = ClassificationRule("site sagittal T2", SeriesKind.SAGITTAL_T2, Weighting.T2, planes=(Plane.SAGITTAL,),
                                 tr_ms=(2000, None), te_ms=(45, None))
    assert classify_series(Plane.SAGITTAL, tags, rules=(site_t2, *DEFAULT_RULES)).rule == "site sagittal T2"
    # Rules are plain frozen dataclasses: replace() edits one.
    wider = [dataclasses.replace(r, te_ms=(45.0, None)) if r.name == "sagittal T2" else r for r in DEFAULT_RULES]
    assert classify_series(Plane.SAGITTAL, tags, rules=wider).kind is SeriesKind.SAGITTAL_T2


def test_bad_rules_are_refused():
    with pytest.raises(TypeError, match="ClassificationRule"):
        classify_series(Plane.SAGITTAL, {}, rules=[{"kind": "sagittal_t2"}])
    with pytest.raises(ValueError, match="bad description pattern"):
        ClassificationRule("broken", SeriesKind.OTHER, Weighting.T1, description="(unclosed")


@pytest.mark.parametrize("protocol, kind, weighting", [
    ("sagittal_t1", SeriesKind.SAGITTAL_T1, Weighting.T1), ("sagittal_t2", SeriesKind.SAGITTAL_T2, Weighting.T2),
    ("sagittal_stir", SeriesKind.SAGITTAL_T2, Weighting.STIR), ("axial_t2", SeriesKind.AXIAL_T2, Weighting.T2),
    ("coronal_t2", SeriesKind.OTHER, Weighting.T2),
])
def test_scanned_series_classify_without_description(tmp_path, dcm, protocol, kind, weighting):
    dcm.write_series(tmp_path / "s", protocol, n=4)
    (study,) = scan_path(tmp_path).studies
    (series,) = study.series
    assert series.description == ""
    assert (series.kind, series.weighting, series.classified_by) == (kind, weighting, "tags")


def test_scan_uses_overridden_rules(tmp_path, dcm):
    dcm.write_series(tmp_path / "s", "sagittal_t2", n=3)
    everything_other = [ClassificationRule("all", SeriesKind.OTHER, Weighting.T2, tr_ms=(0, None))]
    (series,) = scan_path(tmp_path, rules=everything_other).studies[0].series
    assert (series.kind, series.rule) == (SeriesKind.OTHER, "all")


def test_three_plane_localizer_is_mixed_and_other(tmp_path, dcm):
    study, series = "1.2.3.4", "1.2.3.4.5"
    for i, iop in enumerate([dcm.SAGITTAL_IOP, dcm.CORONAL_IOP, dcm.AXIAL_IOP]):
        dcm.save(dcm.make_dataset(study_uid=study, series_uid=series, instance_number=i + 1, iop=iop, tr=550, te=9),
             tmp_path / f"{i}.dcm")
    (s,) = scan_path(tmp_path).studies[0].series
    assert (s.plane, s.kind) == (Plane.MIXED, SeriesKind.OTHER)
    assert s.instance_numbers == [1, 2, 3] and s.spacing == pytest.approx(4.0)  # SliceThickness
