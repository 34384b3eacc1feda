"""Names shared by every part of lumbar-edge: conditions, levels, severities and model views.

These mirror the RSNA 2024 Lumbar Spine Degenerative Classification data (shared/DESIGN.md). The
column form (``spinal_canal_stenosis_l1_l2``) is used in ``train.csv`` and submission ``row_id``s;
the title form (``Spinal Canal Stenosis``, ``L1/L2``) in ``train_label_coordinates.csv``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

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

    ``keypoints[k]`` is ``(condition, level)`` for keypoint type ``k``; the severity head has one
    group of 3 logits per entry of ``conditions``, read at each keypoint of that condition.
    ``level`` is ``None`` for axial keypoints, whose level comes from slice geometry.
    """

    name: str
    series_description: str
    keypoints: Tuple[Tuple[str, "str | None"], ...]
    conditions: Tuple[str, ...]

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def severity_group(self, k: int) -> int:
        """Index of the condition group (3 logits each) that keypoint type ``k`` reads."""
        condition = self.keypoints[k][0]
        for g, conds in enumerate(self.conditions):
            if condition == conds or condition.endswith(conds):
                return g
        raise KeyError(condition)


# Each view has one severity group (C = 1); foramina/subarticular left and right share it because
# the anatomy is mirror-symmetric and the keypoint says which side was read.
VIEWS: Dict[str, View] = {
    "sagittal_t2": View(
        name="sagittal_t2",
        series_description="Sagittal T2/STIR",
        keypoints=tuple(("spinal_canal_stenosis", lv) for lv in LEVELS),
        conditions=("spinal_canal_stenosis",),
    ),
    "sagittal_t1": View(
        name="sagittal_t1",
        series_description="Sagittal T1",
        keypoints=tuple((f"{side}_neural_foraminal_narrowing", lv) for side in ("left", "right") for lv in LEVELS),
        conditions=("neural_foraminal_narrowing",),
    ),
    "axial_t2": View(
        name="axial_t2",
        series_description="Axial T2",
        keypoints=(("left_subarticular_stenosis", None), ("right_subarticular_stenosis", None)),
        conditions=("subarticular_stenosis",),
    ),
}
