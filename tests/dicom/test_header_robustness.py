"""Hospital data against the header reader (issue 17, defects 6, 7, 10).

Every file here is made by the test with pydicom and then damaged the way real exports are:
non-ASCII or unknown VR bytes, a file meta naming the wrong transfer syntax, NULs in DS values,
text in other character sets, compressed pixel data cut inside its fragments or corrupted. The
oracle is pydicom: ``read_header`` (fast path or not) must give exactly the record that the
pydicom path gives for the same bytes, and must never raise.
"""
import io
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from header_fuzzing import nested_scan_item, retag
from lumbar_edge.dicom import headers, scan_path
from lumbar_edge.dicom.fastread import Truncated, Unhandled, read_tags
from lumbar_edge.errors import DicomError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIZE = 32  # openjpeg refuses much smaller images


def _pydicom_path(path: Path):
    with open(path, "rb") as fp:
        return headers._read_with_pydicom(fp, str(path), path.stat().st_size)


def _fast_reads(data: bytes) -> bool:
    """Whether the fast reader reads these bytes itself (True) or hands them to pydicom (False);
    anything but Unhandled/Truncated raised here fails the test."""
    try:
        read_tags(io.BytesIO(data), len(data)).values()
    except (Unhandled, Truncated):
        return False
    return True


def _write(dcm, path: Path, ts=uid.ExplicitVRLittleEndian, **attrs) -> bytes:
    ds = dcm.make_dataset(study_uid="1.2.826.0.1.3680043.8.498.1", series_uid="1.2.826.0.1.3680043.8.498.2",
                          sop_uid="1.2.826.0.1.3680043.8.498.3", tr=4000.0, te=95.0, description="Sag T2",
                          ipp=(1.5, -2.25, 300.0))
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return dcm.save(ds, path, ts).read_bytes()


def _set_vr(data: bytes, tag: bytes, vr: bytes) -> bytes:
    """``data`` with the VR of the explicit VR element whose tag bytes are ``tag`` replaced."""
    i = data.index(tag, 132)
    return data[:i + 4] + vr + data[i + 6:]


def _set_value(data: bytes, tag: bytes, value: bytes) -> bytes:
    """``data`` with the value of the (short-length, explicit VR) element ``tag`` replaced by
    ``value``, its length field set to match."""
    i = data.index(tag, 132)
    length = struct.unpack_from("<H", data, i + 6)[0]
    return data[:i + 6] + struct.pack("<H", len(value)) + value + data[i + 8 + length:]


SLICE_THICKNESS = b"\x18\x00\x50\x00"
PIXEL_SPACING = b"\x28\x00\x30\x00"
ROWS = b"\x28\x00\x10\x00"
SERIES_DESCRIPTION = b"\x08\x00\x3e\x10"


