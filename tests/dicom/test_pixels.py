"""Lazy pixel decoding: transfer syntaxes, rescale, MONOCHROME1, missing codecs, bad pixel data."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.pixels import get_encoder

from lumbar_edge.dicom import format_scan, scan_path
from lumbar_edge.dicom.fastread import starts_bare
from lumbar_edge.dicom.pixels import codec_problem, stored_value_range, to_float
from lumbar_edge.errors import DicomError, MissingDependencyError

SIZE = 32  # openjpeg refuses images much smaller than this
PIXELS = ((np.arange(SIZE * SIZE, dtype=np.uint32).reshape(SIZE, SIZE) * 37 + 11) % 4096).astype(np.uint16)


def _write(dcm, path: Path, ts: str, **kw) -> Path:
    ds = dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4", rows=SIZE, cols=SIZE, pixels=PIXELS, **kw)
    ds.BitsStored, ds.HighBit = 12, 11  # the values fit 12 bits: lossless encoders need it stated
    if uid.UID(ts).is_compressed:
        ds.compress(ts)  # pydicom's own encoder (RLE) or the installed plugins
        return dcm.save(ds, path)
    return dcm.save(ds, path, ts)


def _encodable(ts: str) -> bool:
    try:
        return get_encoder(ts).is_available
    except NotImplementedError:
        return False


NATIVE = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian,
          uid.DeflatedExplicitVRLittleEndian]
COMPRESSED = [uid.RLELossless, uid.JPEGLSLossless, uid.JPEG2000Lossless]


@pytest.mark.parametrize("ts", NATIVE + COMPRESSED, ids=lambda t: uid.UID(t).name)
def test_transfer_syntax_round_trip(tmp_path, dcm, ts):
    if ts in COMPRESSED and not _encodable(ts):
        pytest.skip(f"no installed plugin encodes {uid.UID(ts).name}")
    _write(dcm, tmp_path / "a.dcm", ts)
    assert pydicom.dcmread(tmp_path / "a.dcm").file_meta.TransferSyntaxUID == ts
    (series,) = scan_path(tmp_path).studies[0].series
    inst = series.instances[0]
    assert inst.transfer_syntax_uid == ts
    assert (inst.rows, inst.columns) == (SIZE, SIZE)
    np.testing.assert_allclose(inst.geometry.origin, [0, 0, 0])
    out = series.pixels(0)
    assert out.dtype == np.float32 and out.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(out, PIXELS.astype(np.float32))


@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "JPGExtended.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm"])
def test_pydicom_compressed_test_files_decode(tmp_path, name):
    # JPEG baseline/extended has no encoder in pydicom: decode its reference files instead and
    # compare with pydicom's own decoding of the same file.
    path = Path(pydicom.data.get_testdata_file(name))
    shutil.copy(path, tmp_path / name)
    (inst,) = [i for st in scan_path(tmp_path).studies for se in st.series for i in se.instances]
    if codec_problem(inst.transfer_syntax_uid) is not None:
        pytest.skip(str(codec_problem(inst.transfer_syntax_uid)))
    ds = pydicom.dcmread(path)
    try:
        stored = ds.pixel_array
    except RuntimeError:
        # No installed plugin copes with this file (JPEG-lossy.dcm needs GDCM or Pillow): the
        # failure must surface as a DicomError, not a raw plugin error.
        with pytest.raises(DicomError, match="cannot decode"):
            inst.pixel_array()
        return
    expected = stored.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    np.testing.assert_allclose(inst.pixel_array(), expected)


def test_lossless_files_match_their_uncompressed_reference(tmp_path):
    names = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
             "MR_small_bigendian.dcm", "MR_small_implicit.dcm"]
    arrays = []
    for name in names:
        folder = tmp_path / name  # one per folder: they share their SOPInstanceUID
        folder.mkdir()
        shutil.copy(pydicom.data.get_testdata_file(name), folder / name)
        (inst,) = scan_path(folder).studies[0].series[0].instances
        arrays.append(inst.pixel_array())
    for name, arr in zip(names[1:], arrays[1:]):
        np.testing.assert_array_equal(arr, arrays[0], err_msg=name)


def test_rescale_slope_and_intercept(tmp_path, dcm):
    _write(dcm, tmp_path / "a.dcm", uid.ExplicitVRLittleEndian, slope=2.5, intercept=-1024)
    inst = scan_path(tmp_path).studies[0].series[0].instances[0]
    assert (inst.rescale_slope, inst.rescale_intercept) == (2.5, -1024)
    np.testing.assert_allclose(inst.pixel_array(), PIXELS * 2.5 - 1024)


def test_signed_pixels(tmp_path, dcm):
    values = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) - 500).astype(np.int16)
    ds = dcm.make_dataset(study_uid="1.2", series_uid="1.2.1", rows=SIZE, cols=SIZE, pixels=values, signed=True)
    dcm.save(ds, tmp_path / "s.dcm")
    np.testing.assert_array_equal(scan_path(tmp_path).studies[0].series[0].pixels(0), values.astype(np.float32))


def test_monochrome1_is_inverted(tmp_path, dcm):
    _write(dcm, tmp_path / "a.dcm", uid.ExplicitVRLittleEndian, photometric="MONOCHROME1")
    inst = scan_path(tmp_path).studies[0].series[0].instances[0]
    assert inst.photometric == "MONOCHROME1"
    # 12 bits stored: 0 shows white in MONOCHROME1, so it becomes the top of the range, 4095.
    np.testing.assert_array_equal(inst.pixel_array(), 4095.0 - PIXELS)


def test_monochrome1_inversion_keeps_the_rescaled_range():
    stored = np.array([[0, 4095]], dtype=np.uint16)
    out = to_float(stored, 2.0, -100.0, "MONOCHROME1", 12, 0)
    np.testing.assert_array_equal(out, [[2.0 * 4095 - 100, -100.0]])
    assert stored_value_range(12, 1) == (-2048, 2047)


def test_headers_scan_never_reads_pixels_decode_does(tmp_path, dcm):
    # Native pixel data of the right length but a wrong declared size cannot be checked from the
    # header's lengths alone: the scan keeps it, decoding it fails with a DicomError.
    ds = dcm.make_dataset(study_uid="1.2", series_uid="1.2.1", rows=SIZE, cols=SIZE, pixels=PIXELS)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    dcm.save(ds, tmp_path / "short.dcm")
    # Compressed pixel data whose codestream is garbage: the header is fine, the pixels are not.
    good = tmp_path / "rle_src.dcm"
    _write(dcm, good, uid.RLELossless, sop_uid=pydicom.uid.generate_uid())
    ds = pydicom.dcmread(good)
    good.unlink()
    frame = bytearray(pydicom.encaps.generate_fragments(ds.PixelData).__next__())
    ds.PixelData = pydicom.encaps.encapsulate([bytes(64) + bytes(frame[64:])])
    ds.SeriesInstanceUID = "1.2.2"
    ds.save_as(tmp_path / "garbage_rle.dcm")
    result = scan_path(tmp_path)
    assert not result.skipped
    instances = {i.path.name: i for st in result.studies for se in st.series for i in se.instances}
    with pytest.raises(DicomError, match="short.dcm"):
        instances["short.dcm"].pixel_array()
    with pytest.raises(DicomError, match="garbage_rle.dcm: cannot decode"):
        instances["garbage_rle.dcm"].pixel_array()


def test_a_file_changed_after_the_scan_raises_dicom_error(tmp_path, dcm):
    _write(dcm, tmp_path / "a.dcm", uid.ExplicitVRLittleEndian)
    inst = scan_path(tmp_path).studies[0].series[0].instances[0]
    (tmp_path / "a.dcm").write_text("gone")
    with pytest.raises(DicomError, match="cannot read the file"):
        inst.pixel_array()
    (tmp_path / "a.dcm").unlink()
    with pytest.raises(DicomError):
        inst.pixel_array()


def test_codec_problem_is_none_where_a_decoder_exists():
    assert codec_problem(uid.ExplicitVRLittleEndian) is None
    assert codec_problem(uid.RLELossless) is None  # pydicom decodes RLE itself
    assert codec_problem("") is None
    problem = codec_problem(uid.MPEG2MPML)
    assert isinstance(problem, DicomError) and "no pixel decoder" in str(problem)


_BLOCKED = ("pylibjpeg", "openjpeg", "libjpeg", "rle", "jpeg_ls", "PIL", "gdcm")


def test_missing_codec_names_the_extra(tmp_path, dcm):
    if not _encodable(uid.JPEG2000Lossless) or not _encodable(uid.JPEGLSLossless):
        pytest.skip("needs the JPEG 2000 and JPEG-LS encoders to make the test files")
    # One series of three slices 4 mm apart, each in another compressed syntax.
    _write(dcm, tmp_path / "j2k" / "1.dcm", uid.JPEG2000Lossless)
    _write(dcm, tmp_path / "jls" / "1.dcm", uid.JPEGLSLossless, sop_uid=pydicom.uid.generate_uid(), ipp=(4, 0, 0))
    _write(dcm, tmp_path / "rle" / "1.dcm", uid.RLELossless, sop_uid=pydicom.uid.generate_uid(), ipp=(8, 0, 0))
    # A fresh interpreter where the codec plugins' modules cannot be imported: a real
    # ImportError inside pydicom's plugin discovery, as without the `codecs` extra.
    script = textwrap.dedent(f"""
        import json, sys
        for name in {_BLOCKED!r}:
            sys.modules[name] = None
        from lumbar_edge.dicom import format_scan, scan_path
        from lumbar_edge.errors import MissingDependencyError
        out = {{}}
        for folder in ("j2k", "jls", "rle"):
            inst = scan_path(sys.argv[1] + "/" + folder).studies[0].series[0].instances[0]
            try:
                inst.pixel_array()
                out[folder] = "decoded"
            except MissingDependencyError as exc:
                out[folder] = [str(exc), exc.extra]
        out["table"] = format_scan(scan_path(sys.argv[1]))
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["rle"] == "decoded"
    for folder, package in (("j2k", "pylibjpeg-openjpeg"), ("jls", "pyjpegls")):
        message, extra = out[folder]
        assert extra == "codecs"
        assert "lumbar-edge[codecs]" in message and package in message
        assert "\n" not in message
    assert "note: series" in out["table"] and "lumbar-edge[codecs]" in out["table"]
    # In this interpreter the plugins are there: the same files decode.
    assert codec_problem(uid.JPEG2000Lossless) is None
    inst = scan_path(tmp_path / "j2k").studies[0].series[0].instances[0]
    np.testing.assert_array_equal(inst.pixel_array(), PIXELS.astype(np.float32))
    assert "note:" not in format_scan(scan_path(tmp_path))


