"""PNG files and simple drawing without an imaging library: numpy, zlib and struct only (zlib-ng's
zlib-compatible module compresses where it is installed, a dependency of lumbar-edge: see
:data:`DEFLATE`).

* :func:`encode_png` / :func:`write_png`: 8-bit grayscale ``[H, W]``, RGB ``[H, W, 3]`` or RGBA
  ``[H, W, 4]`` images, every row Sub-filtered (default) or each row with the filter libpng's
  minimum-sum-of-absolute-differences heuristic picks (``row_filter="adaptive"``), optional ``tEXt``
  chunks.
* Drawing on RGB ``uint8`` images ``[H, W, 3]``, in place, clipped at the borders, coordinates in
  pixels with pixel centres at integers (as everywhere in lumbar-edge): :func:`fill_circle`,
  :func:`circle`, :func:`line`, :func:`rectangle`, :func:`shade_rect` (translucent fill) and
  :func:`draw_text` with a built-in 5x7 bitmap font for ASCII 32-126, scaled by an integer factor.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ._io import atomic_write_bytes

try:
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:  # an optional speed-up: the standard library's zlib writes the same format
    _zlib_ng = None

#: The deflate implementations :func:`encode_png` can use, by name: the standard library's zlib,
#: and zlib-ng's zlib-compatible module where it is installed. Both write zlib streams any PNG
#: reader decodes; zlib-ng is the default because on the overlays of a study it compressed them
#: 1.7x faster at level 2 (125 against 217 ms for 11 overlays of 864 px) into 3% fewer bytes.
DEFLATE = {"zlib": zlib, **({"zlib-ng": _zlib_ng} if _zlib_ng is not None else {})}
#: The implementation :func:`encode_png` uses unless told otherwise.
DEFAULT_DEFLATE = "zlib-ng" if "zlib-ng" in DEFLATE else "zlib"

Color = Tuple[int, int, int]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)

# The classic 5x7 LCD font, ASCII 32 (space) to 126 (~): 5 bytes per glyph, one per column from
# left to right, bit 0 the top row. Rendered as 6x8 cells (1 px of spacing right and below).
FONT_FIRST = 32
FONT_WIDTH, FONT_HEIGHT = 5, 7
CELL_WIDTH, CELL_HEIGHT = FONT_WIDTH + 1, FONT_HEIGHT + 1
FONT_5X7 = bytes.fromhex(
    "000000000000005f00000007000700147f147f14242a7f2a12231308646236495522500005030000"  #  !"#$%&'
    "001c2241000041221c00082a1c2a0808083e08080050300000080808080800606000002010080402"  # ()*+,-./
    "3e5149453e00427f400042615149462141454b311814127f1027454545393c4a4949300171090503"  # 01234567
    "3649494936064949291e003636000000563600000814224100141414141400412214080201510906"  # 89:;<=>?
    "324979413e7e1111117e7f494949363e414141227f4141221c7f494949417f090909013e4149497a"  # @ABCDEFG
    "7f0808087f00417f41002040413f017f081422417f404040407f020c027f7f0408107f3e4141413e"  # HIJKLMNO
    "7f090909063e4151215e7f09192946464949493101017f01013f4040403f1f2040201f3f4038403f"  # PQRSTUVW
    "631408146307087008076151494543007f41410002040810200041417f0004020102044040404040"  # XYZ[\]^_
    "000102040020545454787f484444383844444420384444487f3854545418087e0901020c5252523e"  # `abcdefg
    "7f0804047800447d40002040443d007f1028440000417f40007c041804787c080404783844444438"  # hijklmno
    "7c14141408081414187c7c080404084854545420043f4440203c4040207c1c2040201c3c4030403c"  # pqrstuvw
    "44281028440c5050503c4464544c44000836410000007f000000413608000804081008"  # xyz{|}~
)


# -- PNG encoding ------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


#: |b| of each byte read as a signed int8: the cost the adaptive filter choice minimises.
_SIGNED_MAGNITUDE = np.minimum(np.arange(256), 256 - np.arange(256)).astype(np.uint16)


#: Filter choices of :func:`encode_png`.
PNG_FILTERS = ("sub", "adaptive")


def _sub_filtered_rows(pixels: np.ndarray) -> bytes:
    """The image data stream with every row Sub-filtered (type 1: each byte minus the byte one
    pixel to its left)."""
    height, width = pixels.shape[:2]
    bpp = pixels.shape[2]
    raw = pixels.reshape(height, width * bpp)
    out = np.empty((height, width * bpp + 1), dtype=np.uint8)
    out[:, 0] = 1
    out[:, 1:bpp + 1] = raw[:, :bpp]
    np.subtract(raw[:, bpp:], raw[:, :-bpp], out=out[:, bpp + 1:])
    return out.tobytes()


def _filtered_rows(pixels: np.ndarray) -> bytes:
    """The image data stream: each row prefixed by its filter type, filtered with the type (of
    the five) whose output has the smallest sum of absolute values as signed bytes.

    Encoding filters read the raw (unfiltered) neighbours only, so all five are computed for the
    whole image at once with array arithmetic.
    """
    height, width = pixels.shape[:2]
    bpp = pixels.shape[2]
    raw = pixels.reshape(height, width * bpp)
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    upleft = np.zeros_like(raw)
    upleft[1:, bpp:] = raw[:-1, :-bpp]
    # Paeth predictor: whichever of left, up, upper-left is closest to left + up - upper-left,
    # ties in that order (computed in int16; the filtered bytes themselves wrap modulo 256 in uint8).
    l16, u16, ul16 = left.astype(np.int16), up.astype(np.int16), upleft.astype(np.int16)
    p = l16 + u16 - ul16
    pa, pb, pc = np.abs(p - l16), np.abs(p - u16), np.abs(p - ul16)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    average = ((l16 + u16) >> 1).astype(np.uint8)
    candidates = np.stack([raw, raw - left, raw - up, raw - average, raw - paeth])
    best = _SIGNED_MAGNITUDE[candidates].sum(axis=2, dtype=np.uint32).argmin(axis=0)  # per row
    chosen = candidates[best, np.arange(height)]
    return np.concatenate([best.astype(np.uint8)[:, None], chosen], axis=1).tobytes()


def _as_pixels(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputError(f"a PNG image must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in _COLOR_TYPES or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"a PNG image must be [H, W] grey, [H, W, 3] RGB or [H, W, 4] RGBA, got {arr.shape}")
    if arr.shape[0] >= 2 ** 31 or arr.shape[1] >= 2 ** 31:
        raise InputError(f"image of shape {arr.shape} is too large for PNG")
    return arr


def encode_png(image: np.ndarray, text: Optional[Mapping[str, str]] = None, level: int = 2,
               row_filter: str = "sub", deflate: Optional[str] = None) -> bytes:
    """The PNG file bytes of an 8-bit image: ``[H, W]`` grey, ``[H, W, 3]`` RGB or ``[H, W, 4]``
    RGBA. ``text`` adds ``tEXt`` chunks (Latin-1 keyword of 1-79 characters -> Latin-1 text).
    ``level`` is zlib's. 2 is the default: on the 12 overlays of a realistic synthetic study it
    encoded them in 222 ms against 365 ms at level 3 for 10% more bytes (6.1 MB against 5.5 MB;
    level 6 is another 3x slower for 1% less), and writing overlays is a fifth of a study's time
    on the CPU (standard zlib). zlib-ng keeps level 2 the choice: its level 1 was 1.9x faster
    again but 60% larger (11 overlays of 864 px: 67 ms and 8.1 MB against 126 ms and 5.1 MB).
    ``row_filter``: ``"sub"`` for every row, or ``"adaptive"`` (a filter per row, libpng's heuristic).
    Sub is the default because the overlays are upscaled slices, smooth along the rows: on the
    overlays of a synthetic study it made the files 8% smaller than the adaptive choice, which
    picks Paeth, and encoded them 2.8x faster (zlib level 3 both).
    ``deflate``: a name in :data:`DEFLATE` (default :data:`DEFAULT_DEFLATE`).
    Raises :class:`InputError` for another dtype or shape, an unknown filter or deflate
    implementation, or a bad text entry."""
    if row_filter not in PNG_FILTERS:
        raise InputError(f"unknown PNG filter {row_filter!r}; expected one of {', '.join(PNG_FILTERS)}")
    name = DEFAULT_DEFLATE if deflate is None else deflate
    if name not in DEFLATE:
        hint = " (pip install zlib-ng)" if name == "zlib-ng" else ""
        raise InputError(f"deflate implementation {name!r} is not available{hint}; available: {', '.join(DEFLATE)}")
    pixels = _as_pixels(image)
    height, width, channels = pixels.shape
    ihdr = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", ihdr)]
    for key, value in (text or {}).items():
        try:
            kb, vb = str(key).encode("latin-1"), str(value).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise InputError(f"PNG text must be Latin-1: {exc}") from exc
        if not 1 <= len(kb) <= 79 or b"\0" in kb or b"\0" in vb:
            raise InputError(f"invalid PNG text keyword {key!r}")
        parts.append(_chunk(b"tEXt", kb + b"\0" + vb))
    rows = (_sub_filtered_rows if row_filter == "sub" else _filtered_rows)(np.ascontiguousarray(pixels))
    parts.append(_chunk(b"IDAT", DEFLATE[name].compress(rows, level)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def write_png(path: Union[str, Path], image: np.ndarray, text: Optional[Mapping[str, str]] = None) -> Path:
    """Encode ``image`` (see :func:`encode_png`) and write it to ``path`` atomically; returns the
    path. Raises :class:`InputError` for a bad image, ``OSError`` when it cannot be written."""
    return atomic_write_bytes(path, encode_png(image, text))


# -- drawing -----------------------------------------------------------------------------------

def new_canvas(height: int, width: int, color: Color = (0, 0, 0)) -> np.ndarray:
    """A ``[height, width, 3]`` uint8 image filled with ``color``."""
    canvas = np.empty((int(height), int(width), 3), dtype=np.uint8)
    canvas[...] = _color(color)
    return canvas


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """A uint8 ``[H, W]`` grey image as ``[H, W, 3]`` RGB."""
    arr = np.asarray(gray)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise InputError(f"expected a uint8 [H, W] image, got {arr.dtype} {arr.shape}")
    # stack, not repeat: 1.5x faster on an 864 px overlay, the same bytes.
    return np.stack([arr, arr, arr], axis=-1)


def _canvas(img: np.ndarray) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        what = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise InputError(f"drawing needs a uint8 [H, W, 3] RGB image, got {what}")
    return img


def _color(color: Sequence[int]) -> np.ndarray:
    try:
        values = [int(c) for c in color]
    except (TypeError, ValueError) as exc:
        raise InputError(f"a colour is three integers 0-255, got {color!r}") from exc
    if len(values) != 3 or not all(0 <= c <= 255 for c in values):
        raise InputError(f"a colour is three integers 0-255, got {color!r}")
    return np.array(values, dtype=np.uint8)


def _window(img: np.ndarray, x0: float, y0: float, x1: float, y1: float):
    """Integer pixel ranges covering [x0, x1] x [y0, y1] clipped to the image, with the
    coordinate grids of the pixels in it; ``None`` when nothing is inside."""
    h, w = img.shape[:2]
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), w - 1)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h - 1)
    if c0 > c1 or r0 > r1:
        return None
    ys, xs = np.mgrid[r0:r1 + 1, c0:c1 + 1]
    return (slice(r0, r1 + 1), slice(c0, c1 + 1)), xs.astype(np.float64), ys.astype(np.float64)


def _paint(img: np.ndarray, window, mask: np.ndarray, color: Sequence[int]) -> np.ndarray:
    region = img[window]
    region[mask] = _color(color)
    return img


def fill_circle(img: np.ndarray, cx: float, cy: float, radius: float, color: Color) -> np.ndarray:
    """Fill the disc of ``radius`` around (``cx``, ``cy``): every pixel whose centre is inside."""
    _canvas(img)
    win = _window(img, cx - radius, cy - radius, cx + radius, cy + radius)
    if win is None:
        return img
    window, xs, ys = win
    return _paint(img, window, (xs - cx) ** 2 + (ys - cy) ** 2 <= radius * radius, color)


def circle(img: np.ndarray, cx: float, cy: float, radius: float, color: Color, thickness: float = 1) -> np.ndarray:
    """Outline a circle: pixels whose centre is within ``thickness / 2`` of the circle (at least
    half a pixel, so a thin outline has no gaps)."""
    _canvas(img)
    half = max(thickness / 2.0, 0.5)
    win = _window(img, cx - radius - half, cy - radius - half, cx + radius + half, cy + radius + half)
    if win is None:
        return img
    window, xs, ys = win
    dist = np.hypot(xs - cx, ys - cy)
    return _paint(img, window, np.abs(dist - radius) <= half, color)


def line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: Color, thickness: float = 1) -> np.ndarray:
    """Draw a segment: pixels whose centre is within ``thickness / 2`` (at least half a pixel,
    which keeps a thin line 8-connected) of the segment from (x0, y0) to (x1, y1)."""
    _canvas(img)
    half = max(thickness / 2.0, 0.5)
    win = _window(img, min(x0, x1) - half, min(y0, y1) - half, max(x0, x1) + half, max(y0, y1) + half)
    if win is None:
        return img
    window, xs, ys = win
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = np.zeros_like(xs) if length2 == 0 else np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0.0, 1.0)
    dist = np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy))
    return _paint(img, window, dist <= half, color)


def rectangle(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: Color, *, fill: bool = False,
              thickness: int = 1) -> np.ndarray:
    """Draw the axis-aligned rectangle with corners (x0, y0) and (x1, y1), inclusive: filled, or
    outlined ``thickness`` pixels wide on the inside."""
    _canvas(img)
    xa, xb = sorted((int(round(x0)), int(round(x1))))
    ya, yb = sorted((int(round(y0)), int(round(y1))))
    win = _window(img, xa, ya, xb, yb)
    if win is None:
        return img
    window, xs, ys = win
    if fill:
        mask = np.ones(xs.shape, dtype=bool)
    else:
        t = max(int(thickness), 1)
        mask = (xs < xa + t) | (xs > xb - t) | (ys < ya + t) | (ys > yb - t)
    return _paint(img, window, mask, color)


def shade_rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: Color, alpha: float) -> np.ndarray:
    """Blend ``color`` over the rectangle (inclusive corners) with opacity ``alpha`` in [0, 1]:
    the translucent backing that keeps labels legible without hiding the anatomy."""
    _canvas(img)
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    xa, xb = sorted((int(round(x0)), int(round(x1))))
    ya, yb = sorted((int(round(y0)), int(round(y1))))
    win = _window(img, xa, ya, xb, yb)
    if win is None:
        return img
    window = win[0]
    region = img[window].astype(np.float32)
    img[window] = np.round(region * (1.0 - alpha) + _color(color).astype(np.float32) * alpha).astype(np.uint8)
    return img


def _glyphs() -> np.ndarray:
    """The font as a boolean array [95, 7, 5] (glyph, row, column)."""
    cols = np.frombuffer(FONT_5X7, dtype=np.uint8).reshape(-1, FONT_WIDTH)
    bits = np.unpackbits(cols[:, :, None], axis=2, bitorder="little")[:, :, :FONT_HEIGHT]
    return bits.transpose(0, 2, 1).astype(bool)


def text_size(text: str, scale: int = 1) -> Tuple[int, int]:
    """(width, height) in pixels of ``text`` drawn by :func:`draw_text` at ``scale``: 6x8 cells
    per character, lines split at newlines, without the spacing after the last column/row."""
    lines = str(text).split("\n")
    cols = max(len(s) for s in lines)
    width = cols * CELL_WIDTH - 1 if cols else 0
    return width * scale, (len(lines) * CELL_HEIGHT - 1) * scale


def text_bitmap(text: str, scale: int = 1) -> np.ndarray:
    """The ink of ``text`` as a boolean array of :func:`text_size`. Characters outside ASCII
    32-126 are drawn as ``?``."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise InputError(f"text scale must be a positive integer, got {scale!r}")
    glyphs = _glyphs()
    lines = str(text).split("\n")
    cols = max(len(s) for s in lines)
    ink = np.zeros((len(lines) * CELL_HEIGHT, max(cols * CELL_WIDTH, 1)), dtype=bool)
    for row, s in enumerate(lines):
        for col, ch in enumerate(s):
            code = ord(ch)
            index = code - FONT_FIRST if FONT_FIRST <= code < FONT_FIRST + len(glyphs) else ord("?") - FONT_FIRST
            y, x = row * CELL_HEIGHT, col * CELL_WIDTH
            ink[y:y + FONT_HEIGHT, x:x + FONT_WIDTH] = glyphs[index]
    ink = ink[:max(ink.shape[0] - 1, 0), :max(ink.shape[1] - 1, 0)]
    return np.repeat(np.repeat(ink, scale, axis=0), scale, axis=1)


def draw_text(img: np.ndarray, x: int, y: int, text: str, color: Color, *, scale: int = 1,
              background: Optional[Color] = None, alpha: float = 1.0, padding: int = 0) -> Tuple[int, int, int, int]:
    """Write ``text`` with its top-left corner at (x, y), ``scale`` x the 5x7 font; newlines start
    new lines. ``background`` fills (or, with ``alpha`` < 1, shades) the text's box grown by
    ``padding`` pixels first. Returns the box ``(x0, y0, x1, y1)`` (inclusive, may lie partly
    outside the image, which clips). Raises :class:`InputError` for a bad image, colour or scale."""
    _canvas(img)
    ink = text_bitmap(text, scale)
    x, y = int(round(x)), int(round(y))
    box = (x - padding, y - padding, x + ink.shape[1] - 1 + padding, y + ink.shape[0] - 1 + padding)
    if background is not None:
        if alpha >= 1.0:
            rectangle(img, *box, background, fill=True)
        else:
            shade_rect(img, *box, background, alpha)
    h, w = img.shape[:2]
    r0, c0 = max(y, 0), max(x, 0)
    r1, c1 = min(y + ink.shape[0], h), min(x + ink.shape[1], w)
    if r0 < r1 and c0 < c1:
        region = img[r0:r1, c0:c1]
        region[ink[r0 - y:r1 - y, c0 - x:c1 - x]] = _color(color)
    return box


# Anchor colours of the heat map colour map (dark purple -> red -> orange -> yellow -> white),
# an "inferno"-like ramp that stays distinguishable from the green/orange/red severity marks
# because of its alpha ramp (low values stay transparent).
_COLORMAP_ANCHORS = ((0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164))


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN as 0) to RGB uint8 along an inferno-like ramp;
    returns ``values.shape + (3,)``."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    v = np.clip(v, 0.0, 1.0)
    anchors = np.asarray(_COLORMAP_ANCHORS, dtype=np.float32)
    pos = np.linspace(0.0, 1.0, len(anchors))
    out = np.stack([np.interp(v, pos, anchors[:, c]) for c in range(3)], axis=-1)
    return np.round(out).astype(np.uint8)


def blend(img: np.ndarray, overlay: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend the RGB ``overlay`` [H, W, 3] over ``img`` in place with per-pixel opacity
    ``alpha`` [H, W] in [0, 1]."""
    _canvas(img)
    over = np.asarray(overlay)
    a = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)
    if over.shape != img.shape or a.shape != img.shape[:2]:
        raise InputError(f"blend needs an overlay of {img.shape} and alpha of {img.shape[:2]}, "
                         f"got {over.shape} and {a.shape}")
    mixed = img.astype(np.float32) * (1.0 - a[..., None]) + over.astype(np.float32) * a[..., None]
    img[...] = np.round(mixed).astype(np.uint8)
    return img


__all__ = ["encode_png", "write_png", "DEFLATE", "DEFAULT_DEFLATE", "new_canvas", "gray_to_rgb", "fill_circle", "circle", "line", "rectangle",
           "shade_rect", "draw_text", "text_size", "text_bitmap", "colormap", "blend", "FONT_5X7",
           "PNG_SIGNATURE", "CELL_WIDTH", "CELL_HEIGHT"]
