"""Size, protocol and randomness options of the synthetic study generator.

Defaults give studies close to the RSNA 2024 data (sagittal 256-320 px, axial 192-256 px);
:meth:`SynthOptions.tiny` gives small, fast studies for tests.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from ..errors import InputError

IntRange = Tuple[int, int]
FloatRange = Tuple[float, float]


@dataclass(frozen=True)
class SynthOptions:
    """How studies are generated. Ranges are inclusive ``(low, high)``; a value is drawn per study.

    Geometry: ``sagittal_matrix`` / ``axial_matrix`` are the choices of square matrix size;
    the field of view is drawn from ``*_fov_mm`` (sagittal FOV also scales with the anatomy), so
    the pixel spacing is FOV / matrix. ``sagittal_slices`` and ``axial_slices`` bound the number
    of slices; the slice spacing is chosen so the stack covers both foramina (sagittal) or all
    five discs (axial).

    Labels: ``severity_prior`` is the overall share of Normal/Mild, Moderate and Severe over all
    25 condition-levels; ``partly_unlabelled_fraction`` is the share of studies with some labels
    left empty (as in the real data). ``stir_probability`` is the chance the sagittal T2 series
    is a STIR. ``noise`` is the range of the Rician noise level as a fraction of the CSF signal.
    """

    sagittal_matrix: Tuple[int, ...] = (256, 288, 320)
    sagittal_fov_mm: FloatRange = (215.0, 245.0)
    sagittal_slices: IntRange = (15, 19)
    sagittal_thickness_mm: FloatRange = (3.0, 4.0)
    axial_matrix: Tuple[int, ...] = (192, 224, 256)
    axial_fov_mm: FloatRange = (150.0, 180.0)
    axial_slices: IntRange = (30, 40)
    axial_thickness_mm: float = 4.0
    stir_probability: float = 0.3
    severity_prior: Tuple[float, float, float] = (0.65, 0.22, 0.13)
    partly_unlabelled_fraction: float = 0.04
    noise: FloatRange = (0.025, 0.05)
    bits_stored: int = 12
    #: Real-scanner variants (:mod:`lumbar_edge.synth.variants`), the same for every study, or
    #: drawn per study when ``realistic``: ``axial_layout`` single (one parallel stack), stacks
    #: (one stack angled along each disc, in one series) or split (two series over the upper and
    #: lower discs); ``repeat_sagittal`` an earlier, partly stopped or full, sagittal T2 besides
    #: the one to use; ``patient_position`` HFS, FFS, HFP or FFP (how slices are stored);
    #: ``drop_optional_tags`` no SpacingBetweenSlices, SliceThickness, SeriesDescription ...
    axial_layout: str = "single"
    repeat_sagittal: bool = False
    patient_position: str = "HFS"
    drop_optional_tags: bool = False
    realistic: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raises :class:`InputError` naming the first bad one."""
        for name in ("sagittal_matrix", "axial_matrix"):
            sizes = getattr(self, name)
            if not sizes or any(int(v) != v or v < 32 or v > 2048 for v in sizes):
                raise InputError(f"{name} must list matrix sizes between 32 and 2048, got {sizes!r}")
        for name in ("sagittal_slices", "axial_slices"):
            lo, hi = getattr(self, name)
            if int(lo) != lo or int(hi) != hi or lo < 3 or hi < lo or hi > 200:
                raise InputError(f"{name} must be (low, high) with 3 <= low <= high <= 200, got {(lo, hi)!r}")
        for name in ("sagittal_fov_mm", "axial_fov_mm", "sagittal_thickness_mm", "noise"):
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi):
                raise InputError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)!r}")
        if self.sagittal_fov_mm[0] < 150 or self.axial_fov_mm[0] < 110:
            raise InputError("the field of view must be at least 150 mm (sagittal) and 110 mm (axial) "
                             "to hold the lumbar spine")
        if self.sagittal_thickness_mm[0] <= 0 or self.axial_thickness_mm <= 0:
            raise InputError("slice thickness must be positive")
        if self.noise[1] > 0.5:
            raise InputError(f"noise must be at most 0.5 of the CSF signal, got {self.noise!r}")
        for name in ("stir_probability", "partly_unlabelled_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must lie in [0, 1], got {value!r}")
        prior = self.severity_prior
        if len(prior) != 3 or any(p <= 0 for p in prior) or abs(sum(prior) - 1.0) > 1e-6:
            raise InputError(f"severity_prior must be three positive shares summing to 1, got {prior!r}")
        if self.bits_stored not in (12, 16):
            raise InputError(f"bits_stored must be 12 or 16, got {self.bits_stored!r}")
        from .variants import Variant

        Variant(self.axial_layout, bool(self.repeat_sagittal), self.patient_position, bool(self.drop_optional_tags))

    @classmethod
    def tiny(cls, **overrides: Any) -> "SynthOptions":
        """Small, fast studies (96 px sagittal, 64 px axial, few slices) for tests."""
        base = dict(sagittal_matrix=(96,), sagittal_slices=(9, 11), axial_matrix=(64,),
                    axial_slices=(16, 20))
        base.update(overrides)
        return cls(**base)

    def replace(self, **overrides: Any) -> "SynthOptions":
        """A copy with some fields changed; raises :class:`InputError` for unknown names."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InputError(f"unknown synth option(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> Dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
