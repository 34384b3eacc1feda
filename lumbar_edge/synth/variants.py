"""Study variants that real scanners produce: angled per-disc axial stacks, axial series split over
disc ranges, a repeated sagittal T2, patient positions that store slices flipped, missing
optional tags.

A variant is applied to a planned plain study (:func:`apply_variant`) without touching the
plain study's random streams: the anatomy, the grades and, wherever the geometry is the plain
one, the pixels stay those of the plain study of the same seed and index, so the tests can
compare a variant's keypoints with the plain study's in patient space. The variant's own
choices come from stream 6 of the study.

Patient position: the DICOM patient coordinate system follows the patient, so feet-first or
prone changes how the slices are *stored*, not where the anatomy is. Modelled here as the
storage scanners and PACS commonly produce for them (the exact convention varies by vendor):

- ``HFS`` (head first supine): as trained (sagittal anterior left, head up; axial patient
  right on the image left, anterior up);
- ``FFS``: sagittal stored head-down; axial with the patient's right on the image right;
- ``HFP`` (prone): sagittal with anterior on the right; axial upside down (anterior down);
- ``FFP``: both of the above.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..errors import InputError

AXIAL_LAYOUTS = ("single", "stacks", "split")
PATIENT_POSITIONS = ("HFS", "FFS", "HFP", "FFP")
#: (flip rows, flip columns) of (sagittal, axial) slices per patient position.
_STORAGE = {"HFS": ((False, False), (False, False)), "FFS": ((True, False), (False, True)),
            "HFP": ((False, True), (True, False)), "FFP": ((True, True), (True, True))}
#: Tags a real export may lack that the plain writer always writes.
OPTIONAL_TAGS = ("SpacingBetweenSlices", "SliceThickness", "SeriesDescription", "ProtocolName", "SliceLocation")


@dataclass(frozen=True)
class Variant:
    """How one study departs from the plain one (see the module docstring)."""

    axial_layout: str = "single"
    repeat_sagittal: bool = False
    patient_position: str = "HFS"
    drop_optional_tags: bool = False

    def __post_init__(self) -> None:
        if self.axial_layout not in AXIAL_LAYOUTS:
            raise InputError(f"axial_layout must be one of {', '.join(AXIAL_LAYOUTS)}, got {self.axial_layout!r}")
        if self.patient_position not in PATIENT_POSITIONS:
            raise InputError(f"patient_position must be one of {', '.join(PATIENT_POSITIONS)}, "
                             f"got {self.patient_position!r}")

    @property
    def is_plain(self) -> bool:
        return self == Variant()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: The realistic mix, cycled over the study indices from a seed-dependent offset, so that any
#: run of studies holds each variant in these proportions: a third angled per-disc axial stacks
#: and a sixth split axial series, a fifth repeated sagittal T2s, 45% not head-first supine,
#: a quarter without the optional tags.
_MIX_LAYOUT = ("stacks", "single", "split", "stacks", "single", "single")
_MIX_POSITION = ("HFS", "FFS", "HFS", "HFP", "HFS", "FFP", "HFS", "FFS", "HFP", "HFS", "HFS", "FFS",
                 "HFS", "HFP", "HFS", "FFS", "HFS", "HFS", "FFP", "HFS")
_MIX_REPEAT = 5
_MIX_DROP = 4


def mix_offsets(seed: int, stream: int, count: int) -> List[int]:
    """``count`` offsets (0-59) into the realistic mix's cycles for the dataset made with
    ``seed``: one per cycle, so that each dataset orders its variants differently."""
    rng = np.random.default_rng(np.random.SeedSequence([abs(int(seed)), 1 if seed < 0 else 0, int(stream)]))
    return [int(v) for v in rng.integers(0, 60, count)]


def draw_realistic(seed: int, index: int) -> Variant:
    """Study ``index``'s variant in the ``--realistic`` mix of the dataset made with ``seed``
    (see :data:`_MIX_LAYOUT` and the rest: fixed proportions, seed-dependent order)."""
    offsets = mix_offsets(seed, 6, 4)
    layout = _MIX_LAYOUT[(index + offsets[0]) % len(_MIX_LAYOUT)]
    position = _MIX_POSITION[(index + offsets[1]) % len(_MIX_POSITION)]
    repeat = (index + offsets[2]) % _MIX_REPEAT == 0
    drop = (index + offsets[3]) % _MIX_DROP == 0
    return Variant(layout, repeat, position, drop)


def flip_geometry(geometry, flip_rows: bool, flip_columns: bool):
    """The same slices stored with their rows and/or columns reversed: the directions negated and
    each ImagePositionPatient moved to the new first pixel, so every pixel keeps its place in
    patient space (a :class:`~lumbar_edge.synth.render.SeriesGeometry`)."""
    if not (flip_rows or flip_columns):
        return geometry
    row_dir = np.asarray(geometry.row_dir, dtype=np.float64)
    col_dir = np.asarray(geometry.col_dir, dtype=np.float64)
    shift = np.zeros(3)
    if flip_columns:
        shift += (geometry.cols - 1) * geometry.spacing[1] * row_dir
        row_dir = -row_dir
    if flip_rows:
        shift += (geometry.rows - 1) * geometry.spacing[0] * col_dir
        col_dir = -col_dir
    positions = tuple(tuple(float(round(v, 4)) for v in np.asarray(p) + shift) for p in geometry.positions)
    clean = lambda v: tuple(float(round(x, 6)) + 0.0 for x in v)  # noqa: E731 - +0.0 turns -0.0 into 0.0
    return dataclasses.replace(geometry, row_dir=clean(row_dir), col_dir=clean(col_dir), positions=positions)


def storage_flips(position: str, kind: str) -> Tuple[bool, bool]:
    """(flip rows, flip columns) of a ``kind`` series for a patient position."""
    sagittal, axial = _STORAGE[position]
    return axial if kind == "axial_t2" else sagittal


def split_ranges(n: int) -> List[Tuple[int, int]]:
    """Two consecutive index ranges of a plain axial stack of ``n`` slices, upper then lower."""
    half = n // 2
    return [(0, half), (half, n)]


def disc_stack_dirs(disc_points: Sequence[np.ndarray], k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row direction, column direction, normal) of an axial stack angled along disc ``k``:
    the normal follows the spine between the neighbouring discs (pointing to the head), the
    row direction is the patient x axis made perpendicular to it, as a technologist plans it."""
    above = disc_points[max(k - 1, 0)]
    below = disc_points[min(k + 1, len(disc_points) - 1)]
    normal = np.asarray(above, dtype=np.float64) - np.asarray(below, dtype=np.float64)
    normal /= np.linalg.norm(normal)
    x = np.array([1.0, 0.0, 0.0])
    row = x - (x @ normal) * normal
    row /= np.linalg.norm(row)
    col = np.cross(normal, row)
    return row, col, normal


