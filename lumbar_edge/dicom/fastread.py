"""A minimal reader for the scan tags of little-endian DICOM files, several times faster than
``pydicom.dcmread`` for this one job.

Why it exists: a folder scan reads thousands of headers, and pydicom builds a full Dataset and
converts each value it is asked for (~0.4 ms a file), which costs more than reading the whole
file. This reader walks the top-level elements of the data set with ``struct``, keeps the raw
bytes of the few tags the scan needs (see :data:`TAGS`), skips everything else by length
(sequences included, so nested values never leak out) and stops at the pixel data element.

It handles files with a preamble and file meta in explicit or implicit VR little endian and every
encapsulated (compressed) syntax. For anything else (big endian, deflate, malformed structure)
:func:`read_tags` raises :class:`Unhandled` and the caller reads the file with pydicom instead,
which stays the authority on what is valid DICOM.

pydicom is the arbiter: where this reader returns values, they are the values pydicom reads from
the same bytes. Wherever pydicom would read the bytes differently (a data set in the other VR
encoding than its file meta names, an unknown or corrupted VR, a scan tag stored with a VR other
than its dictionary one, a number pydicom would refuse, text in a character set other than
ASCII, Latin-1 or UTF-8) this reader raises Unhandled rather than guess. For any bytes it raises
only Unhandled or Truncated (the fuzz test in tests/dicom checks this).
"""
from __future__ import annotations

import struct
from typing import BinaryIO, Dict, FrozenSet, Optional, Tuple

#: (group << 16 | element) -> (keyword, VR) of the tags a scan needs (PS3.6).
TAGS: Dict[int, Tuple[str, str]] = {
    0x00080008: ("ImageType", "CS"), 0x00080016: ("SOPClassUID", "UI"), 0x00080018: ("SOPInstanceUID", "UI"),
    0x00080020: ("StudyDate", "DA"), 0x00080060: ("Modality", "CS"), 0x00081030: ("StudyDescription", "LO"),
    0x0008103E: ("SeriesDescription", "LO"), 0x00100020: ("PatientID", "LO"),
    0x00180020: ("ScanningSequence", "CS"), 0x00180021: ("SequenceVariant", "CS"),
    0x00180022: ("ScanOptions", "CS"), 0x00180024: ("SequenceName", "SH"), 0x00180050: ("SliceThickness", "DS"),
    0x00180080: ("RepetitionTime", "DS"), 0x00180081: ("EchoTime", "DS"), 0x00180082: ("InversionTime", "DS"),
    0x00180088: ("SpacingBetweenSlices", "DS"), 0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"), 0x00200011: ("SeriesNumber", "IS"),
    0x00200013: ("InstanceNumber", "IS"), 0x00200032: ("ImagePositionPatient", "DS"),
    0x00200037: ("ImageOrientationPatient", "DS"), 0x00280002: ("SamplesPerPixel", "US"),
    0x00280004: ("PhotometricInterpretation", "CS"), 0x00280008: ("NumberOfFrames", "IS"),
    0x00280010: ("Rows", "US"), 0x00280011: ("Columns", "US"), 0x00280030: ("PixelSpacing", "DS"),
    0x00280100: ("BitsAllocated", "US"), 0x00280101: ("BitsStored", "US"),
    0x00280103: ("PixelRepresentation", "US"), 0x00281052: ("RescaleIntercept", "DS"),
    0x00281053: ("RescaleSlope", "DS"), 0x00181164: ("ImagerPixelSpacing", "DS"),
    0x00185100: ("PatientPosition", "CS"),
    # US or SS by PixelRepresentation; implicit VR files give no VR, so the header reader
    # reinterprets the two bytes as signed when PixelRepresentation is 1.
    0x00280120: ("PixelPaddingValue", "US"), 0x00280121: ("PixelPaddingRangeLimit", "US"),
}
#: Read for the text tags (pydicom always reads it too); not a value the caller sees.
_CHARSET_TAG = 0x00080005
#: tag -> (keyword, dictionary VR, the VRs a file may store it with and still be read here): its
#: dictionary VR, UN (which pydicom reads by the dictionary VR) and SS for the US-or-SS pixel
#: padding tags. Any other VR (a corrupted one, or OB/SQ/UT where a number belongs) goes to pydicom.
_KEEP: Dict[int, Tuple[str, str, FrozenSet[bytes]]] = {
    tag: (keyword, vr, frozenset((vr.encode(), b"UN") + ((b"SS",) if tag in (0x00280120, 0x00280121) else ())))
    for tag, (keyword, vr) in {**TAGS, _CHARSET_TAG: ("SpecificCharacterSet", "CS")}.items()
}

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
_NOT_LITTLE_ENDIAN_STREAM = ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")  # big endian, deflate

