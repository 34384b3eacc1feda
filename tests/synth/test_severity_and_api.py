"""Grade statistics like the real data, and the in-memory API (render_study, plan_study)."""
from __future__ import annotations

import numpy as np
import pytest

from lumbar_edge.errors import InputError
from lumbar_edge.labels import CONDITIONS, LEVELS
from lumbar_edge.synth import SynthOptions, paint_geometry, plan_study, render_study
from lumbar_edge.synth.severity import NARROWING, sample_grades, sample_narrowing, thresholds


@pytest.fixture(scope="module")
def grades():
    rng = np.random.default_rng(0)
    prior = SynthOptions().severity_prior
    draws = [sample_grades(rng, prior) for _ in range(3000)]
    return np.array([[[d[(c, lv)] for lv in LEVELS] for c in CONDITIONS] for d in draws])  # (n, 5, 5)


def test_overall_shares_match_the_prior(grades):
    shares = [float(np.mean(grades == g)) for g in range(3)]
    assert np.allclose(shares, SynthOptions().severity_prior, atol=0.02), shares


def test_lower_levels_are_worse(grades):
    mean_by_level = grades.mean(axis=(0, 1))
    assert mean_by_level[3] > mean_by_level[0] + 0.3 and mean_by_level[4] > mean_by_level[1] + 0.2


def test_neighbouring_levels_and_sides_are_correlated(grades):
    canal = grades[:, 0, :]
    r_next = np.corrcoef(canal[:, 2], canal[:, 3])[0, 1]
    r_far = np.corrcoef(canal[:, 0], canal[:, 4])[0, 1]
    assert r_next > r_far and r_next > 0.15
    r_sides = np.corrcoef(grades[:, 1, 3], grades[:, 2, 3])[0, 1]
    assert r_sides > 0.3


def test_thresholds_follow_other_priors():
    rng = np.random.default_rng(1)
    prior = (0.8, 0.15, 0.05)
    t1, t2 = thresholds(prior)
    assert t1 < t2
    draws = np.array([list(sample_grades(rng, prior).values()) for _ in range(1500)])
    assert abs(np.mean(draws == 2) - 0.05) < 0.015


def test_narrowing_ranges_per_grade():
    rng = np.random.default_rng(2)
    g = {("spinal_canal_stenosis", lv): i % 3 for i, lv in enumerate(LEVELS)}
    n = sample_narrowing(rng, g)
    for key, grade in g.items():
        lo, hi = NARROWING[grade]
        assert lo <= n[key] <= hi


def test_render_study_in_memory():
    options = SynthOptions.tiny()
    study = render_study(7, 2, options)
    plan = study.plan
    assert {s.kind for s in plan.series} == {"sagittal_t1", "sagittal_t2", "axial_t2"}
    for s in plan.series:
        img = study.images[s.series_id]
        assert img.dtype == np.uint16 and img.shape == (s.geometry.n_slices, s.geometry.rows, s.geometry.cols)
        assert img.max() < 2 ** options.bits_stored
    assert len(plan.labels) == 25
    for lab in plan.labels:
        s = next(x for x in plan.series if x.series_id == lab.series_id)
        assert 1 <= lab.instance_number <= s.geometry.n_slices
        assert abs(lab.plane_distance_mm) <= s.geometry.slice_spacing / 2 + 1e-9
        assert 0 <= lab.x < s.geometry.cols and 0 <= lab.y < s.geometry.rows
    truth = plan.truth()
    assert truth["study_id"] == plan.study_id and len(truth["keypoints"]) == 25


def test_noise_free_render_shows_csf_at_the_canal_point():
    plan = plan_study(7, 0, SynthOptions(sagittal_matrix=(192,)))
    s = plan.series_of("sagittal_t2")
    lab = plan.label("spinal_canal_stenosis", "l2_l3")
    img = paint_geometry(plan.anatomy, s.geometry, lab.instance_number - 1, s.sequence)
    # CSF is the brightest tissue on T2 and STIR; the canal point lies in it.
    value = img[int(round(lab.y)), int(round(lab.x))]
    assert value > 0.8 * np.percentile(img, 99.5)


def test_anatomy_and_protocol_vary_between_studies():
    plans = [plan_study(9, i) for i in range(12)]
    scales = [p.anatomy.params["scale"] for p in plans]
    assert max(scales) / min(scales) > 1.1
    matrices = {p.series_of("sagittal_t1").geometry.rows for p in plans}
    assert len(matrices) > 1
    iops = {tuple(np.round(p.series_of("sagittal_t2").geometry.iop(), 3)) for p in plans}
    assert len(iops) == len(plans)  # every study has its own small obliquity
    assert len({p.study_id for p in plans}) == len(plans)


def test_options_validation():
    with pytest.raises(InputError):
        SynthOptions(axial_slices=(10, 5))
    with pytest.raises(InputError):
        SynthOptions(stir_probability=1.5)
    with pytest.raises(InputError):
        SynthOptions(bits_stored=10)
    assert SynthOptions.tiny(stir_probability=1.0).stir_probability == 1.0


def test_stir_series_when_asked():
    plan = plan_study(3, 0, SynthOptions.tiny(stir_probability=1.0))
    s = plan.series_of("sagittal_t2")
    assert s.sequence == "STIR" and "IR" in s.timing["ScanningSequence"] and 150 <= s.timing["InversionTime"] <= 200
    assert plan.series_of("sagittal_t2").description == "Sagittal T2/STIR"
    plan = plan_study(3, 0, SynthOptions.tiny(stir_probability=0.0))
    assert plan.series_of("sagittal_t2").sequence == "T2" and "InversionTime" not in plan.series_of("sagittal_t2").timing
