"""Series selection: which series of a study feed which model view, and why.

Declarative, like the series classification rules: each :class:`SelectionRule` names the view,
the series kinds that can serve it (in order of preference), the least number of slices, whether
every candidate is used (``combine``) and, when only one is, the criteria that decide between
several candidates (``criteria``, in order):

- ``original``: an ORIGINAL series (ImageType's first value) before a DERIVED one: a
  reformat (MPR), a composed whole-spine image or a filtered copy beside the acquired series is
  not what the model was trained on;
- ``coverage``: the extent of the series across its slices (mm along the slice normals, over all
  its stacks): a repeat stopped part-way, or a narrow stack, covers less of the spine;
- ``completeness``: the share of the slices its extent calls for that are there (slices left out
  at the scan for missing geometry or a bad file, or never sent, count against it);
- ``later``: the later series (higher SeriesNumber): a repeat is usually made because the first
  was not good enough.

Two candidates whose coverage differs by less than :data:`COVERAGE_TOLERANCE` (or completeness by
less than :data:`COMPLETENESS_TOLERANCE`) tie on that criterion and the next decides.

The axial view combines every axial T2 candidate: lumbar axials come as one stack, several angled
stacks, or several series covering different discs, and per disc level the slice whose plane is
nearest that disc is taken from whichever candidate has it (:mod:`lumbar_edge.aggregate`).
A series whose :attr:`~lumbar_edge.dicom.Series.problem` is set is never a candidate; the
report says why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

#: The minimum slices a series needs to be used: a 2.5D input takes neighbours, and sagittal
#: views pick the best slice, which needs more than a couple.
MIN_SLICES = {"sagittal_t2": 3, "sagittal_t1": 3, "axial_t2": 1}
#: Coverage within this fraction of the larger one is a tie.
COVERAGE_TOLERANCE = 0.10
#: Completeness within this difference (a share of slices) is a tie.
COMPLETENESS_TOLERANCE = 0.02
CRITERIA = ("original", "coverage", "completeness", "later")


@dataclass(frozen=True)
class SelectionRule:
    """``view`` is served by the series whose kind is in ``kinds`` (preferred first) and that
    have at least ``min_slices`` slices: all of them when ``combine``, else the best by
    ``criteria`` (names from :data:`CRITERIA`, compared in order)."""

    view: str
    kinds: Tuple[str, ...]
    min_slices: int = 1
    combine: bool = False
    criteria: Tuple[str, ...] = field(default=CRITERIA)

    def __post_init__(self) -> None:
        unknown = [c for c in self.criteria if c not in CRITERIA]
        if unknown:
            raise ValueError(f"selection rule for {self.view}: unknown criteria {unknown}; known: {', '.join(CRITERIA)}")


DEFAULT_SELECTION: Tuple[SelectionRule, ...] = (
    SelectionRule("sagittal_t2", ("sagittal_t2",), MIN_SLICES["sagittal_t2"]),
    SelectionRule("sagittal_t1", ("sagittal_t1",), MIN_SLICES["sagittal_t1"]),
    SelectionRule("axial_t2", ("axial_t2",), MIN_SLICES["axial_t2"], combine=True),
)


@dataclass(frozen=True)
class Selection:
    """What :func:`select_series` decided: per view the series used (``chosen``: the main one;
    ``used``: all, the main one first), a sentence per view that had a choice to make
    (``reasons``), and the warnings for the report."""

    chosen: Dict[str, object]
    used: Dict[str, List[object]]
    reasons: Dict[str, str]
    warnings: List[str]


def _kind_name(series) -> str:
    kind = series.kind
    return str(getattr(kind, "value", kind)).lower()


def series_label(series) -> str:
    """How reports name a series: ``series 7`` (its SeriesNumber), else its id."""
    return f"series {series.series_number}" if series.series_number is not None else f"series {series.series_id}"


def _stack_positions(series) -> List[List[float]]:
    """The slice positions (mm along the normal) of each stack that has geometry."""
    out = []
    for start, end in series.stacks:
        pos = [inst.position for inst in series.instances[start:end] if inst.position is not None]
        if pos:
            out.append(pos)
    return out


def coverage_mm(series) -> float:
    """The series' extent across its slices: per stack, the distance between its first and last
    slice plus one slice step, summed over stacks (0 without geometry)."""
    step = float(series.spacing or 0.0)
    return sum((max(pos) - min(pos)) + step for pos in _stack_positions(series))


def completeness(series) -> float:
    """The share (0-1) of the slices its stacks' extent calls for (at the series' slice step)
    that the series has; 1.0 when it cannot be told (no geometry or spacing)."""
    step = float(series.spacing or 0.0)
    if step <= 0:
        return 1.0
    expected = present = 0
    for pos in _stack_positions(series):
        expected += int(round((max(pos) - min(pos)) / step)) + 1
        present += len(set(round(p, 2) for p in pos))
    return min(1.0, present / expected) if expected else 1.0


def is_original(series) -> bool:
    """Whether the series' ImageType says ORIGINAL (or says nothing): not a DERIVED image."""
    image_type = (getattr(series, "sequence", None) or {}).get("ImageType") or []
    return not image_type or str(image_type[0]).strip().upper() != "DERIVED"


