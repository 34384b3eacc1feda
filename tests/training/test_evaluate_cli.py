"""`lumbar-edge evaluate PREDICTIONS --labels TRAIN_CSV [--json]`."""
import csv
import json
import math
import subprocess
import sys

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
