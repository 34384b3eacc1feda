"""Series selection: which series of a study feeds which model view.

Declarative, like the series classification rules: each :class:`SelectionRule` names the view,
the series kinds that can serve it (in order of preference) and how to break ties between several
candidates. The defaults pick, per view, the classified series with the most slices, preferring
the later series (a repeat scan) on a tie.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

#: The minimum slices a series needs to be used: a 2.5D input takes neighbours, and sagittal
#: views pick the best slice, which needs more than a couple.
MIN_SLICES = {"sagittal_t2": 3, "sagittal_t1": 3, "axial_t2": 1}


@dataclass(frozen=True)
class SelectionRule:
    """``view`` is served by the first series whose kind is in ``kinds`` (preferred first)."""

    view: str
    kinds: Tuple[str, ...]
    min_slices: int = 1


DEFAULT_SELECTION: Tuple[SelectionRule, ...] = (
    SelectionRule("sagittal_t2", ("sagittal_t2",), MIN_SLICES["sagittal_t2"]),
    SelectionRule("sagittal_t1", ("sagittal_t1",), MIN_SLICES["sagittal_t1"]),
    SelectionRule("axial_t2", ("axial_t2",), MIN_SLICES["axial_t2"]),
)


def _kind_name(series) -> str:
    kind = series.kind
    return str(getattr(kind, "value", kind)).lower()


def select_series(study, views: Sequence[str],
                  rules: Sequence[SelectionRule] = DEFAULT_SELECTION) -> Tuple[Dict[str, object], List[str]]:
    """Pick one series per view. Returns ``({view: series}, warnings)``; a view without a
    usable series is left out and explained in the warnings."""
    chosen: Dict[str, object] = {}
    warnings: List[str] = []
    for view in views:
        rule: Optional[SelectionRule] = next((r for r in rules if r.view == view), None)
        if rule is None:
            warnings.append(f"no selection rule for view {view}")
            continue
        best = None
        for rank, kind in enumerate(rule.kinds):
            candidates = [s for s in study.series if _kind_name(s) == kind and len(s.instances) >= rule.min_slices]
            if candidates:
                best = max(candidates, key=lambda s: (len(s.instances), s.series_number or 0))
                break
        if best is None:
            warnings.append(f"no {view.replace('_', ' ')} series with at least {rule.min_slices} slices; "
                            f"its findings use the class prior")
            continue
        chosen[view] = best
    return chosen, warnings
