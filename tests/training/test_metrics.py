"""The competition metric and diagnostics (training/metrics.py), numpy only."""
import csv
import math
import subprocess
import sys

import numpy as np
import pytest

from lumbar_edge.errors import InputError
from lumbar_edge.labels import LABEL_COLUMNS, SEVERITIES, SEVERITY_COLUMNS
from lumbar_edge.training import metrics as M

L = math.log

# ----------------------------------------------------------------------------- hand-computed example
# Two studies; only these rows are labelled (everything else in train.csv is empty).
HAND_LABELS = {
    "1": {"spinal_canal_stenosis_l1_l2": 2, "spinal_canal_stenosis_l2_l3": 0,
          "left_neural_foraminal_narrowing_l1_l2": 1, "left_subarticular_stenosis_l1_l2": 0},
    "2": {"spinal_canal_stenosis_l1_l2": 1, "left_neural_foraminal_narrowing_l1_l2": 0,
          "right_subarticular_stenosis_l4_l5": 2},
}
HAND_PREDS = {
    "1_spinal_canal_stenosis_l1_l2": (0.2, 0.3, 0.5),
    "1_spinal_canal_stenosis_l2_l3": (0.7, 0.2, 0.1),
    "2_spinal_canal_stenosis_l1_l2": (0.3, 0.6, 0.1),
    "1_left_neural_foraminal_narrowing_l1_l2": (0.1, 0.8, 0.1),
    "2_left_neural_foraminal_narrowing_l1_l2": (0.9, 0.05, 0.05),
    "1_left_subarticular_stenosis_l1_l2": (0.6, 0.3, 0.1),
    "2_right_subarticular_stenosis_l4_l5": (0.5, 0.25, 0.25),
}
# Unlabelled rows are predicted "severe" with 0.99: if they were not dropped, study 2's
# any-severe prediction (max over its spinal rows) would become 0.99 instead of 0.1.
UNLABELLED_PRED = (0.005, 0.005, 0.99)

# weights: normal/mild 1, moderate 2, severe 4 (by TRUE class)
HAND_SPINAL = (4 * -L(0.5) + 1 * -L(0.7) + 2 * -L(0.6)) / (4 + 1 + 2)
HAND_FORAMINAL = (2 * -L(0.8) + 1 * -L(0.9)) / (2 + 1)
HAND_SUBARTICULAR = (1 * -L(0.6) + 4 * -L(0.25)) / (1 + 4)
# study 1: any severe = 1, weight max(4, 1) = 4, p = max(0.5, 0.1) = 0.5 -> -log(0.5)
# study 2: any severe = 0, weight max(2) = 2,    p = 0.1                 -> -log(1 - 0.1)
HAND_ANY = (4 * -L(0.5) + 2 * -L(0.9)) / (4 + 2)
HAND_SCORE = (HAND_SPINAL + HAND_FORAMINAL + HAND_SUBARTICULAR + HAND_ANY) / 4


def hand_labels_full():
    return {s: {c: HAND_LABELS[s].get(c, -1) for c in LABEL_COLUMNS} for s in HAND_LABELS}


def hand_predictions_full():
    return {f"{s}_{c}": HAND_PREDS.get(f"{s}_{c}", UNLABELLED_PRED) for s in HAND_LABELS for c in LABEL_COLUMNS}


def write_labels_csv(path, labels):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", *LABEL_COLUMNS])
        for study, classes in labels.items():
            w.writerow([study] + [SEVERITIES[classes[c]] if classes.get(c, -1) >= 0 else "" for c in LABEL_COLUMNS])
    return path


def write_predictions_csv(path, preds):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row_id", *SEVERITY_COLUMNS])
        for row_id, p in preds.items():
            w.writerow([row_id, *(repr(float(v)) for v in p)])
    return path