def test_missing_dependency_error_shape():
    exc = MissingDependencyError("decoding JPEG", ["pylibjpeg"], "codecs")
    assert "pip install 'lumbar-edge[codecs]'" in str(exc)


# -- the direct read of plain little-endian files (pixels._read_native) --------------------------

def _plain(dcm, path: Path, ts: str, *, allocated: int, stored: int, signed: bool, rows: int = 7, cols: int = 9,
           photometric: str = "MONOCHROME2", vr: str = "OW", seed: int = 0) -> Path:
    """A file whose every stored word is random, the bits above BitsStored included (PS3.5 8.1.1
    says nothing of their values, so readers must ignore them)."""
    rng = np.random.default_rng(seed)
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32}[allocated]
    words = rng.integers(0, 1 << allocated, (rows, cols), dtype=np.uint64).astype(dtype)
    ds = dcm.make_dataset(study_uid="1.2", series_uid="1.2.1", rows=rows, cols=cols, photometric=photometric)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    raw = words.tobytes()
    ds.PixelData = raw + (b"\0" if len(raw) % 2 else b"")  # an odd count is padded to even
    ds["PixelData"].VR = "OB" if allocated == 8 else vr
    return dcm.save(ds, path, ts)


@pytest.mark.parametrize("ts", [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian], ids=lambda t: uid.UID(t).name)
@pytest.mark.parametrize("allocated,stored,signed", [(16, 16, False), (16, 12, False), (16, 12, True), (16, 16, True),
                                                     (8, 8, False), (8, 6, True), (32, 32, False), (32, 20, True),
                                                     (16, 1, False)])
