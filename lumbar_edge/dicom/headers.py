"""Read the header of one file cheaply: the few tags the scan needs, no pixel data.

:func:`read_header` is what the scan runs in parallel. It never raises for bad input: it returns
a :class:`HeaderRecord` (plain values, cheap to pickle between processes), a list of them (one
per frame of a multi-frame Enhanced MR or Legacy Converted Enhanced MR file), or a
``(category, reason)`` pair saying why the file is skipped. It opens files read-only and never
writes anything.

Multi-frame files are read by pydicom (without the pixel data): their per-frame geometry, rescale
and MR timing live in the functional group sequences, which the fast reader skips. Each frame's
value is taken from its PerFrameFunctionalGroupsSequence item, else the
SharedFunctionalGroupsSequence, else the top-level tag (and for a Legacy Converted object, its
Unassigned Per-Frame / Shared Converted Attributes), so per-frame wins over shared wins over
top-level. A frame's InstanceNumber is its 1-based frame number: unique in the file (unlike
InStackPositionNumber, which restarts in each stack and temporal position), the number a
ReferencedFrameNumber uses, and the slices are ordered by their geometry anyway.
"""
from __future__ import annotations

import io
import math
import os
import stat
import struct
from typing import Any, List, NamedTuple, Optional, Tuple, Union

from .fastread import EXPLICIT_BE, EXPLICIT_LE, IMPLICIT_LE, Truncated, Unhandled, read_tags, starts_bare

#: The tags a scan reads (keywords). SpecificCharacterSet is always read by pydicom.
HEADER_KEYWORDS: Tuple[str, ...] = (
    "ImageType", "SOPClassUID", "SOPInstanceUID", "StudyDate", "Modality", "StudyDescription",
    "SeriesDescription", "PatientID", "ScanningSequence", "SequenceVariant", "ScanOptions",
    "SliceThickness", "RepetitionTime", "EchoTime", "InversionTime", "SpacingBetweenSlices",
    "SequenceName", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "InstanceNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "SamplesPerPixel", "PhotometricInterpretation",
    "NumberOfFrames", "Rows", "Columns", "PixelSpacing", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "RescaleIntercept", "RescaleSlope", "ImagerPixelSpacing", "PatientPosition", "PixelPaddingValue",
    "PixelPaddingRangeLimit",
)

_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Enhanced MR Image Storage and Legacy Converted Enhanced MR Image Storage: one multi-frame
#: object per series, geometry in the functional group sequences.
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
LEGACY_CONVERTED_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.4"
MULTI_FRAME_MR_CLASSES = frozenset((ENHANCED_MR, LEGACY_CONVERTED_ENHANCED_MR))
#: Upper bound on the frames of one file the scan accepts (a corrupt NumberOfFrames must not
#: make a list of a billion records).
MAX_FRAMES = 10_000
_DEFLATED = "1.2.840.10008.1.2.1.99"
_PIXEL_DATA = 0x7FE00010
_ITEM, _SEQ_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_ITEM_HEADER = struct.Struct("<HHL")
_VR_32BIT_LENGTH = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}

#: Why a file is skipped: (category, one-line reason).
Skip = Tuple[str, str]


class HeaderRecord(NamedTuple):
    """The header values of one image file, as plain Python values (a NamedTuple: it is built
    and pickled once per file, and tuples are the cheapest to send back from worker processes)."""

    path: str
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    series_number: Optional[int]
    instance_number: Optional[int]
    rows: int
    columns: int
    position: Optional[Tuple[float, float, float]]
    orientation: Optional[Tuple[float, ...]]
    pixel_spacing: Optional[Tuple[float, float]]
    photometric: str
    bits_stored: int
    pixel_representation: int
    rescale_slope: float
    rescale_intercept: float
    modality: str
    series_description: str
    study_description: str
    patient_id: str
    study_date: str
    image_type: Tuple[str, ...]
    repetition_time: Optional[float]
    echo_time: Optional[float]
    inversion_time: Optional[float]
    scanning_sequence: Tuple[str, ...]
    sequence_variant: Tuple[str, ...]
    scan_options: Tuple[str, ...]
    sequence_name: str
    spacing_between_slices: Optional[float]
    slice_thickness: Optional[float]
    #: ImagerPixelSpacing (the fallback where PixelSpacing is missing), PatientPosition (HFS,
    #: FFS, HFP ...), PixelPaddingValue and PixelPaddingRangeLimit as stored values (signed
    #: where PixelRepresentation is 1); None / "" when absent.
    imager_pixel_spacing: Optional[Tuple[float, float]] = None
    patient_position: str = ""
    pixel_padding_value: Optional[int] = None
    pixel_padding_range_limit: Optional[int] = None
    #: The 0-based frame of a multi-frame file this record describes; None for a single-frame file.
    frame: Optional[int] = None

    def get(self, keyword: str, default: Any = None) -> Any:
        """DICOM-keyword access for classification (``SequenceInfo.from_mapping``)."""
        return {
            "RepetitionTime": self.repetition_time, "EchoTime": self.echo_time,
            "InversionTime": self.inversion_time, "ScanningSequence": self.scanning_sequence,
            "SequenceVariant": self.sequence_variant, "ScanOptions": self.scan_options,
            "SequenceName": self.sequence_name, "ImageType": self.image_type,
            "SeriesDescription": self.series_description,
        }.get(keyword, default)