def test_hand_computed_example():
    result = M.competition_score(hand_predictions_full(), hand_labels_full())
    assert result["terms"]["spinal"] == pytest.approx(HAND_SPINAL, rel=1e-12)
    assert result["terms"]["foraminal"] == pytest.approx(HAND_FORAMINAL, rel=1e-12)
    assert result["terms"]["subarticular"] == pytest.approx(HAND_SUBARTICULAR, rel=1e-12)
    assert result["terms"]["any_severe_spinal"] == pytest.approx(HAND_ANY, rel=1e-12)
    assert result["score"] == pytest.approx(HAND_SCORE, rel=1e-12)
    assert result["n_rows"] == 7 and result["n_studies"] == 2 and result["n_unlabelled_dropped"] == 43


def test_hand_example_from_csv_files(tmp_path):
    labels = write_labels_csv(tmp_path / "train.csv", hand_labels_full())
    preds = write_predictions_csv(tmp_path / "submission.csv", hand_predictions_full())
    result = M.score_submission(preds, labels)
    assert result["score"] == pytest.approx(HAND_SCORE, rel=1e-12)
    assert result["per_condition"]["spinal_canal_stenosis"]["n"] == 3
    # argmax: severe(2) right, normal(0) right, moderate(1) right
    assert result["per_condition"]["spinal_canal_stenosis"]["accuracy"] == 1.0
    assert result["per_condition"]["right_subarticular_stenosis"]["accuracy"] == 0.0


def test_any_severe_scalar_weights_the_fourth_term():
    result = M.competition_score(hand_predictions_full(), hand_labels_full(), any_severe_scalar=2.0)
    expected = (HAND_SPINAL + HAND_FORAMINAL + HAND_SUBARTICULAR + 2.0 * HAND_ANY) / 5.0
    assert result["score"] == pytest.approx(expected, rel=1e-12)


def test_rows_are_renormalised_and_clipped_as_sklearn_1_2_does():
    eps = np.finfo(np.float64).eps
    halved = {r: tuple(0.5 * v for v in p) for r, p in hand_predictions_full().items()}
    result = M.competition_score(halved, hand_labels_full())
    assert result["terms"]["spinal"] == pytest.approx(HAND_SPINAL, rel=1e-12)
    assert result["terms"]["foraminal"] == pytest.approx(HAND_FORAMINAL, rel=1e-12)
    assert result["terms"]["subarticular"] == pytest.approx(HAND_SUBARTICULAR, rel=1e-12)
    # As in the official code, the any-severe prediction is the max of the RAW severe values:
    # study 1 -> 0.5 * 0.5 = 0.25; study 2 -> 0.5 * 0.1 = 0.05.
    assert result["terms"]["any_severe_spinal"] == pytest.approx((4 * -L(0.25) + 2 * -L(0.95)) / 6, rel=1e-12)
    assert result["n_rows_renormalised"] == 7
    # sklearn 1.2 clips BEFORE renormalising, so a value above 1 is first cut to 1 - eps.
    assert M.log_loss([0], np.array([[1.4, 0.4, 0.2]])) == pytest.approx(-L((1 - eps) / (1.6 - eps)), rel=1e-12)
    # A zero probability for the true class is clipped to eps, then the row renormalised.
    assert M.log_loss([0], np.array([[0.0, 1.0, 0.0]])) == pytest.approx(-L(eps / (1 + eps)), rel=1e-12)
    assert M.log_loss([1], np.array([1.0])) == pytest.approx(-L(1 - eps), rel=1e-6)


def _reference_score(labels, preds, scalar=1.0):
    """The official recipe written out with loops and math.log (independent of metrics.py)."""
    weight_of = {0: 1.0, 1: 2.0, 2: 4.0}
    sums = {"spinal": [0.0, 0.0], "foraminal": [0.0, 0.0], "subarticular": [0.0, 0.0]}
    worst = {}
    for study, classes in labels.items():
        for col, cls in classes.items():
            if cls < 0:
                continue
            group = next(g for g in ("spinal", "foraminal", "subarticular") if g in col)
            p = [min(max(v, 2.220446049250313e-16), 1 - 2.220446049250313e-16) for v in preds[f"{study}_{col}"]]
            total = sum(p)
            sums[group][0] += weight_of[cls] * -math.log(p[cls] / total)
            sums[group][1] += weight_of[cls]
            if group == "spinal":
                lab, wt, pr = worst.get(study, (0, 0.0, 0.0))
                worst[study] = (max(lab, int(cls == 2)), max(wt, weight_of[cls]), max(pr, preds[f"{study}_{col}"][2]))
    terms = [sums[g][0] / sums[g][1] for g in ("spinal", "foraminal", "subarticular")]
    num = den = 0.0
    for lab, wt, pr in worst.values():
        pr = min(max(pr, 2.220446049250313e-16), 1 - 2.220446049250313e-16)
        num += wt * -math.log(pr if lab else 1 - pr)
        den += wt
    terms.append(num / den)
    return (sum(terms[:3]) + scalar * terms[3]) / (3 + scalar), terms


