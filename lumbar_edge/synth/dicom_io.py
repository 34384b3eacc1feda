"""Writing a rendered study as DICOM MR files (explicit VR little endian, MR Image Storage).

Headers follow what a scanner writes for a 2D turbo spin echo lumbar protocol: patient, study,
series and frame-of-reference identity, the slice geometry (ImagePositionPatient,
ImageOrientationPatient, PixelSpacing, SliceThickness, SpacingBetweenSlices, SliceLocation),
the sequence (ScanningSequence, SequenceVariant, ScanOptions, RepetitionTime, EchoTime,
InversionTime for STIR, EchoTrainLength) and the pixel module. Every UID is derived from the
seed and the ids with :func:`pydicom.uid.generate_uid`, so the bytes are reproducible.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterator, Sequence, Tuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import PYDICOM_ROOT_UID, MRImageStorage, generate_uid

from ..dicom.meta import file_meta
from .plan import SeriesPlan, StudyPlan
from .variants import OPTIONAL_TAGS

#: UIDs are made under pydicom's registered root (with deterministic entropy per object).
UID_ROOT = PYDICOM_ROOT_UID
MANUFACTURER = "lumbar-edge synth"


def uid(seed: int, *parts: object) -> str:
    """A deterministic UID for the object named by ``parts`` in the dataset made with ``seed``."""
    return generate_uid(prefix=UID_ROOT, entropy_srcs=["lumbar-edge-synth", str(seed)] + [str(p) for p in parts])


def _ds(value: float) -> str:
    # Decimal strings are limited to 16 characters; 6 decimals are far below a micrometre.
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        text = f"{value:.10g}"
    return text


def _window(pixels: np.ndarray) -> Tuple[str, str]:
    lo, hi = np.percentile(pixels, [1.0, 99.5])
    width = max(float(hi - lo), 1.0)
    return _ds(round(float(lo) + width / 2)), _ds(round(width))


def instance_datasets(plan: StudyPlan, series: SeriesPlan, pixels: np.ndarray) -> Iterator[Tuple[int, Dataset]]:
    """``(instance_number, dataset)`` for each slice of ``series`` (one stack of it: the slices
    are numbered from ``series.first_instance``); ``pixels`` (n, rows, cols) uint16, the stack's.
    The study's variant decides PatientPosition and whether the optional tags are written."""
    g = series.geometry
    study_uid = uid(plan.seed, plan.study_id, "study")
    series_uid = uid(plan.seed, plan.study_id, series.series_id, "series")
    frame_uid = uid(plan.seed, plan.study_id, "frame-of-reference")
    centre, width = _window(pixels)
    normal = g.normal
    timing = series.timing
    bits = series.acquisition.bits_stored
    variant = plan.variant
    for k in range(g.n_slices):
        number = series.first_instance + k
        sop = uid(plan.seed, plan.study_id, series.series_id, number)
        meta = file_meta(MRImageStorage, sop)
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyDate = plan.study_date
        ds.SeriesDate = plan.study_date
        ds.AcquisitionDate = plan.study_date
        ds.ContentDate = plan.study_date
        ds.StudyTime = plan.study_time
        ds.SeriesTime = series.series_time
        ds.AcquisitionTime = series.series_time
        ds.ContentTime = series.series_time
        ds.AccessionNumber = f"SYN{plan.study_id}"
        ds.Modality = "MR"
        ds.Manufacturer = MANUFACTURER
        ds.InstitutionName = "lumbar-edge synthetic phantom"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "LUMBAR SPINE"
        ds.SeriesDescription = series.dicom_description
        ds.ManufacturerModelName = "phantom"
        for key, value in plan.patient.items():
            setattr(ds, key, value)
        ds.BodyPartExamined = "LSPINE"
        ds.ScanningSequence = list(timing["ScanningSequence"])
        ds.SequenceVariant = list(timing["SequenceVariant"])
        ds.ScanOptions = list(timing["ScanOptions"])
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = timing["SequenceName"]
        ds.SliceThickness = _ds(g.thickness)
        ds.RepetitionTime = _ds(timing["RepetitionTime"])
        ds.EchoTime = _ds(timing["EchoTime"])
        if "InversionTime" in timing:
            ds.InversionTime = _ds(timing["InversionTime"])
        ds.NumberOfAverages = "1"
        ds.ImagingFrequency = _ds(42.577478 * plan.field_strength)
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = "1"
        ds.MagneticFieldStrength = _ds(plan.field_strength)
        ds.SpacingBetweenSlices = _ds(g.slice_spacing)
        ds.EchoTrainLength = str(timing["EchoTrainLength"])
        ds.PixelBandwidth = "200"
        ds.ProtocolName = series.dicom_description
        ds.AcquisitionMatrix = [0, g.cols, g.rows, 0]
        ds.InPlanePhaseEncodingDirection = "ROW" if series.kind == "axial_t2" else "COL"
        ds.FlipAngle = _ds(timing["FlipAngle"])
        ds.PatientPosition = variant.patient_position
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = str(plan.study_id)
        ds.SeriesNumber = str(series.series_number)
        ds.AcquisitionNumber = "1"
        ds.InstanceNumber = str(number)
        ds.ImagePositionPatient = [_ds(v) for v in g.positions[k]]
        ds.ImageOrientationPatient = [_ds(v) for v in g.iop()]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(np.dot(g.positions[k], normal)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = g.rows
        ds.Columns = g.cols
        ds.PixelSpacing = [_ds(g.spacing[0]), _ds(g.spacing[1])]
        ds.BitsAllocated = 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        ds.WindowCenter = centre
        ds.WindowWidth = width
        ds.PixelData = np.ascontiguousarray(pixels[k], dtype="<u2").tobytes()
        if variant.drop_optional_tags:
            for keyword in OPTIONAL_TAGS:
                delattr(ds, keyword)
        yield number, ds


def encode(ds: Dataset) -> bytes:
    """The Part 10 file bytes of ``ds`` (preamble, file meta, explicit VR little endian)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name in the same folder and a rename, so
    an interrupted run never leaves a partial file under the final name."""
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_study(plan: StudyPlan, images: dict, images_root: Path) -> Tuple[int, int]:
    """Write every series of the study under ``images_root/{study_id}/{series_id}/``.

    Returns ``(files, bytes)`` written. Raises ``OSError`` when the disk refuses.
    """
    files = size = 0
    for series in plan.series:
        folder = Path(images_root) / str(plan.study_id) / str(series.series_id)
        folder.mkdir(parents=True, exist_ok=True)
        # images[series_id] holds every stack of the series in instance order.
        first = min(s.first_instance for s in plan.series if s.series_id == series.series_id)
        start = series.first_instance - first
        pixels = images[series.series_id][start:start + series.geometry.n_slices]
        for number, ds in instance_datasets(plan, series, pixels):
            data = encode(ds)
            write_atomic(folder / f"{number}.dcm", data)
            files += 1
            size += len(data)
    return files, size


def series_files(root: Path, study_id: int, series_id: int) -> Sequence[Path]:
    """The DICOM files of one series in a written dataset, in instance order."""
    folder = Path(root) / "train_images" / str(study_id) / str(series_id)
    return sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem))
