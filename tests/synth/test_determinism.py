"""Same seed -> byte-identical files whatever the number of workers; another seed differs."""
from __future__ import annotations

import hashlib

import numpy as np

from lumbar_edge.synth import allocate_ids, render_study, synthesize
from synth_helpers import TINY_SEED, TINY_STUDIES


def _digest(root):
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_same_seed_gives_identical_bytes(tiny_dataset, tmp_path, tiny_options):
    root, _ = tiny_dataset
    again = tmp_path / "again"
    synthesize(again, TINY_STUDIES, seed=TINY_SEED, workers=1, options=tiny_options)  # in-process
    first, second = _digest(root), _digest(again)
    assert first.keys() == second.keys() and len(first) > 20
    different = [k for k in first if first[k] != second[k]]
    # The truth file and CSVs name no paths or times, so everything must match.
    assert different == []


def test_other_seed_differs(tiny_dataset, tmp_path, tiny_options):
    root, _ = tiny_dataset
    other = tmp_path / "other"
    synthesize(other, 1, seed=TINY_SEED + 1, workers=1, options=tiny_options)
    assert (root / "train.csv").read_bytes() != (other / "train.csv").read_bytes()
    a = render_study(TINY_SEED, 0, tiny_options)
    b = render_study(TINY_SEED + 1, 0, tiny_options)
    assert a.study_id != b.study_id
    assert not np.array_equal(a.image("sagittal_t1")[0], b.image("sagittal_t1")[0][: a.image("sagittal_t1").shape[1]])


def test_study_does_not_depend_on_dataset_size(tiny_options):
    # Study i is the same whether the dataset has 2 or 5 studies (a pure function of seed, i).
    assert allocate_ids(3, 2) == allocate_ids(3, 5)[:2]
    a = render_study(3, 1, tiny_options)
    b = render_study(3, 1, tiny_options, allocate_ids(3, 5)[1])
    assert a.study_id == b.study_id
    for sid, img in a.images.items():
        assert np.array_equal(img, b.images[sid])


def test_negative_seed_is_its_own_dataset(tiny_options):
    assert allocate_ids(-5, 1) != allocate_ids(5, 1)
