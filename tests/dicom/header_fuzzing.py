"""Seed files, mutations and the oracle of the header reader's fuzz and differential tests.

Not a test module: ``test_header_fuzz.py`` (seeded, bounded, in the normal suite and, longer, in
CI) and ``atheris_headers.py`` (coverage-guided, in CI where atheris installs) import it. The
oracle is pydicom: :func:`check` holds the fast reader to raising only Unhandled/Truncated,
``read_header`` to never raising, and every record ``read_header`` returns to equal what the
pydicom path (``headers._read_with_pydicom``) makes of the same bytes; the direct pixel read
(``pixels._read_native``) never to raise and, where it returns an array, to return what pydicom's
``pydicom.pixels.pixel_array(path)`` decodes from the file.
"""
from __future__ import annotations

import io
import random
import re
import struct
from pathlib import Path
from typing import Dict, List

from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from lumbar_edge.dicom import headers, pixels
from lumbar_edge.dicom.fastread import Truncated, Unhandled, read_tags

_VRS = [vr.encode() for vr in ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD",
                               "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI",
                               "UL", "UN", "UR", "US", "UT", "UV")]
_VR_AT = re.compile(b"(?=(" + b"|".join(_VRS) + b"))")
_DS_VALUE = re.compile(rb"[0-9][0-9.eE+\-\\]*")
_SIZE = 32  # openjpeg refuses much smaller images


def _dataset(make_dataset, **kw) -> Dataset:
    ds = make_dataset(study_uid="1.2.826.0.1.3680043.8.498.1", series_uid="1.2.826.0.1.3680043.8.498.2",
                      sop_uid="1.2.826.0.1.3680043.8.498.3", tr=4000.0, te=95.0, ti=160.0, scanning=["IR", "SE"],
                      description="Sagittal STIR", slope=2.0, intercept=-3.5, ipp=(1.5, -2.25, 300.0),
                      rows=_SIZE, cols=_SIZE, **kw)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.SpacingBetweenSlices = 4.4
    ds.SequenceName = "*tse2d1_15"
    ds.PatientPosition = "HFS"
    ds.PixelPaddingValue = 0
    return ds


def nested_scan_item() -> Dataset:
    """A sequence item holding scan tags (SOPInstanceUID 9.9.9, Rows, and a nested PixelSpacing):
    a reader must not let them leak out of the sequence."""
    item = Dataset()
    item.SOPInstanceUID = "9.9.9"
    item.Rows = 1
    inner = Dataset()
    inner.PixelSpacing = [9.0, 9.0]
    item.ReferencedImageSequence = Sequence([inner])
    return item


def _with_sequences(ds: Dataset) -> Dataset:
    # Nested items holding scan tags: they must not leak out (an undefined-length sequence is
    # written by pydicom when the element's is_undefined_length is set).
    item = nested_scan_item()
    ds.SourceImageSequence = Sequence([item, Dataset()])
    ds["SourceImageSequence"].is_undefined_length = True
    ds.ReferencedSeriesSequence = Sequence([item])
    return ds


def retag(data: bytes, transfer_syntax: str) -> bytes:
    """``data`` with its file meta naming ``transfer_syntax`` (the data set is left as it is),
    group length fixed: a file whose meta names the wrong transfer syntax."""
    pos, out = 132, []
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00":
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"UN", b"UT", b"SQ", b"OW"):
            length, head = struct.unpack_from("<L", data, pos + 8)[0], 12
        else:
            length, head = struct.unpack_from("<H", data, pos + 6)[0], 8
        elem = data[pos:pos + head + length]
        if data[pos + 2:pos + 4] == b"\x10\x00":
            value = transfer_syntax.encode() + (b"\x00" if len(transfer_syntax) % 2 else b"")
            elem = data[pos:pos + 6] + struct.pack("<H", len(value)) + value
        out.append(elem)
        pos += head + length
    if not out or out[0][:4] != b"\x02\x00\x00\x00":
        return data  # no group length to fix: not a meta this can rebuild
    body = b"".join(out[1:])  # out[0] is the group length (0002,0000)
    group_length = out[0][:8] + struct.pack("<L", len(body))
    return data[:132] + group_length + body + data[pos:]


