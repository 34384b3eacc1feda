"""Tests for lumbar_edge.labels: names, title forms and the multi-view head layout."""
import pytest

from lumbar_edge.errors import InputError
from lumbar_edge.labels import (ALL_VIEWS, CONDITIONS, LABEL_COLUMNS, LEVELS, VIEWS, HeadLayout, condition_from_title,
                                condition_title, level_from_title, level_title, severity_index)


def test_label_columns_follow_the_competition_order():
    assert len(LABEL_COLUMNS) == 25
    assert LABEL_COLUMNS[0] == "spinal_canal_stenosis_l1_l2"
    assert LABEL_COLUMNS[5] == "left_neural_foraminal_narrowing_l1_l2"
    assert LABEL_COLUMNS[-1] == "right_subarticular_stenosis_l5_s1"


@pytest.mark.parametrize("condition", CONDITIONS)
def test_condition_titles_round_trip(condition):
    assert condition_from_title(condition_title(condition)) == condition


def test_title_forms_match_the_rsna_files():
    assert condition_title("left_neural_foraminal_narrowing") == "Left Neural Foraminal Narrowing"
    assert level_title("l5_s1") == "L5/S1"
    assert all(level_from_title(level_title(lv)) == lv for lv in LEVELS)
    assert [severity_index(s) for s in ("Normal/Mild", "moderate", " Severe ")] == [0, 1, 2]
    with pytest.raises(KeyError):
        severity_index("Mild")


def test_all_views_layout_lays_channels_and_groups_end_to_end():
    assert ALL_VIEWS.channels == {"sagittal_t2": (0, 5), "sagittal_t1": (5, 10), "axial_t2": (10, 12)}
    assert ALL_VIEWS.groups == {"sagittal_t2": (0, 1), "sagittal_t1": (1, 2), "axial_t2": (2, 3)}
    assert ALL_VIEWS.keypoint_groups() == (0,) * 5 + (1,) * 5 + (2,) * 2
    assert HeadLayout.from_dict(ALL_VIEWS.to_dict()) == ALL_VIEWS


def test_single_view_layout_and_bad_layouts():
    axial = HeadLayout(views=("axial_t2",))
    assert axial.num_keypoints == 2 and axial.keypoint_groups() == (0, 0)
    for bad in ((), ("coronal",), ("axial_t2", "axial_t2")):
        with pytest.raises(InputError):
            HeadLayout(views=bad)


def test_severity_group_matches_sided_conditions_to_their_group():
    assert VIEWS["axial_t2"].severity_group(1) == 0
    assert VIEWS["sagittal_t1"].severity_group(4) == 0