def _random_case(seed, n_studies=12, missing=0.15, normalised=True):
    rng = np.random.default_rng(seed)
    labels, preds = {}, {}
    for s in range(n_studies):
        study = str(1000 + s)
        labels[study] = {c: (int(rng.choice(3, p=[0.7, 0.2, 0.1])) if rng.random() > missing else -1)
                         for c in LABEL_COLUMNS}
        for c in LABEL_COLUMNS:
            p = rng.dirichlet([1.0, 1.0, 1.0])
            preds[f"{study}_{c}"] = tuple(p if normalised else p * rng.uniform(0.5, 2.0))
    return labels, preds


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_loop_reimplementation_on_random_inputs(seed):
    labels, preds = _random_case(seed, normalised=seed % 2 == 0)
    expected_score, expected_terms = _reference_score(labels, preds, scalar=1.0 + seed / 3)
    result = M.competition_score(preds, labels, any_severe_scalar=1.0 + seed / 3)
    assert [result["terms"][t] for t in M.SCORE_TERMS] == pytest.approx(expected_terms, rel=1e-10)
    assert result["score"] == pytest.approx(expected_score, rel=1e-10)


def test_matches_sklearn_log_loss_when_available():
    metrics = pytest.importorskip("sklearn.metrics")
    labels, preds = _random_case(42, n_studies=30)
    rows = [(s, c, cls) for s, cl in labels.items() for c, cls in cl.items() if cls >= 0]
    terms = []
    for group in ("spinal", "foraminal", "subarticular"):
        sel = [(s, c, cls) for s, c, cls in rows if group in c]
        y = np.eye(3)[[cls for _, _, cls in sel]]
        p = np.array([preds[f"{s}_{c}"] for s, c, _ in sel])
        terms.append(metrics.log_loss(y, p, sample_weight=[(1, 2, 4)[cls] for _, _, cls in sel]))
    studies = sorted({s for s, c, _ in rows if "spinal" in c})
    y_any = [max(int(cls == 2) for s2, c, cls in rows if s2 == s and "spinal" in c) for s in studies]
    w_any = [max((1, 2, 4)[cls] for s2, c, cls in rows if s2 == s and "spinal" in c) for s in studies]
    p_any = [max(preds[f"{s}_{c}"][2] for s2, c, _ in rows if s2 == s and "spinal" in c) for s in studies]
    terms.append(metrics.log_loss(y_any, p_any, sample_weight=w_any, labels=[0, 1]))
    result = M.competition_score(preds, labels)
    assert [result["terms"][t] for t in M.SCORE_TERMS] == pytest.approx(terms, rel=1e-9)
    assert result["score"] == pytest.approx(np.mean(terms), rel=1e-9)