def seed_files(make_dataset, save, folder: Path) -> Dict[str, bytes]:
    """Real files written by pydicom (name -> bytes): explicit and implicit VR little endian with
    nested sequences, UTF-8 and Latin-1 text, big endian, JPEG 2000 and RLE (encapsulated),
    files whose meta names the other VR encoding than their data set's, and bare files."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds: Dict[str, bytes] = {}
    for ts in (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian):
        ds = _with_sequences(_dataset(make_dataset))
        if ts == uid.ExplicitVRLittleEndian:
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SeriesDescription = "Sägittal STIR ü"
        elif ts == uid.ImplicitVRLittleEndian:
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.StudyDescription = "Lendenwirbelsäule"
        seeds[uid.UID(ts).name] = save(ds, folder / f"{ts}.dcm", ts).read_bytes()
    for ts in (uid.JPEG2000Lossless, uid.RLELossless):
        ds = _dataset(make_dataset)
        ds.compress(ts, generate_instance_uid=False)  # the seeds are the same bytes every run
        seeds[uid.UID(ts).name] = save(ds, folder / f"{ts}.dcm").read_bytes()
    seeds["implicit data, explicit meta"] = retag(seeds[uid.ImplicitVRLittleEndian.name], uid.ExplicitVRLittleEndian)
    seeds["explicit data, implicit meta"] = retag(seeds[uid.ExplicitVRLittleEndian.name], uid.ImplicitVRLittleEndian)
    # Bare files (no preamble or 'DICM'), as old exports write them: pydicom reads them only
    # with force=True, the header reader when they start like a data set or file meta.
    seeds["bare: meta without preamble"] = seeds[uid.ExplicitVRLittleEndian.name][132:]
    for ts in (uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian):
        seeds[f"bare: {uid.UID(ts).name} data set"] = _without_meta(seeds[uid.UID(ts).name])
    return seeds


def _without_meta(data: bytes) -> bytes:
    """The data set of the Part 10 file ``data``: its preamble, 'DICM' and file meta dropped."""
    pos = 132
    while data[pos:pos + 2] == b"\x02\x00":  # the meta is explicit VR little endian
        if data[pos + 4:pos + 6] in (b"OB", b"UN", b"UT", b"SQ", b"OW"):
            pos += 12 + struct.unpack_from("<L", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return data[pos:]


def _vr_positions(data: bytes) -> List[int]:
    return [m.start() for m in _VR_AT.finditer(data, 132)]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random mutations of ``data``: bit flips, byte overwrites, insertions,
    deletions, truncation, VR corruption (non-ASCII, unknown, other valid VRs), NULs in DS
    values, length corruption, the meta's transfer syntax swapped."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(10)
        n = len(out)
        if n < 2:
            break
        if kind == 0:  # bit flips
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(n)
                out[i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # random bytes overwritten
            i = rng.randrange(n)
            out[i:i + rng.randint(1, 4)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif kind == 2:  # bytes inserted
            i = rng.randrange(n)
            out[i:i] = bytes(rng.choice((0, 0x20, 0x5C, 0xFF, rng.randrange(256))) for _ in range(rng.randint(1, 8)))
        elif kind == 3:  # bytes deleted
            i = rng.randrange(n)
            del out[i:i + rng.randint(1, 8)]
        elif kind == 4:  # truncated
            del out[rng.randrange(n):]
        elif kind in (5, 6):  # a VR corrupted
            positions = _vr_positions(bytes(out))
            if positions:
                i = rng.choice(positions)
                out[i:i + 2] = rng.choice((b"D\xc9", bytes((rng.randrange(256), rng.randrange(256))),
                                           rng.choice(_VRS), b"QQ", b"ds", b"\x00\x00"))
        elif kind == 7:  # a NUL (or space, backslash) inside a number
            values = [m for m in _DS_VALUE.finditer(bytes(out), 132) if m.end() - m.start() > 1]
            if values:
                m = rng.choice(values)
                i = rng.randrange(m.start(), m.end())
                out[i] = rng.choice((0, 0, 0x20, 0x5C))
        elif kind == 8:  # a 16- or 32-bit length field (or anything) set to an edge value
            i = rng.randrange(n)
            width = rng.choice((2, 4))
            out[i:i + width] = rng.choice((b"\xff" * width, b"\x00" * width, b"\x01" + b"\x00" * (width - 1),
                                           (n - i).to_bytes(width, "little", signed=False)
                                           if n - i < 1 << (8 * width) else b"\x00" * width))
        else:  # the other transfer syntax named in the meta
            ts = rng.choice((uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian,
                             uid.JPEG2000Lossless, uid.DeflatedExplicitVRLittleEndian))
            try:
                out = bytearray(retag(bytes(out), ts))
            except struct.error:
                pass  # the meta is already too broken to rebuild: keep the bytes as they are
    return bytes(out)


def check(data: bytes, path: Path) -> str:
    """Run both readers on ``data`` (written to ``path``); raise AssertionError on a violation
    of the reader's contract, else return what happened (for the statistics)."""
    try:
        read_tags(io.BytesIO(data), len(data)).values()
        fast = "fast"
    except Unhandled:
        fast = "unhandled"
    except Truncated:
        fast = "truncated"
    # Any other exception from the fast reader propagates: that is the bug the fuzz looks for.
    path.write_bytes(data)
    direct = pixels._read_native(path)  # never raises, for any bytes
    if direct is not None:
        import numpy as np
        from pydicom.pixels import pixel_array

        try:
            # pydicom's own decoder of a file (its data set read up to the pixel data, as the
            # scan reads headers). Its dcmread of the whole file can read a corrupted sequence
            # differently from its read up to the pixels (a fuzz case: Columns 32 one way, an
            # error the other); the direct read follows the header read the scan trusted.
            want = pixel_array(path)
        except Exception as exc:  # noqa: BLE001 - whatever pydicom raises, the direct read disagreed
            raise AssertionError(f"the direct pixel read returned {direct.dtype} {direct.shape} where "
                                 f"pydicom raises {type(exc).__name__}: {exc}") from exc
        if want.dtype != direct.dtype or want.shape != direct.shape or not np.array_equal(want, direct):
            raise AssertionError(f"the direct pixel read and pydicom disagree: {direct.dtype} {direct.shape} "
                                 f"against {want.dtype} {want.shape}")
    result = headers.read_header(str(path))  # never raises, for any bytes
    if isinstance(result, headers.HeaderRecord):
        with open(path, "rb") as fp:
            arbiter = headers._read_with_pydicom(fp, str(path), len(data))
        if arbiter != result:
            diff = ({f: (getattr(result, f), getattr(arbiter, f)) for f in result._fields
                     if getattr(result, f) != getattr(arbiter, f)}
                    if isinstance(arbiter, headers.HeaderRecord) else arbiter)
            raise AssertionError(f"read_header ({fast}) and pydicom disagree: {diff}")
        return f"{fast}:record"
    assert isinstance(result, tuple) and len(result) == 2 and all(isinstance(x, str) and x for x in result), result
    assert "\n" not in result[1], result
    return f"{fast}:{result[0]}"

