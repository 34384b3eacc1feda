"""Evaluation: the RSNA 2024 LSDC competition metric and diagnostic metrics, in numpy only.

No torch, pandas or scikit-learn here: ``lumbar-edge evaluate`` imports this module on machines
that have only the light runtime.

The competition metric
----------------------
This reproduces the host's scoring function (Kaggle notebook "rsna-lumbar-metric", function
``score(solution, submission, row_id_column_name, any_severe_scalar)``, whose text is copied in
many public solution repositories):

1. Rows are grouped by condition group, found by substring of the ``row_id``: ``spinal``,
   ``foraminal``, ``subarticular``. For each group, ``sklearn.metrics.log_loss`` with one-hot
   ``y_true`` and ``sample_weight`` = 1 / 2 / 4 for a TRUE class of normal/mild / moderate /
   severe.
2. ``any_severe_spinal``: per study, over its spinal rows, the label is the max of the one-hot
   ``severe`` column (1 if any level is severe), the sample weight is the max of the rows' sample
   weights (so 4 for a positive, 2 for a study whose worst level is moderate, 1 otherwise), and
   the prediction is the max of the submitted ``severe`` values as given (not renormalised: a
   row that does not sum to 1 enters this term unscaled); then a binary ``log_loss`` with those
   weights.
3. The score is ``np.average([spinal, foraminal, subarticular, any_severe], weights=[1, 1, 1,
   any_severe_scalar])`` with ``any_severe_scalar = 1.0`` in the competition.

``sklearn.metrics.log_loss`` is replicated as scikit-learn 1.2.2 (the Kaggle image of 2024)
computes it: predictions are clipped to ``[eps, 1 - eps]`` with ``eps`` = float64 machine epsilon
(2.22e-16), a 1-D binary prediction ``p`` becomes the two columns ``[1 - p, p]``, every row is then
divided by its sum (rows that do not sum to 1 are silently renormalised), and the loss is the
sample-weighted mean of ``-log p[true class]``. (scikit-learn >= 1.5 no longer renormalises, it
only warns; for rows that sum to 1 the two agree to rounding.) Rows whose label is missing
(empty in ``train.csv``) are dropped, as when the competition solution is built from train.csv.
Where every study has the same any-severe label, scikit-learn without ``labels=`` refuses; here
the binary loss is still computed (as with ``labels=[0, 1]``) and a note says so.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from lumbar_edge.errors import InputError
from lumbar_edge.labels import CONDITIONS, LABEL_COLUMNS, LEVELS, SEVERITY_COLUMNS, SEVERITY_WEIGHTS, severity_index

#: The competition's condition groups, in score order; a row belongs to the first whose name it contains.
CONDITION_GROUPS: Tuple[str, ...] = ("spinal", "foraminal", "subarticular")
ANY_SEVERE = "any_severe_spinal"
#: The terms of the score, in the order the official code averages them.
SCORE_TERMS: Tuple[str, ...] = CONDITION_GROUPS + (ANY_SEVERE,)
#: scikit-learn's clipping epsilon for float64 predictions.
EPS = float(np.finfo(np.float64).eps)
#: A prediction row whose sum is further than this from 1 is counted as renormalised.
SUM_TOLERANCE = 1e-4

PathLike = Union[str, Path]
#: study_id -> {label column -> class 0/1/2, or -1 when unlabelled}
Labels = Dict[str, Dict[str, int]]


def condition_group(name: str) -> str:
    """``spinal`` / ``foraminal`` / ``subarticular`` for a row id or label column.

    Raises :class:`InputError` if none of them is in ``name``.
    """
    for group in CONDITION_GROUPS:
        if group in name:
            return group
    raise InputError(f"no condition group (spinal, foraminal, subarticular) in {name!r}")


def split_row_id(row_id: str) -> Tuple[str, str]:
    """``"4003253_spinal_canal_stenosis_l1_l2"`` -> ``("4003253", "spinal_canal_stenosis_l1_l2")``.

    Raises :class:`InputError` when the part after the study id is not one of the 25 label columns.
    """
    study, _, column = row_id.strip().partition("_")
    if not study or column not in LABEL_COLUMNS:
        raise InputError(f"unknown row_id {row_id!r}: expected '{{study_id}}_{{condition}}_{{level}}' "
                         f"with one of the 25 condition_level names")
    return study, column


# --------------------------------------------------------------------------- log loss


def log_loss(y_true: Sequence[int], y_pred: np.ndarray, sample_weight: Optional[Sequence[float]] = None) -> float:
    """Sample-weighted log loss, as ``sklearn.metrics.log_loss`` 1.2.2 computes it.

    ``y_true`` [M] class indices; ``y_pred`` [M, n_classes] probabilities, or [M] probabilities of
    class 1 (binary). Clips to ``[EPS, 1 - EPS]``, renormalises each row to sum 1, then averages
    ``-log p[i, y_i]`` with ``sample_weight``. Returns nan for no rows. Raises ``ValueError`` on
    mismatched lengths or a class index outside the columns (a programming error, not user input).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    p = np.clip(p, EPS, 1 - EPS)
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    if p.shape[0] != len(y) or y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"log_loss: y_true {y.shape} does not index y_pred {p.shape}")
    p = p / p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y])
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return float(np.average(loss, weights=weights))


