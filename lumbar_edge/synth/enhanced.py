"""Turn a written classic MR series into one Enhanced MR Image Storage object (a post-processing
step of the generator, for tests and ``lumbar-edge synth --enhanced-mr``).

What a current Siemens XA / Philips / GE scanner sends: one multi-frame file per series (SOP class
1.2.840.10008.5.1.4.1.1.4.1), the slices as frames in instance order, and the geometry and MR
parameters in functional group sequences: per frame, Frame Content (stack, in-stack position,
dimension index), Plane Position; shared, Plane Orientation, Pixel Measures, Pixel Value
Transformation, MR Image Frame Type, MR Timing and Related Parameters, MR FOV/Geometry, MR Echo,
MR Modifier, MR Averages, MR Imaging Modifier, MR Receive/Transmit Coil. The Multi-frame
Dimension module declares (stack, in-stack position) as the dimensions. Patient, study and
series identity are copied, so the object replaces its classic series one for one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from ..dicom.meta import file_meta
from ..errors import InputError

ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"

#: Patient, study, series, frame of reference and equipment attributes copied from the first
#: classic instance when present.
_COPIED = ("SpecificCharacterSet", "StudyDate", "SeriesDate", "StudyTime", "SeriesTime", "AccessionNumber",
           "Modality", "Manufacturer", "InstitutionName", "ReferringPhysicianName", "StudyDescription",
           "SeriesDescription", "ManufacturerModelName", "PatientName", "PatientID", "PatientBirthDate",
           "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "BodyPartExamined", "PatientPosition",
           "StudyInstanceUID", "SeriesInstanceUID", "StudyID", "SeriesNumber", "FrameOfReferenceUID",
           "PositionReferenceIndicator", "MagneticFieldStrength", "ProtocolName")


def _item(**values) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _seq(**values) -> DicomSequence:
    return DicomSequence([_item(**values)])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _classic_files(series_dir: Path) -> List[Path]:
    files = [p for p in Path(series_dir).iterdir() if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise InputError(f"{series_dir}: no files to convert")
    return files


def enhanced_dataset(classic: Sequence[Dataset], sop_instance_uid: Optional[str] = None) -> Dataset:
    """One Enhanced MR dataset from the classic MR datasets of one series (same size, pixel
    format and series; sorted here by InstanceNumber, which becomes the frame order).

    Raises :class:`InputError` when the datasets are not one classic MR series of one image size.
    """
    if not classic:
        raise InputError("no classic MR instances to convert")
    slices = sorted(classic, key=lambda d: int(d.get("InstanceNumber", 0) or 0))
    first = slices[0]
    for ds in slices:
        if ds.get("Modality") != "MR" or ds.get("SeriesInstanceUID") != first.SeriesInstanceUID:
            raise InputError("the instances to convert must be MR images of one series")
        if (ds.Rows, ds.Columns, ds.BitsAllocated) != (first.Rows, first.Columns, first.BitsAllocated):
            raise InputError("the instances to convert must have one image size and bit depth")
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise InputError("every instance to convert needs ImagePositionPatient and ImageOrientationPatient")
    sop = sop_instance_uid or generate_uid(entropy_srcs=["lumbar-edge-enhanced", first.SeriesInstanceUID])
    meta = file_meta(ENHANCED_MR_STORAGE, sop)
    out = Dataset()
    out.file_meta = meta
    for keyword in _COPIED:
        if keyword in first:
            setattr(out, keyword, first[keyword].value)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName", "StudyDate", "StudyTime", "PositionReferenceIndicator"):
        if keyword not in out:
            setattr(out, keyword, "")  # type 2
    out.SOPClassUID = ENHANCED_MR_STORAGE
    out.SOPInstanceUID = sop
    out.InstanceNumber = 1
    date = str(first.get("ContentDate", "") or first.get("StudyDate", "") or "19700101")
    time = str(first.get("ContentTime", "") or first.get("SeriesTime", "") or "000000")
    out.ContentDate, out.ContentTime = date, time
    out.AcquisitionDateTime = f"{date}{time.split('.')[0]}"
    out.InstanceCreationDate, out.InstanceCreationTime = date, time
    # Enhanced General Equipment (type 1 for Enhanced MR).
    out.Manufacturer = str(first.get("Manufacturer", "") or "lumbar-edge synth")
    out.ManufacturerModelName = str(first.get("ManufacturerModelName", "") or "phantom")
    out.DeviceSerialNumber = "0"
    out.SoftwareVersions = "lumbar-edge synth"
    # Enhanced MR Image module, MR Image and Spectroscopy Instance macro.
    out.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    out.AcquisitionNumber = int(first.get("AcquisitionNumber", 1) or 1)
    out.AcquisitionDuration = 0.0
    out.ContentQualification = "RESEARCH"
    out.ResonantNucleus = "1H"
    out.KSpaceFiltering = "NONE"
    out.MagneticFieldStrength = first.get("MagneticFieldStrength", "1.5") or "1.5"
    out.ApplicableSafetyStandardAgency = "IEC"
    out.ImageComments = "synthetic phantom, converted from classic MR Image Storage"
    out.PixelPresentation = "MONOCHROME"
    out.VolumetricProperties = "VOLUME"
    out.VolumeBasedCalculationTechnique = "NONE"
    out.ComplexImageComponent = "MAGNITUDE"
    out.AcquisitionContrast = _contrast(first)
    out.BurnedInAnnotation = "NO"
    out.LossyImageCompression = "00"
    out.PresentationLUTShape = "IDENTITY"
    # MR Pulse Sequence module (type 1C: required for ORIGINAL images).
    out.PulseSequenceName = str(first.get("SequenceName", "") or "unknown")[:16]
    out.MRAcquisitionType = str(first.get("MRAcquisitionType", "2D") or "2D")
    out.EchoPulseSequence = "SPIN"
    out.MultipleSpinEcho = "NO"
    out.MultiPlanarExcitation = "YES"
    out.PhaseContrast = "NO"
    out.TimeOfFlightContrast = "NO"
    out.SteadyStatePulseSequence = "NONE"
    out.EchoPlanarPulseSequence = "NO"
    out.SaturationRecovery = "NO"
    out.SpectrallySelectedSuppression = "NONE"
    out.OversamplingPhase = "NONE"
    out.GeometryOfKSpaceTraversal = "RECTILINEAR"
    out.RectilinearPhaseEncodeReordering = "LINEAR"
    out.SegmentedKSpaceTraversal = "PARTIAL"
    out.NumberOfKSpaceTrajectories = 1
    # Acquisition Context (type 2 sequence).
    out.AcquisitionContextSequence = DicomSequence([])
    # Image Pixel module.
    for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
                    "HighBit", "PixelRepresentation"):
        setattr(out, keyword, first[keyword].value)
    out.NumberOfFrames = len(slices)
    # Multi-frame Dimension module: frames indexed by (stack, position in the stack).
    dimension_uid = generate_uid(entropy_srcs=["lumbar-edge-enhanced-dimensions", sop])
    out.DimensionOrganizationSequence = _seq(DimensionOrganizationUID=dimension_uid)
    out.DimensionOrganizationType = "3D"
    frame_content = pydicom.datadict.tag_for_keyword("FrameContentSequence")
    out.DimensionIndexSequence = DicomSequence([
        _item(DimensionOrganizationUID=dimension_uid, DimensionIndexPointer=pydicom.datadict.tag_for_keyword("StackID"),
              FunctionalGroupPointer=frame_content, DimensionDescriptionLabel="Stack ID"),
        _item(DimensionOrganizationUID=dimension_uid,
              DimensionIndexPointer=pydicom.datadict.tag_for_keyword("InStackPositionNumber"),
              FunctionalGroupPointer=frame_content, DimensionDescriptionLabel="In-Stack Position Number"),
    ])
    # Angled stacks in one series: each frame carries its own orientation, else it is shared.
    per_frame_orientation = len({tuple(str(v) for v in ds.ImageOrientationPatient) for ds in slices}) > 1
    out.SharedFunctionalGroupsSequence = DicomSequence([_shared_groups(first, not per_frame_orientation)])
    out.PerFrameFunctionalGroupsSequence = DicomSequence([
        _frame_groups(ds, number, first, per_frame_orientation) for number, ds in enumerate(slices, start=1)])
    frames = [np.ascontiguousarray(ds.pixel_array) for ds in slices]
    dtype = frames[0].dtype.newbyteorder("<")
    data = b"".join(f.astype(dtype, copy=False).tobytes() for f in frames)
    out.PixelData = data + (b"\0" if len(data) % 2 else b"")
    return out


def _contrast(ds: Dataset) -> str:
    ti = float(ds.get("InversionTime", 0) or 0)
    tr = float(ds.get("RepetitionTime", 0) or 0)
    if ti > 0:
        return "UNKNOWN"  # STIR: no single weighting term of Enhanced MR fits
    return "T2" if tr >= 1500 else "T1"


def _shared_groups(first: Dataset, orientation: bool = True) -> Dataset:
    """The functional groups every frame of a classic series shares (the plane orientation
    only when ``orientation``: a series of angled stacks has it per frame)."""
    ti = first.get("InversionTime")
    groups = Dataset()
    if orientation:
        groups.PlaneOrientationSequence = _seq(ImageOrientationPatient=list(first.ImageOrientationPatient))
    measures = _item(PixelSpacing=list(first.PixelSpacing), SliceThickness=first.get("SliceThickness", "1") or "1")
    if first.get("SpacingBetweenSlices") is not None:
        measures.SpacingBetweenSlices = first.SpacingBetweenSlices
    groups.PixelMeasuresSequence = DicomSequence([measures])
    groups.PixelValueTransformationSequence = _seq(
        RescaleIntercept=first.get("RescaleIntercept", "0") or "0", RescaleSlope=first.get("RescaleSlope", "1") or "1",
        RescaleType="US")
    groups.FrameVOILUTSequence = _seq(WindowCenter=first.get("WindowCenter", "2048"),
                                      WindowWidth=first.get("WindowWidth", "4096"))
    groups.MRImageFrameTypeSequence = _seq(
        FrameType=["ORIGINAL", "PRIMARY", "M", "NONE"], PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
        VolumeBasedCalculationTechnique="NONE", ComplexImageComponent="MAGNITUDE",
        AcquisitionContrast=_contrast(first))
    groups.MRTimingAndRelatedParametersSequence = _seq(
        RepetitionTime=float(first.RepetitionTime), FlipAngle=float(first.get("FlipAngle", 90) or 90),
        EchoTrainLength=int(first.get("EchoTrainLength", 1) or 1), RFEchoTrainLength=int(first.get("EchoTrainLength", 1) or 1),
        GradientEchoTrainLength=0,
        OperatingModeSequence=DicomSequence([_item(OperatingModeType=kind, OperatingMode="IEC_NORMAL")
                                             for kind in ("STATIC FIELD", "RF", "GRADIENT")]),
        SpecificAbsorptionRateSequence=_seq(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                            SpecificAbsorptionRateValue=0.5))
    groups.MRFOVGeometrySequence = _seq(
        # Classic MR says ROW / COL, the Enhanced MR macro ROW / COLUMN.
        InPlanePhaseEncodingDirection="COLUMN" if first.get("InPlanePhaseEncodingDirection") == "COL" else "ROW",
        MRAcquisitionFrequencyEncodingSteps=int(first.Columns), MRAcquisitionPhaseEncodingStepsInPlane=int(first.Rows),
        PercentSampling=100.0, PercentPhaseFieldOfView=100.0)
    groups.MREchoSequence = _seq(EffectiveEchoTime=float(first.EchoTime))
    modifier = _item(InversionRecovery="YES" if ti is not None and float(ti) > 0 else "NO", FlowCompensation="NONE",
                     T2Preparation="NO", SpectrallySelectedExcitation="NONE", SpatialPresaturation="NONE",
                     PartialFourier="NO", ParallelAcquisition="NO")
    if ti is not None and float(ti) > 0:
        modifier.InversionTimes = [float(ti)]
    groups.MRModifierSequence = DicomSequence([modifier])
    groups.MRImagingModifierSequence = _seq(
        PixelBandwidth=float(first.get("PixelBandwidth", 200) or 200), MagnetizationTransfer="NONE",
        BloodSignalNulling="NO", Tagging="NONE", TransmitterFrequency=float(first.get("ImagingFrequency", 63.9) or 63.9))
    groups.MRReceiveCoilSequence = _seq(ReceiveCoilName="SPINE", ReceiveCoilType="MULTICOIL",
                                        QuadratureReceiveCoil="NO", MultiCoilDefinitionSequence=DicomSequence([
                                            _item(MultiCoilElementName="SP1", MultiCoilElementUsed="YES")]),
                                        ReceiveCoilManufacturerName="lumbar-edge")
    groups.MRTransmitCoilSequence = _seq(TransmitCoilName="BODY", TransmitCoilType="BODY",
                                         TransmitCoilManufacturerName="lumbar-edge")
    groups.MRAveragesSequence = _seq(NumberOfAverages=float(first.get("NumberOfAverages", 1) or 1))
    groups.FrameAnatomySequence = _seq(
        FrameLaterality="U",
        AnatomicRegionSequence=DicomSequence([_code("122496003", "SCT", "Lumbar spine")]))
    return groups


def _frame_groups(ds: Dataset, number: int, first: Dataset, orientation: bool = False) -> Dataset:
    """The functional groups of one frame: its position (and, with ``orientation``, its plane
    orientation) and where it sits in the stack."""
    # The acquisition duration of one slice of a 2D multi-slice TSE: about one TR.
    groups = Dataset()
    date = str(ds.get("AcquisitionDate", "") or first.get("StudyDate", "") or "19700101")
    time = str(ds.get("AcquisitionTime", "") or first.get("SeriesTime", "") or "000000").split(".")[0]
    groups.FrameContentSequence = _seq(
        FrameAcquisitionNumber=number, FrameReferenceDateTime=f"{date}{time}", FrameAcquisitionDateTime=f"{date}{time}",
        FrameAcquisitionDuration=float(first.RepetitionTime), StackID="1", InStackPositionNumber=number, DimensionIndexValues=[1, number])
    groups.PlanePositionSequence = _seq(ImagePositionPatient=list(ds.ImagePositionPatient))
    if orientation:
        groups.PlaneOrientationSequence = _seq(ImageOrientationPatient=list(ds.ImageOrientationPatient))
    return groups


def convert_series(series_dir: Union[str, os.PathLike], out_path: Union[str, os.PathLike],
                   sop_instance_uid: Optional[str] = None) -> Path:
    """Write the classic MR series in ``series_dir`` (every file in it) as one Enhanced MR file
    at ``out_path`` (written through a temporary name and a rename); returns ``out_path``.
    The classic files are not changed. Raises :class:`InputError` for a folder that is not one
    classic MR series, ``OSError`` when it cannot be read or written."""
    files = _classic_files(Path(series_dir))
    try:
        classic = [pydicom.dcmread(p) for p in files]
    except pydicom.errors.InvalidDicomError as exc:
        raise InputError(f"{series_dir}: not a DICOM series ({exc})") from None
    ds = enhanced_dataset(classic, sop_instance_uid)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, out)
    return out


def convert_study(study_dir: Union[str, os.PathLike]) -> List[Path]:
    """Replace, in place, each series folder of a generated study (``study_dir/{series_id}/``)
    by one Enhanced MR file ``1.dcm`` holding all its slices (the generator's own output: this
    is a post-processing step, never run on user data). Returns the files written."""
    written = []
    for series_dir in sorted(p for p in Path(study_dir).iterdir() if p.is_dir()):
        files = _classic_files(series_dir)
        tmp_out = series_dir.parent / f".{series_dir.name}.enhanced.dcm"
        convert_series(series_dir, tmp_out)
        for f in files:
            f.unlink()
        final = series_dir / "1.dcm"
        os.replace(tmp_out, final)
        written.append(final)
    return written
