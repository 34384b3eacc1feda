"""Names shared by every part of lumbar-edge: conditions, levels, severities and model views.

These mirror the RSNA 2024 Lumbar Spine Degenerative Classification data (shared/DESIGN.md). The
column form (``spinal_canal_stenosis_l1_l2``) is used in ``train.csv`` and submission ``row_id``s;
the title form (``Spinal Canal Stenosis``, ``L1/L2``) in ``train_label_coordinates.csv``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

from .errors import InputError

CONDITIONS: Tuple[str, ...] = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
LEVELS: Tuple[str, ...] = ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
SEVERITIES: Tuple[str, ...] = ("Normal/Mild", "Moderate", "Severe")
#: Submission column names, in the order of the three severity probabilities.
SEVERITY_COLUMNS: Tuple[str, ...] = ("normal_mild", "moderate", "severe")
#: Competition sample weights per severity (normal/mild, moderate, severe).
SEVERITY_WEIGHTS: Tuple[float, ...] = (1.0, 2.0, 4.0)

#: The 25 ``{condition}_{level}`` columns of ``train.csv``, in the competition's order.
LABEL_COLUMNS: Tuple[str, ...] = tuple(f"{c}_{l}" for c in CONDITIONS for l in LEVELS)

SERIES_DESCRIPTIONS: Tuple[str, ...] = ("Sagittal T1", "Sagittal T2/STIR", "Axial T2")


def condition_title(condition: str) -> str:
    """``left_neural_foraminal_narrowing`` -> ``Left Neural Foraminal Narrowing``."""
    return " ".join(word.capitalize() for word in condition.split("_"))


def level_title(level: str) -> str:
    """``l1_l2`` -> ``L1/L2``."""
    return level.upper().replace("_", "/")


def condition_from_title(title: str) -> str:
    """``Left Neural Foraminal Narrowing`` -> ``left_neural_foraminal_narrowing``."""
    return "_".join(title.strip().lower().split())


def level_from_title(title: str) -> str:
    """``L1/L2`` -> ``l1_l2``."""
    return title.strip().lower().replace("/", "_")


def severity_index(name: str) -> int:
    """``Normal/Mild`` -> 0, ``Moderate`` -> 1, ``Severe`` -> 2; raises ``KeyError`` otherwise."""
    return {s.lower(): i for i, s in enumerate(SEVERITIES)}[name.strip().lower()]


@dataclass(frozen=True)
class View:
    """One model view: the series it reads and what its keypoint channels mean.

    ``keypoints[k]`` is ``(condition, level)`` for keypoint type ``k``. ``level`` is ``None`` for
    axial keypoints, whose level comes from slice geometry. A condition without a side
    (``neural_foraminal_narrowing``) gets its side from geometry too: left and right foramina are
    mirror images on parasagittal slices, so the slice's position in patient space (DICOM LPS,
    +x = patient's left) says which side a peak belongs to, not the pixels. The severity head has
    one group of 3 logits per entry of ``conditions``.
    """

    name: str
    series_kind: str
    keypoints: Tuple[Tuple[str, "str | None"], ...]
    conditions: Tuple[str, ...]

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def severity_group(self, k: int) -> int:
        """Index, within this view, of the condition group (3 logits) that keypoint ``k`` reads."""
        condition = self.keypoints[k][0]
        for g, group in enumerate(self.conditions):
            if condition == group or condition.endswith("_" + group):
                return g
        raise KeyError(condition)


VIEWS: Dict[str, View] = {
    "sagittal_t2": View(
        name="sagittal_t2",
        series_kind="sagittal_t2",
        keypoints=tuple(("spinal_canal_stenosis", lv) for lv in LEVELS),
        conditions=("spinal_canal_stenosis",),
    ),
    "sagittal_t1": View(
        name="sagittal_t1",
        series_kind="sagittal_t1",
        keypoints=tuple(("neural_foraminal_narrowing", lv) for lv in LEVELS),
        conditions=("neural_foraminal_narrowing",),
    ),
    "axial_t2": View(
        name="axial_t2",
        series_kind="axial_t2",
        keypoints=(("left_subarticular_stenosis", None), ("right_subarticular_stenosis", None)),
        conditions=("subarticular_stenosis",),
    ),
}


@dataclass(frozen=True)
class HeadLayout:
    """How the views of one network share its output channels.

    A network may serve several views: its heatmap channels are the views' keypoint types laid
    end to end, and its severity groups likewise. ``channels[view]`` is the (start, stop) of that
    view's heatmap channels, ``groups[view]`` the (start, stop) of its severity groups. The bundle
    manifest records this, so the runtime reads the right channels for each series.
    """

    views: Tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown or not self.views or len(set(self.views)) != len(self.views):
            raise InputError(f"a head layout needs distinct known views, got {self.views}")

    @property
    def channels(self) -> Dict[str, Tuple[int, int]]:
        out, start = {}, 0
        for v in self.views:
            out[v] = (start, start + VIEWS[v].num_keypoints)
            start += VIEWS[v].num_keypoints
        return out

    @property
    def groups(self) -> Dict[str, Tuple[int, int]]:
        out, start = {}, 0
        for v in self.views:
            out[v] = (start, start + len(VIEWS[v].conditions))
            start += len(VIEWS[v].conditions)
        return out

    @property
    def num_keypoints(self) -> int:
        return sum(VIEWS[v].num_keypoints for v in self.views)

    @property
    def num_conditions(self) -> int:
        return sum(len(VIEWS[v].conditions) for v in self.views)

    def keypoint_groups(self) -> Tuple[int, ...]:
        """For each heatmap channel of the network, the severity group it reads."""
        out = []
        for v in self.views:
            g0 = self.groups[v][0]
            out.extend(g0 + VIEWS[v].severity_group(k) for k in range(VIEWS[v].num_keypoints))
        return tuple(out)

    def to_dict(self) -> dict:
        return {"views": list(self.views), "channels": {v: list(c) for v, c in self.channels.items()},
                "groups": {v: list(g) for v, g in self.groups.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "HeadLayout":
        return cls(views=tuple(data["views"]))


#: The default network serves all three views with one backbone.
ALL_VIEWS = HeadLayout(views=("sagittal_t2", "sagittal_t1", "axial_t2"))