def test_only_predicted_studies_and_missing_studies_or_rows(tmp_path):
    labels = hand_labels_full()
    labels["3"] = {c: 0 for c in LABEL_COLUMNS}
    with pytest.raises(InputError, match="1 labelled studies have no predictions: 3"):
        M.competition_score(hand_predictions_full(), labels)
    result = M.competition_score(hand_predictions_full(), labels, only_predicted_studies=True)
    assert result["score"] == pytest.approx(HAND_SCORE, rel=1e-12)

    preds = hand_predictions_full()
    del preds["2_spinal_canal_stenosis_l1_l2"]
    with pytest.raises(InputError, match="1 labelled rows have no prediction: 2_spinal_canal_stenosis_l1_l2"):
        M.competition_score(preds, hand_labels_full())
    sparse = {s: dict(HAND_LABELS[s], spinal_canal_stenosis_l3_l4=None) for s in HAND_LABELS}  # None / absent = unlabelled
    assert M.competition_score(hand_predictions_full(), sparse)["score"] == pytest.approx(HAND_SCORE, rel=1e-12)
    preds = hand_predictions_full()
    del preds["2_spinal_canal_stenosis_l5_s1"]  # unlabelled row: not needed
    assert M.competition_score(preds, hand_labels_full())["score"] == pytest.approx(HAND_SCORE, rel=1e-12)

    preds = hand_predictions_full()
    preds["77_spinal_canal_stenosis_l1_l2"] = (1, 0, 0)
    with pytest.raises(InputError, match="not in the labels: 77"):
        M.competition_score(preds, hand_labels_full())


def test_malformed_prediction_files(tmp_path):
    labels = write_labels_csv(tmp_path / "train.csv", hand_labels_full())

    def score_text(text):
        path = tmp_path / "p.csv"
        path.write_text(text)
        return M.score_submission(path, labels)

    header = "row_id,normal_mild,moderate,severe\n"
    with pytest.raises(InputError, match="lacks column\\(s\\) severe"):
        score_text("row_id,normal_mild,moderate\n1_spinal_canal_stenosis_l1_l2,1,0\n")
    with pytest.raises(InputError, match="unknown row_id '1_spinal_canal_stenosis_l9_l10'"):
        score_text(header + "1_spinal_canal_stenosis_l9_l10,1,0,0\n")
    with pytest.raises(InputError, match=":2: moderate of 1_spinal_canal_stenosis_l1_l2 is not a number"):
        score_text(header + "1_spinal_canal_stenosis_l1_l2,0.5,abc,0.5\n")
    with pytest.raises(InputError, match="finite number >= 0"):
        score_text(header + "1_spinal_canal_stenosis_l1_l2,0.5,-0.1,0.6\n")
    with pytest.raises(InputError, match="finite number >= 0"):
        score_text(header + "1_spinal_canal_stenosis_l1_l2,nan,0.5,0.5\n")
    with pytest.raises(InputError, match=":3: duplicate row_id"):
        score_text(header + "1_spinal_canal_stenosis_l1_l2,1,0,0\n1_spinal_canal_stenosis_l1_l2,1,0,0\n")
    with pytest.raises(InputError, match="empty"):
        score_text("")
    with pytest.raises(InputError, match="not found"):
        M.score_submission(tmp_path / "nope.csv", labels)


def test_malformed_label_files(tmp_path):
    preds = write_predictions_csv(tmp_path / "p.csv", hand_predictions_full())
    bad = tmp_path / "train.csv"
    bad.write_text("study_id,spinal_canal_stenosis_l1_l2\n1,Severe\n")
    with pytest.raises(InputError, match="lacks column\\(s\\) spinal_canal_stenosis_l2_l3"):
        M.score_submission(preds, bad)
    labels = hand_labels_full()
    path = write_labels_csv(tmp_path / "train2.csv", labels)
    text = path.read_text().replace("Severe", "Very Severe", 1)
    path.write_text(text)
    with pytest.raises(InputError, match="is 'Very Severe'; expected Normal/Mild, Moderate, Severe or empty"):
        M.score_submission(preds, path)
    path = write_labels_csv(tmp_path / "train3.csv", labels)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(InputError, match="duplicate study_id 1"):
        M.score_submission(preds, path)