def _corpus(dcm, folder: Path):
    """name -> (bytes, whether the fast reader must read it itself)."""
    plain = _write(dcm, folder / "plain.dcm")
    implicit = _write(dcm, folder / "implicit.dcm", uid.ImplicitVRLittleEndian)
    corpus = {
        "plain": (plain, True),
        # Defect 7: a non-ASCII VR byte, in a tag the scan keeps and in one it skips, and in
        # the file meta.
        "VR D\\xc9 on a kept tag": (_set_vr(plain, SLICE_THICKNESS, b"D\xc9"), False),
        "VR D\\xc9 on a skipped tag": (_set_vr(plain, b"\x08\x00\x20\x00", b"D\xc9"), False),
        "VR \\xff\\xff in the file meta": (_set_vr(plain, b"\x02\x00\x10\x00", b"\xff\xff"), False),
        # Defect 10: corrupted VRs: unknown capitals, lowercase, a valid VR the tag does not have.
        "unknown VR QQ": (_set_vr(plain, SLICE_THICKNESS, b"QQ"), False),
        "lowercase VR": (_set_vr(plain, SLICE_THICKNESS, b"ds"), False),
        "Rows stored as SS": (_set_vr(plain, ROWS, b"SS"), False),
        "PixelSpacing stored as LO": (_set_vr(plain, PIXEL_SPACING, b"LO"), False),
        # Defect 10: the file meta names the wrong transfer syntax (pydicom reads the real one).
        "implicit data, meta says explicit": (retag(implicit, uid.ExplicitVRLittleEndian), False),
        "explicit data, meta says implicit": (retag(plain, uid.ImplicitVRLittleEndian), False),
        # Defect 10: NULs in DS values: padding NULs pydicom drops; a value with a NUL inside it
        # cannot convert, and pydicom keeps it as text (its retry as SH).
        "DS padded with a NUL": (_set_value(plain, SLICE_THICKNESS, b"4.5\x00"), True),
        "DS padded with space and NUL": (_set_value(plain, SLICE_THICKNESS, b"4 \x00\x00"), True),
        "multi-valued DS padded with a NUL": (_set_value(plain, PIXEL_SPACING, b"0.5\\0.25\x00\x00"), True),
        "NUL between DS values": (_set_value(plain, PIXEL_SPACING, b"0.5\x00\\0.5"), True),
        "NUL inside a DS value": (_set_value(plain, SLICE_THICKNESS, b"4\x00.0"), True),
        "blank DS": (_set_value(plain, SLICE_THICKNESS, b"    "), True),
        "IS with a fraction": (_write(dcm, folder / "is.dcm", InstanceNumber="7.5"), True),
        "nan in an IS": (_set_value(plain, b"\x20\x00\x11\x00", b"nan "), True),
        "inf in an IS": (_set_value(plain, b"\x20\x00\x11\x00", b"inf "), False),
        "odd-length US": (_set_value(_write(dcm, folder / "pp.dcm", PixelPaddingValue=0),
                                     b"\x28\x00\x20\x01", b"\x00"), False),
        # Text in character sets: Latin-1 and UTF-8 as pydicom decodes them, others to pydicom.
        "Latin-1 text, no character set": (_write(dcm, folder / "l1.dcm", StudyDescription="Wirbelsäule"), True),
        "UTF-8 bytes, no character set": (
            _set_value(plain, SERIES_DESCRIPTION, "Säg T2".encode()[:6]), True),
        "UTF-8 text": (_write(dcm, folder / "u8.dcm", SpecificCharacterSet="ISO_IR 192",
                              SeriesDescription="Sägittal ü"), True),
        "invalid UTF-8 text": (_set_value(_write(dcm, folder / "u8bad.dcm", SpecificCharacterSet="ISO_IR 192"),
                                          SERIES_DESCRIPTION, b"Sag\xff\xfeT"), False),
        "GB18030 text": (_write(dcm, folder / "gb.dcm", SpecificCharacterSet="GB18030", SeriesDescription="矢状"),
                         False),
    }
    # The pixel data element as pydicom parses it: a (corrupted) VR UC in an explicit VR file,
    # and, read by pydicom (GB18030 text), an implicit VR length whose first bytes spell "DA".
    pixel = plain.rindex(b"\xe0\x7f\x10\x00OW")
    corpus["pixel data with VR UC"] = (plain[:pixel + 4] + b"UC" + plain[pixel + 6:], True)
    ds = dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.6", rows=2, cols=4177)
    ds.SpecificCharacterSet, ds.SeriesDescription = "GB18030", "矢状"
    data = dcm.save(ds, folder / "da.dcm", uid.ImplicitVRLittleEndian).read_bytes()
    assert data[data.rindex(b"\xe0\x7f\x10\x00") + 4:][:4] == b"DA\x00\x00"  # 16708 bytes
    corpus["implicit VR pixel length spelling DA"] = (data, False)
    # Undefined-length sequences holding scan tags, in both encodings (nothing may leak out),
    # and one cut short inside an item (pydicom refuses what the fast reader cannot skip).
    item = nested_scan_item()
    for ts in (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian):
        ds = dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.5")
        ds.SourceImageSequence = Sequence([item, Dataset()])
        ds["SourceImageSequence"].is_undefined_length = True
        ds.SourceImageSequence[0].is_undefined_length_sequence_item = True
        ds.add_new(0x00291010, "SQ", Sequence([item]))  # a private sequence: not in the dictionary
        ds[0x00291010].is_undefined_length = True
        data = dcm.save(ds, folder / f"seq{ts}.dcm", ts).read_bytes()
        corpus[f"undefined-length sequences, {uid.UID(ts).name}"] = (data, True)
        inside = data.index(b"9.9.9")  # the nested SOPInstanceUID's value; its length before it
        length = struct.pack("<H", 32) if ts == uid.ExplicitVRLittleEndian else struct.pack("<L", 32)
        corpus[f"an element crossing its item's end, {uid.UID(ts).name}"] = (
            data[:inside - len(length)] + length + data[inside:], False)
    return corpus


def test_differential_corpus_fast_path_equals_pydicom_record_for_record(tmp_path, dcm):
    corpus = _corpus(dcm, tmp_path / "made")
    records = 0
    for name, (data, fast) in corpus.items():
        path = tmp_path / "case.dcm"
        path.write_bytes(data)
        assert _fast_reads(data) == fast, name
        result, arbiter = headers.read_header(str(path)), _pydicom_path(path)
        if isinstance(result, headers.HeaderRecord) or isinstance(arbiter, headers.HeaderRecord):
            assert result == arbiter, name
            records += 1
        else:  # both skip the file (the categories may differ: pydicom's errors are coarser)
            assert isinstance(result, tuple) and isinstance(arbiter, tuple), name
    assert records >= 20  # the corpus is mostly readable files, not all skips