def test_direct_read_is_pydicoms_pixel_array(tmp_path, dcm, ts, allocated, stored, signed):
    from lumbar_edge.dicom.pixels import _read_native

    for photometric, vr, rows, cols in (("MONOCHROME2", "OW", 7, 9), ("MONOCHROME1", "OB", 5, 5)):
        path = _plain(dcm, tmp_path / f"{photometric}.dcm", ts, allocated=allocated, stored=stored, signed=signed,
                      rows=rows, cols=cols, photometric=photometric, vr=vr, seed=allocated + stored)
        want = pydicom.dcmread(path).pixel_array
        got = _read_native(path)
        assert got is not None, "the direct read must take a plain little-endian file"
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        inst = scan_path(tmp_path).studies[0].series[0].instances[0]
        np.testing.assert_array_equal(inst.pixel_array(), to_float(want, 1.0, 0.0, photometric, stored, int(signed)))
        path.unlink()


def test_direct_read_leaves_every_other_file_to_pydicom(tmp_path, dcm):
    from lumbar_edge.dicom.pixels import _read_native

    declined = {}
    for k, (name, ts) in enumerate((("big", uid.ExplicitVRBigEndian), ("deflated", uid.DeflatedExplicitVRLittleEndian),
                                    ("rle", uid.RLELossless))):  # one series, slices 4 mm apart
        declined[name] = _write(dcm, tmp_path / f"{name}.dcm", ts, sop_uid=pydicom.uid.generate_uid(), ipp=(4 * k, 0, 0))
    rgb = dcm.make_dataset(study_uid="1.2", series_uid="1.2.9", rows=4, cols=4)
    rgb.SamplesPerPixel, rgb.PhotometricInterpretation, rgb.PlanarConfiguration = 3, "RGB", 0
    rgb.BitsAllocated, rgb.BitsStored, rgb.HighBit, rgb.PixelData = 8, 8, 7, bytes(range(48))
    declined["rgb"] = dcm.save(rgb, tmp_path / "rgb.dcm")
    two = dcm.make_dataset(study_uid="1.2", series_uid="1.2.8", rows=4, cols=4, pixels=np.arange(16, dtype=np.uint16).reshape(4, 4))
    two.NumberOfFrames, two.PixelData = 2, two.PixelData * 2
    declined["two frames"] = dcm.save(two, tmp_path / "two.dcm")
    short = dcm.make_dataset(study_uid="1.2", series_uid="1.2.7", rows=SIZE, cols=SIZE, pixels=PIXELS)
    short.PixelData = short.PixelData[:-64]
    declined["short pixel data"] = dcm.save(short, tmp_path / "short.dcm")
    wide = dcm.make_dataset(study_uid="1.2", series_uid="1.2.6", rows=4, cols=4)
    wide.BitsStored = 17  # more than allocated: pydicom's to refuse
    declined["BitsStored > BitsAllocated"] = dcm.save(wide, tmp_path / "wide.dcm")
    cut = _plain(dcm, tmp_path / "cut.dcm", uid.ExplicitVRLittleEndian, allocated=16, stored=16, signed=False, rows=32, cols=32)
    cut.write_bytes(cut.read_bytes()[:-100])  # the file ends inside its pixel data
    declined["truncated"] = cut
    declined["missing"] = tmp_path / "missing.dcm"
    for what, path in declined.items():
        assert _read_native(path) is None, what
    # pydicom still decodes what it can, and the errors stay its own
    instances = {i.path.name: i for st in scan_path(tmp_path).studies for se in st.series for i in se.instances}
    for name in ("big.dcm", "deflated.dcm", "rle.dcm"):
        np.testing.assert_array_equal(instances[name].pixel_array(), PIXELS.astype(np.float32))
    with pytest.raises(DicomError, match="short.dcm"):
        instances["short.dcm"].pixel_array()


