"""Ingestion on the project's own synthetic studies, with the series descriptions removed."""
import csv
import shutil

import pydicom

from lumbar_edge.dicom import scan_path

EXPECTED = {"Sagittal T1": "sagittal_t1", "Sagittal T2/STIR": "sagittal_t2", "Axial T2": "axial_t2"}


def test_every_synthetic_series_classifies_from_tags_alone(tiny_rsna, tmp_path):
    train_dir, _ = tiny_rsna
    images = tmp_path / "train_images"
    shutil.copytree(train_dir / "train_images", images)
    stripped = 0
    for path in images.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.SeriesDescription
        ds.save_as(path)
        stripped += 1
    assert stripped > 0
    with (train_dir / "train_series_descriptions.csv").open(newline="") as fh:
        expected = {r["series_id"]: EXPECTED[r["series_description"]] for r in csv.DictReader(fh)}

    result = scan_path(images, progress=False)

    found = {s.series_id: (s.kind.value, s.classified_by, s.description) for st in result.studies for s in st.series}
    assert {k: v[0] for k, v in found.items()} == expected
    assert all(by == "tags" and desc == "" for _, by, desc in found.values())
    assert not result.skipped