def test_what_pydicom_makes_of_the_hard_cases(tmp_path, dcm):
    corpus = _corpus(dcm, tmp_path / "made")

    def read(name):
        path = tmp_path / "case.dcm"
        path.write_bytes(corpus[name][0])
        return headers.read_header(str(path))

    # The wrong transfer syntax in the meta: the real encoding is found, the values are right
    # (the fast reader used to read the explicit data set as implicit and call it truncated).
    for name in ("implicit data, meta says explicit", "explicit data, meta says implicit"):
        rec = read(name)
        assert isinstance(rec, headers.HeaderRecord), (name, rec)
        assert (rec.rows, rec.sop_uid, rec.position) == (8, "1.2.826.0.1.3680043.8.498.3", (1.5, -2.25, 300.0))
    assert read("DS padded with a NUL").slice_thickness == 4.5
    assert read("multi-valued DS padded with a NUL").pixel_spacing == (0.5, 0.25)
    assert read("blank DS").slice_thickness is None
    assert read("IS with a fraction").instance_number == 7
    assert read("Latin-1 text, no character set").study_description == "Wirbelsäule"
    assert read("UTF-8 bytes, no character set").series_description == "SÃ¤g T"  # Latin-1, as pydicom
    assert read("UTF-8 text").series_description == "Sägittal ü"
    assert read("GB18030 text").series_description == "矢状"
    assert read("odd-length US")[0] == "corrupt"
    assert (read("implicit VR pixel length spelling DA").rows, read("pixel data with VR UC").rows) == (2, 8)
    # Numbers pydicom cannot convert are its text: usable where the text still is a number.
    assert read("NUL between DS values").pixel_spacing == (0.5, 0.5)
    assert read("NUL inside a DS value").slice_thickness is None
    assert read("nan in an IS").series_number is None
    category, reason = read("inf in an IS")  # pydicom raises reading it: the file is skipped
    assert category == "corrupt" and "malformed header value" in reason
    for name in ("undefined-length sequences, Explicit VR Little Endian",
                 "undefined-length sequences, Implicit VR Little Endian"):
        rec = read(name)
        assert (rec.sop_uid, rec.rows, rec.pixel_spacing) == ("1.2.3.4.5", 8, (0.5, 0.5)), name


def test_a_non_ascii_vr_byte_never_raises(tmp_path, dcm):
    # The hospital's file: one VR byte flipped to non-ASCII. The fast reader used to raise
    # UnicodeDecodeError through read_header and end the whole run.
    plain = _write(dcm, tmp_path / "plain.dcm")
    folder = tmp_path / "study"
    folder.mkdir()
    for i, tag in enumerate((SLICE_THICKNESS, PIXEL_SPACING, ROWS, SERIES_DESCRIPTION, b"\x08\x00\x20\x00")):
        data = _set_vr(plain, tag, b"D\xc9")
        with pytest.raises(Unhandled):
            read_tags(io.BytesIO(data), len(data))
        (folder / f"{i}.dcm").write_bytes(data)
        assert headers.read_header(str(folder / f"{i}.dcm")) == _pydicom_path(folder / f"{i}.dcm")
    scan_path(folder)  # the whole scan runs through: each file is a record or a skip


# Defect 6: compressed pixel data checked item by item at scan time.

def _j2k(dcm, path: Path, fragments_per_frame: int = 1, sop_uid=None) -> bytes:
    pixels = ((np.arange(SIZE * SIZE, dtype=np.uint32).reshape(SIZE, SIZE) * 37 + 11) % 4096).astype(np.uint16)
    ds = dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4", sop_uid=sop_uid, rows=SIZE, cols=SIZE,
                          pixels=pixels, instance_number=int(path.stem) if path.stem.isdigit() else 1,
                          ipp=(0.0, 0.0, 4.0 * (int(path.stem) if path.stem.isdigit() else 0)))
    ds.BitsStored, ds.HighBit = 12, 11
    ds.compress(uid.JPEG2000Lossless)
    if fragments_per_frame > 1:
        frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
        ds.PixelData = pydicom.encaps.encapsulate([frame], fragments_per_frame=fragments_per_frame)
    return dcm.save(ds, path).read_bytes()


def _items(data: bytes):
    """(offset, length) of each item of the encapsulated pixel data: BOT first."""
    pos = data.rindex(b"\xe0\x7f\x10\x00OB") + 12
    items = []
    while data[pos:pos + 4] == b"\xfe\xff\x00\xe0":
        length = struct.unpack_from("<L", data, pos + 4)[0]
        items.append((pos, length))
        pos += 8 + length
    assert data[pos:pos + 4] == b"\xfe\xff\xdd\xe0"
    return items