@pytest.mark.parametrize("ts,module", [(uid.JPEGLSLossless, "jpeg_ls"), (uid.JPEGLSNearLossless, "jpeg_ls")])
def test_jpeg_ls_is_decoded_by_pyjpegls_where_installed_with_the_same_values(tmp_path, dcm, ts, module):
    from lumbar_edge.dicom.pixels import preferred_plugin

    assert preferred_plugin(uid.ExplicitVRLittleEndian) == ""
    pytest.importorskip(module, reason="pyjpegls (the codecs extra) is not installed")
    assert preferred_plugin(ts) == "pyjpegls"
    if not _encodable(ts):
        pytest.skip("no installed plugin encodes JPEG-LS")
    ds = dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4", rows=SIZE, cols=SIZE, pixels=PIXELS)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.compress(ts, **({"jls_error": 2} if ts == uid.JPEGLSNearLossless else {}))
    path = dcm.save(ds, tmp_path / "jls.dcm")
    ours = scan_path(tmp_path).studies[0].series[0].instances[0].pixel_array()
    from pydicom.pixels import get_decoder, pixel_array

    for other in get_decoder(ts).available_plugins:  # every installed decoder reads the same values
        np.testing.assert_array_equal(ours, pixel_array(path, decoding_plugin=other).astype(np.float32))


def test_rle_decoded_by_pylibjpeg_rle_gives_pydicoms_own_values(tmp_path, dcm):
    # pylibjpeg-rle (the codecs extra; 1.3 against 4.0 ms a slice for pydicom's own decoder) is
    # what pydicom picks for RLE where it is installed: the values must not change.
    pytest.importorskip("rle", reason="pylibjpeg-rle (the codecs extra) is not installed")
    from pydicom.pixels import get_decoder

    assert "pylibjpeg" in get_decoder(uid.RLELossless).available_plugins
    path = _write(dcm, tmp_path / "rle.dcm", uid.RLELossless)
    ours = scan_path(tmp_path).studies[0].series[0].instances[0].pixel_array()
    np.testing.assert_array_equal(ours, PIXELS.astype(np.float32))
    from pydicom.pixels import pixel_array

    np.testing.assert_array_equal(pixel_array(path, decoding_plugin="pydicom"), PIXELS)


