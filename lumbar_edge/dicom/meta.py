"""The file meta information of the DICOM files the project writes (results, synthetic data)."""
from __future__ import annotations

from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

#: ImplementationVersionName of every file lumbar-edge writes.
IMPLEMENTATION_VERSION_NAME = "LUMBAR_EDGE"


def file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    """Group 0002 for a file of ``sop_class_uid`` / ``sop_instance_uid`` in explicit VR little
    endian (the syntax every writer here starts from; a transcoder changes it after)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta
