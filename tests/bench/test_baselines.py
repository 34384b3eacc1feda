"""The end-to-end baselines do the same job as lumbar-edge: same findings from the naive loader,
and the end-to-end benchmark's document has every contender and ratio (n/a with reasons on CPU)."""
from pathlib import Path

import pytest

from lumbar_edge.benchmarks.baselines import baseline_engine, baseline_unavailable, naive_load_study
from lumbar_edge.bundle import Bundle
from lumbar_edge.pipeline import Pipeline


@pytest.fixture(scope="module")
def one_study(tiny_rsna):
    _, val_dir = tiny_rsna
    return next(p for p in sorted((val_dir / "train_images").iterdir()) if p.is_dir())


def test_the_naive_loader_feeds_the_pipeline_the_same_study(tiny_bundle, one_study):
    bundle = Bundle.load(tiny_bundle)
    study = naive_load_study(one_study)
    with Pipeline.load(tiny_bundle, backend="onnxruntime", precision="fp32") as ours, \
            Pipeline(bundle, baseline_engine("c", bundle)) as naive:
        want, got = ours.run_study(one_study), naive.run_study(study)
    assert [(f.condition, f.level, f.probabilities) for f in got.findings] == \
        [(f.condition, f.level, f.probabilities) for f in want.findings]
    assert got.series_used == want.series_used


def test_end_to_end_document_lists_every_contender_and_ratio(tiny_bundle, one_study):
    from lumbar_edge.backends.openvino import OpenVinoEngine
    from lumbar_edge.benchmarks.end_to_end import RATIOS, format_result, run

    doc = run(tiny_bundle, one_study, repeats=1, batch=4, overlays=False, progress=False)
    names = [c["name"] for c in doc["contenders"]]
    assert names == ["lumbar-edge cpu int8", "lumbar-edge cpu fp32", "lumbar-edge openvino int8",
                     "lumbar-edge openvino fp32", "lumbar-edge gpu", "a", "b", "c"]
    by = {c["name"]: c for c in doc["contenders"]}
    assert "na" in by["lumbar-edge cpu int8"]  # the tiny bundle has no INT8 model
    # No INT8 model, or no openvino: either way the row says why instead of disappearing.
    assert by["lumbar-edge openvino int8"]["na"]
    assert ("na" in by["lumbar-edge openvino fp32"]) != OpenVinoEngine.is_available()
    assert by["lumbar-edge cpu fp32"]["median_s"] > 0 and by["c"]["same_grades_as_lumbar_edge_fp32"] == 1.0
    if baseline_unavailable("b", Bundle.load(tiny_bundle)):
        assert "CUDA" in by["b"]["na"]
    assert [r["ratio"] for r in doc["ratios"]] == [r[0] for r in RATIOS]
    for r in doc["ratios"]:
        assert (r["value"] is None) == bool(r["na"])
    text = format_result(doc)
    assert "baseline (c) is read as" in text and "(c) naive ONNX Runtime FP32 / lumbar-edge cpu fp32" in text


def test_root_scaling_times_both_modes_and_bounds_the_overlap_by_cpu_time(tiny_bundle, tiny_rsna, tmp_path):
    from lumbar_edge.benchmarks.scaling import format_result, root_scaling

    _, val_dir = tiny_rsna
    rows = root_scaling(tiny_bundle, val_dir / "train_images", [1, 2], "onnxruntime", "fp32", tmp_path, overlays=False)
    assert [r["studies"] for r in rows] == [1, 2]
    for r in rows:
        assert r["sequential_s"] > 0 and r["overlapped_s"] > 0 and r["sequential_cpu_s"] > 0
        assert r["overlap_speedup"] == pytest.approx(r["sequential_s"] / r["overlapped_s"])
        # CPU time over wall time is how many cores were busy: between none and all of them
        # (a little over, for the clocks' granularity), and the ceiling is its inverse times cores.
        assert 0 < r["sequential_cores_busy"] <= r["cores"] * 1.1
        assert r["overlap_ceiling_cpu"] == pytest.approx(r["cores"] / r["sequential_cores_busy"])
    doc = {"backend": "onnxruntime", "precision": "fp32", "overlays": False, "slices": [], "roots": rows,
           "machine": {"processor": "x86_64", "cpus": rows[0]["cores"], "gpu": None}}
    assert "no overlap can beat" in format_result(doc)
    # RESULTS.md (what gpu_suite.sh pastes) carries the same rows, with how busy the host was.
    import json

    from lumbar_edge.benchmarks.results_md import render

    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "scaling.json").write_text(json.dumps(dict(doc, slices=[])))
    md = render(folder)
    assert "host cores busy, sequential" in md
    assert f"| 2 | {rows[1]['sequential_studies_per_s']:.3f} |" in md and f"of {rows[1]['cores']} |" in md
