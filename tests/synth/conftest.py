"""Fixtures for the synthetic study generator: one tiny dataset written once per session."""
from __future__ import annotations

import pytest
from synth_helpers import TINY_SEED, TINY_STUDIES

from lumbar_edge.synth import SynthOptions, synthesize


@pytest.fixture(scope="session")
def tiny_options() -> SynthOptions:
    return SynthOptions.tiny()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_options):
    """(root, summary) of a 3-study tiny dataset written with two worker processes."""
    root = tmp_path_factory.mktemp("synth") / "data"
    summary = synthesize(root, TINY_STUDIES, seed=TINY_SEED, workers=2, options=tiny_options)
    return root, summary
