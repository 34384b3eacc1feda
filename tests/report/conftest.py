"""A PNG reader written independently of lumbar_edge.report.png (zlib + the PNG spec's unfilter
rules, byte by byte in plain Python), so the encoder is checked against the format, not itself."""
import struct
import zlib

import numpy as np
import pytest

_CHANNELS = {0: 1, 2: 3, 6: 4}


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(data: bytes):
    """Decode an 8-bit grey/RGB/RGBA non-interlaced PNG: (pixels [H, W] or [H, W, ch], info dict)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "bad signature"
    pos, idat, chunks, text = 8, b"", [], {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"CRC mismatch in {kind!r}"
        chunks.append(kind)
        if kind == b"IHDR":
            width, height, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, comp, filt, interlace) == (8, 0, 0, 0)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"tEXt":
            key, value = body.split(b"\0", 1)
            text[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND", chunks
    bpp = _CHANNELS[ctype]
    stride = width * bpp
    raw = zlib.decompress(idat)
    assert len(raw) == height * (stride + 1), "wrong data length"
    out = bytearray(height * stride)
    prev = bytearray(stride)
    filters = []
    for r in range(height):
        ftype = raw[r * (stride + 1)]
        line = bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        filters.append(ftype)
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            elif ftype == 4:
                pred = _paeth(a, b, c)
            else:
                raise AssertionError(f"bad filter type {ftype}")
            line[i] = (line[i] + pred) & 0xFF
        out[r * stride:(r + 1) * stride] = line
        prev = line
    pixels = np.frombuffer(bytes(out), dtype=np.uint8).reshape(height, width, bpp)
    if bpp == 1:
        pixels = pixels[:, :, 0]
    return pixels, {"width": width, "height": height, "color_type": ctype, "filters": filters, "text": text,
                    "chunks": chunks}


@pytest.fixture
def png_reader():
    return read_png