def read_header(path: str) -> Union[HeaderRecord, List[HeaderRecord], Skip]:
    """Read the scan tags of the file at ``path``; a HeaderRecord, a list of HeaderRecords (one
    per frame, in frame order) for a multi-frame file, or (category, reason) when the file
    cannot be used. Never raises, whatever the file's bytes.

    The fast reader (:mod:`.fastread`) reads plain little-endian files; everything it does not
    read exactly as pydicom would goes to pydicom, so both paths give the same record; so do
    multi-frame files (their functional groups are sequences, which the fast reader skips).
    Compressed (encapsulated) pixel data is checked item by item without reading the fragments:
    a file cut inside them is ``truncated``, a broken item structure ``corrupt``."""
    try:
        st = os.stat(path)  # follows a symbolic link to what it points at
    except FileNotFoundError:
        if os.path.islink(path):
            return "unreadable", "broken symbolic link"
        return "unreadable", "file vanished during the scan"
    except OSError as exc:
        return "unreadable", f"cannot stat: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        # Opening a FIFO would block until a writer appears; devices and sockets are not files.
        return "not_regular", f"not a regular file ({_file_type(st.st_mode)})"
    if st.st_size == 0:
        return "not_dicom", "empty file"
    try:
        with open(path, "rb") as fp:
            try:
                head = read_tags(fp, st.st_size)
                values = head.values()
            except Unhandled:
                # Not a file the fast reader reads as pydicom would: pydicom decides (and is
                # imported only then, so a scan of ordinary files does not pay for importing it).
                fp.seek(0)
                return _read_with_pydicom(fp, path, st.st_size)
            except Truncated as exc:
                return "truncated", f"truncated: {exc}"
            except Exception:  # noqa: BLE001 - a bug in the fast reader must not stop a batch
                # It raises only Unhandled/Truncated for any bytes (the fuzz test holds it to
                # that); were a bug left, pydicom, the arbiter, reads the file instead.
                fp.seek(0)
                return _read_with_pydicom(fp, path, st.st_size)
            if _is_multi_frame(values, head.media_sop_class):
                fp.seek(0)
                return _read_with_pydicom(fp, path, st.st_size, multi_frame=True)
            pixel = _pixel_verdict(head.pixel_tag, head.pixel_offset, head.pixel_header, head.pixel_length,
                                   head.end, st.st_size, fp, head.prefix)
    except PermissionError:
        return "unreadable", "permission denied"
    except IsADirectoryError:
        return "not_regular", "is a folder"
    except OSError as exc:
        return "unreadable", f"cannot read: {exc.strerror or exc}"
    try:
        return _record(path, values, head.transfer_syntax, head.media_sop_class, pixel)
    except Exception as exc:  # noqa: BLE001 - a malformed value must skip the file, whatever it raises
        return "corrupt", f"malformed header value ({type(exc).__name__}: {_first_line(exc)})"


