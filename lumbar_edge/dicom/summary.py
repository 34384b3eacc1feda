"""Human-readable scan report: the studies and series table, the skipped files, a summary line."""
from __future__ import annotations

from typing import List

from .model import ScanResult, Series


def _num(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def summary_line(result: ScanResult) -> str:
    """One line: how many studies, series and images were found in how many files, and what was
    skipped per category."""
    text = (f"{len(result.studies)} studies, {result.n_series} series, {result.n_instances} images "
            f"from {result.n_files} files in {result.seconds:.2f} s")
    if result.skipped:
        parts = ", ".join(f"{n} {cat.replace('_', ' ')}" for cat, n in result.skip_counts().items())
        text += f"; {len(result.skipped)} skipped ({parts})"
    else:
        text += "; nothing skipped"
    return text


def _slices(s: Series) -> str:
    """The slice count, with the number of stacks when there are several ("37/5 stacks")."""
    stacks = len(s.stacks)
    return f"{len(s.instances)}/{stacks} stacks" if stacks > 1 else str(len(s.instances))


def _series_row(s: Series) -> List[str]:
    spacing = f"{s.pixel_spacing[0]:.3g}x{s.pixel_spacing[1]:.3g}" if s.pixel_spacing else "-"
    return [s.series_id, "-" if s.series_number is None else str(s.series_number), s.kind.value, s.plane.value,
            s.weighting.value, s.classified_by, _slices(s), f"{s.rows}x{s.columns}", spacing,
            _num(s.spacing), s.description or "-"]


def format_scan(result: ScanResult) -> str:
    """The scan as readable text: per study a table of its series (id, number, kind, plane,
    weighting, what decided it, slices, size, pixel spacing, slice spacing, description), then
    the skipped files with their reasons, then the summary line."""
    from .pixels import codec_problem

    lines: List[str] = []
    header = ["series", "no", "kind", "plane", "weighting", "by", "slices", "size", "pixel mm", "gap mm",
              "description"]
    for study in result.studies:
        title = f"study {study.study_id}"
        if study.study_id != study.study_uid:
            title += f" (UID {study.study_uid})"
        if study.patient_id:
            title += f", patient {study.patient_id}"
        if study.study_date:
            title += f", {study.study_date}"
        lines.append(title)
        rows = [header] + [_series_row(s) for s in study.series]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        for s in study.series:
            # A series whose pixels need a codec plugin that is missing still scans; say so here
            # rather than at the first decode.
            problems = (codec_problem(ts) for ts in {i.transfer_syntax_uid for i in s.instances})
            for problem in sorted(str(p) for p in problems if p is not None):
                lines.append(f"  note: series {s.series_id}: {problem}")
        lines.append("")
    if not result.studies:
        lines.append("no DICOM image series found")
        lines.append("")
    if result.skipped:
        lines.append(f"skipped ({len(result.skipped)}):")
        for item in result.skipped:
            lines.append(f"  {item.path}: {item.reason}")
        lines.append("")
    lines.append(result.summary())
    return "\n".join(lines)
