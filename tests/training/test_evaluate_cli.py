"""`lumbar-edge evaluate PREDICTIONS --labels TRAIN_CSV [--json]`."""
import csv
import json
import math
import subprocess
import sys

import pytest

from lumbar_edge.cli import main
from lumbar_edge.labels import LABEL_COLUMNS, SEVERITY_COLUMNS

L = math.log

# Two studies, one labelled row per condition group (other columns empty).
LABELS = {"11": {"spinal_canal_stenosis_l4_l5": "Severe", "left_neural_foraminal_narrowing_l5_s1": "Moderate"},
          "22": {"spinal_canal_stenosis_l4_l5": "Normal/Mild", "right_subarticular_stenosis_l1_l2": "Normal/Mild"}}
PREDS = {"11_spinal_canal_stenosis_l4_l5": (0.1, 0.3, 0.6),
         "11_left_neural_foraminal_narrowing_l5_s1": (0.25, 0.5, 0.25),
         "22_spinal_canal_stenosis_l4_l5": (0.8, 0.15, 0.05),
         "22_right_subarticular_stenosis_l1_l2": (0.4, 0.4, 0.2)}
SPINAL = (4 * -L(0.6) + 1 * -L(0.8)) / 5
FORAMINAL = -L(0.5)
SUBARTICULAR = -L(0.4)
ANY = (4 * -L(0.6) + 1 * -L(1 - 0.05)) / 5
SCORE = (SPINAL + FORAMINAL + SUBARTICULAR + ANY) / 4


