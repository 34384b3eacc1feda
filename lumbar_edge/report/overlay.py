"""PNG overlays: each source slice a finding was read on, with its keypoints and grades.

One PNG per source slice (the sagittal T2/STIR slice with the five canal levels, the sagittal T1
slices with the foramina, the axial slices with the subarticular zones), named
``{study_id}_{view}_{instance}.png``. Each shows the slice in a percentile window, upscaled so the
text is readable, with every keypoint as a dot and ring coloured by its predicted severity (green
normal/mild, orange moderate, red severe), a label such as ``L4/L5 SCS: severe 0.81``, a legend,
and ``NOT FOR CLINICAL USE``; optionally the model's heatmap blended in as a colour map.

The writer needs no DICOM access: the pipeline passes the slices' pixels in.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..labels import SEVERITIES, level_title
from ..preprocess import checked_aspect, letterbox, resize_bilinear, window
from ..results import NOT_FOR_CLINICAL_USE, Finding, SliceHeatmaps, StudyResult
from ._io import safe_name
from .png import (CELL_HEIGHT, blend, circle, colormap, draw_text, fill_circle, gray_to_rgb, line, shade_rect,
                  text_size, write_png)

log = logging.getLogger("lumbar_edge.report")

#: Marker colour per severity index (normal/mild, moderate, severe).
SEVERITY_COLOURS: Tuple[Tuple[int, int, int], ...] = ((40, 200, 60), (255, 150, 0), (235, 30, 30))
SEVERITY_WORDS: Tuple[str, ...] = ("normal/mild", "moderate", "severe")
CONDITION_ABBREVIATIONS: Mapping[str, str] = {
    "spinal_canal_stenosis": "SCS",
    "left_neural_foraminal_narrowing": "L NFN",
    "right_neural_foraminal_narrowing": "R NFN",
    "left_subarticular_stenosis": "L SS",
    "right_subarticular_stenosis": "R SS",
}
DISCLAIMER = "NOT FOR CLINICAL USE"
#: Views in the order their overlays are listed; others (unknown series) come last.
VIEW_ORDER: Tuple[str, ...] = ("sagittal_t2", "sagittal_t1", "axial_t2")
DEFAULT_MIN_SIZE = 768
_TEXT = (255, 255, 255)
_BACKING = (0, 0, 0)


def severity_index(finding: Finding) -> int:
    """Index (0 normal/mild, 1 moderate, 2 severe) of the finding's most probable grade."""
    return SEVERITIES.index(finding.severity)


def finding_label(finding: Finding) -> str:
    """The label drawn next to a keypoint, e.g. ``L4/L5 SCS: severe 0.81`` (the probability of
    the predicted grade)."""
    i = severity_index(finding)
    abbr = CONDITION_ABBREVIATIONS.get(finding.condition, finding.condition)
    return f"{level_title(finding.level)} {abbr}: {SEVERITY_WORDS[i]} {finding.probabilities[i]:.2f}"