def test_binary_roc_auc_by_hand_ties_and_one_class():
    assert M.binary_roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == (0.75, None)
    # pairs (pos, neg): (0.5 vs 0.5) tie = 1/2, (0.5 vs 0.2) = 1, (0.9 vs both) = 2 -> 3.5 / 4
    assert M.binary_roc_auc([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.2])[0] == pytest.approx(0.875)
    auc, reason = M.binary_roc_auc([1, 1, 1], [0.2, 0.3, 0.4])
    assert math.isnan(auc) and "0 negative" in reason
    report = M.ovr_roc_auc([0, 0, 1, 1], np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]]))
    assert report["per_class"]["normal_mild"] == 1.0 and report["per_class"]["moderate"] == 1.0
    assert math.isnan(report["per_class"]["severe"]) and "severe" in report["reasons"]
    assert math.isnan(report["macro"])


def test_roc_auc_matches_sklearn_when_available():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes many ties
    assert M.binary_roc_auc(y, s)[0] == pytest.approx(metrics.roc_auc_score(y, s), rel=1e-12)


def test_accuracy_and_macro_f1_by_hand():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    assert M.accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    # class 0: tp 2 fp 0 fn 1 -> 4/5; class 1: tp 1 fp 1 fn 1 -> 2/4; class 2: tp 1 fp 1 fn 0 -> 2/3
    assert M.macro_f1(y_true, y_pred) == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)
    assert math.isnan(M.macro_f1([], []))


def test_localisation_error_pixels_and_anisotropic_mm():
    pred = np.array([[13.0, 24.0], [0.0, 0.0], [np.nan, np.nan], [5.0, 5.0]])
    true = np.array([[10.0, 20.0], [0.0, 2.0], [1.0, 1.0], [5.0, 5.0]])
    # DICOM PixelSpacing = (row spacing: mm per y step, column spacing: mm per x step)
    out = M.localisation_error(pred, true, pixel_spacing=(0.5, 1.0), levels=["l1_l2", "l1_l2", "l2_l3", "l5_s1"])
    overall = out["overall"]
    assert overall["n"] == 4 and overall["n_missed"] == 1
    assert overall["mean_px"] == pytest.approx((5 + 2 + 0) / 3)
    # first: dx 3 (x 1.0 mm), dy 4 (x 0.5 mm) -> hypot(3, 2); second: dy 2 -> 1 mm
    assert out["per_level"]["l1_l2"]["mean_mm"] == pytest.approx((math.hypot(3, 2) + 1.0) / 2)
    assert out["per_level"]["l2_l3"]["n_missed"] == 1 and math.isnan(out["per_level"]["l2_l3"]["mean_px"])
    assert list(out["per_level"]) == ["l1_l2", "l2_l3", "l5_s1"]
    assert math.isnan(M.localisation_error(pred, true)["overall"]["mean_mm"])
    with pytest.raises(InputError, match="differ in shape"):
        M.localisation_error(pred[:2], true)


def test_class_prior_baseline():
    labels = hand_labels_full()
    result = M.class_prior_baseline(labels)
    # spinal rows: classes 2, 0, 1; foraminal: 1, 0; subarticular: 0, 2
    assert result["priors"]["spinal"] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert result["priors"]["foraminal"] == pytest.approx([1 / 2, 1 / 2, 0])
    assert result["priors"]["subarticular"] == pytest.approx([1 / 2, 0, 1 / 2])
    preds = {f"{s}_{c}": result["priors"][M.condition_group(c)] for s in labels for c in LABEL_COLUMNS}
    assert result["score"] == pytest.approx(_reference_score(labels, preds)[0], rel=1e-12)
    # Priors from another label set are applied to these labels.
    train = {"9": {c: 0 for c in LABEL_COLUMNS}}
    other = M.class_prior_baseline(labels, train_labels=train)
    assert other["priors"]["spinal"] == [1.0, 0.0, 0.0]
    assert other["score"] > 10  # predicting "never moderate/severe" is clipped to eps and punished


def test_metrics_module_imports_no_heavy_packages():
    code = ("import sys, lumbar_edge.training.metrics;"
            "print(','.join(m for m in ('torch', 'pandas', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_jsonable_replaces_nan():
    assert M.jsonable({"a": float("nan"), "b": (np.float64(1.5), np.int64(2)), "c": np.array([1.0, np.inf])}) == {
        "a": None, "b": [1.5, 2], "c": [1.0, None]}
