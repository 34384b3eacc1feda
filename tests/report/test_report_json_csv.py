"""Per-study JSON reports and the submission CSV."""
import json
import os
import random

import numpy as np
import pytest

from lumbar_edge.labels import CONDITIONS, LABEL_COLUMNS, LEVELS
from lumbar_edge.report import ReportError, read_study_json, read_submission_csv, write_study_json, write_submission_csv
from lumbar_edge.results import NOT_FOR_CLINICAL_USE, REPORT_SCHEMA_VERSION, Finding, Keypoint, StudyResult


def make_result(study_id="1001", seed=0, shuffle=True):
    """A full result: 25 findings with probabilities from a Dirichlet draw (so they sum to 1 only
    to float precision), keypoints on some, prior on others, in shuffled order."""
    rng = np.random.default_rng(seed)
    findings = []
    for c in CONDITIONS:
        for i, lv in enumerate(LEVELS):
            p = tuple(float(v) for v in rng.dirichlet([2, 1, 1]))
            kp = None if (i + len(c)) % 4 == 0 else Keypoint(
                series_uid=f"1.2.{len(c)}", series_id=str(len(c)), sop_uid=f"1.2.{len(c)}.{i}", instance_number=i + 1,
                x=float(rng.uniform(0, 256)), y=float(rng.uniform(0, 256)), patient_mm=(1.5, -2.0, 30.25), score=0.75)
            findings.append(Finding(c, lv, p, kp, source="prior" if kp is None else "model"))
    if shuffle:
        random.Random(seed).shuffle(findings)
    return StudyResult(study_id=study_id, study_uid=f"1.2.840.{study_id}", findings=findings,
                       series_used={"sagittal_t2": "1.2.21"}, warnings=["axial series missing"],
                       timings={"infer": 0.5}, model="tiny", backend="onnxruntime/fp32",
                       slices={("a", "b"): np.zeros((2, 2), np.float32)})


# -- JSON ---------------------------------------------------------------------------------------

def test_json_report_round_trips_with_schema_and_disclaimer(tmp_path):
    result = make_result()
    path = write_study_json(result, tmp_path / "reports")
    assert path == tmp_path / "reports" / "1001.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc == json.loads(json.dumps(result.to_dict()))
    assert doc["schema_version"] == REPORT_SCHEMA_VERSION
    assert doc["disclaimer"] == NOT_FOR_CLINICAL_USE
    assert len(doc["findings"]) == 25
    assert "slices" not in doc  # pixels stay out of the report
    assert read_study_json(path) == doc
    assert [p.name for p in path.parent.iterdir()] == ["1001.json"]


def test_json_overwrites_and_unsafe_study_ids_become_safe_names(tmp_path):
    write_study_json(make_result("../evil/1"), tmp_path)
    path = write_study_json(make_result("../evil/1", seed=1), tmp_path)
    assert path.parent == tmp_path and path.name == "_evil_1.json"
    assert json.loads(path.read_text())["study_id"] == "../evil/1"


def test_non_finite_numbers_are_refused_and_nothing_is_written(tmp_path):
    result = make_result()
    result.timings["infer"] = float("nan")
    with pytest.raises(ReportError, match="non-finite"):
        write_study_json(result, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_report(tmp_path, monkeypatch):
    path = write_study_json(make_result(), tmp_path)
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_study_json(make_result(seed=5), tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["1001.json"]  # no temporary file left behind


def test_read_study_json_rejects_other_files(tmp_path):
    (tmp_path / "a.json").write_text('{"x": 1}')
    (tmp_path / "b.json").write_text("not json")
    for name in ("a.json", "b.json"):
        with pytest.raises(ReportError):
            read_study_json(tmp_path / name)


# -- CSV ----------------------------------------------------------------------------------------

def test_submission_csv_rows_in_study_then_column_order(tmp_path):
    results = [make_result("2002", seed=1), make_result("1001", seed=2)]
    path = write_submission_csv(results, tmp_path / "out" / "submission.csv")
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "row_id,normal_mild,moderate,severe"
    rows = read_submission_csv(path)
    assert len(rows) == 50
    expected_ids = [f"{sid}_{col}" for sid in ("2002", "1001") for col in LABEL_COLUMNS]
    assert [r[0] for r in rows] == expected_ids
    for row in rows:
        assert all(0.0 <= p <= 1.0 for p in row[1:])
        assert abs(sum(row[1:]) - 1.0) < 1e-12
    # Values are written exactly: they read back as the same floats.
    by_id = {f"{r.study_id}_{f.column}": f.probabilities for r in results for f in r.findings}
    assert all(tuple(r[1:]) == by_id[r[0]] for r in rows)


@pytest.mark.parametrize("damage", ["missing", "duplicate", "nan", "sum", "negative"])
def test_incomplete_or_invalid_findings_are_refused(tmp_path, damage):
    result = make_result(shuffle=False)
    f0 = result.findings[0]
    if damage == "missing":
        del result.findings[3]
    elif damage == "duplicate":
        result.findings.append(f0)
    else:
        probs = {"nan": (float("nan"), 0.5, 0.5), "sum": (0.5, 0.3, 0.3), "negative": (1.2, -0.2, 0.0)}[damage]
        result.findings[0] = Finding(f0.condition, f0.level, probs, f0.keypoint)
    path = tmp_path / "submission.csv"
    with pytest.raises(ReportError, match="1001"):
        write_submission_csv([result], path)
    assert not path.exists()


def test_the_same_study_twice_is_refused(tmp_path):
    with pytest.raises(ReportError, match="twice"):
        write_submission_csv([make_result(), make_result(seed=3)], tmp_path / "s.csv")


def test_read_submission_csv_checks_header_and_fields(tmp_path):
    bad_header = tmp_path / "a.csv"
    bad_header.write_text("id,a,b,c\nx,1,0,0\n")
    bad_row = tmp_path / "b.csv"
    bad_row.write_text("row_id,normal_mild,moderate,severe\nx,1,0\n")
    bad_value = tmp_path / "c.csv"
    bad_value.write_text("row_id,normal_mild,moderate,severe\nx,1,zero,0\n")
    for path in (bad_header, bad_row, bad_value):
        with pytest.raises(ReportError):
            read_submission_csv(path)