class _DatasetValues:
    """``get(keyword)`` over a pydicom Dataset, so both readers feed :func:`_record` alike."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.ds.get(keyword, default)


def _is_multi_frame(values, media_class: str) -> bool:
    """Whether a header read so far (``values.get(keyword)``) is a multi-frame image: an
    Enhanced / Legacy Converted Enhanced MR SOP class, or more than one frame."""
    sop_class = str(values.get("SOPClassUID", "") or media_class).strip()
    if sop_class in MULTI_FRAME_MR_CLASSES:
        return True
    try:
        return (_int(values.get("NumberOfFrames")) or 1) > 1
    except Exception:  # noqa: BLE001 - a malformed value is judged by _record, which reports it
        return False


def read_dataset(fp, **kwargs):
    """pydicom's ``dcmread(fp, **kwargs)``, which also reads a bare file (:func:`.fastread.starts_bare`:
    the data set, or the file meta and data set, written without the preamble and 'DICM') that
    dcmread refuses without ``force=True``. A bare data set has no transfer syntax: the one
    pydicom read it in (implicit or explicit VR, little or big endian, which it tells from the
    first element) is put in its file meta, so that its pixel data decodes.

    Raises pydicom's InvalidDicomError when the file starts like neither, and whatever dcmread
    raises on malformed bytes."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    start = fp.tell()
    try:
        return dcmread(fp, **kwargs)
    except InvalidDicomError:
        fp.seek(start)
        head = fp.read(8)
        size = fp.seek(0, os.SEEK_END) - start
        fp.seek(start)
        if not starts_bare(head, size):
            raise
    ds = dcmread(fp, force=True, **kwargs)
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = IMPLICIT_LE if implicit else EXPLICIT_LE if little else EXPLICIT_BE
    return ds


def _read_with_pydicom(fp, path: str, size: int,
                       multi_frame: bool = False) -> Union[HeaderRecord, List[HeaderRecord], Skip]:
    """The general path: pydicom reads the scan tags (big endian, deflate, bare files without the
    preamble, odd structures); any error it raises makes the file a skip. ``multi_frame``:
    read the whole header (the functional group sequences too) and return one record per frame."""
    from pydicom.errors import InvalidDicomError

    try:
        ds = read_dataset(fp, stop_before_pixels=True, specific_tags=None if multi_frame else list(HEADER_KEYWORDS))
        meta = getattr(ds, "file_meta", None)
        ts = str(meta.get("TransferSyntaxUID", "")) if meta else ""
        media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta else ""
        if not multi_frame and _is_multi_frame(_DatasetValues(ds), media_class):
            fp.seek(0)
            return _read_with_pydicom(fp, path, size, multi_frame=True)
        pixel_length = None
        if ts == _DEFLATED:
            pixel = _deflated_pixel_check(path)
        else:
            pixel, pixel_length = _pixel_element(fp, ds, size)
    except InvalidDicomError:
        # pydicom raises this only for a missing 'DICM' prefix / file meta of a file that does
        # not start like a bare data set either; its own text goes on to advise force=True,
        # which is not advice for a user of a scan.
        return "not_dicom", "not a DICOM file (no DICM prefix or file meta header)"
    except PermissionError:
        return "unreadable", "permission denied"
    except OSError as exc:
        return "unreadable", f"cannot read: {exc.strerror or exc}"
    except (EOFError, struct.error) as exc:
        return "truncated", f"truncated or corrupt header ({_first_line(exc) or type(exc).__name__})"
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed input; any is a skip
        return "corrupt", f"unreadable DICOM header ({type(exc).__name__}: {_first_line(exc)})"
    try:
        if multi_frame:
            return _frame_records(path, ds, ts, media_class, pixel, pixel_length)
        return _record(path, _DatasetValues(ds), ts, media_class, pixel)
    except Exception as exc:  # noqa: BLE001 - pydicom converts values lazily; malformed ones raise anything
        return "corrupt", f"malformed header value ({type(exc).__name__}: {_first_line(exc)})"


#: (functional group macro sequence, attribute, HeaderRecord field) read per frame.
_FRAME_FIELDS = (
    ("PlanePositionSequence", "ImagePositionPatient", "position"),
    ("PlaneOrientationSequence", "ImageOrientationPatient", "orientation"),
    ("PixelMeasuresSequence", "PixelSpacing", "pixel_spacing"),
    ("PixelMeasuresSequence", "SliceThickness", "slice_thickness"),
    ("PixelMeasuresSequence", "SpacingBetweenSlices", "spacing_between_slices"),
    ("PixelValueTransformationSequence", "RescaleSlope", "rescale_slope"),
    ("PixelValueTransformationSequence", "RescaleIntercept", "rescale_intercept"),
    ("MRTimingAndRelatedParametersSequence", "RepetitionTime", "repetition_time"),
    ("MREchoSequence", "EffectiveEchoTime", "echo_time"),
    ("MRModifierSequence", "InversionTimes", "inversion_time"),
)
_UNASSIGNED = ("UnassignedPerFrameConvertedAttributesSequence", "UnassignedSharedConvertedAttributesSequence")


