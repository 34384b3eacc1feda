"""benchmarks/storage_variants.py on a tiny study: every variant is made and graded, and the
lossless ones give the original's results exactly (same pixels, same pipeline)."""
import json
import shutil

import pytest

from lumbar_edge.benchmarks import storage_variants
from lumbar_edge.dicom import scan_path

LOSSLESS = ["dcmtk: big endian", "dcmtk: deflated", "dcmtk: implicit", "dcmtk: bare data set (no preamble, no meta)",
            "dcmtk: JPEG lossless SV1", "dcmtk: JPEG lossless", "dcmtk: JPEG-LS lossless", "dcmtk: RLE",
            "no extensions, one flat folder", "shuffled names and instance numbers",
            "sagittal T2 with a second echo per position", "derived MPR copy of the sagittal T2"]


@pytest.mark.slow
def test_every_storage_variant_is_graded_and_the_lossless_ones_exactly_alike(tiny_rsna, tiny_bundle, tmp_path):
    _, val_dir = tiny_rsna
    study = scan_path(val_dir / "train_images", progress=False).studies[0]
    folder = val_dir / "train_images" / study.study_id
    out = tmp_path / "rows.json"
    rc = storage_variants.main(["--model", str(tiny_bundle), "--study", str(folder), "--work", str(tmp_path / "w"),
                                "--json", str(out)])
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert rc == 0, {k: r.get("error") for k, r in rows.items()}
    assert len(rows) == len(storage_variants.DCMTK) + len(storage_variants.REWRITES)
    have_dcmtk = shutil.which("dcmconv") is not None
    for name, row in rows.items():
        if name.startswith("dcmtk: ") and not have_dcmtk:
            assert row["error"].startswith("skipped"), name
            continue
        assert "error" not in row, (name, row.get("error"))
        assert sum(v["n"] for v in row["views"].values()) == 25, name
        if name in LOSSLESS:
            for view, v in row["views"].items():
                assert (v["grades_equal"], v["max_dp"], v["max_mm"], v["other_slice"]) == (v["n"], 0.0, 0.0, 0), (name, view)
    assert rows["sagittal T2 with a second echo per position"]["skipped"] == {
        "other_echo": len(study.series_of_kind("sagittal_t2")[0].instances)}
    assert rows["one sagittal T1 slice of another matrix"]["skipped"] == {"size_mismatch": 1}