def rsna_score(row_ids: Sequence[str], y_true: Sequence[int], y_pred: np.ndarray,
               any_severe_scalar: float = 1.0) -> dict:
    """The competition score of predictions ``y_pred`` [M, 3] for rows ``row_ids`` with ``y_true``.

    ``y_true`` holds class 0/1/2 or -1 for an unlabelled row (dropped). Returns a dict: ``score``,
    ``terms`` (the four log losses; nan for a term with no labelled row, which is then left out of
    the average and listed in ``missing_terms``), ``n_rows`` (labelled rows scored),
    ``n_unlabelled_dropped``, ``n_studies``, ``n_rows_renormalised``, ``any_severe_scalar`` and
    ``notes``. Raises :class:`InputError` for non-finite or negative predictions (as the official
    checks do) or a row id without a condition group.
    """
    pred = np.asarray(y_pred, dtype=np.float64)
    labels = np.asarray(y_true, dtype=np.int64)
    ids = [str(r) for r in row_ids]
    if pred.ndim != 2 or pred.shape[1] != 3 or pred.shape[0] != len(labels) or len(ids) != len(labels):
        raise InputError(f"need one row of 3 probabilities per row id: {len(ids)} ids, {len(labels)} labels, "
                         f"predictions {pred.shape}")
    if not np.isfinite(pred).all():
        raise InputError("all prediction values must be finite")
    if (pred < 0).any():
        raise InputError("all predictions must be at least zero")
    if ((labels < -1) | (labels > 2)).any():
        raise InputError("labels must be 0, 1, 2 or -1 (unlabelled)")

    keep = labels >= 0
    n_dropped = int((~keep).sum())
    ids = [r for r, k in zip(ids, keep) if k]
    labels, pred = labels[keep], pred[keep]
    groups = np.array([condition_group(r) for r in ids], dtype=object)
    studies = np.array([r.split("_", 1)[0] for r in ids], dtype=object)
    weights = np.asarray(SEVERITY_WEIGHTS, dtype=np.float64)[labels]
    notes: List[str] = []

    terms: Dict[str, float] = {}
    for group in CONDITION_GROUPS:
        sel = groups == group
        terms[group] = log_loss(labels[sel], pred[sel], weights[sel])

    spinal = groups == "spinal"
    spinal_studies = sorted(set(studies[spinal]))
    any_label, any_weight, any_pred = [], [], []
    for study in spinal_studies:
        sel = spinal & (studies == study)
        any_label.append(int((labels[sel] == 2).any()))
        any_weight.append(float(weights[sel].max()))
        any_pred.append(float(pred[sel, 2].max()))
    terms[ANY_SEVERE] = log_loss(any_label, np.asarray(any_pred), any_weight)
    if any_label and len(set(any_label)) == 1:
        notes.append(f"every study has any_severe_spinal = {any_label[0]}: the official sklearn call "
                     "would refuse this; the binary loss is computed as with labels=[0, 1]")

    term_weights = {g: 1.0 for g in CONDITION_GROUPS}
    term_weights[ANY_SEVERE] = float(any_severe_scalar)
    present = [t for t in SCORE_TERMS if not math.isnan(terms[t])]
    missing = [t for t in SCORE_TERMS if t not in present]
    if missing:
        notes.append(f"no labelled rows for {', '.join(missing)}: left out of the average")
    if present and sum(term_weights[t] for t in present) > 0:
        score = float(np.average([terms[t] for t in present], weights=[term_weights[t] for t in present]))
    else:
        score = float("nan")
    n_renorm = int((np.abs(pred.sum(axis=1) - 1.0) > SUM_TOLERANCE).sum())
    if n_renorm:
        notes.append(f"{n_renorm} prediction rows do not sum to 1 and were renormalised (as sklearn 1.2 does)")
    return {
        "score": score,
        "terms": terms,
        "missing_terms": missing,
        "any_severe_scalar": float(any_severe_scalar),
        "n_rows": int(len(labels)),
        "n_unlabelled_dropped": n_dropped,
        "n_studies": int(len(set(studies))),
        "n_rows_renormalised": n_renorm,
        "notes": notes,
    }