def _frame_records(path: str, ds, ts: str, media_class: str, pixel: Optional[Skip],
                   pixel_length: Optional[int]) -> Union[List[HeaderRecord], Skip]:
    """One record per frame of the multi-frame dataset ``ds`` (read without its pixel data);
    ``pixel_length``: the native pixel data's length in bytes (None when encapsulated)."""
    frames = _int(ds.get("NumberOfFrames")) or 1
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if frames > 1 and not len(per_frame):
        # Not an Enhanced object (e.g. a multi-frame Secondary Capture): no per-frame geometry.
        return "unsupported", (f"multi-frame image ({frames} frames) without per-frame functional groups "
                               f"is not supported")
    base = _record(path, _DatasetValues(ds), ts, media_class, pixel, multi_frame=True)
    if not isinstance(base, HeaderRecord):
        return base
    if frames > MAX_FRAMES:
        return "unsupported", f"multi-frame image of {frames} frames (more than {MAX_FRAMES})"
    shared_seq = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_seq[0] if len(shared_seq) else None
    if len(per_frame) and len(per_frame) != frames:
        return "corrupt", (f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for "
                           f"NumberOfFrames {frames}")
    if not base.sequence_name:  # Enhanced MR names the sequence in PulseSequenceName
        base = base._replace(sequence_name=_text(ds.get("PulseSequenceName")))
    missing = _native_frames_missing(ds, ts, base, frames, pixel_length)
    if missing:
        return "truncated", missing
    records = []
    for index in range(frames):
        item = per_frame[index] if len(per_frame) else None
        raw = {field: _frame_value(item, shared, ds, macro, keyword) for macro, keyword, field in _FRAME_FIELDS}
        fields = dict(
            position=_floats(raw["position"], 3), orientation=_floats(raw["orientation"], 6),
            pixel_spacing=_floats(raw["pixel_spacing"], 2),
            slice_thickness=_float(raw["slice_thickness"]),
            spacing_between_slices=_float(raw["spacing_between_slices"]),
            rescale_slope=_float(raw["rescale_slope"], 1.0) or 1.0,
            rescale_intercept=_float(raw["rescale_intercept"], 0.0),
            repetition_time=_float(raw["repetition_time"]),
            echo_time=_float(raw["echo_time"]),
            inversion_time=_float(raw["inversion_time"]),
        )
        records.append(base._replace(instance_number=index + 1, frame=index, **fields))
    return records


def _frame_value(item, shared, ds, macro: str, keyword: str) -> Any:
    """``keyword`` of one frame: in ``macro`` of the frame's functional groups (``item``), else
    of the shared ones, else the top-level tag, else a Legacy Converted object's unassigned
    converted attributes (per-frame, then shared). None when nowhere."""
    for group in (item, shared):
        if group is None:
            continue
        seq = group.get(macro)
        if seq is not None and len(seq) and keyword in seq[0]:
            value = seq[0].get(keyword)
            if value is not None and value != "":
                return value
    top = keyword if keyword != "EffectiveEchoTime" else "EchoTime"
    top = top if top != "InversionTimes" else "InversionTime"
    value = ds.get(top)
    if value is not None and value != "":
        return value
    for group, name in ((item, _UNASSIGNED[0]), (shared, _UNASSIGNED[1])):
        seq = group.get(name) if group is not None else None
        if seq is not None and len(seq):
            value = seq[0].get(top)
            if value is not None and value != "":
                return value
    return None


def _native_frames_missing(ds, ts: str, base: HeaderRecord, frames: int, length: Optional[int]) -> Optional[str]:
    """Why native (uncompressed) pixel data of ``length`` bytes cannot hold every frame, or
    None. (Compressed frames are checked when decoded.)"""
    if length is None or ts not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"):
        return None
    bits = _int(ds.get("BitsAllocated")) or 16
    need = (base.rows * base.columns * frames * bits + 7) // 8
    if length < need:
        return f"truncated: pixel data is {length} bytes, {frames} frames of {base.rows}x{base.columns} need {need}"
    return None


