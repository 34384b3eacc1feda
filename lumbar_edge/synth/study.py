"""Rendering one whole study in memory: the plan plus the pixels of its three series."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from .options import SynthOptions
from .plan import StudyPlan, plan_study, study_rng
from .render import render_series


@dataclass(frozen=True)
class RenderedStudy:
    """One study in memory: ``plan`` (ids, geometry, protocol, grades, labels, 3D truth) and
    ``images[series_id]``, a uint16 array (n_slices, rows, cols) in instance order."""

    plan: StudyPlan
    images: Dict[int, np.ndarray]

    @property
    def study_id(self) -> int:
        return self.plan.study_id

    def image(self, kind: str) -> np.ndarray:
        """The pixels of the series of ``kind`` (sagittal_t1, sagittal_t2 or axial_t2)."""
        return self.images[self.plan.series_of(kind).series_id]


def render_study(seed: int, index: int, options: Optional[SynthOptions] = None,
                 ids: Optional[Tuple[int, Tuple[int, int, int]]] = None) -> RenderedStudy:
    """Plan and render study ``index`` of the dataset made with ``seed``, writing nothing.

    Pure: the same arguments give the same arrays in any process. Raises
    :class:`~lumbar_edge.errors.InputError` for invalid options.
    """
    plan = plan_study(seed, index, options, ids)
    rng = study_rng(seed, index, 4)
    # In plan order (the plain series first, so they get the plain noise draws); the stacks of
    # one series are joined in instance order.
    parts: Dict[int, list] = {}
    for s in plan.series:
        pixels = render_series(plan.anatomy, s.render_geometry or s.geometry, s.acquisition, rng)
        flip_rows, flip_columns = s.stored_flips
        if flip_rows:
            pixels = pixels[:, ::-1, :]
        if flip_columns:
            pixels = pixels[:, :, ::-1]
        parts.setdefault(s.series_id, []).append((s.first_instance, np.ascontiguousarray(pixels)))
    images = {sid: (p[0][1] if len(p) == 1 else np.concatenate([a for _, a in sorted(p, key=lambda t: t[0])]))
              for sid, p in parts.items()}
    return RenderedStudy(plan, images)
