"""End-to-end tests of the training loop on tiny synthetic studies."""
import json

import pytest
import torch

from lumbar_edge.errors import InputError
from lumbar_edge.labels import ALL_VIEWS
from lumbar_edge.preprocess import PreprocessConfig
from lumbar_edge.training.data import RsnaDataset, build_samples, split_studies
from lumbar_edge.training.train import TrainConfig, load_checkpoint, train


def _cfg(data, val, out, **kw):
    base = dict(data=str(data), out=str(out), val_data=str(val), size=64, epochs=2, batch_size=4, width=8,
                decoder_channels=16, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_samples_put_labels_on_the_pixels_through_ingestion_and_preprocessing(tiny_rsna):
    train_dir, _ = tiny_rsna
    ds = RsnaDataset.load(train_dir)
    pre = PreprocessConfig(height=64, width=64, in_channels=3)
    samples = build_samples(ds, ALL_VIEWS, pre)
    views = {s.view for s in samples}
    assert views == {"sagittal_t2", "sagittal_t1", "axial_t2"}
    negatives = [s for s in samples if not s.present.any()]
    assert negatives and all(s.view != "axial_t2" for s in negatives)
    for s in samples:
        c0, c1 = ALL_VIEWS.channels[s.view]
        assert s.image.shape == (3, 64, 64)
        assert s.channel_mask[c0:c1].all() and s.channel_mask.sum() == c1 - c0
        assert not s.present[:c0].any() and not s.present[c1:].any()
        pts = s.points[s.present]
        assert ((pts >= 0) & (pts < 64)).all()
    # Every labelled T1 keypoint records its side; every axial sample its level.
    assert all(s.extra["sides"] for s in samples if s.view == "sagittal_t1" and s.present.any())
    assert all(s.extra.get("level") for s in samples if s.view == "axial_t2")


def test_split_is_by_study_and_reproducible():
    ids = [str(i) for i in range(10)]
    a = split_studies(ids, 0.3, seed=1)
    assert a == split_studies(ids, 0.3, seed=1)
    train, val = a
    assert len(val) == 3 and not set(train) & set(val) and sorted(train + val, key=int) == ids


def test_train_writes_weights_only_checkpoints_and_validation_figures(tiny_rsna, tmp_path):
    train_dir, val_dir = tiny_rsna
    out = tmp_path / "run"
    result = train(_cfg(train_dir, val_dir, out), progress=False)
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["size"] == 64 and config["width"] == 8
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and "model" in state and state["layout"]["views"] == list(ALL_VIEWS.views)
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2
    for key in ("val_score", "val_prior_score", "val_loc_px_median", "train_heatmap", "train_offset", "train_severity"):
        assert key in history[-1] and history[-1][key] == history[-1][key]  # present and not NaN
    assert result.best_epoch in (0, 1)


def test_resume_continues_from_the_last_epoch(tiny_rsna, tmp_path):
    train_dir, val_dir = tiny_rsna
    out = tmp_path / "run"
    train(_cfg(train_dir, val_dir, out, epochs=1), progress=False)
    # Same schedule length, resumed: runs only the remaining epoch.
    result = train(_cfg(train_dir, val_dir, out, epochs=2), resume=out / "last.pt", progress=False)
    assert [h["epoch"] for h in result.history] == [1]
    assert load_checkpoint(out / "last.pt")["epoch"] == 1


def test_ablation_switches_and_bad_inputs(tiny_rsna, tmp_path):
    train_dir, val_dir = tiny_rsna
    out = tmp_path / "abl"
    result = train(_cfg(train_dir, val_dir, out, epochs=1, attention=False, offset_loss=False,
                        heatmap_loss="bce"), progress=False)
    state = load_checkpoint(out / "last.pt")
    assert state["train_config"]["offset_loss"] is False and state["model_config"]["attention"] is False
    assert not any("attention" in k for k in state["model"])
    # The offset term is still reported for monitoring, but is not part of the total loss.
    h = result.history[0]
    assert h["train_offset"] > 0
    assert h["train_loss"] == pytest.approx(h["train_heatmap"] + h["train_severity"] + h["train_identity"])
    with pytest.raises(InputError, match="train.csv"):
        train(_cfg(tmp_path / "nowhere", val_dir, tmp_path / "x"), progress=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable lumbar-edge checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_time_budget_stops_before_an_epoch_that_would_overrun(tiny_rsna, tmp_path):
    train_dir, val_dir = tiny_rsna
    out = tmp_path / "budget"
    # Any real epoch takes longer than 0.06 s, so after the first one no further epoch fits.
    result = train(_cfg(train_dir, val_dir, out, epochs=3, time_limit_min=0.001), progress=False)
    assert len(result.history) == 1
    assert json.loads((out / "result.json").read_text())["stopped_early"] is True