def _describe(series) -> str:
    stacks = len(series.stacks)
    return (f"{series_label(series)}: {'' if is_original(series) else 'derived, '}{len(series.instances)} slices"
            f"{f' in {stacks} stacks' if stacks > 1 else ''}, {coverage_mm(series):.0f} mm covered, "
            f"{100.0 * completeness(series):.0f}% complete")


def _better(a, b, criteria: Sequence[str]) -> Tuple[object, str]:
    """The better of two candidates and the criterion that decided."""
    for criterion in criteria:
        if criterion == "original":
            oa, ob = is_original(a), is_original(b)
            if oa != ob:
                return (a, "an original acquisition, not derived") if oa else (b, "an original acquisition, not derived")
        elif criterion == "coverage":
            ca, cb = coverage_mm(a), coverage_mm(b)
            if abs(ca - cb) > COVERAGE_TOLERANCE * max(ca, cb, 1e-9):
                return (a, "wider coverage of the spine") if ca > cb else (b, "wider coverage of the spine")
        elif criterion == "completeness":
            ca, cb = completeness(a), completeness(b)
            if abs(ca - cb) > COMPLETENESS_TOLERANCE:
                return (a, "more complete") if ca > cb else (b, "more complete")
        elif criterion == "later":
            na, nb = a.series_number or 0, b.series_number or 0
            if na != nb:
                return (a, "the later series") if na > nb else (b, "the later series")
    return a, "equal on every criterion; the first found"


def select_series(study, views: Sequence[str], rules: Sequence[SelectionRule] = DEFAULT_SELECTION) -> Selection:
    """Pick the series that serve each of ``views``. A view without a usable series is left out
    of ``chosen`` and explained in the warnings (its findings then use the class prior)."""
    chosen: Dict[str, object] = {}
    used: Dict[str, List[object]] = {}
    reasons: Dict[str, str] = {}
    warnings: List[str] = []
    for view in views:
        rule: Optional[SelectionRule] = next((r for r in rules if r.view == view), None)
        if rule is None:
            warnings.append(f"no selection rule for view {view}")
            continue
        label = view.replace("_", " ")
        candidates: List[object] = []
        for kind in rule.kinds:
            of_kind = [s for s in study.series if _kind_name(s) == kind]
            for s in of_kind:
                if s.problem:
                    warnings.append(f"{series_label(s)} ({label}) is not used: {s.problem}")
            candidates = [s for s in of_kind if not s.problem and len(s.instances) >= rule.min_slices]
            if candidates:
                break
        if not candidates:
            warnings.append(f"no {label} series with at least {rule.min_slices} slices; "
                            f"its findings use the class prior")
            continue
        if rule.combine:
            # The largest first: it names the view in series_used, as before there were several.
            ordered = sorted(candidates, key=lambda s: (-len(s.instances), -(s.series_number or 0)))
            chosen[view], used[view] = ordered[0], ordered
            if len(ordered) > 1 or len(ordered[0].stacks) > 1:
                what = (f"{len(ordered)} {label} series used together" if len(ordered) > 1
                        else f"one {label} series of {len(ordered[0].stacks)} stacks")
                reasons[view] = (f"{what}, each disc level read on the slice nearest its disc: "
                                 + "; ".join(_describe(s) for s in ordered))
        else:
            best, why = candidates[0], ""
            for other in candidates[1:]:
                best, why = _better(best, other, rule.criteria)
            chosen[view], used[view] = best, [best]
            if len(candidates) > 1:
                others = "; ".join(_describe(s) for s in candidates if s is not best)
                reasons[view] = (f"{series_label(best)} chosen of {len(candidates)} {label} series ({why}): "
                                 f"{_describe(best)}; not used: {others}")
        for s in used[view]:
            warnings.extend(f"{series_label(s)} ({label}): {w}" for w in s.warnings)
    return Selection(chosen, used, reasons, warnings)

