"""DICOM files: valid Part 10, MR headers the ingestion classifies by, exact label geometry."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from lumbar_edge.synth import load_truth
from synth_helpers import read_csv

REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
            "StudyID", "SeriesNumber", "InstanceNumber", "PatientName", "PatientID", "PatientBirthDate",
            "PatientSex", "Modality", "Manufacturer", "MagneticFieldStrength", "ImageOrientationPatient",
            "ImagePositionPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices", "SliceLocation",
            "ScanningSequence", "SequenceVariant", "ScanOptions", "RepetitionTime", "EchoTime", "EchoTrainLength",
            "SeriesDescription", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
            "PhotometricInterpretation", "WindowCenter", "WindowWidth", "PixelData", "StudyDate", "SamplesPerPixel")


def _codes(value):
    return [value] if isinstance(value, str) else list(value)


def _series(root):
    _, rows = read_csv(root / "train_series_descriptions.csv")
    for r in rows:
        folder = root / "train_images" / r["study_id"] / r["series_id"]
        files = sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem))
        yield r, [pydicom.dcmread(f) for f in files]


def test_headers_valid_and_complete(tiny_dataset):
    root, _ = tiny_dataset
    study_uids = {}
    sop_uids = set()
    for row, datasets in _series(root):
        series_uids = {ds.SeriesInstanceUID for ds in datasets}
        assert len(series_uids) == 1
        for ds in datasets:
            assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert ds.file_meta.MediaStorageSOPClassUID == MRImageStorage == ds.SOPClassUID
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            missing = [k for k in REQUIRED if k not in ds]
            assert not missing, missing
            assert ds.StudyID == row["study_id"] and ds.Modality == "MR"
            assert ds.Manufacturer == "lumbar-edge synth" and str(ds.PatientName).startswith("SYNTH^")
            assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0 and ds.HighBit == ds.BitsStored - 1
            arr = ds.pixel_array
            assert arr.dtype == np.uint16 and arr.shape == (ds.Rows, ds.Columns)
            assert int(arr.max()) < 2 ** ds.BitsStored and arr.max() > 0
            sop_uids.add(ds.SOPInstanceUID)
            for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID):
                assert len(uid) <= 64 and pydicom.uid.UID(uid).is_valid
        study_uids.setdefault(row["study_id"], set()).add(datasets[0].StudyInstanceUID)
        numbers = [int(ds.InstanceNumber) for ds in datasets]
        assert numbers == list(range(1, len(datasets) + 1))
    assert all(len(v) == 1 for v in study_uids.values())
    assert len({next(iter(v)) for v in study_uids.values()}) == len(study_uids)
    assert len(sop_uids) == sum(1 for _ in root.rglob("*.dcm"))


def test_plane_and_sequence_tags(tiny_dataset):
    root, _ = tiny_dataset
    for row, datasets in _series(root):
        ds = datasets[0]
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        r, c = iop[:3], iop[3:]
        assert abs(r @ c) < 1e-5 and abs(np.linalg.norm(r) - 1) < 1e-5 and abs(np.linalg.norm(c) - 1) < 1e-5
        normal = np.cross(r, c)
        tr, te = float(ds.RepetitionTime), float(ds.EchoTime)
        desc = row["series_description"]
        if desc.startswith("Sagittal"):
            # Rows run anterior->posterior, columns head->feet, slices stacked along x.
            assert r @ [0, 1, 0] > 0.97 and c @ [0, 0, -1] > 0.97 and abs(normal[0]) > 0.99
        else:
            assert r @ [1, 0, 0] > 0.99 and c @ [0, 1, 0] > 0.9 and abs(normal[2]) > 0.9
        if desc == "Sagittal T1":
            assert 400 <= tr <= 700 and 8 <= te <= 15 and _codes(ds.ScanningSequence) == ["SE"]
            assert "InversionTime" not in ds
        elif desc == "Axial T2":
            assert 3000 <= tr <= 5000 and 80 <= te <= 110
        elif "IR" in _codes(ds.ScanningSequence):  # STIR
            assert 150 <= float(ds.InversionTime) <= 200 and 30 <= te <= 60
        else:
            assert 2500 <= tr <= 4500 and 80 <= te <= 120
        # Slices are parallel, evenly spaced along the normal, SliceLocation consistent.
        pos = np.array([np.asarray(d.ImagePositionPatient, dtype=float) for d in datasets])
        along = pos @ normal
        steps = np.diff(along)
        assert np.allclose(np.abs(steps), float(ds.SpacingBetweenSlices), atol=1e-3)
        assert np.all(np.sign(steps) == np.sign(steps[0]))
        assert np.allclose([float(d.SliceLocation) for d in datasets], along, atol=1e-4)


def test_ingestion_classifies_the_series(tiny_dataset):
    dicom = pytest.importorskip("lumbar_edge.dicom")
    if not hasattr(dicom, "scan_path"):
        pytest.skip("lumbar_edge.dicom.scan_path not available")
    root, _ = tiny_dataset
    _, rows = read_csv(root / "train_series_descriptions.csv")
    expected = {r["series_id"]: {"Sagittal T1": "sagittal_t1", "Sagittal T2/STIR": "sagittal_t2",
                                 "Axial T2": "axial_t2"}[r["series_description"]] for r in rows}
    result = dicom.scan_path(root / "train_images", progress=False)
    found = {}
    for study in result.studies:
        for series in study.series:
            found[str(series.series_id)] = getattr(series.kind, "value", series.kind)
    assert found == expected


def test_label_points_project_exactly(tiny_dataset):
    """The 3D truth point, projected through the labelled instance's own header geometry, gives
    the CSV x, y and lies within half a slice spacing of that plane."""
    root, _ = tiny_dataset
    truth = load_truth(root)
    _, coords = read_csv(root / "train_label_coordinates.csv")
    by_key = {(r["study_id"], r["condition"], r["level"]): r for r in coords}
    checked = 0
    for study in truth["studies"]:
        for kp in study["keypoints"]:
            if not kp["labelled"]:
                continue
            cond = " ".join(w.capitalize() for w in kp["condition"].split("_"))
            level = kp["level"].upper().replace("_", "/")
            row = by_key[(str(study["study_id"]), cond, level)]
            ds = pydicom.dcmread(root / "train_images" / row["study_id"] / row["series_id"]
                                 / f"{row['instance_number']}.dcm", stop_before_pixels=True)
            iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
            ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
            dr, dc = (float(v) for v in ds.PixelSpacing)
            v = np.asarray(kp["xyz_mm"]) - ipp
            x, y = v @ iop[:3] / dc, v @ iop[3:] / dr
            assert abs(x - float(row["x"])) < 0.01 and abs(y - float(row["y"])) < 0.01
            assert 0 <= x < ds.Columns and 0 <= y < ds.Rows
            normal = np.cross(iop[:3], iop[3:])
            assert abs(v @ normal) <= float(ds.SpacingBetweenSlices) / 2 + 1e-3
            checked += 1
    assert checked >= 60


def test_sides_follow_lps(tiny_dataset):
    """Left labels lie at larger patient x (LPS: +x is the patient's left) than right ones."""
    root, _ = tiny_dataset
    for study in load_truth(root)["studies"]:
        pts = {(k["condition"], k["level"]): k["xyz_mm"] for k in study["keypoints"]}
        for kind in ("neural_foraminal_narrowing", "subarticular_stenosis"):
            for lv in ("l1_l2", "l3_l4", "l5_s1"):
                left, right = pts[(f"left_{kind}", lv)], pts[(f"right_{kind}", lv)]
                assert left[0] - right[0] > 10.0
        # Levels run from head (+z) to feet.
        zs = [pts[("spinal_canal_stenosis", lv)][2] for lv in ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")]
        assert all(a > b for a, b in zip(zs, zs[1:]))