def _record(path: str, ds, ts: str, media_class: str, pixel: Optional[Skip],
            multi_frame: bool = False) -> Union[HeaderRecord, Skip]:
    """Check the values (``ds.get(keyword)``) of an image file and convert them to a record."""
    sop_class = str(ds.get("SOPClassUID", "") or media_class)
    if media_class == _MEDIA_STORAGE_DIRECTORY or sop_class == _MEDIA_STORAGE_DIRECTORY:
        return "no_pixel_data", "a DICOMDIR (media index), not an image"
    rows, cols = _int(ds.get("Rows")), _int(ds.get("Columns"))
    if not rows or not cols:
        return "no_pixel_data", f"not an image: {_sop_name(sop_class)} without Rows/Columns"
    if pixel is not None:
        return pixel
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not str(ds.get(keyword, "") or "").strip():
            return "missing_uid", f"no {keyword}"
    frames = _int(ds.get("NumberOfFrames")) or 1
    if frames > 1 and not multi_frame:
        return "unsupported", f"multi-frame image ({frames} frames) is not supported"
    samples = _int(ds.get("SamplesPerPixel")) or 1
    photometric = str(ds.get("PhotometricInterpretation", "") or "MONOCHROME2").strip().upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return "unsupported", f"not a greyscale image ({photometric}, {samples} samples per pixel)"
    if ts and _is_video(ts):
        return "unsupported", f"video transfer syntax {_sop_name(ts)} is not supported"
    bits_allocated = _int(ds.get("BitsAllocated")) or 16
    pixel_representation = _int(ds.get("PixelRepresentation")) or 0
    return HeaderRecord(
        path=path, transfer_syntax_uid=ts, sop_class_uid=sop_class,
        sop_uid=str(ds.get("SOPInstanceUID")).strip(), study_uid=str(ds.get("StudyInstanceUID")).strip(),
        series_uid=str(ds.get("SeriesInstanceUID")).strip(),
        series_number=_int(ds.get("SeriesNumber")), instance_number=_int(ds.get("InstanceNumber")),
        rows=rows, columns=cols,
        position=_floats(ds.get("ImagePositionPatient"), 3), orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2), photometric=photometric,
        bits_stored=_int(ds.get("BitsStored")) or bits_allocated,
        pixel_representation=pixel_representation,
        rescale_slope=_float(ds.get("RescaleSlope"), 1.0) or 1.0,
        rescale_intercept=_float(ds.get("RescaleIntercept"), 0.0),
        modality=_text(ds.get("Modality")), series_description=_text(ds.get("SeriesDescription")),
        study_description=_text(ds.get("StudyDescription")), patient_id=_text(ds.get("PatientID")),
        study_date=_text(ds.get("StudyDate")), image_type=_codes(ds.get("ImageType")),
        repetition_time=_float(ds.get("RepetitionTime")), echo_time=_float(ds.get("EchoTime")),
        inversion_time=_float(ds.get("InversionTime")), scanning_sequence=_codes(ds.get("ScanningSequence")),
        sequence_variant=_codes(ds.get("SequenceVariant")), scan_options=_codes(ds.get("ScanOptions")),
        sequence_name=_text(ds.get("SequenceName")), spacing_between_slices=_float(ds.get("SpacingBetweenSlices")),
        slice_thickness=_float(ds.get("SliceThickness")),
        imager_pixel_spacing=_floats(ds.get("ImagerPixelSpacing"), 2),
        patient_position=_text(ds.get("PatientPosition")).upper(),
        pixel_padding_value=_stored(ds.get("PixelPaddingValue"), pixel_representation),
        pixel_padding_range_limit=_stored(ds.get("PixelPaddingRangeLimit"), pixel_representation),
    )


