"""The bundle's class priors, and the prior baseline in its validation figures, come from the
training labels, never from the validation labels they are compared against."""
import json

import numpy as np

from lumbar_edge.export.build import export_bundle
from lumbar_edge.training.data import RsnaDataset
from lumbar_edge.training.evaluation import class_priors


def test_priors_and_prior_score_use_the_training_labels(tiny_rsna, tiny_checkpoint, tmp_path):
    train_dir, val_dir = tiny_rsna
    train_priors = class_priors(list(RsnaDataset.load(train_dir).labels.values()))
    val_priors = class_priors(list(RsnaDataset.load(val_dir).labels.values()))
    # The two tiny sets differ, so the test can tell which one was used.
    assert any(not np.allclose(train_priors[c], val_priors[c]) for c in train_priors)

    out = tmp_path / "bundle"
    export_bundle(tiny_checkpoint, out, ("fp32",), calib=train_dir, val=val_dir, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    for cond, probs in manifest["class_priors"].items():
        assert np.allclose(probs, train_priors[cond])
    assert manifest["training"]["class_priors_source"] == str(train_dir)

    from lumbar_edge.training.metrics import competition_score

    # The prior baseline on the validation rows, scored by hand with the training priors.
    labels = RsnaDataset.load(val_dir).labels
    rows = {f"{sid}_{col}": train_priors[next(c for c in train_priors if col.startswith(c))]
            for sid, lab in labels.items() for col in lab}
    expected = competition_score(rows, labels)["score"]
    assert np.isclose(manifest["models"][0]["validation"]["prior_score"], expected)
