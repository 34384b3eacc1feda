"""The header reader: the fast little-endian path agrees with pydicom, odd files fall back."""
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom import uid

from lumbar_edge.dicom import headers
from lumbar_edge.dicom.fastread import Truncated, Unhandled, read_tags


def _with_pydicom(path):
    """What the general (pydicom) path of read_header makes of ``path``."""
    size = os.path.getsize(path)
    with open(path, "rb") as fp:
        return headers._read_with_pydicom(fp, str(path), size)


def _pydicom_test_files():
    root = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fast_path_agrees_with_pydicom_on_pydicom_test_files():
    compared = 0
    for path in _pydicom_test_files():
        size = path.stat().st_size
        with open(path, "rb") as fp:
            try:
                read_tags(fp, size)
            except (Unhandled, Truncated):
                continue  # read_header uses pydicom (or reports truncation) for these
        expected = _with_pydicom(path)
        assert headers.read_header(str(path)) == expected, path.name
        compared += 1
    assert compared > 40  # most of the corpus goes through the fast path


def test_fast_path_agrees_with_pydicom_on_written_files(tmp_path, dcm):
    ds = dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4", tr=4000, te=45, ti=160, scanning=["IR", "SE"],
                          description="Sägittal STIR ü", slope=2, intercept=-3, ipp=(1.5, -2.25, 3e2))
    ds.SpecificCharacterSet = "ISO_IR 192"
    # A nested sequence holding tags the scan reads: they must not leak into the top level.
    item = pydicom.Dataset()
    item.SOPInstanceUID = "9.9.9"
    item.Rows = 1
    ds.ReferencedImageSequence = pydicom.Sequence([item])
    for ts in (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian):
        path = dcm.save(ds, tmp_path / f"{ts}.dcm", ts)
        fast = headers.read_header(str(path))
        assert fast == _with_pydicom(path)
        assert fast.sop_uid == ds.SOPInstanceUID and fast.rows == 8
        assert fast.series_description == "Sägittal STIR ü"
        assert fast.scanning_sequence == ("IR", "SE") and fast.inversion_time == 160.0
        assert fast.position == (1.5, -2.25, 300.0)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("vr,length", [(b"FD", 4), (b"US", 3), (b"SL", 4)])
def test_a_file_meta_number_of_the_wrong_size_is_judged_by_pydicom(tmp_path, dcm, vr, length):
    # Found by the fuzz: (0002,0000) stored as FD with 4 bytes. pydicom converts the group length
    # while reading and refuses the file; the fast reader skipped it unread and kept the file.
    data = bytearray(dcm.save(dcm.make_dataset(study_uid="1.2", series_uid="1.2.1"), tmp_path / "ok.dcm").read_bytes())
    at = data.index(b"\x02\x00\x00\x00UL\x04\x00", 128)
    value = bytes(data[at + 8:at + 8 + 4])
    data[at:at + 12] = b"\x02\x00\x00\x00" + vr + length.to_bytes(2, "little") + (value + bytes(4))[:length]
    path = tmp_path / "meta.dcm"
    path.write_bytes(bytes(data))
    if length % {b"FD": 8, b"US": 2, b"SL": 4}[vr]:
        with open(path, "rb") as fp, pytest.raises(Unhandled):
            read_tags(fp, len(data))
    assert headers.read_header(str(path)) == _with_pydicom(path)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("spoiled", [b" .2", b"\t1.2", b"1.2"])
def test_uid_values_are_stripped_as_pydicom_strips_them(tmp_path, dcm, spoiled):
    # Found by the fuzz: a SOPClassUID with a leading space, which pydicom's UID drops.
    ds = dcm.make_dataset(study_uid="1.2", series_uid="1.2.1")
    data = bytearray(dcm.save(ds, tmp_path / "ok.dcm").read_bytes())
    value = str(ds.SOPClassUID).encode()
    at = data.index(b"\x08\x00\x16\x00UI")  # (0008,0016) in the data set, not the file meta
    assert data[at + 8:at + 8 + len(value)] == value
    data[at + 8:at + 8 + 3] = spoiled
    path = tmp_path / "uid.dcm"
    path.write_bytes(bytes(data))
    fast = headers.read_header(str(path))
    assert fast == _with_pydicom(path)
    if spoiled != b"\t1.2":  # a tab: both readers judge the UID alike and skip the file
        assert fast.sop_class_uid == (spoiled + value[3:]).decode().strip()


def test_big_endian_and_deflate_go_through_pydicom(tmp_path, dcm):
    ds = dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4")
    for ts in (uid.ExplicitVRBigEndian, uid.DeflatedExplicitVRLittleEndian):
        path = dcm.save(dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4", sop_uid=ds.SOPInstanceUID),
                        tmp_path / f"{ts}.dcm", ts)
        with open(path, "rb") as fp, pytest.raises(Unhandled):
            read_tags(fp, path.stat().st_size)
        rec = headers.read_header(str(path))
        assert rec.transfer_syntax_uid == ts and (rec.rows, rec.columns) == (8, 8)


def test_header_reading_opens_files_read_only(tmp_path, dcm):
    path = dcm.save(dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4"), tmp_path / "a.dcm")
    path.chmod(0o444)
    before = path.stat()
    assert isinstance(headers.read_header(str(path)), headers.HeaderRecord)
    after = path.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def test_multiframe_and_colour_are_skipped_with_a_reason(tmp_path):
    for name in ("SC_rgb_rle_2frame.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        shutil.copy(pydicom.data.get_testdata_file(name), tmp_path / name)
    reasons = {name: headers.read_header(str(tmp_path / name)) for name in os.listdir(tmp_path)}
    assert reasons["SC_rgb_rle_2frame.dcm"][0] == "unsupported"
    assert "multi-frame" in reasons["SC_rgb_rle_2frame.dcm"][1]
    assert reasons["SC_rgb_jpeg_dcmtk.dcm"][0] == "unsupported"
    assert "greyscale" in reasons["SC_rgb_jpeg_dcmtk.dcm"][1]
