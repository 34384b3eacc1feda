"""PNG overlays: files, sizes, marker colours, text, heatmap mapping."""
import logging

import numpy as np
import pytest

from lumbar_edge.dicom.orient import Reorientation
from lumbar_edge.errors import InputError
from lumbar_edge.labels import CONDITIONS, LEVELS
from lumbar_edge.preprocess import bilinear_taps, letterbox, resize_bilinear
from lumbar_edge.report import render_overlay, write_overlays
from lumbar_edge.report.overlay import (DISCLAIMER, SEVERITY_COLOURS, display_factor, finding_label,
                                        heatmap_on_display, upscale_gray)
from lumbar_edge.report.png import text_bitmap, text_size
from lumbar_edge.results import Finding, Keypoint, StudyResult

T2, T1, AX = "1.2.2", "1.2.1", "1.2.3"
PROBS = ((0.9, 0.07, 0.03), (0.7, 0.2, 0.1), (0.2, 0.65, 0.15), (0.05, 0.14, 0.81), (0.1, 0.3, 0.6))


def phantom(h, w, seed=0):
    """A sagittal-looking test slice: noise, a bright canal band and vertebral blocks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 200 + 30 * rng.standard_normal((h, w)).astype(np.float32)
    img += 400 * np.exp(-((xx - w * 0.55) / (w * 0.05)) ** 2)
    for i in range(6):
        img += 600 * ((np.abs(yy - h * (0.1 + i * 0.16)) < h * 0.055) & (np.abs(xx - w * 0.4) < w * 0.12))
    return img


def kp(series, series_id, sop, instance, x, y):
    return Keypoint(series, series_id, sop, instance, float(x), float(y), (0.0, 0.0, 0.0), 0.9)


def study():
    """Canal levels on one sagittal T2 slice (256x256), foramina on two sagittal T1 slices
    (left/right), subarticular points on two axial slices (non-square), the rest from the prior."""
    findings = []
    for c in CONDITIONS:
        for i, lv in enumerate(LEVELS):
            p = PROBS[i]
            if c == "spinal_canal_stenosis":
                k = kp(T2, "22", "t2.8", 8, 256 * 0.55, 256 * (0.18 + i * 0.16))
            elif "foraminal" in c:
                side = 3 if c.startswith("left") else 12
                k = kp(T1, "11", f"t1.{side}", side, 100 + 3 * i, 40 + 45 * i)
            elif lv in ("l4_l5", "l5_s1"):
                k = kp(AX, "33", f"ax.{lv}", 20 + i, 90 if c.startswith("left") else 60, 100)
            else:
                k = None
            findings.append(Finding(c, lv, p, k, source="model" if k else "prior"))
    slices = {(T2, "t2.8"): phantom(256, 256), (T1, "t1.3"): phantom(256, 256, 1), (T1, "t1.12"): phantom(256, 256, 2),
              (AX, "ax.l4_l5"): phantom(160, 200, 3), (AX, "ax.l5_s1"): phantom(160, 200, 4)}
    result = StudyResult("4003253", "1.2.4003253", findings,
                         series_used={"sagittal_t2": T2, "sagittal_t1": T1, "axial_t2": AX})
    return result, slices


def test_one_png_per_source_slice_with_names_sizes_and_severity_colours(tmp_path, png_reader):
    result, slices = study()
    paths = write_overlays(result, slices, tmp_path / "overlays", min_size=512)
    assert [p.name for p in paths] == ["4003253_sagittal_t2_8.png", "4003253_sagittal_t1_3.png",
                                       "4003253_sagittal_t1_12.png", "4003253_axial_t2_23.png",
                                       "4003253_axial_t2_24.png"]
    by_sop = {}
    for f in result.findings:
        if f.keypoint:
            by_sop.setdefault(f.keypoint.sop_uid, []).append(f)
    for path, sop in zip(paths, ["t2.8", "t1.3", "t1.12", "ax.l4_l5", "ax.l5_s1"]):
        pixels, info = png_reader(path.read_bytes())
        src = slices[next(k for k in slices if k[1] == sop)]
        factor = display_factor(*src.shape, 512)
        assert pixels.shape == (src.shape[0] * factor, src.shape[1] * factor, 3)
        assert max(pixels.shape[:2]) >= 512
        assert "NOT FOR CLINICAL USE" in info["text"]["Disclaimer"]
        for f in by_sop[sop]:
            x = int(round((f.keypoint.x + 0.5) * factor - 0.5))
            y = int(round((f.keypoint.y + 0.5) * factor - 0.5))
            expected = SEVERITY_COLOURS[("Normal/Mild", "Moderate", "Severe").index(f.severity)]
            assert tuple(pixels[y, x]) == expected, (path.name, f.column)
    assert all(p.parent == tmp_path / "overlays" for p in paths)


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_encoding_writes_the_same_files_in_the_same_order(tmp_path, workers):
    result, slices = study()
    inline = write_overlays(result, slices, tmp_path / "inline", min_size=256, workers=1)
    threaded = write_overlays(result, slices, tmp_path / "threaded", min_size=256, workers=workers)
    assert [p.name for p in threaded] == [p.name for p in inline]
    assert [p.read_bytes() for p in threaded] == [p.read_bytes() for p in inline]
    assert sorted(p.name for p in (tmp_path / "threaded").iterdir()) == sorted(p.name for p in inline)


def test_a_failed_write_is_raised_not_lost(tmp_path):
    result, slices = study()
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the folder should go")
    with pytest.raises(OSError):
        write_overlays(result, slices, blocker, min_size=256, workers=2)
    with pytest.raises(InputError, match="workers"):
        write_overlays(result, slices, tmp_path / "x", workers=0)


def test_severity_colours_are_green_orange_red():
    g, o, r = SEVERITY_COLOURS
    assert g[1] > max(g[0], g[2]) and o[0] > o[1] > o[2] and r[0] > 3 * max(r[1], r[2])


def test_labels_name_level_condition_grade_and_probability():
    result, _ = study()
    assert finding_label(result.finding("spinal_canal_stenosis", "l4_l5")) == "L4/L5 SCS: severe 0.81"
    assert finding_label(result.finding("left_neural_foraminal_narrowing", "l1_l2")) == "L1/L2 L NFN: normal/mild 0.90"
    assert finding_label(result.finding("right_subarticular_stenosis", "l3_l4")).startswith("L3/L4 R SS: moderate")


def test_the_disclaimer_is_drawn_on_the_image():
    img = render_overlay(phantom(256, 256), [], min_size=768)
    scale = max(img.shape[:2]) // 384
    ink = text_bitmap(DISCLAIMER, scale)
    th = text_size(DISCLAIMER, scale)[1]
    y0, x0 = img.shape[0] - 2 * scale - th, 2 * scale
    region = img[y0:y0 + ink.shape[0], x0:x0 + ink.shape[1]]
    yellow = (region == (255, 230, 0)).all(axis=2)
    np.testing.assert_array_equal(yellow, ink)


def test_label_text_is_drawn_in_the_severity_colour_beside_its_point():
    result, slices = study()
    f = result.finding("spinal_canal_stenosis", "l4_l5")
    img = render_overlay(slices[(T2, "t2.8")], [f], min_size=768)
    factor = 3
    px, py = (f.keypoint.x + 0.5) * factor - 0.5, (f.keypoint.y + 0.5) * factor - 0.5
    red = (img == SEVERITY_COLOURS[2]).all(axis=2)
    band = red[int(py) - 10:int(py) + 10]
    cols = np.nonzero(band.any(axis=0))[0]
    # ink well beyond the marker ring: the label, about 22 characters of 12 px
    assert cols.max() - px > 200


def test_small_images_are_upscaled_and_large_ones_kept():
    assert render_overlay(phantom(64, 48), []).shape == (768, 576, 3)
    assert render_overlay(phantom(1000, 900), []).shape == (1000, 900, 3)


@pytest.mark.parametrize("shape,factor", [((288, 288), 3), ((61, 97), 2), ((192, 160), 4), ((5, 3), 7), ((1, 4), 2)])
def test_display_upscale_is_the_preprocessing_interpolation(shape, factor):
    # Columns-then-rows must give resize_bilinear's picture (rows then columns) up to float
    # rounding: a grey level apart at most, and that only where a value sits on a .5 boundary.
    gray = np.random.default_rng(factor).integers(0, 256, shape).astype(np.uint8)
    want = np.round(np.clip(resize_bilinear(gray.astype(np.float32), shape[0] * factor, shape[1] * factor), 0, 255))
    got = upscale_gray(gray, factor)
    assert got.shape == want.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert np.array_equal(upscale_gray(gray, 1), gray)
    # Each output pixel from its own two taps (bilinear_taps, clamped at the borders), columns then
    # rows in float32, computed one pixel at a time: the phase-sliced implementation must agree.
    c0, c1, cw = bilinear_taps(shape[1], shape[1] * factor, float(factor))
    r0, r1, rw = bilinear_taps(shape[0], shape[0] * factor, float(factor))
    img = gray.astype(np.float32)
    cols = img[:, c0] * (1 - cw) + img[:, c1] * cw
    direct = np.rint(cols[r0] * (1 - rw)[:, None] + cols[r1] * rw[:, None])
    assert np.abs(got.astype(int) - direct.astype(int)).max() <= 1
    assert np.mean(got == direct) > 0.999
    flat = np.full(shape, 200, np.uint8)  # a flat image stays flat: no ringing, no overflow
    assert (upscale_gray(flat, factor) == 200).all()
    with pytest.raises(InputError):
        upscale_gray(gray, 0)
    with pytest.raises(InputError):
        upscale_gray(gray.astype(np.float32), 2)


def test_a_missing_slice_is_skipped_with_a_warning_and_priors_have_no_overlay(tmp_path, caplog):
    result, slices = study()
    del slices[(T1, "t1.3")]
    with caplog.at_level(logging.WARNING, logger="lumbar_edge.report"):
        paths = write_overlays(result, slices, tmp_path, min_size=256)
    assert len(paths) == 4 and "instance 3" in caplog.text
    only_priors = StudyResult("9", "1.9", [Finding(c, lv, (1.0, 0.0, 0.0), None, "prior")
                                           for c in CONDITIONS for lv in LEVELS])
    assert write_overlays(only_priors, {}, tmp_path / "none") == []


def test_series_without_a_view_are_named_by_series_number(tmp_path):
    result, slices = study()
    result.series_used = {}
    names = [p.name for p in write_overlays(result, slices, tmp_path, min_size=256)]
    assert "4003253_series22_8.png" in names


def test_bad_slices_are_refused():
    with pytest.raises(InputError):
        render_overlay(np.zeros((3, 4, 5), np.float32), [])


def test_heatmap_is_mapped_through_the_letterbox_onto_the_slice():
    # A 200x100 (rows x cols) slice letterboxed into a 64x64 model input: the map is 16x16 at stride 4.
    src_h, src_w, factor, stride = 200, 100, 2, 4
    _, lb = letterbox(np.zeros((src_h, src_w), np.float32), 64, 64)
    sx, sy = 30.0, 150.0
    mx, my = lb.to_model(sx, sy)
    hm = np.full((16, 16), -10.0, np.float32)
    hm[int(round(float(my) / stride)), int(round(float(mx) / stride))] = 10.0
    values = heatmap_on_display(hm, (src_h, src_w), factor, stride=stride)
    assert values.shape == (src_h * factor, src_w * factor)
    peak_y, peak_x = np.unravel_index(values.argmax(), values.shape)
    # within one heatmap cell (4 model px = 12.5 source px here) of the point, in display pixels
    cell = stride / lb.scale_x * factor
    assert abs(peak_x - ((sx + 0.5) * factor - 0.5)) <= cell and abs(peak_y - ((sy + 0.5) * factor - 0.5)) <= cell
    assert values.max() > 0.99 and values.min() < 1e-4


@pytest.mark.parametrize("transpose,flip_rows,flip_columns", [
    (False, True, True), (True, False, True), (True, True, False), (False, False, True)])
@pytest.mark.parametrize("aspect", [1.0, 0.75])
def test_heatmap_of_a_turned_slice_lands_on_the_stored_pixel_it_was_read_at(transpose, flip_rows, flip_columns, aspect):
    # The model saw the stored 90x150 slice turned (orient) and letterboxed (box, non-square
    # pixels too); its hot cell must be drawn where that model pixel lies on the stored slice.
    src_h, src_w, factor, stride = 90, 150, 2, 4
    orient = Reorientation(src_h, src_w, transpose=transpose, flip_rows=flip_rows, flip_columns=flip_columns)
    _, box = letterbox(np.zeros(orient.shape, np.float32), 64, 64, aspect)
    hm = np.full((16, 16), -10.0, np.float32)
    cell_y, cell_x = 9, 5
    hm[cell_y, cell_x] = 10.0
    sx, sy = orient.to_stored(*box.to_source(cell_x * stride, cell_y * stride))
    values = heatmap_on_display(hm, (src_h, src_w), factor, stride=stride, box=box, orient=orient)
    assert values.shape == (src_h * factor, src_w * factor)
    peak_y, peak_x = np.unravel_index(values.argmax(), values.shape)
    # within one display pixel of the stored pixel, in display pixels
    assert abs(peak_x - ((float(sx) + 0.5) * factor - 0.5)) <= 1.0 + factor / 2
    assert abs(peak_y - ((float(sy) + 0.5) * factor - 0.5)) <= 1.0 + factor / 2
    with pytest.raises(InputError, match="reorientation"):
        heatmap_on_display(hm, (src_w, src_h), factor, stride=stride, box=box, orient=orient)


def test_a_slice_of_non_square_pixels_is_shown_in_mm_proportions_with_its_marks_in_place():
    result, _ = study()
    found = [f for f in result.findings if f.condition == "spinal_canal_stenosis"]
    img = phantom(200, 256)  # rows 1.25x as tall as columns are wide: a 250 x 256 mm-square slice
    plain = render_overlay(img, found, min_size=512, legend=False)
    square = render_overlay(img, found, min_size=512, legend=False, aspect=1.0)
    assert np.array_equal(plain, square) and plain.shape[:2] == (400, 512)
    tall = render_overlay(img, found, min_size=512, legend=False, aspect=1.25)
    assert tall.shape[:2] == (500, 512)  # 200 rows x 2 x 1.25, 256 columns x 2
    for f in found:
        # each keypoint's dot: the severity colour at its display pixel, rows scaled by 2.5
        x, y = (f.keypoint.x + 0.5) * 2 - 0.5, (f.keypoint.y + 0.5) * 2.5 - 0.5
        if y < tall.shape[0]:
            expected = SEVERITY_COLOURS[("Normal/Mild", "Moderate", "Severe").index(f.severity)]
            assert tuple(tall[int(round(y)), int(round(x))]) == expected, f.level
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="pixel aspect"):
            render_overlay(img, found, aspect=bad)


def test_heatmap_overlay_changes_pixels_only_where_it_is_hot(tmp_path, png_reader):
    result, slices = study()
    key = (T2, "t2.8")
    hm = np.full((64, 64), -12.0, np.float32)
    hm[52:56, 52:56] = 6.0  # hot, right of the canal: away from every keypoint and label
    plain = write_overlays(result, {key: slices[key]}, tmp_path / "a", min_size=256)
    heat = write_overlays(result, {key: slices[key]}, tmp_path / "b", heatmaps={key: {"x": hm}}, min_size=256)
    a, _ = png_reader(plain[0].read_bytes())
    b, _ = png_reader(heat[0].read_bytes())
    diff = np.abs(a.astype(int) - b.astype(int)).sum(axis=2) > 0
    # The hot cells sit at model (= source = display, here) pixels 208..220.
    assert diff[209:220, 209:220].all()
    assert diff.mean() < 0.05


def test_malformed_heatmaps_are_refused():
    with pytest.raises(InputError):
        render_overlay(phantom(32, 32), [], heatmap=np.zeros((2, 2, 2, 2), np.float32))
    with pytest.raises(InputError):
        render_overlay(phantom(32, 32), [], heatmap={"a": np.zeros((4, 4)), "b": np.zeros((5, 5))})
