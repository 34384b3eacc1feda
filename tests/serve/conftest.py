"""Fixtures of the listener tests: dcmtk (skipped with its reason when absent; CI installs it),
small synthetic studies to send, and a listener running in this process on a free port."""
from __future__ import annotations

import contextlib
import logging

import pytest
from serve_helpers import clone_study, dcmtk_missing_reason, free_port

from lumbar_edge.synth import SynthOptions, synthesize


@pytest.fixture(scope="session")
def dcmtk():
    reason = dcmtk_missing_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def source_studies(tmp_path_factory):
    """Two small synthetic studies (about 24 instances each) to clone test studies from."""
    root = tmp_path_factory.mktemp("serve_src")
    opts = SynthOptions.tiny(partly_unlabelled_fraction=0.0, sagittal_slices=(7, 7), axial_slices=(10, 10))
    synthesize(root, n_studies=2, seed=21, workers=1, options=opts, progress=False)
    return sorted(p for p in (root / "train_images").iterdir() if p.is_dir())


@pytest.fixture
def make_studies(source_studies, tmp_path):
    """``make_studies(n)``: n studies with fresh UIDs and the sentinel patient name/ID, each in
    its own folder; returns a list of ``{"study_uid", "sop_uids", "folder"}``."""
    counter = iter(range(10_000))

    def make(n: int, where: str = "studies"):
        out = []
        for _ in range(n):
            i = next(counter)
            out.append(clone_study(source_studies[i % len(source_studies)], tmp_path / where / f"s{i:03d}", i))
        return out
    return make


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_bundle):
    from lumbar_edge.pipeline import Pipeline

    with Pipeline.load(tiny_bundle, backend="onnxruntime") as pipe:
        yield pipe


@pytest.fixture
def listener(tiny_bundle, tiny_pipeline, tmp_path, caplog):
    """``listener(**config)``: a context manager running a :class:`Server` in this process on a
    free loopback port (the shared tiny pipeline; quiet time 0.5 s, no PNG overlays unless
    asked); logs are captured at DEBUG for the patient-data checks."""
    from lumbar_edge.serve import Server, ServeConfig

    caplog.set_level(logging.DEBUG)

    @contextlib.contextmanager
    def run(**overrides):
        settings = dict(model=tiny_bundle, spool=tmp_path / "spool", out=tmp_path / "out", host="127.0.0.1",
                        port=free_port(), quiet_time=0.5, overlays=False, retry_base=0.2, retry_max=1.0,
                        network_timeout=10.0)
        settings.update(overrides)
        server = Server(ServeConfig(**settings), pipeline=tiny_pipeline).start()
        try:
            yield server
        finally:
            server.stop()
    return run