def _both_readers(path: Path):
    """read_header's verdict, checked equal to the pydicom path's (both walk the fragments)."""
    verdict = headers.read_header(str(path))
    assert _pydicom_path(path) == verdict
    return verdict


def test_a_cut_or_malformed_compressed_file_is_skipped_with_the_reason(tmp_path, dcm):
    data = _j2k(dcm, tmp_path / "whole.dcm", fragments_per_frame=3)
    assert isinstance(_both_readers(tmp_path / "whole.dcm"), headers.HeaderRecord)
    (bot, bot_len), (f1, f1_len), (f2, f2_len), (f3, _f3_len) = _items(data)
    path = tmp_path / "case.dcm"
    cases = {
        "in the Basic Offset Table": (data[:bot + 8 + bot_len - 2], "truncated", "Basic Offset Table"),
        "inside fragment 1": (data[:f1 + 8 + f1_len // 2], "truncated", "fragment 1 of"),
        "inside fragment 2": (data[:f2 + 20], "truncated", "fragment 2 of"),
        "between two item headers": (data[:f3], "truncated", "after 2 fragment(s)"),
        "before the sequence delimiter": (data[:-8], "truncated", "after 3 fragment(s)"),
        "a fragment's item tag overwritten": (data[:f2] + b"\x00" * 4 + data[f2 + 4:], "corrupt",
                                             "malformed compressed pixel data"),
    }
    for name, (damaged, category, words) in cases.items():
        path.write_bytes(damaged)
        verdict = _both_readers(path)
        assert verdict[0] == category and words in verdict[1] and "\n" not in verdict[1], (name, verdict)


def test_the_pydicom_path_walks_the_fragments_too(tmp_path, dcm):
    # A private element with a corrupted VR sends the file to pydicom; the cut is still found.
    data = _j2k(dcm, tmp_path / "whole.dcm")
    (_bot, _), (f1, f1_len) = _items(data)
    i = data.index(b"\x08\x00\x20\x00", 132)  # StudyDate: a tag the scan keeps
    damaged = (data[:i + 4] + b"D\xc9" + data[i + 6:])[:f1 + 8 + f1_len // 2]
    with pytest.raises(Unhandled):
        read_tags(io.BytesIO(damaged), len(damaged))
    path = tmp_path / "cut.dcm"
    path.write_bytes(damaged)
    category, reason = headers.read_header(str(path))
    assert category == "truncated" and "fragment 1 of the compressed pixel data" in reason


def test_one_cut_slice_is_skipped_and_the_series_keeps_the_rest(tmp_path, dcm):
    study = tmp_path / "study"
    study.mkdir()
    for i in range(1, 4):
        _j2k(dcm, study / f"{i}.dcm", sop_uid=f"1.2.3.4.5.{i}")
    data = (study / "2.dcm").read_bytes()
    (study / "2.dcm").write_bytes(data[:len(data) - 200])  # cut inside its only fragment
    result = scan_path(study)
    (series,) = result.studies[0].series
    assert sorted(i.path.name for i in series.instances) == ["1.dcm", "3.dcm"]
    ((path, category, reason),) = [(s.path, s.category, s.reason) for s in result.skipped]
    assert path.name == "2.dcm" and category == "truncated" and "fragment 1" in reason
    for inst in series.instances:
        assert inst.pixel_array().shape == (SIZE, SIZE)


def test_decoding_a_damaged_compressed_slice_raises_one_line_with_the_reason(tmp_path, dcm):
    study = tmp_path / "study"
    study.mkdir()
    data = _j2k(dcm, study / "1.dcm")
    (inst,) = scan_path(study).studies[0].series[0].instances
    (_bot, _), (f1, f1_len) = _items(data)
    codestream = f1 + 8
    # The fragment's bytes corrupted, its length intact: the scan keeps it (it reads no pixel
    # bytes), decoding fails with the codec's own reason on one line.
    corrupted = data[:codestream + 2] + b"\xff" * 38 + data[codestream + 40:]
    (study / "1.dcm").write_bytes(corrupted)
    assert isinstance(headers.read_header(str(study / "1.dcm")), headers.HeaderRecord)
    with pytest.raises(DicomError) as err:
        inst.pixel_array()
    message = str(err.value)
    assert "\n" not in message and "cannot decode the pixel data" in message
    assert "JPEG 2000" in message or "J2K" in message  # the plugin's reason, not only pydicom's preamble
    # The file cut inside its fragment after the scan: the reason is the cut, not "no pixel data".
    (study / "1.dcm").write_bytes(data[:codestream + f1_len // 2])
    with pytest.raises(DicomError) as err:
        inst.pixel_array()
    message = str(err.value)
    assert "\n" not in message and "no pixel data" not in message
    assert "truncated: fragment 1 of the compressed pixel data" in message
