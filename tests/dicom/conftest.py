"""Helpers that write small, valid MR DICOM files with pydicom for the dicom tests.

Tests reach them through the ``dcm`` fixture (``dcm.write_series(...)``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage,
                         generate_uid)

# Orientation cosines (row direction, column direction) of the standard planes.
SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run anterior->posterior, columns head->foot
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL_IOP = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)

#: Typical 1.5/3 T lumbar protocol timings (ms).
PROTOCOLS: Dict[str, dict] = {
    "sagittal_t1": dict(iop=SAGITTAL_IOP, tr=550.0, te=9.0, scanning="SE", description="Sagittal T1"),
    "sagittal_t2": dict(iop=SAGITTAL_IOP, tr=3500.0, te=100.0, scanning="SE", description="Sagittal T2/STIR"),
    "sagittal_stir": dict(iop=SAGITTAL_IOP, tr=4000.0, te=45.0, ti=160.0, scanning=["IR", "SE"],
                          description="Sagittal T2/STIR"),
    "axial_t2": dict(iop=AXIAL_IOP, tr=4200.0, te=95.0, scanning="SE", description="Axial T2"),
    "coronal_t2": dict(iop=CORONAL_IOP, tr=3800.0, te=90.0, scanning="SE", description="Coronal T2"),
}


@dataclass
class SeriesSpec:
    """What :func:`write_series` wrote: UIDs, file paths in slice order, slice positions."""

    study_uid: str
    series_uid: str
    paths: List[Path]
    sop_uids: List[str]


def make_dataset(*, study_uid: str, series_uid: str, sop_uid: Optional[str] = None, instance_number: int = 1,
                 ipp: Sequence[float] = (0.0, 0.0, 0.0), iop: Optional[Sequence[float]] = SAGITTAL_IOP,
                 pixel_spacing: Sequence[float] = (0.5, 0.5), rows: int = 8, cols: int = 8,
                 pixels: Optional[np.ndarray] = None, tr: Optional[float] = None, te: Optional[float] = None,
                 ti: Optional[float] = None, scanning=None, description: Optional[str] = None,
                 series_number: int = 1, photometric: str = "MONOCHROME2", slope: Optional[float] = None,
                 intercept: Optional[float] = None, signed: bool = False, image_type=("ORIGINAL", "PRIMARY", "M")):
    """An MR image dataset with file meta (explicit VR little endian) and 16-bit pixel data."""
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    ds.PatientID = "P001"
    ds.StudyDate = "20240101"
    ds.ImageType = list(image_type)
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    if description is not None:
        ds.SeriesDescription = description
    if tr is not None:
        ds.RepetitionTime = tr
    if te is not None:
        ds.EchoTime = te
    if ti is not None:
        ds.InversionTime = ti
    if scanning is not None:
        ds.ScanningSequence = scanning
    if ipp is not None:
        ds.ImagePositionPatient = [float(v) for v in ipp]
    if iop is not None:
        ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = 4.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16 if not signed else 12, 15 if not signed else 11
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if pixels is None:
        pixels = (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) * 7 + instance_number) % 4000
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16 if signed else np.uint16)).tobytes()
    return ds


def save(ds, path: Path, transfer_syntax: Optional[str] = None) -> Path:
    """Write ``ds`` to ``path`` (folders created) in ``transfer_syntax`` (default: as set)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    ts = ds.file_meta.TransferSyntaxUID
    if ts == ExplicitVRBigEndian:
        # pydicom writes OW pixel bytes as given: swap the 16-bit values to big endian, and
        # force the encoding (save_as refuses to convert between endiannesses on its own).
        ds.PixelData = np.frombuffer(ds.PixelData, dtype="<u2").astype(">u2").tobytes()
        pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=False, force_encoding=True)
        return path
    ds.save_as(path, implicit_vr=ts == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
    return path


def write_series(folder: Path, protocol: str, *, n: int = 5, study_uid: Optional[str] = None,
                 series_uid: Optional[str] = None, series_number: int = 1, spacing: float = 4.0,
                 keep_description: bool = False, rows: int = 8, cols: int = 8, name=None, **overrides) -> SeriesSpec:
    """Write ``n`` slices of a ``PROTOCOLS`` series into ``folder`` as ``1.dcm``..``n.dcm`` (or
    ``name(i)``); the slices step ``spacing`` mm along the plane normal. SeriesDescription is
    left out unless ``keep_description``."""
    spec = dict(PROTOCOLS[protocol])
    spec.update(overrides)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    iop = spec.pop("iop")
    normal = np.cross(iop[:3], iop[3:])
    description = spec.pop("description")
    paths, sops = [], []
    for i in range(n):
        ipp = np.array([-20.0, -30.0, 40.0]) + normal * spacing * i
        ds = make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=i + 1, ipp=ipp, iop=iop,
                          series_number=series_number, rows=rows, cols=cols,
                          description=description if keep_description else None, **spec)
        path = save(ds, Path(folder) / (name(i) if name else f"{i + 1}.dcm"))
        paths.append(path)
        sops.append(str(ds.SOPInstanceUID))
    return SeriesSpec(study_uid, series_uid, paths, sops)


def tree_digest(root: Path) -> Dict[str, str]:
    """Path -> sha256 (or link target / file type) of everything under ``root``, without
    following symbolic links and without opening FIFOs."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() + f":{st.st_mode:o}:{st.st_mtime_ns}"
            else:
                out[rel] = f"mode:{st.st_mode:o}"
    return out


@pytest.fixture
def dcm():
    """The helpers of this file (tests folders are not packages, so tests cannot import it)."""
    return SimpleNamespace(make_dataset=make_dataset, save=save, write_series=write_series, tree_digest=tree_digest,
                           PROTOCOLS=PROTOCOLS, SAGITTAL_IOP=SAGITTAL_IOP, AXIAL_IOP=AXIAL_IOP,
                           CORONAL_IOP=CORONAL_IOP)