# --------------------------------------------------------------------------- classification diagnostics


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of equal labels; nan for no rows."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(t == p)) if len(t) else float("nan")


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true`` or ``y_pred``.

    (scikit-learn's ``f1_score(average="macro")`` with default ``labels``.) nan for no rows.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(t) == 0:
        return float("nan")
    scores = []
    for c in np.union1d(t, p):
        tp = np.sum((t == c) & (p == c))
        fp = np.sum((t != c) & (p == c))
        fn = np.sum((t == c) & (p != c))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def binary_roc_auc(y_true: Sequence[int], scores: Sequence[float]) -> Tuple[float, Optional[str]]:
    """ROC AUC of ``scores`` for binary ``y_true`` (Mann-Whitney U, ties count one half).

    Returns ``(auc, None)``, or ``(nan, reason)`` when there are no positives or no negatives.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan"), f"undefined: {n_pos} positive and {n_neg} negative samples"
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg)), None


def ovr_roc_auc(y_true: Sequence[int], proba: np.ndarray,
                class_names: Sequence[str] = SEVERITY_COLUMNS) -> dict:
    """One-vs-rest ROC AUC per class and their unweighted mean.

    Returns ``{"per_class": {name: auc}, "macro": mean, "reasons": {name: why nan}}``; ``macro``
    is nan (with reason ``"macro"``) unless every class has an AUC, as scikit-learn's OVR refuses
    a class absent from ``y_true``.
    """
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    per_class, reasons = {}, {}
    for c, name in enumerate(class_names):
        auc, reason = binary_roc_auc(y == c, p[:, c])
        per_class[name] = auc
        if reason:
            reasons[name] = reason
    values = list(per_class.values())
    if reasons:
        macro = float("nan")
        reasons["macro"] = "undefined: some classes have no AUC"
    else:
        macro = float(np.mean(values))
    return {"per_class": per_class, "macro": macro, "reasons": reasons}


def _normalised(pred: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(pred, dtype=np.float64), EPS, None)
    return p / p.sum(axis=1, keepdims=True)


def classification_report(y_true: Sequence[int], y_pred: np.ndarray) -> dict:
    """Diagnostics of [M, 3] probabilities against classes 0/1/2 (unlabelled -1 rows dropped).

    Returns ``n``, ``log_loss`` (competition-weighted), ``accuracy`` and ``macro_f1`` of the
    argmax, and ``auc`` (:func:`ovr_roc_auc`).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.float64)
    keep = y >= 0
    y, p = y[keep], p[keep]
    if len(y) == 0:
        return {"n": 0, "log_loss": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan"),
                "auc": ovr_roc_auc(y, np.zeros((0, 3)))}
    arg = np.argmax(_normalised(p), axis=1)
    return {
        "n": int(len(y)),
        "log_loss": log_loss(y, p, np.asarray(SEVERITY_WEIGHTS)[y]),
        "accuracy": accuracy(y, arg),
        "macro_f1": macro_f1(y, arg),
        "auc": ovr_roc_auc(y, p),
    }