def extra_series_ids(rng: np.random.Generator, taken: Sequence[int], count: int, low: int, high: int) -> List[int]:
    """``count`` new series ids in [low, high) not in ``taken``."""
    used = set(int(t) for t in taken)
    out = []
    while len(out) < count:
        v = int(rng.integers(low, high))
        if v not in used:
            used.add(v)
            out.append(v)
    return out


def variant_for(options, seed: int, index: int) -> Variant:
    """The study's variant: from the realistic mix when ``options.realistic``, else the options'
    own fields."""
    if getattr(options, "realistic", False):
        return draw_realistic(seed, index)
    return Variant(options.axial_layout, options.repeat_sagittal, options.patient_position,
                   options.drop_optional_tags)


def describe_mix(variants: Sequence[Variant]) -> Dict[str, Dict[str, int]]:
    """How many studies have each value of each variant field (for the synth summary)."""
    out: Dict[str, Dict[str, int]] = {}
    for v in variants:
        for key, value in v.to_dict().items():
            out.setdefault(key, {})
            out[key][str(value)] = out[key].get(str(value), 0) + 1
    return out


__all__ = ["AXIAL_LAYOUTS", "PATIENT_POSITIONS", "OPTIONAL_TAGS", "Variant", "draw_realistic", "mix_offsets", "flip_geometry",
           "storage_flips", "split_ranges", "disc_stack_dirs", "extra_series_ids", "variant_for", "describe_mix"]