def _pixel_element(fp, ds, size: int) -> Tuple[Optional[Skip], Optional[int]]:
    """After pydicom's read: the verdict on the pixel data element (None when one follows the
    header and fits in the file, else a skip) and its value length (None where there is none or
    it is undefined, i.e. encapsulated).

    ``dcmread(stop_before_pixels=True)`` leaves the file positioned at the element that stopped
    it, so reading that element's tag and length here costs one small read, not the pixels.
    The element is parsed as pydicom parses it: in the VR encoding pydicom found for the data
    set (not necessarily the one its file meta names, :func:`_found_implicit`), with pydicom's
    rules for the VR bytes (filereader.data_element_generator).
    """
    where = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return _pixel_verdict(None, 0, 0, 0, where, size, fp), None
    implicit, little = ds.original_encoding
    end = "<" if little is not False else ">"
    group, elem = struct.unpack(end + "HH", head[:4])
    vr = head[4:6]
    if _found_implicit(_reader_at(fp), bool(implicit)) or not (b"AA" <= vr <= b"ZZ"):
        length, header = struct.unpack(end + "L", head[4:8])[0], 8
    elif vr in _VR_32BIT_LENGTH:
        if len(head) < 12:
            return ("truncated", "truncated: the file ends inside the pixel data element's header"), None
        length, header = struct.unpack(end + "L", head[8:12])[0], 12
    else:
        length, header = struct.unpack(end + "H", head[6:8])[0], 8
    verdict = _pixel_verdict(group << 16 | elem, where, header, length, where, size, fp)
    return verdict, (None if length == 0xFFFFFFFF else length)