# --------------------------------------------------------------------------- localisation


def _distance_stats(px: np.ndarray, mm: np.ndarray, missed: int) -> dict:
    def stat(values: np.ndarray, fn) -> float:
        values = values[np.isfinite(values)]
        return float(fn(values)) if len(values) else float("nan")

    return {
        "n": int(len(px)) + missed,
        "n_missed": missed,
        "mean_px": stat(px, np.mean), "median_px": stat(px, np.median), "max_px": stat(px, np.max),
        "mean_mm": stat(mm, np.mean), "median_mm": stat(mm, np.median), "max_mm": stat(mm, np.max),
    }


def localisation_error(pred_xy: np.ndarray, true_xy: np.ndarray,
                       pixel_spacing: "float | Sequence[float] | np.ndarray | None" = None,
                       levels: Optional[Sequence[str]] = None) -> dict:
    """Euclidean distance between predicted and true keypoints, in pixels and millimetres.

    ``pred_xy``, ``true_xy`` [M, 2] as (x, y) pixels; a prediction with a nan coordinate counts as
    missed (left out of the distances, counted in ``n_missed``). ``pixel_spacing``: None (no mm),
    one number (isotropic mm/pixel), a DICOM PixelSpacing pair (row spacing = mm per y step,
    column spacing = mm per x step), or an [M, 2] array of such pairs. ``levels`` (optional, [M])
    groups the rows. Returns ``{"overall": stats, "per_level": {level: stats}}`` with n, n_missed,
    mean/median/max in px and mm. Raises :class:`InputError` on mismatched shapes.
    """
    pred = np.asarray(pred_xy, dtype=np.float64).reshape(-1, 2) if np.size(pred_xy) else np.zeros((0, 2))
    true = np.asarray(true_xy, dtype=np.float64).reshape(-1, 2) if np.size(true_xy) else np.zeros((0, 2))
    if pred.shape != true.shape:
        raise InputError(f"predicted {pred.shape} and true {true.shape} keypoints differ in shape")
    if not np.isfinite(true).all():
        raise InputError("true keypoint coordinates must be finite")
    m = len(pred)
    if pixel_spacing is None:
        spacing = np.full((m, 2), np.nan)
    else:
        sp = np.asarray(pixel_spacing, dtype=np.float64)
        if sp.ndim == 0:
            spacing = np.full((m, 2), float(sp))
        elif sp.shape == (2,):
            spacing = np.tile(sp, (m, 1))
        elif sp.shape == (m, 2):
            spacing = sp
        else:
            raise InputError(f"pixel_spacing must be a number, a (row, column) pair or [M, 2], got {sp.shape}")
    if levels is not None and len(levels) != m:
        raise InputError(f"{len(levels)} levels for {m} keypoints")
    dx, dy = pred[:, 0] - true[:, 0], pred[:, 1] - true[:, 1]
    px = np.hypot(dx, dy)
    mm = np.hypot(dx * spacing[:, 1], dy * spacing[:, 0])
    found = np.isfinite(px)

    def stats(sel: np.ndarray) -> dict:
        return _distance_stats(px[sel & found], mm[sel & found], int((sel & ~found).sum()))

    out = {"overall": stats(np.ones(m, dtype=bool)), "per_level": {}}
    if levels is not None:
        lv = np.asarray([str(v) for v in levels], dtype=object)
        order = [v for v in LEVELS if v in set(lv)] + sorted(set(lv) - set(LEVELS))
        out["per_level"] = {v: stats(lv == v) for v in order}
    return out


# --------------------------------------------------------------------------- CSV files


