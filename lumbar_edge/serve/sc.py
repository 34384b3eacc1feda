"""The overlays as DICOM Secondary Capture images, one per source slice a finding was read on.

Each is the same picture as the PNG overlay of ``infer`` (the slice, the keypoints coloured by
grade, their labels, the legend and "NOT FOR CLINICAL USE"), as an RGB Secondary Capture Image
(SOP class 1.2.840.10008.5.1.4.1.1.7) in a new series of the source study, with Burned In
Annotation YES and a Source Image Sequence naming the MR slice it shows.
"""
from __future__ import annotations

import datetime as _dt
from typing import List, Mapping, Optional

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import MRImageStorage, SecondaryCaptureImageStorage

from ..report.overlay import overlay_images
from ..results import NOT_FOR_CLINICAL_USE, StudyResult
from .dicom_common import ResultUids, new_result_dataset

SC_SERIES_NUMBER = 9102
#: The overlays are rendered with the longer side at least this many pixels (the PNGs use 768).
SC_MIN_SIZE = 512


def secondary_capture(image: np.ndarray, source: Dataset, *, sop_instance_uid: str, series_uid: str,
                      instance_number: int, model_name: str, title: str, source_sop_uid: str,
                      source_sop_class: str = MRImageStorage, source_frame: Optional[int] = None,
                      revision: int = 1, now: Optional[_dt.datetime] = None) -> Dataset:
    """One RGB uint8 ``image`` ``[rows, columns, 3]`` as a Secondary Capture in ``source``'s study;
    ``source_frame`` (0-based) is the frame shown of a multi-frame source (ReferencedFrameNumber)."""
    rgb = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"a secondary capture needs an RGB image [rows, columns, 3], got shape {rgb.shape}")
    description = "lumbar-edge overlays" + (f" (revision {revision})" if revision > 1 else "")
    ds = new_result_dataset(source, sop_class_uid=SecondaryCaptureImageStorage, sop_instance_uid=sop_instance_uid,
                            series_uid=series_uid, modality="OT", series_number=SC_SERIES_NUMBER + 10 * (revision - 1),
                            series_description=description, instance_number=instance_number,
                            model_name=model_name, now=now or _dt.datetime.now())
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    # The spine is not a paired body part: Laterality stays absent (General Series, type 2C).
    ds.BodyPartExamined = str(source.get("BodyPartExamined", "") or "LSPINE")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"
    ds.LossyImageCompression = "00"
    ds.ImageComments = f"{title}. {NOT_FOR_CLINICAL_USE}"[:10240]
    ds.DerivationDescription = "lumbar-edge keypoint and grade overlay on the source slice"
    ref = Dataset()
    ref.ReferencedSOPClassUID = source_sop_class
    ref.ReferencedSOPInstanceUID = source_sop_uid
    if source_frame is not None:
        ref.ReferencedFrameNumber = int(source_frame) + 1
    ds.SourceImageSequence = DicomSequence([ref])
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    data = rgb.tobytes()
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    return ds


def build_secondary_captures(result: StudyResult, source: Dataset, uids: ResultUids, *, model_name: str,
                             sop_classes: Optional[Mapping[str, str]] = None, revision: int = 1,
                             min_size: int = SC_MIN_SIZE, now: Optional[_dt.datetime] = None) -> List[Dataset]:
    """One Secondary Capture per overlay of ``result`` (sagittal T2 first, as the PNGs)."""
    sop_classes = dict(sop_classes or {})
    out = []
    for number, ov in enumerate(overlay_images(result, result.slices, min_size=min_size), start=1):
        sop, frame = ov.keypoint.sop_uid, ov.keypoint.frame
        out.append(secondary_capture(ov.image, source, sop_instance_uid=uids.sc_instance(sop, frame),
                                     series_uid=uids.sc_series, instance_number=number, model_name=model_name,
                                     title=ov.title, source_sop_uid=sop,
                                     source_sop_class=sop_classes.get(sop, MRImageStorage), source_frame=frame,
                                     revision=revision,
                                     now=now))
    return out
