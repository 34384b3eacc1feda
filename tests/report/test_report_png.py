"""The dependency-free PNG encoder and drawing toolkit, checked by an independent decoder."""
import numpy as np
import pytest

from lumbar_edge.errors import InputError
from lumbar_edge.report import png


def _smooth_and_noisy(h, w, channels, seed=0):
    """Rows that favour different filters: constant, horizontal ramp, vertical ramp, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, channels), dtype=np.uint8)
    for c in range(channels):
        band = np.where(yy < h // 4, 77 + c, np.where(yy < h // 2, (xx * 3 + c) % 256,
                        np.where(yy < 3 * h // 4, (yy * 5 + xx + c) % 256, rng.integers(0, 256, (h, w)))))
        img[:, :, c] = band
    return img


@pytest.mark.parametrize("row_filter", png.PNG_FILTERS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (23, 37), (40, 33, 3), (17, 5, 4), (1, 1, 3)])
def test_round_trip_through_an_independent_decoder(png_reader, shape, row_filter):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    decoded, info = png_reader(png.encode_png(image, row_filter=row_filter))
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, image)
    assert info["color_type"] == {1: 0, 3: 2, 4: 6}[1 if image.ndim == 2 else image.shape[2]]


@pytest.mark.parametrize("channels", [1, 3])
def test_all_filter_types_are_used_and_undone_exactly(png_reader, channels):
    image = _smooth_and_noisy(64, 48, channels, seed=channels)
    if channels == 1:
        image = image[:, :, 0]
    decoded, info = png_reader(png.encode_png(image, row_filter="adaptive"))
    np.testing.assert_array_equal(decoded, image)
    # The per-row choice must really vary, or the test would not exercise the Sub/Up/Average/Paeth code.
    assert len(set(info["filters"])) >= 3, info["filters"]


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_the_default_sub_filter_is_undone_exactly(png_reader, channels):
    image = _smooth_and_noisy(37, 29, channels, seed=10 + channels)
    decoded, info = png_reader(png.encode_png(image[:, :, 0] if channels == 1 else image))
    np.testing.assert_array_equal(decoded, image[:, :, 0] if channels == 1 else image)
    assert set(info["filters"]) == {1}


@pytest.mark.parametrize("row_filter", png.PNG_FILTERS)
def test_filtering_compresses_smooth_images(row_filter):
    yy, xx = np.mgrid[0:256, 0:256]
    ramp = ((xx + yy) % 256).astype(np.uint8)
    # unfiltered zlib of this diagonal ramp is several times larger
    assert len(png.encode_png(ramp, row_filter=row_filter)) < 2000


@pytest.mark.parametrize("deflate", sorted(png.DEFLATE))
def test_every_deflate_implementation_writes_what_an_independent_decoder_reads(png_reader, deflate):
    # The independent reader inflates with the standard library's zlib, whichever compressed.
    image = _smooth_and_noisy(61, 47, 3, seed=5)
    data = png.encode_png(image, deflate=deflate, text={"Title": "t"})
    decoded, _info = png_reader(data)
    np.testing.assert_array_equal(decoded, image)


def test_zlib_ng_is_the_default_where_installed_and_a_missing_one_is_named():
    pytest.importorskip("zlib_ng")
    assert png.DEFAULT_DEFLATE == "zlib-ng"
    with pytest.raises(InputError, match="'lz4' is not available"):
        png.encode_png(np.zeros((2, 2), np.uint8), deflate="lz4")


def test_gray_to_rgb_copies_the_grey_into_all_three_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgb = png.gray_to_rgb(gray)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)
    rgb[0, 0, 0] = 255  # a copy: drawing on it leaves the grey image alone
    assert gray[0, 0] == 0
    with pytest.raises(InputError):
        png.gray_to_rgb(gray.astype(np.float32))


def test_an_unknown_filter_is_refused():
    with pytest.raises(InputError, match="unknown PNG filter"):
        png.encode_png(np.zeros((2, 2), np.uint8), row_filter="paeth")


def test_text_chunks_and_write_png_is_atomic(tmp_path, png_reader):
    image = np.zeros((4, 6, 3), np.uint8)
    path = png.write_png(tmp_path / "sub" / "x.png", image, text={"Disclaimer": "NOT FOR CLINICAL USE"})
    decoded, info = png_reader(path.read_bytes())
    assert info["text"] == {"Disclaimer": "NOT FOR CLINICAL USE"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.png"]  # no temporary file left


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8),
                                 np.zeros((0, 4), np.uint8), np.zeros((2, 2, 2, 3), np.uint8)])
def test_bad_images_are_refused(bad):
    with pytest.raises(InputError):
        png.encode_png(bad)


def test_bad_text_keyword_is_refused():
    with pytest.raises(InputError):
        png.encode_png(np.zeros((2, 2), np.uint8), text={"": "x"})


# -- font and text ------------------------------------------------------------------------------

I_GLYPH = np.array([[0, 1, 1, 1, 0],
                    [0, 0, 1, 0, 0],
                    [0, 0, 1, 0, 0],
                    [0, 0, 1, 0, 0],
                    [0, 0, 1, 0, 0],
                    [0, 0, 1, 0, 0],
                    [0, 1, 1, 1, 0]], dtype=bool)


def test_text_puts_ink_exactly_where_the_glyph_says():
    img = png.new_canvas(30, 30)
    box = png.draw_text(img, 10, 5, "I", (255, 0, 0))
    assert box == (10, 5, 14, 11)
    ink = (img == (255, 0, 0)).all(axis=2)
    np.testing.assert_array_equal(ink[5:12, 10:15], I_GLYPH)
    assert ink.sum() == I_GLYPH.sum()  # nothing outside the glyph


def test_text_scales_by_an_integer_factor():
    img = png.new_canvas(40, 40)
    png.draw_text(img, 3, 4, "I", (0, 255, 0), scale=3)
    ink = (img == (0, 255, 0)).all(axis=2)
    np.testing.assert_array_equal(ink[4:25, 3:18], np.kron(I_GLYPH, np.ones((3, 3), bool)))
    assert ink.sum() == 9 * I_GLYPH.sum()


def test_text_size_and_lines():
    assert png.text_size("AB") == (11, 7)
    assert png.text_size("AB", scale=2) == (22, 14)
    assert png.text_size("A\nBCD") == (17, 15)
    assert png.text_bitmap("A\nBCD").shape == (15, 17)


def test_every_printable_glyph_is_distinct_and_only_space_is_blank():
    bitmaps = [png.text_bitmap(chr(c)) for c in range(32, 127)]
    assert not bitmaps[0].any()
    assert all(b.any() for b in bitmaps[1:])
    assert len({b.tobytes() for b in bitmaps}) == 95


def test_non_ascii_draws_a_question_mark_and_text_clips_at_edges():
    np.testing.assert_array_equal(png.text_bitmap("é"), png.text_bitmap("?"))
    img = png.new_canvas(10, 10)
    png.draw_text(img, -3, 6, "WW", (255, 255, 255), scale=2, background=(9, 9, 9), padding=2)
    assert (img == 255).all(axis=2).any()


def test_text_background_and_translucent_shading():
    img = png.new_canvas(20, 40, (100, 100, 100))
    png.draw_text(img, 5, 5, "A", (255, 255, 255), background=(0, 0, 0), padding=1)
    assert tuple(img[4, 4]) == (0, 0, 0)
    png.shade_rect(img, 30, 10, 35, 15, (200, 0, 0), 0.5)
    assert tuple(img[12, 32]) == (150, 50, 50)


# -- shapes -------------------------------------------------------------------------------------

def test_fill_circle_area_and_centre():
    img = png.new_canvas(41, 41)
    png.fill_circle(img, 20, 20, 10, (1, 2, 3))
    ink = (img == (1, 2, 3)).all(axis=2)
    assert abs(ink.sum() - np.pi * 100) < 0.05 * np.pi * 100
    assert ink[20, 20] and ink[20, 30] and not ink[20, 31]
    np.testing.assert_array_equal(ink, ink[::-1, ::-1])  # symmetric about the centre


def test_circle_outline_is_a_closed_ring():
    img = png.new_canvas(41, 41)
    png.circle(img, 20, 20, 12, (9, 9, 9))
    ink = (img == 9).all(axis=2)
    assert not ink[20, 20]
    dist = np.hypot(*np.mgrid[0:41, 0:41] - 20.0)
    assert (np.abs(dist[ink] - 12) <= 0.5).all()
    # Closed: a 4-connected flood fill from the centre stays inside the ring.
    seen, todo = {(20, 20)}, [(20, 20)]
    while todo:
        y, x = todo.pop()
        for n in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= n[0] < 41 and 0 <= n[1] < 41 and n not in seen and not ink[n]:
                seen.add(n)
                todo.append(n)
    assert max(np.hypot(y - 20, x - 20) for y, x in seen) < 12


def test_line_is_connected_and_hits_its_endpoints():
    img = png.new_canvas(30, 50)
    png.line(img, 2, 3, 45, 25, (7, 7, 7))
    ink = (img == 7).all(axis=2)
    assert ink[3, 2] and ink[25, 45]
    assert all(ink[:, x].any() for x in range(2, 46))  # one pixel or more in every column it spans


def test_rectangle_outline_and_fill():
    img = png.new_canvas(20, 20)
    png.rectangle(img, 2, 3, 10, 12, (5, 5, 5))
    ink = (img == 5).all(axis=2)
    assert ink[3, 2:11].all() and ink[12, 2:11].all() and ink[3:13, 2].all() and ink[3:13, 10].all()
    assert not ink[5:11, 3:10].any()
    png.rectangle(img, 2, 3, 10, 12, (5, 5, 5), fill=True)
    assert (img == 5).all(axis=2).sum() == 9 * 10


def test_shapes_outside_the_image_are_clipped_silently():
    img = png.new_canvas(10, 10)
    png.fill_circle(img, -50, -50, 5, (255, 0, 0))
    png.line(img, -20, 5, 30, 5, (0, 255, 0))
    assert not (img == (255, 0, 0)).all(axis=2).any()
    assert (img == (0, 255, 0)).all(axis=2)[5].all()


@pytest.mark.parametrize("colour", [(256, 0, 0), (1, 2), "red"])
def test_bad_colours_are_refused(colour):
    with pytest.raises(InputError):
        png.fill_circle(png.new_canvas(5, 5), 2, 2, 1, colour)


def test_drawing_needs_an_rgb_uint8_canvas():
    with pytest.raises(InputError):
        png.line(np.zeros((5, 5), np.uint8), 0, 0, 4, 4, (1, 1, 1))


def test_colormap_ends_and_blend():
    cm = png.colormap(np.array([0.0, 1.0, np.nan, 2.0]))
    assert tuple(cm[0]) == (0, 0, 4) and tuple(cm[1]) == (252, 255, 164)
    assert tuple(cm[2]) == tuple(cm[0]) and tuple(cm[3]) == tuple(cm[1])
    img = png.new_canvas(2, 2, (100, 100, 100))
    png.blend(img, np.full((2, 2, 3), 200, np.uint8), np.array([[0, 1], [0.5, 0.25]]))
    assert img[0, 0, 0] == 100 and img[0, 1, 0] == 200 and img[1, 0, 0] == 150 and img[1, 1, 0] == 125