def _open_csv(path: PathLike, what: str) -> Tuple[List[str], List[Dict[str, str]]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{what} file {path} is not a readable CSV: {exc}") from exc
    if not header:
        raise InputError(f"{what} file {path} is empty (no header row)")
    return header, rows


def read_predictions_csv(path: PathLike) -> Dict[str, np.ndarray]:
    """Read a submission-form CSV: ``row_id, normal_mild, moderate, severe`` (other columns ignored).

    Returns ``{row_id: array of 3 floats}``. Raises :class:`InputError` for a missing file or
    column, an unknown row id, a duplicate row id, or a value that is not a finite number >= 0
    (the official checks); rows not summing to 1 are accepted (the metric renormalises them).
    """
    header, rows = _open_csv(path, "predictions")
    need = ("row_id",) + SEVERITY_COLUMNS
    missing = [c for c in need if c not in header]
    if missing:
        raise InputError(f"predictions file {path} lacks column(s) {', '.join(missing)} (has {', '.join(header)})")
    out: Dict[str, np.ndarray] = {}
    for line, row in enumerate(rows, start=2):
        row_id = (row.get("row_id") or "").strip()
        split_row_id(row_id)
        if row_id in out:
            raise InputError(f"{path}:{line}: duplicate row_id {row_id}")
        values = []
        for col in SEVERITY_COLUMNS:
            text = (row.get(col) or "").strip()
            try:
                v = float(text)
            except ValueError:
                raise InputError(f"{path}:{line}: {col} of {row_id} is not a number: {text!r}") from None
            if not math.isfinite(v) or v < 0:
                raise InputError(f"{path}:{line}: {col} of {row_id} must be a finite number >= 0, got {text}")
            values.append(v)
        out[row_id] = np.asarray(values, dtype=np.float64)
    return out


def read_labels_csv(path: PathLike) -> Labels:
    """Read a ``train.csv``-form file: ``study_id`` + the 25 label columns (other columns ignored).

    Values are ``Normal/Mild``, ``Moderate``, ``Severe`` (any case) or empty (unlabelled, -1).
    Returns ``{study_id: {column: class}}``. Raises :class:`InputError` for a missing file or
    column, a duplicate or empty study id, or an unknown value.
    """
    header, rows = _open_csv(path, "labels")
    missing = [c for c in ("study_id",) + LABEL_COLUMNS if c not in header]
    if missing:
        raise InputError(f"labels file {path} lacks column(s) {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}")
    out: Labels = {}
    for line, row in enumerate(rows, start=2):
        study = (row.get("study_id") or "").strip()
        if not study:
            raise InputError(f"{path}:{line}: empty study_id")
        if study in out:
            raise InputError(f"{path}:{line}: duplicate study_id {study}")
        classes = {}
        for col in LABEL_COLUMNS:
            text = (row.get(col) or "").strip()
            if not text:
                classes[col] = -1
                continue
            try:
                classes[col] = severity_index(text)
            except KeyError:
                raise InputError(f"{path}:{line}: {col} of study {study} is {text!r}; "
                                 "expected Normal/Mild, Moderate, Severe or empty") from None
        out[study] = classes
    return out


# --------------------------------------------------------------------------- scoring


def competition_score(predictions: Mapping[str, Sequence[float]], labels: Labels,
                      only_predicted_studies: bool = False, any_severe_scalar: float = 1.0) -> dict:
    """Score ``{row_id: 3 probabilities}`` against ``{study_id: {column: class}}``.

    A label that is -1, None or absent from a study's dict is unlabelled (the row is dropped).

    Every labelled row of every scored study must be predicted. Scored studies are all studies in
    ``labels``, or with ``only_predicted_studies`` those that appear in the predictions. Returns
    :func:`rsna_score`'s dict plus ``per_condition`` (:func:`classification_report` for each of the
    5 conditions). Raises :class:`InputError` for a predicted study not in the labels, a labelled
    study or row without prediction (naming them), or invalid values.
    """
    predicted_studies = {split_row_id(r)[0] for r in predictions}
    unknown = sorted(predicted_studies - set(labels))
    if unknown:
        raise InputError(f"predictions for {len(unknown)} studies not in the labels: {', '.join(unknown[:5])}"
                         f"{' ...' if len(unknown) > 5 else ''}")
    studies = [s for s in labels if s in predicted_studies] if only_predicted_studies else list(labels)
    absent = [s for s in studies if s not in predicted_studies]
    if absent:
        raise InputError(f"{len(absent)} labelled studies have no predictions: {', '.join(absent[:5])}"
                         f"{' ...' if len(absent) > 5 else ''} (score a subset with only_predicted_studies / "
                         "--only-predicted-studies)")
    row_ids, y_true, y_pred, missing_rows = [], [], [], []
    for study in studies:
        for col in LABEL_COLUMNS:
            cls = labels[study].get(col)
            cls = -1 if cls is None else int(cls)  # absent column / None: unlabelled, like an empty cell
            row_id = f"{study}_{col}"
            pred = predictions.get(row_id)
            if pred is None:
                if cls >= 0:
                    missing_rows.append(row_id)
                continue
            row_ids.append(row_id)
            y_true.append(cls)
            y_pred.append(np.asarray(pred, dtype=np.float64))
    if missing_rows:
        raise InputError(f"{len(missing_rows)} labelled rows have no prediction: {', '.join(missing_rows[:5])}"
                         f"{' ...' if len(missing_rows) > 5 else ''}")
    pred_arr = np.asarray(y_pred, dtype=np.float64).reshape(-1, 3)
    result = rsna_score(row_ids, y_true, pred_arr, any_severe_scalar=any_severe_scalar)
    y_arr = np.asarray(y_true, dtype=np.int64)
    cols = [r.split("_", 1)[1] for r in row_ids]
    per_condition = {}
    for cond in CONDITIONS:
        sel = np.array([c.startswith(cond) for c in cols], dtype=bool)
        per_condition[cond] = classification_report(y_arr[sel], pred_arr[sel])
    result["per_condition"] = per_condition
    return result


def score_submission(pred_csv_path: PathLike, labels_csv_path: PathLike, only_predicted_studies: bool = False,
                     any_severe_scalar: float = 1.0) -> dict:
    """Score a submission-form CSV against a ``train.csv``-form labels CSV.

    See :func:`competition_score` for the result and :func:`read_predictions_csv` /
    :func:`read_labels_csv` for the files; raises :class:`InputError` for malformed files.
    """
    predictions = read_predictions_csv(pred_csv_path)
    labels = read_labels_csv(labels_csv_path)
    result = competition_score(predictions, labels, only_predicted_studies, any_severe_scalar)
    result["predictions"] = str(pred_csv_path)
    result["labels"] = str(labels_csv_path)
    return result


#: A keypoint farther than this (source pixels) from its label is on another structure (the
#: synthetic discs are some 40 px apart); the count of such keypoints shows level confusions
#: that a median hides.
FAR_PX = 20.0
#: "On the point": the localisation target of the project (issue 13) is the share of keypoints
#: within this many source pixels of their label, per view.
NEAR_PX = 5.0


def report_localisation(reports_dir: PathLike, coordinates_csv: PathLike, far_px: float = FAR_PX) -> dict:
    """Where the keypoints of lumbar-edge's study reports (``*.json`` in ``reports_dir``, as
    ``lumbar-edge infer`` writes them) lie against ``train_label_coordinates.csv``-form labels.

    Each labelled (study, condition, level) with a report keypoint in the labelled series is
    compared in source pixels (x, y of the slice; the slice itself may differ). Returns
    ``{"groups": {group: stats + "far" + "within_px" + "on_labelled_slice" + "near_labelled_slice"},
    "overall": ..., "n_reports", "n_unmatched", "shared_point_reports"}`` (stats as
    :func:`localisation_error`; groups spinal / foraminal / subarticular, i.e. the sagittal T2,
    sagittal T1 and axial T2 views). ``within_px`` is the share within :data:`NEAR_PX` pixels,
    ``near_labelled_slice`` the share on the labelled instance or one next to it (instance
    numbers differing by at most 1); ``n_unmatched`` counts labels with no keypoint from the model
    in that series (prior-based findings, another series, a study without a report);
    ``shared_point_reports`` lists the studies whose report warns that levels share a point.
    Raises :class:`InputError` when the folder holds no study report or the CSV lacks a column.
    """
    from lumbar_edge.labels import condition_from_title, level_from_title
    from lumbar_edge.report.json_report import ReportError, read_study_json

    from lumbar_edge.aggregate import is_shared_point_warning

    found: Dict[Tuple[str, str, str], dict] = {}
    reports = 0
    shared: List[str] = []
    for path in sorted(Path(reports_dir).glob("*.json")):
        try:
            doc = read_study_json(path)
        except ReportError:
            continue  # the run's summary and other JSON files beside the reports
        reports += 1
        if any(is_shared_point_warning(w) for w in doc.get("warnings", [])):
            shared.append(str(doc["study_id"]))
        for f in doc["findings"]:
            if f.get("keypoint"):
                found[(str(doc["study_id"]), f["condition"], f["level"])] = f["keypoint"]
    if not reports:
        raise InputError(f"no lumbar-edge study report in {reports_dir}")
    header, rows = _open_csv(coordinates_csv, "label coordinates")
    missing = {"study_id", "series_id", "instance_number", "condition", "level", "x", "y"} - set(header)
    if missing:
        raise InputError(f"{coordinates_csv} lacks the column(s) {', '.join(sorted(missing))}")
    pred, true, groups, slice_gap, unmatched = [], [], [], [], 0
    for row in rows:
        key = (row["study_id"].strip(), condition_from_title(row["condition"]), level_from_title(row["level"]))
        kp = found.get(key)
        if kp is None or str(kp["series_id"]) != row["series_id"].strip():
            unmatched += 1
            continue
        pred.append((kp["x"], kp["y"]))
        true.append((float(row["x"]), float(row["y"])))
        groups.append(condition_group(key[1]))
        slice_gap.append(abs(int(kp["instance_number"]) - int(float(row["instance_number"]))))
    err = localisation_error(np.array(pred), np.array(true), levels=groups)
    px = np.hypot(*(np.array(pred) - np.array(true)).T) if pred else np.zeros(0)
    g = np.array(groups, dtype=object)
    gap = np.array(slice_gap, dtype=np.int64)

    def share(values: np.ndarray) -> float:
        return float(values.mean()) if len(values) else float("nan")

    def extra(stats: dict, sel: np.ndarray) -> dict:
        return dict(stats, far=int((px[sel] > far_px).sum()), within_px=share(px[sel] <= NEAR_PX),
                    on_labelled_slice=share(gap[sel] == 0), near_labelled_slice=share(gap[sel] <= 1))

    order = [k for k in ("spinal", "foraminal", "subarticular") if k in err["per_level"]]
    return {"groups": {k: extra(err["per_level"][k], g == k) for k in order},
            "overall": extra(err["overall"], np.ones(len(px), dtype=bool)),
            "far_px": far_px, "near_px": NEAR_PX, "n_reports": reports, "n_unmatched": unmatched,
            "shared_point_reports": shared}


def format_localisation(result: Mapping[str, object]) -> str:
    """A table of :func:`report_localisation`'s result."""
    near = result.get("near_px", NEAR_PX)
    lines = [f"keypoints against the labels (source pixels; far = more than {result['far_px']:g} px), "
             f"{result['n_reports']} reports, {result['n_unmatched']} labels without a model keypoint in their series",
             f"{'view':<28}{'n':>5}{'median px':>11}{f'<= {near:g} px':>9}{'far':>6}{'on slice':>10}{'slice +-1':>11}"]
    for name, st in list(result["groups"].items()) + [("all", result["overall"])]:
        lines.append(f"{VIEW_OF_GROUP.get(name, name):<28}{st['n']:>5}{_fmt(st['median_px'], 11)}"
                     f"{_pct(st['within_px'], 9)}{st['far']:>6}{_pct(st['on_labelled_slice'], 10)}"
                     f"{_pct(st['near_labelled_slice'], 11)}")
    shared = result.get("shared_point_reports", [])
    lines.append(f"reports warning that levels share a point: {len(shared)} of {result['n_reports']}"
                 + (f" ({', '.join(shared)})" if shared else ""))
    return "\n".join(lines)


#: The view each condition group is read on, for tables.
VIEW_OF_GROUP = {"spinal": "spinal canal (sagittal T2)", "foraminal": "foramina (sagittal T1)",
                 "subarticular": "subarticular (axial T2)"}


def _pct(value: float, width: int) -> str:
    return f"{'n/a':>{width}}" if not np.isfinite(value) else f"{value * 100:>{width - 1}.1f}%"


def class_priors(labels: Labels) -> Dict[str, np.ndarray]:
    """Per condition group, the class frequencies of the labelled rows (uniform for a group with none)."""
    counts = {g: np.zeros(3) for g in CONDITION_GROUPS}
    for classes in labels.values():
        for col, cls in classes.items():
            if cls is not None and cls >= 0:
                counts[condition_group(col)][int(cls)] += 1
    return {g: (c / c.sum() if c.sum() else np.full(3, 1 / 3)) for g, c in counts.items()}


def class_prior_baseline(labels: "Labels | PathLike", train_labels: "Labels | PathLike | None" = None,
                         any_severe_scalar: float = 1.0) -> dict:
    """The score of predicting, for every row, its condition group's class frequencies.

    Frequencies come from ``train_labels`` (default: ``labels`` themselves, an in-sample prior);
    either argument may be a mapping from :func:`read_labels_csv` or a path to such a CSV. Returns
    :func:`competition_score`'s dict plus ``priors`` ({group: [p_normal_mild, p_moderate, p_severe]}).
    """
    if not isinstance(labels, Mapping):
        labels = read_labels_csv(labels)
    if train_labels is None:
        train_labels = labels
    elif not isinstance(train_labels, Mapping):
        train_labels = read_labels_csv(train_labels)
    priors = class_priors(train_labels)
    predictions = {f"{study}_{col}": priors[condition_group(col)] for study in labels for col in LABEL_COLUMNS}
    result = competition_score(predictions, labels, any_severe_scalar=any_severe_scalar)
    result["priors"] = {g: [float(v) for v in p] for g, p in priors.items()}
    return result


# --------------------------------------------------------------------------- output


def jsonable(value: object) -> object:
    """``value`` with nan/inf floats as None, tuples and arrays as lists, numpy scalars as Python."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(v: float, width: int = 7) -> str:
    return f"{v:{width}.4f}" if math.isfinite(v) else f"{'n/a':>{width}}"


def format_score(result: Mapping[str, object]) -> str:
    """A human-readable table of :func:`competition_score`'s result."""
    terms = result["terms"]
    lines = [
        f"score  {_fmt(result['score'])}   (competition metric, lower is better; any_severe_scalar "
        f"{result['any_severe_scalar']:g})",
    ]
    lines += [f"  {t:<20}{_fmt(terms[t])}" for t in SCORE_TERMS]
    lines.append(f"{result['n_studies']} studies, {result['n_rows']} labelled rows scored, "
                 f"{result['n_unlabelled_dropped']} unlabelled rows dropped")
    per = result.get("per_condition") or {}
    if per:
        lines.append("")
        lines.append(f"{'condition':<34}{'n':>5}{'logloss':>9}{'acc':>8}{'macroF1':>9}"
                     f"{'AUC n/m':>9}{'AUC mod':>9}{'AUC sev':>9}")
        for cond, rep in per.items():
            auc = rep["auc"]["per_class"]
            lines.append(f"{cond:<34}{rep['n']:>5}{_fmt(rep['log_loss'], 9)}{_fmt(rep['accuracy'], 8)}"
                         f"{_fmt(rep['macro_f1'], 9)}"
                         + "".join(_fmt(auc.get(c, float('nan')), 9) for c in SEVERITY_COLUMNS))
    for note in result.get("notes") or []:
        lines.append(f"note: {note}")
    return "\n".join(lines)