def test_a_jpeg_ls_file_no_decoder_reads_is_a_one_line_dicom_error(tmp_path, dcm):
    # The preferred plugin fails first, then pydicom's own order: the error stays one line.
    pytest.importorskip("jpeg_ls", reason="pyjpegls (the codecs extra) is not installed")
    if not _encodable(uid.JPEGLSLossless):
        pytest.skip("no installed plugin encodes JPEG-LS")
    good = _write(dcm, tmp_path / "src.dcm", uid.JPEGLSLossless)
    ds = pydicom.dcmread(good)
    good.unlink()
    frame = next(pydicom.encaps.generate_fragments(ds.PixelData))
    ds.PixelData = pydicom.encaps.encapsulate([frame[:4] + bytes(len(frame) - 4)])
    ds.save_as(tmp_path / "garbage_jls.dcm")
    (inst,) = scan_path(tmp_path).studies[0].series[0].instances
    with pytest.raises(DicomError, match="garbage_jls.dcm: cannot decode") as info:
        inst.pixel_array()
    assert "\n" not in str(info.value)


def _write_bare(dcm, path: Path, ts: str, keep_meta: bool) -> Path:
    """A file as old exports write it: no preamble or 'DICM'; with its file meta
    (``keep_meta``) or the data set alone, in ``ts``."""
    ds = dcm.make_dataset(study_uid="1.2.3", series_uid="1.2.3.4", rows=SIZE, cols=SIZE, pixels=PIXELS)
    little = ts != uid.ExplicitVRBigEndian
    if not little:
        ds.PixelData = np.frombuffer(ds.PixelData, dtype="<u2").astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ts
    if not keep_meta:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.preamble = None
    pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=ts == uid.ImplicitVRLittleEndian,
                     little_endian=little, force_encoding=True)
    return path


# (File meta is always explicit VR little endian: a big endian data set is bare without it.)
@pytest.mark.parametrize("ts,keep_meta", [
    (uid.ImplicitVRLittleEndian, False), (uid.ExplicitVRLittleEndian, False), (uid.ExplicitVRBigEndian, False),
    (uid.ImplicitVRLittleEndian, True), (uid.ExplicitVRLittleEndian, True),
], ids=["implicit", "explicit", "big endian", "implicit with meta", "explicit with meta"])
def test_a_bare_file_without_preamble_is_scanned_and_decoded(tmp_path, dcm, ts, keep_meta):
    path = _write_bare(dcm, tmp_path / "IM0001", ts, keep_meta)
    data = path.read_bytes()
    assert data[128:132] != b"DICM"
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(path)  # what the scan reads pydicom refuses without force=True
    result = scan_path(tmp_path)
    assert not result.skipped
    (series,) = result.studies[0].series
    inst = series.instances[0]
    assert inst.transfer_syntax_uid == ts  # from the meta, or the encoding the data set is in
    assert (inst.rows, inst.columns) == (SIZE, SIZE)
    out = series.pixels(0)
    np.testing.assert_array_equal(out, PIXELS.astype(np.float32))
    assert path.read_bytes() == data


@pytest.mark.parametrize("head", [b"\x08\x00\x05\x00\x0a\x00\x00\x00", b"\x08\x00\x08\x00CS\x16\x00",
                                  b"\x02\x00\x00\x00UL\x04\x00", b"\x00\x08\x00\x05CS\x00\x0a"])
def test_starts_bare_accepts_the_first_elements_of_a_bare_file(head):
    assert starts_bare(head + b"\0" * 16, 1000)


@pytest.mark.parametrize("head", [b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n", b"hello world\n", b"\x08\x00\x05\x00",
                                  b"\x08\x00\x05\x00\xff\xff\x00\x10",  # implicit length past the end
                                  b"\x10\x00\x10\x00PN\x04\x00",  # group 0010 first: not an image data set's start
                                  b"\x08\x00\x05\x01CS\x0a\x00", b"\x00\x08\x00\x05XX\x00\x0a"])
def test_starts_bare_refuses_other_bytes(head):
    assert not starts_bare(head, 1000)


def test_a_text_file_is_still_not_dicom(tmp_path):
    (tmp_path / "notes").write_bytes(b"\x08\x00 not dicom at all, only starts like it" * 4)
    result = scan_path(tmp_path)
    assert [s.category for s in result.skipped] == ["not_dicom"]
