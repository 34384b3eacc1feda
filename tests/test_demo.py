"""`lumbar-edge demo` end to end (the README's main command), on tiny studies and a tiny network."""
import csv
import json
import struct

import pytest

from lumbar_edge.demo import DemoConfig, run_demo
from lumbar_edge.errors import InputError
from lumbar_edge.labels import CONDITIONS, LEVELS


@pytest.mark.slow
def test_demo_makes_a_bundle_reports_csv_and_overlays(tmp_path):
    out = tmp_path / "demo"
    lines = []
    config = DemoConfig(train_studies=3, val_studies=2, tiny=True,
                        overrides=(("size", 64), ("epochs", 1), ("batch_size", 4), ("width", 8)))
    figures = run_demo(out, config, progress=False, echo=lines.append)

    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert [m["precision"] for m in manifest["models"]] == ["fp32", "int8"]
    int8 = manifest["models"][1]
    assert int8["qdq_check"]["ok"] and "deltas" in int8["accuracy_vs_fp32"]

    held_out = sorted(p.name for p in (out / "data" / "heldout" / "train_images").iterdir())
    assert figures["studies_ok"] == len(held_out) == 2 and figures["studies_failed"] == 0
    reports = sorted(p.stem for p in (out / "results").glob("*.json") if p.stem != "summary")
    assert reports == held_out
    with open(out / "results" / "submission.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 25 * len(held_out)
    expected = {f"{sid}_{c}_{lv}" for sid in held_out for c in CONDITIONS for lv in LEVELS}
    assert {r["row_id"] for r in rows} == expected
    for r in rows:
        probs = [float(r["normal_mild"]), float(r["moderate"]), float(r["severe"])]
        assert abs(sum(probs) - 1) < 1e-3 and min(probs) >= 0
    overlays = list((out / "results" / "overlays").glob("*.png"))
    assert overlays
    for png in overlays:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 64 and height >= 64
    assert json.loads((out / "demo.json").read_text())["studies_ok"] == 2
    assert any("NOT FOR CLINICAL USE" in line for line in lines)
    # The end-to-end figures score the run's own CSV and reports against the held-out labels,
    # per view (an all-views figure can hide one view far off), beside the class prior's score.
    assert figures["pipeline_score"] > 0 and figures["pipeline_keypoints"] > 0
    assert figures["pipeline_prior_score"] > 0
    assert 0 <= figures["pipeline_keypoints_far"] <= figures["pipeline_keypoints"]
    assert set(figures["pipeline_views"]) <= {"spinal", "foraminal", "subarticular"} and figures["pipeline_views"]
    for view in figures["pipeline_views"].values():
        assert {"median_px", "within_px", "near_labelled_slice", "far", "n"} <= set(view)
    text = "\n".join(lines)
    assert "end to end on the 2 held-out studies" in text and "for the class prior" in text
    rows = {"spinal": "spinal canal (sagittal T2)", "foraminal": "foramina (sagittal T1)",
            "subarticular": "subarticular (axial T2)"}
    for group, name in rows.items():
        assert any(line.strip().startswith(name) for line in lines) == (group in figures["pipeline_views"])
    assert any(line.strip().startswith("reports warning that levels share a point:") for line in lines)
    saved = json.loads((out / "demo.json").read_text())
    assert saved["pipeline_views"].keys() == figures["pipeline_views"].keys()


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        run_demo(tmp_path, DemoConfig(tiny=True), progress=False, echo=lambda _: None)
    assert (tmp_path / "keep.txt").read_text() == "mine"
