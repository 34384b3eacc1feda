"""Training samples (training/data.py): every slice of a labelled series, with each label's
through-plane weight from patient-space geometry, and the epoch plan that draws them."""
import numpy as np
import pytest

from lumbar_edge.errors import InputError
from lumbar_edge.labels import ALL_VIEWS
from lumbar_edge.preprocess import PreprocessConfig
from lumbar_edge.training.data import RsnaDataset, SamplingConfig, build_samples, build_series, epoch_plan

PRE = PreprocessConfig(height=64, width=64, in_channels=3)


@pytest.fixture(scope="module")
def series(tiny_rsna):
    train_dir, _ = tiny_rsna
    ds = RsnaDataset.load(train_dir)
    return ds, build_series(ds, ALL_VIEWS)


def _labels_of(ds, s):
    return [c for c in ds.coordinates if c.study_id == s.study_id and c.series_id == s.series_id]


def test_every_labelled_series_of_every_view_is_kept_with_its_labels_in_patient_space(series):
    ds, all_series = series
    assert {s.view for s in all_series} == {"sagittal_t2", "sagittal_t1", "axial_t2"}
    for s in all_series:
        coords = _labels_of(ds, s)
        assert len(s.points) == len(coords)
        numbers = [inst.instance_number for inst in s.series.instances]
        assert set(s.labelled_slices) == {numbers.index(c.instance_number) for c in coords}
        for p in s.points:
            # The 3D point lies on its labelled slice's plane, at the labelled pixel.
            geom = s.series.instances[p.slice_index].geometry
            x, y, d = geom.patient_to_pixel(np.asarray(p.patient_mm))
            c = next(c for c in coords if c.level == p.level and c.condition == p.condition)
            assert abs(float(d)) < 1e-6 and abs(float(x) - c.x) < 1e-6 and abs(float(y) - c.y) < 1e-6


def test_a_slice_supervises_each_label_by_its_distance_along_the_normal(series):
    _, all_series = series
    sigma = 2.5
    for s in all_series:
        c0, c1 = ALL_VIEWS.channels[s.view]
        for index in range(s.num_slices):
            sample = s.sample(index, PRE, sigma)
            geom = s.series.instances[index].geometry
            assert not sample.present[:c0].any() and not sample.present[c1:].any()
            for ch in range(c0, c1):
                # The nearest label of this channel, by distance from this slice's plane.
                cands = [p for p in s.points if p.channel == ch]
                dist = [abs(float(geom.patient_to_pixel(np.asarray(p.patient_mm))[2])) for p in cands]
                p = cands[int(np.argmin(dist))]
                d = min(dist)
                if p.slice_index == index:
                    assert sample.weight[ch] == 1.0 and sample.on_slice[ch]
                elif d > 3 * sigma:
                    assert sample.weight[ch] == 0 and not sample.present[ch]
                    continue
                else:
                    assert sample.weight[ch] == pytest.approx(np.exp(-0.5 * (d / sigma) ** 2), rel=1e-5)
                    assert not sample.on_slice[ch]
                # The target is the label projected onto this slice, in model-input pixels.
                x, y, _ = geom.patient_to_pixel(np.asarray(p.patient_mm))
                box = _letterbox(s, index)
                assert np.allclose(sample.points[ch], box.to_model(float(x), float(y)), atol=1e-3)
                if s.view == "sagittal_t1":
                    assert sample.extra["sides"][ch] == ("left" if p.condition.startswith("left") else "right")


def _letterbox(s, index):
    from lumbar_edge.preprocess import preprocess_stack

    return preprocess_stack(np.stack([s.series.pixels(index)] * 3), PRE)[1]


def test_validation_samples_supervise_only_their_own_slice(series, tiny_rsna):
    ds, all_series = series
    for s in all_series:
        for index in s.labelled_slices:
            sample = s.sample(index, PRE, None)
            assert np.all(sample.weight[sample.present] == 1.0)
            assert sample.present.sum() == len({p.channel for p in s.points if p.slice_index == index})
    samples = build_samples(ds, ALL_VIEWS, PRE, negatives=False)
    assert len(samples) == sum(len(s.labelled_slices) for s in all_series)
    assert all(s.present.any() for s in samples)


def test_the_epoch_plan_draws_labelled_neighbour_and_far_slices_per_view(series):
    _, all_series = series
    sampling = SamplingConfig(positives=(2, 2, 3), neighbours=(1, 2, 1), negatives=(2, 2, 1), negative_gap=2)
    plan = epoch_plan(all_series, sampling, np.random.default_rng(5))
    assert plan == epoch_plan(all_series, sampling, np.random.default_rng(5))
    assert len(plan) == len(epoch_plan(all_series, sampling, np.random.default_rng(6)))  # fixed length
    for i, s in enumerate(all_series):
        drawn = [c for j, c in plan if j == i]
        n_pos, n_near, n_neg = sampling.counts(s.view)
        labelled = set(s.labelled_slices)
        on = [c for c in drawn if c in labelled]
        near = [c for c in drawn if c not in labelled and min(abs(c - j) for j in labelled) == 1]
        far = [c for c in drawn if min(abs(c - j) for j in labelled) >= 2]
        assert len(on) == n_pos and len(near) + len(far) + len(on) == len(drawn)
        # Each labelled slice is drawn before any is drawn again.
        assert set(on) == labelled or len(set(on)) == n_pos
        assert len(near) == min(n_near, len(s.neighbour_slices())) and len(set(near)) == len(near)
        assert len(far) == min(n_neg, len(s.negative_slices(2))) and len(set(far)) == len(far)


def test_sampling_options_are_checked():
    with pytest.raises(InputError, match="sigma"):
        SamplingConfig(sigma_mm=0)
    with pytest.raises(InputError, match="negatives"):
        SamplingConfig(negatives=(1, 2))
    with pytest.raises(InputError, match="positives"):
        SamplingConfig(positives=(1, -1, 1))
    cfg = SamplingConfig(sigma_mm=3.0, neighbours=(0, 1, 2))
    assert SamplingConfig.from_dict(cfg.to_dict()) == cfg


def test_a_series_stored_for_another_patient_position_gives_the_same_samples(tmp_path):
    """Slices stored flipped (feet first, prone: the generator moves the plain pixels) are
    turned to the trained orientation with their labels: the very samples of the plain study."""
    from lumbar_edge.synth import SynthOptions, synthesize

    opts = SynthOptions.tiny(partly_unlabelled_fraction=0.0)
    synthesize(tmp_path / "plain", n_studies=1, seed=13, workers=1, options=opts)
    synthesize(tmp_path / "ffp", n_studies=1, seed=13, workers=1, options=opts.replace(patient_position="FFP"))
    plain = {s.view: s for s in build_series(RsnaDataset.load(tmp_path / "plain"), ALL_VIEWS)}
    flipped = {s.view: s for s in build_series(RsnaDataset.load(tmp_path / "ffp"), ALL_VIEWS)}
    assert plain.keys() == flipped.keys() == {"sagittal_t2", "sagittal_t1", "axial_t2"}
    for view, a in plain.items():
        b = flipped[view]
        assert a.num_slices == b.num_slices
        for index in {p.slice_index for p in a.points}:
            sa, sb = a.sample(index, PRE, 2.5), b.sample(index, PRE, 2.5)
            np.testing.assert_allclose(sa.image, sb.image, atol=1e-5, err_msg=view)
            np.testing.assert_array_equal(sa.present, sb.present)
            np.testing.assert_allclose(sa.points[sa.present], sb.points[sb.present], atol=1e-2, err_msg=view)