def window_to_uint8(image2d: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Grey uint8 of a 2-D slice clipped to its ``low_pct``..``high_pct`` intensity percentiles
    (the same window as the model's preprocessing). Raises :class:`InputError` unless 2-D."""
    arr = np.asarray(image2d)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"an overlay needs a 2-D slice, got an array of shape {arr.shape}")
    return np.round(window(arr.astype(np.float32), low_pct, high_pct) * 255.0).astype(np.uint8)


def display_factor(height: int, width: int, min_size: int = DEFAULT_MIN_SIZE) -> int:
    """The integer upscale that brings the longer side to at least ``min_size`` (1 if it is)."""
    return max(1, math.ceil(min_size / max(height, width)))


def _combine_heatmaps(heatmap) -> np.ndarray:
    """One [h, w] map from a 2-D map, a [k, h, w] stack or a mapping of 2-D maps (max over them)."""
    if isinstance(heatmap, Mapping):
        maps = [np.asarray(m, dtype=np.float32) for m in heatmap.values()]
        if not maps:
            raise InputError("an empty heatmap mapping")
        shapes = {m.shape for m in maps}
        if len(shapes) != 1:
            raise InputError(f"heatmaps of one slice must share a shape, got {sorted(shapes)}")
        stack = np.stack(maps)
    else:
        stack = np.asarray(heatmap, dtype=np.float32)
        if stack.ndim == 2:
            stack = stack[None]
    if stack.ndim != 3 or stack.shape[1] < 1 or stack.shape[2] < 1:
        raise InputError(f"a heatmap is [h, w] or [k, h, w], got shape {stack.shape}")
    finite = np.isfinite(stack)
    if not finite.all():
        # Non-finite values (a broken engine) would poison the interpolation: show them as the
        # map's lowest finite value, i.e. no heat.
        stack = np.where(finite, stack, stack[finite].min() if finite.any() else 0.0)
    return stack.max(axis=0)


def _sample_axis(values: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` along ``axis`` at fractional ``positions`` (clamped)."""
    size = values.shape[axis]
    pos = np.clip(positions, 0.0, size - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, size - 1)
    w1 = (pos - i0).astype(np.float32)
    a, b = np.take(values, i0, axis=axis), np.take(values, i1, axis=axis)
    shape = [1, 1]
    shape[axis] = -1
    return a * (1.0 - w1.reshape(shape)) + b * w1.reshape(shape)


def heatmap_on_display(heatmap, source_shape: Tuple[int, int], factor: int, *, stride: int = 4,
                       logits: bool = True, box=None, orient=None, display_rows: Optional[int] = None) -> np.ndarray:
    """A model heatmap resampled onto the displayed (upscaled) stored slice, as values in [0, 1].

    The display is the slice enlarged ``factor`` times, its rows to ``display_rows`` (default
    ``factor`` times too: another count shows pixels of another height in mm proportions).

    ``heatmap`` is on the model's output grid: the slice turned by ``orient`` (a
    :class:`~lumbar_edge.dicom.orient.Reorientation` of the stored ``source_shape``; None: as
    stored) and letterboxed into the model input by ``box`` (the input's
    :class:`~lumbar_edge.preprocess.Letterbox`; None: the preprocessing's letterbox of square
    pixels into ``stride`` x the map's size), at ``stride``; a map cell ``(i, j)`` sits at model
    pixel ``(i, j) * stride`` (the training targets' convention). ``logits``: the map holds
    logits, as the network outputs, and gets a sigmoid. Raises :class:`InputError` for a
    malformed heatmap or an ``orient`` made for another slice shape.
    """
    hm = _combine_heatmaps(heatmap)
    src_h, src_w = source_shape
    if orient is not None and (orient.rows, orient.columns) != (src_h, src_w):
        raise InputError(f"the heatmap's reorientation is for a {orient.rows}x{orient.columns} slice, "
                         f"not {src_h}x{src_w}")
    turned = orient.shape if orient is not None else (src_h, src_w)
    if box is None:
        _, box = letterbox(np.zeros(turned, dtype=np.float32), hm.shape[0] * stride, hm.shape[1] * stride)
    disp_rows = src_h * factor if display_rows is None else int(display_rows)
    disp = np.arange(disp_rows, dtype=np.float64), np.arange(src_w * factor, dtype=np.float64)
    # display pixel -> source pixel (the display is the source resized, centres aligned)
    src_y, src_x = (disp[0] + 0.5) * src_h / disp_rows - 0.5, (disp[1] + 0.5) / factor - 0.5
    transpose = orient is not None and orient.transpose
    # Flips and quarter turns keep the axes separable: the turned slice's x comes from the
    # stored columns (rows when transposed), its y from the stored rows (columns).
    if orient is None:
        turned_x, turned_y = src_x, src_y
    elif not transpose:
        turned_x = orient.to_reoriented(src_x, np.zeros_like(src_x))[0]
        turned_y = orient.to_reoriented(np.zeros_like(src_y), src_y)[1]
    else:
        turned_x = orient.to_reoriented(np.zeros_like(src_y), src_y)[0]
        turned_y = orient.to_reoriented(src_x, np.zeros_like(src_x))[1]
    model_x = box.to_model(turned_x, np.zeros_like(turned_x))[0]
    model_y = box.to_model(np.zeros_like(turned_y), turned_y)[1]
    rows = _sample_axis(hm, model_y / stride, axis=0)
    values = _sample_axis(rows, model_x / stride, axis=1)
    if transpose:
        values = values.T  # sampled as [stored columns, stored rows]
    if logits:
        values = 1.0 / (1.0 + np.exp(-np.clip(values, -60.0, 60.0)))
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def _overlaps(a, b) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


def _phase_taps(factor: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per output phase ``p`` of an integer ``factor`` upscale with pixel centres aligned: the
    offset ``d`` (-1 or 0) of its left/upper source pixel and the weight of the next one.

    Output ``k * factor + p`` lies at source position ``k + (p + 0.5) / factor - 0.5``, so its
    taps are source pixels ``k + d[p]`` and ``k + d[p] + 1`` for every ``k``, with one weight per
    phase: the interpolation of :func:`lumbar_edge.preprocess.bilinear_taps`, whose clamping at
    the borders an edge-replicated pixel on each side reproduces.
    """
    position = (np.arange(factor, dtype=np.float64) + 0.5) / factor - 0.5
    offset = np.floor(position).astype(np.int64)
    return offset, (position - offset).astype(np.float32)


def _upscale_rows(img: np.ndarray, factor: int) -> np.ndarray:
    """``img`` [n, m] float32 enlarged ``factor`` times along axis 0 (see :func:`_phase_taps`)."""
    n = img.shape[0]
    padded = np.concatenate([img[:1], img, img[-1:]])
    offset, weight = _phase_taps(factor)
    out = np.empty((n, factor) + img.shape[1:], dtype=np.float32)
    for p in range(factor):
        lo = padded[1 + offset[p]:1 + offset[p] + n]
        hi = padded[2 + offset[p]:2 + offset[p] + n]
        np.multiply(lo, np.float32(1.0) - weight[p], out=out[:, p])
        out[:, p] += hi * weight[p]
    return out.reshape((n * factor,) + img.shape[1:])


def upscale_gray(gray: np.ndarray, factor: int) -> np.ndarray:
    """A uint8 ``[h, w]`` image enlarged ``factor`` times by bilinear interpolation with pixel
    centres aligned (the interpolation of :func:`lumbar_edge.preprocess.resize_bilinear`),
    rounded back to uint8. Raises :class:`InputError` unless 2-D uint8 and ``factor >= 1``.

    Columns first, on the small image, then rows. With an integer factor every output phase has
    one pair of weights for the whole image, so each phase is two shifted slices of the source
    and a multiply-add: no gathers (2.5-3.5x faster than gathering by index on 192-320 pixel
    slices, the same bytes).
    """
    arr = np.asarray(gray)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise InputError(f"expected a uint8 [H, W] image, got {arr.dtype} {arr.shape}")
    if int(factor) != factor or factor < 1:
        raise InputError(f"the upscale factor must be a whole number >= 1, got {factor!r}")
    factor = int(factor)
    if factor == 1:
        return arr.copy()
    cols = np.ascontiguousarray(_upscale_rows(np.ascontiguousarray(arr.astype(np.float32).T), factor).T)
    out = _upscale_rows(cols, factor)
    # A convex combination of 0..255 stays in range up to float rounding, which rint absorbs.
    np.rint(out, out=out)
    return out.astype(np.uint8)


def render_overlay(image2d: np.ndarray, findings: Sequence[Finding], *, title: str = "", heatmap=None,
                   heatmap_logits: bool = True, stride: int = 4, min_size: int = DEFAULT_MIN_SIZE,
                   low_pct: float = 0.5, high_pct: float = 99.5, legend: bool = True,
                   aspect: float = 1.0) -> np.ndarray:
    """The overlay of one slice as an RGB uint8 image ``[h * f, w * f, 3]`` (``f`` from
    :func:`display_factor`); ``aspect``: the slice's pixel height / width in mm
    (:func:`lumbar_edge.preprocess.pixel_aspect`), other than 1 showing it in mm proportions,
    ``round(h * f * aspect)`` rows.

    ``findings`` are those read on this slice: each with a keypoint in this slice's source
    pixels (findings without one are ignored). ``heatmap``: optional model heatmap(s) of this
    slice (see :func:`heatmap_on_display`; a :class:`~lumbar_edge.results.SliceHeatmaps` brings
    the letterbox and reorientation its maps were made with), blended in with opacity rising
    with the value.
    Raises :class:`InputError` for a slice that is not 2-D or a malformed heatmap.
    """
    checked_aspect(aspect)
    gray = window_to_uint8(image2d, low_pct, high_pct)
    src_h, src_w = gray.shape
    factor = display_factor(max(1, int(round(src_h * aspect))), src_w, min_size)
    if factor > 1:
        gray = upscale_gray(gray, factor)
    rows = src_h * factor
    if aspect != 1.0:
        # Pixels of another height in mm: the rows resized once more, to mm proportions.
        rows = max(1, int(round(src_h * factor * aspect)))
        stretched = resize_bilinear(gray.astype(np.float32), rows, gray.shape[1])
        gray = np.clip(np.rint(stretched), 0, 255).astype(np.uint8)
    fy = rows / src_h  # display rows per source row
    img = gray_to_rgb(gray)
    height, width = img.shape[:2]
    if heatmap is not None:
        grid = {}
        if isinstance(heatmap, SliceHeatmaps):
            heatmap, grid = heatmap.maps, {"box": heatmap.letterbox, "orient": heatmap.orient}
        values = heatmap_on_display(heatmap, (src_h, src_w), factor, stride=stride, logits=heatmap_logits,
                                    display_rows=rows, **grid)
        blend(img, colormap(values), 0.6 * values)
    # Text and marks grow with the picture: 2x the 5x7 font from 768 px, 3x from 1536 px.
    scale = max(1, min(4, max(height, width) // 384))
    radius = 4 * scale + 2
    pad = scale
    line_h = CELL_HEIGHT * scale + 2 * pad + 1
    taken: List[Tuple[int, int, int, int]] = []

    # Header: title top left, legend top right, disclaimer bottom left.
    if title:
        taken.append(draw_text(img, 2 * pad, 2 * pad, title, _TEXT, scale=scale, background=_BACKING, alpha=0.6,
                               padding=pad))
    if legend:
        entries = list(zip(SEVERITY_WORDS, SEVERITY_COLOURS))
        text_w = max(text_size(w, scale)[0] for w, _ in entries)
        box_w = text_w + 2 * radius + 4 * pad + 2
        x0 = width - box_w - 2 * pad
        y0 = (taken[-1][3] + 2 * pad) if title and taken[-1][2] >= x0 else 2 * pad
        y1 = y0 + len(entries) * line_h + pad
        shade_rect(img, x0, y0, width - 2 * pad, y1, _BACKING, 0.6)
        for i, (word, colour) in enumerate(entries):
            cy = y0 + pad + i * line_h + line_h // 2
            fill_circle(img, x0 + pad + radius, cy, radius * 0.6, colour)
            draw_text(img, x0 + 2 * pad + 2 * radius + 2, cy - (CELL_HEIGHT * scale) // 2, word, _TEXT, scale=scale)
        taken.append((x0, y0, width - 2 * pad, y1))
    disclaimer_box = draw_text(img, 2 * pad, height - 2 * pad - text_size(DISCLAIMER, scale)[1], DISCLAIMER,
                               (255, 230, 0), scale=scale, background=_BACKING, alpha=0.7, padding=pad)
    taken.append(disclaimer_box)

    marks = [f for f in findings if f.keypoint is not None]
    points = []
    for f in marks:
        # source pixel -> display pixel, centres aligned as in the resize
        points.append(((f.keypoint.x + 0.5) * factor - 0.5, (f.keypoint.y + 0.5) * fy - 0.5))
    # Rings and dots first, all of them, so that a label never hides another keypoint's dot.
    for f, (px, py) in zip(marks, points):
        colour = SEVERITY_COLOURS[severity_index(f)]
        circle(img, px, py, radius * 2, colour, thickness=max(2, scale))
        fill_circle(img, px, py, radius * 0.6, colour)
    dots = [(px - 2 * radius, py - 2 * radius, px + 2 * radius, py + 2 * radius) for px, py in points]
    for f, (px, py) in zip(marks, points):
        colour = SEVERITY_COLOURS[severity_index(f)]
        label = finding_label(f)
        tw, th = text_size(label, scale)
        gap = 2 * radius + 4 * pad + 4  # clear of the ring (radius 2r) and its thickness
        # Right of the point if it fits, else left; then down (or up) until it overlaps nothing.
        lx = px + gap if px + gap + tw + pad < width else px - gap - tw
        lx = int(round(min(max(lx, pad), width - tw - pad - 1)))
        ly0 = int(round(py - th / 2))
        placed = None
        for step in range(0, 12):
            for ly in ((ly0 + step * line_h, ly0 - step * line_h) if step else (ly0,)):
                box = (lx - pad, ly - pad, lx + tw - 1 + pad, ly + th - 1 + pad)
                if box[1] < 0 or box[3] >= height:
                    continue
                others = taken + [d for d, m in zip(dots, marks) if m is not f]
                if not any(_overlaps(box, t) for t in others):
                    placed = ly
                    break
            if placed is not None:
                break
        if placed is None:
            placed = min(max(ly0, pad), height - th - pad - 1)
        box = draw_text(img, lx, placed, label, colour, scale=scale, background=_BACKING, alpha=0.8, padding=pad)
        taken.append(box)
        # A leader line when the label had to move away from its point.
        if abs(placed + th / 2 - py) > line_h:
            anchor_x = box[0] if box[0] > px else box[2]
            line(img, px, py, anchor_x, (box[1] + box[3]) / 2, colour, thickness=1)
    return img


def overlay_name(study_id: object, view_or_series: object, instance_number: object) -> str:
    """``{study_id}_{view or series}_{instance}.png``, made safe for any file system."""
    return f"{safe_name(study_id)}_{safe_name(view_or_series)}_{safe_name(instance_number)}.png"


@dataclass(frozen=True)
class OverlayImage:
    """One rendered overlay: the RGB image of a source slice with the findings read on it."""

    key: Tuple[str, str]  # (SeriesInstanceUID, SOPInstanceUID) of the source slice
    label: str  # the view (``sagittal_t2`` ...) or ``series{id}``
    title: str
    findings: Tuple[Finding, ...]
    image: np.ndarray  # RGB uint8 [h, w, 3]

    @property
    def keypoint(self):
        return self.findings[0].keypoint


def overlay_images(result: StudyResult, slices: Mapping[Tuple[str, str], np.ndarray],
                   heatmaps: Optional[Mapping[Tuple[str, str], object]] = None, *,
                   min_size: int = DEFAULT_MIN_SIZE, stride: int = 4) -> Iterator[OverlayImage]:
    """Render one overlay per source slice of ``result``'s keypoints, sagittal T2 first, then
    sagittal T1, then axial, each by instance number (the order :func:`write_overlays` writes).

    ``slices`` maps ``(series_uid, sop_uid)`` (plus the frame of a multi-frame source: see
    :func:`lumbar_edge.results.slice_key`) to the slice's 2-D pixels (the source grid of the
    keypoints). ``heatmaps`` optionally maps the same keys to a slice's heatmaps (a
    :class:`~lumbar_edge.results.SliceHeatmaps`, as the pipeline keeps them, or a mapping of
    column -> model-grid map or an array of a slice shown as stored; see :func:`heatmap_on_display`). A slice missing from
    ``slices`` is skipped with a logged warning. Findings from the prior (no keypoint) have no
    overlay. Raises :class:`InputError` for unusable pixels.
    """
    view_of = {uid: view for view, uid in result.series_used.items()}
    for view, uids in result.series_used_all.items():
        view_of.update({uid: view for uid in uids})
    groups: Dict[Tuple[str, str], List[Finding]] = {}
    for f in result.findings:
        if f.keypoint is not None:
            groups.setdefault(f.keypoint.slice_key, []).append(f)

    def order(key):
        kp = groups[key][0].keypoint
        view = view_of.get(key[0])
        rank = VIEW_ORDER.index(view) if view in VIEW_ORDER else len(VIEW_ORDER)
        return rank, str(kp.series_id), kp.instance_number, key

    for key in sorted(groups, key=order):
        found = groups[key]
        kp = found[0].keypoint
        pixels = slices.get(key)
        if pixels is None:
            log.warning("study %s: no pixels for series %s instance %s; its overlay is skipped",
                        result.study_id, kp.series_id, kp.instance_number)
            continue
        label = view_of.get(key[0]) or f"series{kp.series_id}"
        title = f"{result.study_id}  {label}  series {kp.series_id}  instance {kp.instance_number}"
        maps = heatmaps.get(key) if heatmaps else None
        present = maps.maps if isinstance(maps, SliceHeatmaps) else maps
        image = render_overlay(np.asarray(pixels), found, title=title, heatmap=maps if present is not None and
                               (not isinstance(present, Mapping) or present) else None, stride=stride,
                               min_size=min_size, aspect=result.slice_aspects.get(key, 1.0))
        yield OverlayImage(key=key, label=label, title=title, findings=tuple(found), image=image)


def write_overlays(result: StudyResult, slices: Mapping[Tuple[str, str], np.ndarray], out_dir: Union[str, Path],
                   heatmaps: Optional[Mapping[Tuple[str, str], object]] = None, *,
                   min_size: int = DEFAULT_MIN_SIZE, stride: int = 4, workers: Optional[int] = None) -> List[Path]:
    """Write one PNG overlay per source slice of ``result``'s keypoints into ``out_dir``
    (created; each file written atomically); returns the paths, in :func:`overlay_images`'
    order (see there for ``slices`` and ``heatmaps``). ``workers`` threads encode and write the
    PNGs while the next overlay is drawn (default: the CPU count, at most 4; 1 encodes inline).
    Raises :class:`InputError` for unusable pixels, ``OSError`` when a file cannot be written.
    """
    out = Path(out_dir)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")

    def write(ov: OverlayImage) -> Path:
        path = out / overlay_name(result.study_id, ov.label, ov.keypoint.instance_number)
        return write_png(path, ov.image, text={"Title": ov.title, "Software": "lumbar-edge",
                                               "Disclaimer": NOT_FOR_CLINICAL_USE})

    if workers == 1:
        return [write(ov) for ov in overlay_images(result, slices, heatmaps, min_size=min_size, stride=stride)]
    # Encoding is most of the cost (filtering in numpy, zlib), and both release the GIL, so the
    # PNGs of one study are encoded in parallel while drawing, which holds the GIL, goes on.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lumbar-edge-png") as pool:
        futures = [pool.submit(write, ov)
                   for ov in overlay_images(result, slices, heatmaps, min_size=min_size, stride=stride)]
        return [f.result() for f in futures]


__all__ = ["render_overlay", "upscale_gray", "write_overlays", "overlay_images", "OverlayImage", "finding_label", "overlay_name", "heatmap_on_display",
           "window_to_uint8", "display_factor", "SEVERITY_COLOURS", "SEVERITY_WORDS", "DISCLAIMER"]
