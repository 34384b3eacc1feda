"""What the DICOM results (Structured Report and Secondary Captures) share: their UIDs, the
patient and study attributes they copy from the source study, the equipment that made them, and
their encoding as DICOM files.

Result UIDs are derived from the source StudyInstanceUID, the batch revision and the model, not
drawn at random: a study processed again after a crash (before its results were committed) gets
the very same SOP instances, so a PACS never sees two result sets for one study.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from io import BytesIO
from typing import Optional

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from .. import __version__
from ..dicom.meta import file_meta

MANUFACTURER = "lumbar-edge"
#: Patient and General Study module attributes copied from the source study. Type 2 attributes
#: are written empty when the source lacks them.
PATIENT_STUDY_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "ReferringPhysicianName", "StudyID", "AccessionNumber")
PATIENT_STUDY_OPTIONAL = ("IssuerOfPatientID", "OtherPatientIDsSequence", "PatientAge", "PatientSize",
                          "PatientWeight", "StudyDescription", "IssuerOfAccessionNumberSequence")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def valid_uid(value: object) -> bool:
    """True for a DICOM UID (digits and dots, components not empty, at most 64 characters)."""
    text = str(value)
    return 0 < len(text) <= 64 and bool(_UID.match(text))


@dataclass(frozen=True)
class ResultUids:
    """The UIDs of one batch's results: the same inputs always give the same UIDs."""

    study_uid: str
    revision: int
    model_key: str

    def _uid(self, *parts: str) -> str:
        return generate_uid(entropy_srcs=["lumbar-edge-results", self.model_key, self.study_uid,
                                          str(self.revision), *parts])

    @property
    def sr_series(self) -> str:
        return self._uid("sr-series")

    @property
    def sr_instance(self) -> str:
        return self._uid("sr-instance")

    @property
    def sc_series(self) -> str:
        return self._uid("sc-series")

    def sc_instance(self, source_sop_uid: str, frame: Optional[int] = None) -> str:
        """The Secondary Capture of one source slice (``frame``: 0-based, of a multi-frame one)."""
        if frame is None:
            return self._uid("sc-instance", source_sop_uid)
        return self._uid("sc-instance", source_sop_uid, f"frame-{int(frame)}")

    @property
    def device(self) -> str:
        """The Device Observer UID of the model that made the results."""
        return generate_uid(entropy_srcs=["lumbar-edge-device", self.model_key])


def new_result_dataset(source: Dataset, *, sop_class_uid: str, sop_instance_uid: str, series_uid: str,
                       modality: str, series_number: int, series_description: str, instance_number: int,
                       model_name: str, now: _dt.datetime) -> Dataset:
    """A dataset in the source's study (patient and study attributes copied, same
    StudyInstanceUID) with SOP Common, General/SR Series and General Equipment filled in."""
    meta = file_meta(sop_class_uid, sop_instance_uid)
    ds = Dataset()
    ds.file_meta = meta
    if "SpecificCharacterSet" in source:
        ds.SpecificCharacterSet = source.SpecificCharacterSet
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.StudyInstanceUID = source.StudyInstanceUID
    for keyword in PATIENT_STUDY_TYPE2:
        setattr(ds, keyword, source.get(keyword, ""))
    for keyword in PATIENT_STUDY_OPTIONAL:
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = series_description
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.InstanceNumber = int(instance_number)
    ds.ContentDate, ds.ContentTime = date, time
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = model_name[:64]
    ds.SoftwareVersions = __version__
    return ds


def encode_dataset(ds: Dataset) -> bytes:
    """``ds`` as a DICOM Part 10 file (preamble, file meta, Explicit VR Little Endian)."""
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