_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"))
#: The VRs with a 2-byte length (PS3.5 Table 7.1-1 and 7.1-2). Anything else in an explicit VR
#: element is a corrupted VR: pydicom decides what it means.
_SHORT_VRS = frozenset((b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
                        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"))
#: Text VRs that pydicom decodes with SpecificCharacterSet; every other string VR is decoded as
#: Latin-1 (pydicom's default encoding).
_TEXT_VRS = frozenset(("SH", "LO", "ST", "LT", "UC", "UT", "PN"))
#: SpecificCharacterSet values whose decoding this reader does as pydicom does (PS3.3 C.12.1.1.2).
_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_UNDEFINED = 0xFFFFFFFF
#: The groups a bare file (no preamble, no 'DICM') starts with: its file meta (0002) written
#: without the preamble, or an image data set's identifying group (0008) with no file meta.
_BARE_GROUPS = (0x0002, 0x0008)
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
_CHUNK = 16384
_U16 = struct.Struct("<H")
_S16 = struct.Struct("<h")
_U32 = struct.Struct("<L")
_TAG_LEN = struct.Struct("<HHL")  # implicit VR element header; also item headers
_TAG_VR_LEN = struct.Struct("<HH2sH")  # explicit VR element header with a 2-byte length


class Unhandled(Exception):
    """This file is not one the fast reader handles; read it with pydicom."""


class Truncated(Exception):
    """A header element runs past the end of the file: the file was cut short."""


class _Buffer:
    """The bytes of a file from its start, read in chunks as parsing needs them."""

    __slots__ = ("fp", "size", "data")

    def __init__(self, fp: BinaryIO, size: int):
        self.fp, self.size = fp, size
        self.data = fp.read(_CHUNK)

    def need(self, end: int) -> bytes:
        """The buffer, grown to hold at least ``end`` bytes; raises Unhandled past the end of
        the file."""
        if end > len(self.data):
            if end > self.size:
                raise Truncated(f"a header element runs {end - self.size} bytes past the end of the file")
            self.data += self.fp.read(max(end - len(self.data), _CHUNK))
        return self.data

    def get(self, pos: int, n: int) -> bytes:
        """``n`` bytes at file offset ``pos``."""
        return self.need(pos + n)[pos:pos + n]


class Header:
    """What :func:`read_tags` found: file meta values, raw values of the scan tags (keyword ->
    (VR, bytes)), and where the pixel data element is (None when the file has none)."""

    __slots__ = ("transfer_syntax", "media_sop_class", "raw", "pixel_tag", "pixel_offset", "pixel_header",
                 "pixel_length", "end", "prefix")

    def __init__(self) -> None:
        self.transfer_syntax = ""
        self.media_sop_class = ""
        self.raw: Dict[str, Tuple[str, bytes]] = {}
        self.pixel_tag: Optional[int] = None
        self.pixel_offset = 0
        self.pixel_header = 0
        self.pixel_length = 0
        self.end = 0  # offset where parsing stopped
        #: The file's first bytes as read (at least up to the pixel data element's header): the
        #: caller's pixel checks look there before reading the file again.
        self.prefix = b""

    def values(self) -> Dict[str, object]:
        """Keyword -> value as pydicom reads it: int (US, IS), float (DS, and IS with a fraction),
        str, or a list of those when multi-valued; a blank number is its text, as in pydicom.

        Raises Unhandled where pydicom would read a value otherwise: a number it refuses (pydicom
        raises when that value is used), a US value of odd length, non-ASCII text in a character
        set other than Latin-1 or UTF-8, or UTF-8 text that does not decode.
        """
        charset = self.raw.get("SpecificCharacterSet")
        encoding = _charset(charset[1]) if charset is not None else "latin-1"
        return {kw: _decode(vr, raw, encoding) for kw, (vr, raw) in self.raw.items() if kw != "SpecificCharacterSet"}


def starts_bare(head: bytes, size: int) -> bool:
    """Whether ``head`` (the first 8 bytes or more of a file of ``size`` bytes) starts like a bare
    DICOM stream: a first element of group 0002 or 0008 numbered below 0x0100, in explicit VR (a
    VR of PS3.5; little endian, or big endian for a data set, since file meta is always little
    endian) or in implicit VR little endian (a value length the file can hold). Such files (old
    exports that wrote the data set without the Part 10 file format) are what dcmtk reads as a
    data set and pydicom only with ``force=True``; a file that starts otherwise is not DICOM."""
    if len(head) < 8:
        return False
    vr = bytes(head[4:6])
    explicit = vr in _SHORT_VRS or vr in _LONG_VRS
    group, element = _U16.unpack_from(head, 0)[0], _U16.unpack_from(head, 2)[0]
    if group in _BARE_GROUPS and element < 0x100:
        return explicit or _U32.unpack_from(head, 4)[0] <= size - 8
    return head[:3] == b"\x00\x08\x00" and explicit


def read_tags(fp: BinaryIO, size: int) -> Header:
    """Parse the file open as ``fp`` (``size`` bytes) up to its pixel data element.

    Raises Unhandled when the file has no DICM preamble, is big endian or deflated, or its
    structure is not what this reader expects (the caller then uses pydicom); Truncated when an
    element runs past the end of the file.
    """
    buf = _Buffer(fp, size)
    if size < 132 or buf.get(128, 4) != b"DICM":
        raise Unhandled("no DICM preamble")
    head = Header()
    pos = _read_meta(buf, 132, head)
    ts = head.transfer_syntax
    if not ts or ts in _NOT_LITTLE_ENDIAN_STREAM:
        raise Unhandled(f"transfer syntax {ts or 'missing'}")
    implicit = ts == IMPLICIT_LE
    if pos + 6 <= size:
        # pydicom trusts the data set over the file meta: when the first element's VR bytes are
        # two capitals it reads explicit VR, otherwise implicit, whatever the transfer syntax
        # says (filereader._is_implicit_vr). A file whose meta names the wrong one goes to it.
        vr = buf.get(pos + 4, 2)
        if (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B) == implicit:
            raise Unhandled("the data set is not in the VR encoding its transfer syntax names")
    data = buf.data
    keep, pixel_tags, long_vrs, short_vrs = _KEEP, _PIXEL_TAGS, _LONG_VRS, _SHORT_VRS
    tag_len, u16, u32 = _TAG_LEN.unpack_from, _U16.unpack_from, _U32.unpack_from
    # The hot loop of a scan: locals and unpack_from on the buffer, no per-element calls.
    while pos + 8 <= size:
        if pos + 12 > len(data):
            data = buf.need(min(pos + 12, size))
        group, elem, length = tag_len(data, pos)
        tag = group << 16 | elem
        if implicit:
            vr = None
            value_pos = pos + 8
        else:
            vr = data[pos + 4:pos + 6]
            if vr in long_vrs:
                if pos + 12 > size:
                    raise Truncated("the file ends inside a header element")
                length = u32(data, pos + 8)[0]
                value_pos = pos + 12
            elif vr in short_vrs:
                length = u16(data, pos + 6)[0]
                value_pos = pos + 8
            else:
                raise Unhandled(f"invalid VR at offset {pos}")
        if tag in pixel_tags:
            head.pixel_tag, head.pixel_offset = tag, pos
            head.pixel_header, head.pixel_length = value_pos - pos, length
            head.end, head.prefix = pos, data
            return head
        if length == _UNDEFINED:
            pos = _skip_undefined(buf, tag, vr, value_pos, implicit, depth=0)
            data = buf.data
            continue
        pos = value_pos + length
        if tag in keep:
            if pos > len(data):
                data = buf.need(pos)
            keyword, dict_vr, file_vrs = keep[tag]
            if vr is not None and vr not in file_vrs:
                raise Unhandled(f"({group:04X},{elem:04X}) has VR {vr!r}, not its dictionary VR")
            file_vr = dict_vr if vr is None or vr == b"UN" else vr.decode("ascii")
            head.raw[keyword] = (file_vr, data[value_pos:pos])
        elif pos > size:
            raise Truncated(f"a header element runs {pos - size} bytes past the end of the file")
    if pos != size:
        raise Truncated("the file ends inside a header element")
    head.end = pos
    return head


#: Binary number VRs -> the bytes of one value.
_NUMBER_WIDTHS = {b"US": 2, b"SS": 2, b"UL": 4, b"SL": 4, b"FL": 4, b"AT": 4, b"FD": 8, b"SV": 8, b"UV": 8}


def _read_meta(buf: _Buffer, pos: int, head: Header) -> int:
    """Read the group 2 file meta (always explicit VR little endian); return where it ends."""
    while pos + 8 <= buf.size:
        tag_bytes = buf.get(pos, 8)
        group, elem, vr, length = _TAG_VR_LEN.unpack(tag_bytes)
        if group != 0x0002:
            return pos
        if vr in _LONG_VRS:
            length = _U32.unpack(buf.get(pos + 8, 4))[0]
            pos += 12
        elif vr in _SHORT_VRS:
            pos += 8
        else:
            raise Unhandled("file meta is not explicit VR")
        if length == _UNDEFINED:
            raise Unhandled("undefined length in file meta")
        width = _NUMBER_WIDTHS.get(vr)
        if width is not None and length % width:
            # pydicom converts the first meta element and the group length while reading, and
            # refuses the file when such a value is not a whole number of its VR's values.
            raise Unhandled(f"(0002,{elem:04X}) holds {length} bytes, not whole {vr.decode('ascii')} values")
        if elem == 0x0010 or elem == 0x0002:
            if vr != b"UI":
                raise Unhandled(f"(0002,{elem:04X}) has VR {vr!r}, not UI")
            # As pydicom reads a UI: Latin-1, trailing NULs and spaces dropped.
            uid = buf.get(pos, length).decode("latin-1").rstrip("\x00 ")
            if uid.strip("0123456789."):
                raise Unhandled(f"(0002,{elem:04X}) is not a UID")
            if elem == 0x0010:
                head.transfer_syntax = uid
            else:
                head.media_sop_class = uid
        pos += length
    raise Truncated("the file ends inside its file meta information")


def _skip_undefined(buf: _Buffer, tag: int, vr: Optional[bytes], value_pos: int, implicit: bool, depth: int) -> int:
    """Skip an undefined-length element whose value starts at ``value_pos``; return the offset
    after it. pydicom parses it as a sequence when its VR is SQ (explicit UN too, PS3.5 6.2.2;
    in implicit VR: when the dictionary says SQ, or the tag is unknown and an item follows) and
    otherwise scans the bytes for a sequence delimiter: this reader walks the sequences and
    hands the rest to pydicom."""
    if vr is not None:
        if vr != b"SQ" and vr != b"UN":
            raise Unhandled(f"undefined length with VR {vr!r}")
    else:
        # Only implicit VR files with undefined-length elements pay for importing pydicom here.
        from pydicom.datadict import dictionary_VR

        try:
            is_sequence = dictionary_VR(tag) == "SQ"
        except KeyError:
            is_sequence = _TAG_LEN.unpack(buf.get(value_pos, 8))[:2] == (0xFFFE, 0xE000)
        if not is_sequence:
            raise Unhandled("undefined-length value that is not a sequence")
    return _skip_items(buf, value_pos, implicit, depth)


def _skip_items(buf: _Buffer, pos: int, implicit: bool, depth: int) -> int:
    """Walk the items of an undefined-length sequence starting at ``pos``; return the offset
    after its delimiter. pydicom parses such a sequence whole (even when it was not asked for
    it), so every item's elements are walked too: what pydicom might read otherwise (a stray
    tag, an element crossing its item's end, a corrupted VR) raises Unhandled."""
    if depth > 16:
        raise Unhandled("sequences nested too deep")
    while True:
        group, elem, length = _TAG_LEN.unpack(buf.get(pos, 8))
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQ_END:
            if length:
                raise Unhandled(f"sequence delimiter with length {length} at offset {pos - 8}")
            return pos
        if tag != _ITEM:
            raise Unhandled(f"expected a sequence item at offset {pos - 8}")
        pos = _skip_dataset(buf, pos, None if length == _UNDEFINED else pos + length, implicit, depth + 1)


def _skip_dataset(buf: _Buffer, pos: int, end: Optional[int], implicit: bool, depth: int) -> int:
    """Walk the elements of an item from ``pos``: up to ``end`` for a defined-length item (its
    elements must fill it exactly), else up to and past its item delimiter."""
    while end is None or pos < end:
        tag_bytes = buf.get(pos, 8)
        group, elem, length = _TAG_LEN.unpack(tag_bytes)
        tag = group << 16 | elem
        if tag == _ITEM_END:
            if end is not None or length:
                raise Unhandled(f"unexpected item delimiter at offset {pos}")
            return pos + 8
        if tag == _ITEM or tag == _SEQ_END:
            raise Unhandled(f"item tag among the elements of an item at offset {pos}")
        vr = None
        if implicit:
            value_pos = pos + 8
        else:
            vr = tag_bytes[4:6]
            if vr in _LONG_VRS:
                length = _U32.unpack(buf.get(pos + 8, 4))[0]
                value_pos = pos + 12
            elif vr in _SHORT_VRS:
                length = _U16.unpack(tag_bytes[6:8])[0]
                value_pos = pos + 8
            else:
                raise Unhandled(f"invalid VR at offset {pos}")
        if length == _UNDEFINED:
            pos = _skip_undefined(buf, tag, vr, value_pos, implicit, depth + 1)
        else:
            pos = value_pos + length
    if pos != end:
        raise Unhandled(f"an element crosses the end of its item at offset {end}")
    return pos


def _charset(raw: bytes) -> Optional[str]:
    """The Python codec pydicom decodes text VRs with for this SpecificCharacterSet value; None
    for any other character set (its non-ASCII text goes to pydicom)."""
    return _CHARSETS.get(raw.decode("latin-1").rstrip(" \x00"))


def _text(raw: bytes, vr: str, encoding: Optional[str]):
    """A text VR's value as pydicom reads it (values.convert_text): decoded with the data set's
    character set, each value's trailing NULs and spaces dropped."""
    if b"\x1b" in raw:
        raise Unhandled("text with ISO 2022 escape sequences")  # pydicom switches encodings at each
    if raw.isascii():
        text = raw.decode("ascii")
    elif encoding is None:
        raise Unhandled("non-ASCII text in a character set this reader does not decode")
    else:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise Unhandled(f"text that is not valid {encoding}") from exc
    if "\\" not in text:
        return text.rstrip("\x00 ")
    return [part.rstrip("\x00 ") for part in text.split("\\")]


def _float_item(item: str):
    """One DS value as pydicom's DS class makes it: float, or the text when blank; raises
    ValueError where pydicom does."""
    return float(item) if item.strip() else item


def _int_item(item: str):
    """One IS value as pydicom's IS class makes it: int, float when it has a fraction, the text
    when blank; raises ValueError where pydicom does, Unhandled for an infinite value (pydicom
    raises OverflowError from reading it)."""
    if not item.strip():
        return item
    try:
        return int(item)
    except ValueError:
        number = float(item)
    try:
        whole = int(number)
    except OverflowError as exc:
        raise Unhandled(f"IS value {item!r} that pydicom cannot read") from exc
    return whole if whole == number else number


def _number_as_pydicom(raw: bytes, vr: str, encoding: Optional[str]):
    """A DS/IS value read exactly as pydicom reads it, for the values the fast parse refused
    (padding NULs, blank values, a fraction in an IS, junk): values.convert_DS_string /
    convert_IS_string, and where those raise ValueError, pydicom's retry as SH
    (values.convert_value), which keeps the text of each value."""
    text = raw.decode("latin-1")
    if vr == "DS":
        text = text.strip()
    parts = text.rstrip(" \x00").split("\\")
    try:
        values = [_float_item(part) if vr == "DS" else _int_item(part) for part in parts]
    except ValueError:
        return _text(raw, "SH", encoding)
    return values[0] if len(values) == 1 else values


def _decode(vr: str, raw: bytes, encoding: Optional[str] = "latin-1"):
    """One raw value as pydicom reads it; raises Unhandled where this reader cannot match it."""
    if vr == "DS":
        # The common case first: plain numbers, which float() reads exactly as pydicom's DS does.
        try:
            if b"\\" in raw:
                return [float(part) for part in raw.split(b"\\")]
            return float(raw)
        except ValueError:
            return _number_as_pydicom(raw, vr, encoding)
    if vr == "US" or vr == "SS":
        if len(raw) % 2:
            raise Unhandled(f"{vr} value of odd length {len(raw)}")
        if not raw:
            return None
        return (_U16 if vr == "US" else _S16).unpack_from(raw)[0]
    if vr == "IS":
        if b"\\" not in raw:
            try:
                return int(raw)
            except ValueError:
                pass
        return _number_as_pydicom(raw, vr, encoding)
    if vr in _TEXT_VRS:
        return _text(raw, vr, encoding)
    # Other string VRs (CS, UI, DA ...): Latin-1, pydicom's default encoding
    # (values.convert_string / convert_UI), trailing padding dropped.
    text = raw.decode("latin-1").rstrip(" \x00")
    if vr == "UI":
        # pydicom's UID class also strips each value's leading whitespace (found by the fuzz).
        uids = [part.strip() for part in text.split("\\")]
        return uids if len(uids) > 1 else uids[0]
    return text.split("\\") if "\\" in text else text