def _write(tmp_path, labels=LABELS, preds=PREDS, fill=True):
    """Write train.csv and a submission; with ``fill`` every row of every study gets a prediction."""
    lab = tmp_path / "train.csv"
    with open(lab, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", *LABEL_COLUMNS])
        for study, values in labels.items():
            w.writerow([study] + [values.get(c, "") for c in LABEL_COLUMNS])
    pred = tmp_path / "submission.csv"
    with open(pred, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row_id", *SEVERITY_COLUMNS])
        for study in labels:
            for c in LABEL_COLUMNS:
                row_id = f"{study}_{c}"
                if row_id in preds or fill:
                    w.writerow([row_id, *preds.get(row_id, (1 / 3, 1 / 3, 1 / 3))])
    return pred, lab


def test_evaluate_prints_the_score_and_its_parts(tmp_path, capsys):
    pred, lab = _write(tmp_path)
    assert main(["evaluate", str(pred), "--labels", str(lab)]) == 0
    out = capsys.readouterr().out
    assert f"score  {SCORE:7.4f}" in out
    for name, value in (("spinal", SPINAL), ("foraminal", FORAMINAL), ("subarticular", SUBARTICULAR),
                        ("any_severe_spinal", ANY)):
        assert f"{name:<20}{value:7.4f}" in out
    assert "2 studies, 4 labelled rows scored" in out


def test_evaluate_json(tmp_path, capsys):
    pred, lab = _write(tmp_path)
    assert main(["evaluate", str(pred), "--labels", str(lab), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert math.isclose(data["score"], SCORE, rel_tol=1e-12)
    assert math.isclose(data["terms"]["any_severe_spinal"], ANY, rel_tol=1e-12)
    # one labelled row per condition: AUC undefined -> null with a reason, never NaN in JSON
    auc = data["per_condition"]["spinal_canal_stenosis"]["auc"]
    assert auc["per_class"]["moderate"] is None and "moderate" in auc["reasons"]


def test_evaluate_user_errors_exit_2_with_one_line(tmp_path, capsys):
    labels = dict(LABELS, **{"33": {"spinal_canal_stenosis_l1_l2": "Moderate"}})
    pred, lab = _write(tmp_path, labels=labels, fill=False)  # study 33 gets no rows
    assert main(["evaluate", str(pred), "--labels", str(lab)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "have no predictions: 33" in err and "Traceback" not in err
    assert main(["evaluate", str(pred), "--labels", str(lab), "--only-predicted-studies"]) == 0
    assert f"score  {SCORE:7.4f}" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "missing.csv"), "--labels", str(lab)]) == 2
    assert "not found" in capsys.readouterr().err


def test_evaluate_runs_without_importing_torch(tmp_path):
    pred, lab = _write(tmp_path)
    code = ("import sys; from lumbar_edge.cli import main;"
            f"rc = main(['evaluate', {str(pred)!r}, '--labels', {str(lab)!r}]);"
            "print('heavy=' + ','.join(m for m in ('torch', 'pandas', 'sklearn') if m in sys.modules), rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("heavy= 0")


def _reports_and_coordinates(tmp_path):
    """Two study reports written by the real writer, and label coordinates for five of their
    keypoints: 3-4-5 px off, 30 px off (another level), on another series, and a label whose
    finding came from the prior (no keypoint)."""
    from lumbar_edge.aggregate import shared_point_warning
    from lumbar_edge.labels import CONDITIONS
    from lumbar_edge.report import write_study_json
    from lumbar_edge.results import Finding, Keypoint, StudyResult

    def kp(series, instance, x, y):
        return Keypoint(series_uid=f"1.{series}", series_id=str(series), sop_uid=f"1.{series}.{instance}",
                        instance_number=instance, x=x, y=y, patient_mm=(0.0, 0.0, 0.0), score=0.9)

    points = {("11", "spinal_canal_stenosis", "l4_l5"): kp(7, 9, 100.0, 100.0),
              ("11", "left_neural_foraminal_narrowing", "l5_s1"): kp(8, 3, 50.0, 60.0),
              ("22", "spinal_canal_stenosis", "l4_l5"): kp(7, 9, 10.0, 10.0),
              ("22", "right_subarticular_stenosis", "l1_l2"): kp(9, 1, 40.0, 40.0)}
    out = tmp_path / "results"
    for study in ("11", "22"):
        findings = [Finding(c, lv, (0.8, 0.15, 0.05), points.get((study, c, lv)),
                            source="model" if (study, c, lv) in points else "prior")
                    for c in CONDITIONS for lv in ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")]
        warnings = [shared_point_warning("sagittal T1 (left foramina)", ["L3/L4", "L4/L5"])] if study == "22" else []
        write_study_json(StudyResult(study_id=study, study_uid=f"2.{study}", findings=findings, warnings=warnings), out)
    (out / "summary.json").write_text("{}")  # not a study report: skipped
    coords = tmp_path / "coords.csv"
    with open(coords, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "series_id", "instance_number", "condition", "level", "x", "y"])
        w.writerow(["11", "7", "9", "Spinal Canal Stenosis", "L4/L5", "103", "104"])  # 5 px, same slice
        w.writerow(["11", "8", "4", "Left Neural Foraminal Narrowing", "L5/S1", "50", "90"])  # 30 px, other slice
        w.writerow(["22", "7", "9", "Spinal Canal Stenosis", "L4/L5", "10", "10"])  # exact
        w.writerow(["22", "5", "1", "Right Subarticular Stenosis", "L1/L2", "40", "40"])  # labelled on another series
        w.writerow(["22", "7", "9", "Spinal Canal Stenosis", "L1/L2", "10", "10"])  # prior: no keypoint
    return out, coords


def test_evaluate_measures_the_reports_keypoints_against_labelled_points(tmp_path, capsys):
    from lumbar_edge.training.metrics import report_localisation

    out, coords = _reports_and_coordinates(tmp_path)
    result = report_localisation(out, coords)
    assert result["n_reports"] == 2 and result["n_unmatched"] == 2
    spinal, foraminal = result["groups"]["spinal"], result["groups"]["foraminal"]
    assert spinal["n"] == 2 and math.isclose(spinal["median_px"], 2.5) and spinal["far"] == 0
    assert spinal["on_labelled_slice"] == 1.0
    assert foraminal["n"] == 1 and math.isclose(foraminal["max_px"], 30.0) and foraminal["far"] == 1
    assert foraminal["on_labelled_slice"] == 0.0 and "subarticular" not in result["groups"]
    assert result["overall"]["n"] == 3 and result["overall"]["far"] == 1
    # Within 5 px (inclusive: the 3-4-5 point counts) and on the labelled slice or the next one
    # (instance 3 against the labelled 4 does; the point is still 30 px off).
    assert spinal["within_px"] == 1.0 and foraminal["within_px"] == 0.0
    assert foraminal["near_labelled_slice"] == 1.0 and result["overall"]["within_px"] == pytest.approx(2 / 3)
    assert result["shared_point_reports"] == ["22"]

    pred, lab = _write(tmp_path)
    assert main(["evaluate", str(pred), "--labels", str(lab), "--coordinates", str(coords), "--reports", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"score  {SCORE:7.4f}" in text and "2 reports, 2 labels without a model keypoint" in text
    assert "reports warning that levels share a point: 1 of 2 (22)" in text
    row = next(line for line in text.splitlines() if line.startswith("foramina (sagittal T1)"))
    assert row.split()[-3:] == ["1", "0.0%", "100.0%"]  # far, on the labelled slice, slice +-1
    assert main(["evaluate", str(pred), "--labels", str(lab), "--coordinates", str(coords), "--reports", str(out),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["localisation"]["overall"]["far"] == 1
    assert main(["evaluate", str(pred), "--labels", str(lab), "--reports", str(out)]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(["evaluate", str(pred), "--labels", str(lab), "--coordinates", str(coords),
                 "--reports", str(tmp_path)]) == 2  # holds no study report
    assert "no lumbar-edge study report" in capsys.readouterr().err
