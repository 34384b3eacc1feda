"""benchmarks/cpu_engines.py on a tiny bundle: every engine and batch is timed and every ratio is
there (no figure is asserted: speed claims live in the benchmark's output)."""
import pytest

pytest.importorskip("openvino")


def test_cpu_engines_times_both_engines_per_batch_and_reports_the_ratios(tiny_bundle, tiny_rsna):
    from lumbar_edge.benchmarks.cpu_engines import format_result, run

    study = next(p for p in sorted((tiny_rsna[1] / "train_images").iterdir()) if p.is_dir())
    doc = run(tiny_bundle, [1, 2], study, warmup=0, iters=2, threads=1)
    # The tiny bundle is FP32 only: two engines x two batches.
    assert [(r["backend"], r["precision"], r["batch"]) for r in doc["rows"]] == [
        ("onnxruntime", "fp32", 1), ("openvino", "fp32", 1), ("onnxruntime", "fp32", 2), ("openvino", "fp32", 2)]
    for r in doc["rows"]:
        assert len(r["runs_s"]) == 2 and r["median_s"] > 0 and r["slices_per_s"] > 0
    assert [(r["precision"], r["batch"]) for r in doc["ratios"]] == [("fp32", 1), ("fp32", 2)]
    assert all(r["value"] > 0 and r["target"] is None for r in doc["ratios"])
    assert doc["engines"]["openvino fp32"]["inference_precision"] == "f32"
    text = format_result(doc)
    assert "onnxruntime time / openvino time" in text and "fp32 batch 2" in text and "slices of" in text