def _found_implicit(read_at, assumed: bool) -> bool:
    """Whether pydicom read the data set as implicit VR: it looks at the VR bytes of the data
    set's first element, after the file meta, and trusts them over the transfer syntax (two
    capitals: explicit; filereader._is_implicit_vr). ``assumed`` when there is no element."""
    pos = 132 if read_at(128, 4) == b"DICM" else 0  # a bare file starts with its meta or data set
    while True:  # the file meta: explicit VR little endian, group 0002
        head = read_at(pos, 12)
        if len(head) < 8 or head[:2] != b"\x02\x00":
            break
        if head[4:6] in _VR_32BIT_LENGTH:
            if len(head) < 12:
                return assumed
            pos += 12 + struct.unpack_from("<L", head, 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", head, 6)[0]
    first = read_at(pos + 4, 2)
    if len(first) < 2:
        return assumed
    return not (0x40 < first[0] < 0x5B and 0x40 < first[1] < 0x5B)


def _pixel_verdict(tag: Optional[int], offset: int, header: int, length: int, end: int, size: int,
                   fp=None, prefix: bytes = b"") -> Optional[Skip]:
    """None when the pixel data element (``tag`` at ``offset``, ``header`` bytes before a value
    of ``length``) is usable as far as its size tells, else why not. ``end``: where header
    parsing stopped, used when there is no pixel element. With the open file ``fp``, encapsulated
    pixel data has its item structure checked (:func:`_fragment_check`; ``prefix``: the file's
    first bytes where already read); raises OSError only when reading ``fp`` fails."""
    if tag is None:
        if end > size:
            return "truncated", f"truncated: the header runs {end - size} bytes past the end of the file"
        return "no_pixel_data", "no pixel data"
    if tag != _PIXEL_DATA:
        return "unsupported", f"float pixel data ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not supported"
    if length == 0:
        return "no_pixel_data", "empty pixel data"
    if length == 0xFFFFFFFF:  # encapsulated (compressed) frames: their items, not their bytes
        return _fragment_check(fp, offset + header, size, prefix) if fp is not None else None
    missing = offset + header + length - size
    if missing > 0:
        return "truncated", f"truncated: pixel data is {length} bytes, the file ends {missing} bytes short"
    return None


def _fragment_check(fp, start: int, size: int, prefix: bytes = b"") -> Optional[Skip]:
    """Walk the items of encapsulated pixel data from ``start`` (the Basic Offset Table item, the
    fragment items, the sequence delimiter; PS3.5 A.4), seeking over each item's value: None
    when the structure is whole and holds a fragment, else why not. One 8-byte read per item,
    so a scan learns that a file was cut inside its compressed frames without reading them.
    Item headers are little endian in every encapsulated transfer syntax. Headers within
    ``prefix`` (the file's first bytes, already read) are taken from it: a single-frame file's
    Basic Offset Table and fragment item usually are, and only the delimiter is read."""
    read_at = _reader_at(fp, prefix)
    pos, fragments = start, -1  # the first item is the Basic Offset Table, not a fragment
    while True:
        head = read_at(pos, 8)
        if len(head) < 8:
            where = "its Basic Offset Table" if fragments < 0 else f"{fragments} fragment(s)"
            return "truncated", (f"truncated: the file ends after {where} of the compressed pixel data, "
                                 "before its sequence delimiter")
        group, elem, length = _ITEM_HEADER.unpack(head)
        tag = group << 16 | elem
        if tag == _SEQ_DELIMITER and fragments >= 0:
            if fragments == 0:
                return "no_pixel_data", "compressed pixel data without any fragment"
            return None
        if tag != _ITEM or length == 0xFFFFFFFF:
            what = "the Basic Offset Table item" if fragments < 0 else "a fragment item or the sequence delimiter"
            return "corrupt", (f"malformed compressed pixel data: ({group:04X},{elem:04X}) at offset {pos} "
                               f"where {what} belongs")
        pos += 8 + length
        if pos > size:
            what = "its Basic Offset Table" if fragments < 0 else f"fragment {fragments + 1}"
            return "truncated", (f"truncated: {what} of the compressed pixel data is {length} bytes, "
                                 f"the file ends {pos - size} bytes short")
        fragments += 1


def _reader_at(fp, prefix: bytes = b""):
    """``read_at(offset, n)``: n bytes of ``fp`` at ``offset``, from ``prefix`` (the file's first
    bytes) where they lie in it, else read: os.pread where the file has a descriptor (one system
    call, where a seek makes a buffered file refill its whole buffer)."""
    try:
        fd = fp.fileno() if hasattr(os, "pread") else None
    except (AttributeError, OSError, io.UnsupportedOperation):
        fd = None

    def read_at(offset: int, n: int) -> bytes:
        if offset + n <= len(prefix):
            return prefix[offset:offset + n]
        if fd is not None:
            return os.pread(fd, n, offset)
        fp.seek(offset)
        return fp.read(n)

    return read_at


def _deflated_pixel_check(path: str) -> Optional[Skip]:
    """The pixel check for a deflated file, which pydicom inflates whole: read it again keeping
    only the pixel data element, deferred (deflate is rare enough not to need a faster path)."""
    from pydicom import dcmread

    ds = dcmread(path, specific_tags=["PixelData"], defer_size=64)
    if "PixelData" not in ds:
        return "no_pixel_data", "no pixel data"
    return None


def _is_video(ts: str) -> bool:
    # MPEG2, MPEG-4 AVC/H.264 and HEVC/H.265 syntaxes (PS3.5 Table A-1).
    return ts.startswith(("1.2.840.10008.1.2.4.10", "1.2.840.10008.1.2.4.11"))


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a file"


def _sop_name(uid: str) -> str:
    """The UID's name for a skip reason, or the UID itself made printable (a corrupted one can
    hold any bytes, and a reason is one line)."""
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    text = name if name and name != uid else (uid or "unknown SOP class")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else ""


# The converters below take pydicom's values (str, DSfloat, IS, MultiValue) or the fast
# reader's (int, float, str, list); exact-type checks first because they are the common case.

def _int(value: Any) -> Optional[int]:
    if type(value) is int:
        return value
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        return int(float(value)) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None


def _stored(value: Any, pixel_representation: int) -> Optional[int]:
    """A US-or-SS pixel value (PixelPaddingValue): read as unsigned by a reader that had no VR
    (implicit VR), so reinterpreted as 16-bit signed when the pixels are signed."""
    number = _int(value)
    if number is None:
        return None
    if pixel_representation == 1 and 0x8000 <= number <= 0xFFFF:
        number -= 0x10000
    return number


def _float(value: Any, default: Optional[float] = None) -> Optional[float]:
    if type(value) is float:
        return value if math.isfinite(value) else default
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _floats(value: Any, count: int) -> Optional[Tuple[float, ...]]:
    if value is None or value == "":
        return None
    try:
        values = tuple(float(v) for v in (value if not isinstance(value, (str, bytes)) else [value]))
    except (TypeError, ValueError):
        return None
    if len(values) != count or not all(math.isfinite(v) for v in values):
        return None
    return values


def _codes(value: Any) -> Tuple[str, ...]:
    if value is None or value == "":
        return ()
    parts = [value] if isinstance(value, str) else list(value)
    return tuple(str(p).strip().upper() for p in parts if str(p).strip())


def _text(value: Any) -> str:
    if type(value) is str:
        return value.strip()
    return "" if value is None else str(value).strip()
