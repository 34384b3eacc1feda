"""The competition's submission CSV: ``row_id,normal_mild,moderate,severe``, 25 rows per study.

Rows come study by study (in the order given) and, within a study, in
:data:`~lumbar_edge.labels.LABEL_COLUMNS` order, whatever order the findings were produced in.
Probabilities are written with ``repr`` (the shortest text that reads back as the same float), so
nothing is lost and each row still sums to 1 to double precision.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Iterable, List, Tuple, Union

from ..labels import LABEL_COLUMNS, SEVERITY_COLUMNS
from ..results import StudyResult
from ._io import ReportError, atomic_write_bytes

HEADER: Tuple[str, ...] = ("row_id",) + SEVERITY_COLUMNS
#: How far a row's probabilities may sum from 1 before the writer refuses it.
SUM_TOLERANCE = 1e-6


def _study_rows(result: StudyResult) -> List[Tuple[str, float, float, float]]:
    by_column = {}
    for finding in result.findings:
        if finding.column in by_column:
            raise ReportError(f"study {result.study_id}: two findings for {finding.column}")
        by_column[finding.column] = finding
    missing = [c for c in LABEL_COLUMNS if c not in by_column]
    if missing:
        raise ReportError(f"study {result.study_id}: no finding for {', '.join(missing)}")
    rows = []
    for column in LABEL_COLUMNS:
        probs = tuple(float(p) for p in by_column[column].probabilities)
        if len(probs) != 3 or not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs):
            raise ReportError(f"study {result.study_id}: {column} has invalid probabilities {probs}")
        if abs(sum(probs) - 1.0) > SUM_TOLERANCE:
            raise ReportError(f"study {result.study_id}: {column} probabilities sum to {sum(probs)!r}, not 1")
        rows.append((f"{result.study_id}_{column}",) + probs)
    return rows


def write_submission_csv(results: Iterable[StudyResult], path: Union[str, Path]) -> Path:
    """Write the submission CSV for ``results`` to ``path`` (atomically; the folder is created).

    Raises :class:`ReportError` when a study lacks one of the 25 findings or has two for one
    column, when probabilities are not finite, outside [0, 1] or do not sum to 1, or when a study
    id appears twice; ``OSError`` when the file cannot be written. Nothing is written on error.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    seen = set()
    for result in results:
        sid = str(result.study_id)
        if sid in seen:
            raise ReportError(f"study {sid} appears twice; a submission has one set of rows per study")
        seen.add(sid)
        for row_id, *probs in _study_rows(result):
            writer.writerow([row_id] + [repr(p) for p in probs])
    return atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def read_submission_csv(path: Union[str, Path]) -> List[Tuple[str, float, float, float]]:
    """The rows of a submission CSV as ``(row_id, normal_mild, moderate, severe)``, in file order.

    Raises :class:`ReportError` when the header is not the competition's or a row is malformed,
    ``OSError`` when the file cannot be read.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise ReportError(f"{path}: header is {header}, expected {','.join(HEADER)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 4:
                raise ReportError(f"{path}:{line}: expected 4 fields, got {len(row)}")
            try:
                rows.append((row[0], float(row[1]), float(row[2]), float(row[3])))
            except ValueError as exc:
                raise ReportError(f"{path}:{line}: {exc}") from exc
    return rows
