"""The study pipeline: DICOM study in, 25 findings out.

``Pipeline.load(bundle).run_study(path)`` is the embedding API; ``lumbar-edge infer`` and the
DICOM listener call the same thing. One step per module, as MONAI Deploy's operators:
:mod:`lumbar_edge.dicom` (load), :mod:`lumbar_edge.select` (series per view),
:mod:`lumbar_edge.preprocess`, the engine (:mod:`lumbar_edge.backends`) with its decode, and
:mod:`lumbar_edge.aggregate` (slices and views to findings); the writers live in
:mod:`lumbar_edge.report`.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .aggregate import (SlicePeaks, axial_findings, axial_slices_for_levels, midline_from_canal, sagittal_t1_findings,
                        sagittal_t2_findings)
from .errors import InputError, LumbarEdgeError
from .labels import CONDITIONS, LEVELS, HeadLayout
from .preprocess import PreprocessConfig, channel_indices, preprocess_stack
from .results import Finding, StudyResult
from .select import DEFAULT_SELECTION, select_series

#: Used when a bundle records no class priors: the RSNA 2024 training frequencies, roughly.
FALLBACK_PRIOR = (0.75, 0.17, 0.08)


class StudyError(LumbarEdgeError):
    """A study cannot be processed (no usable series at all, several studies where one was expected)."""


class Pipeline:
    """Runs studies through one engine of one bundle.

    ``engine`` must follow :class:`lumbar_edge.backends.base.Engine`; the pipeline activates it
    on first use and :meth:`close` (or the context manager) deactivates it.
    """

    def __init__(self, bundle, engine, *, batch_size: int = 8, selection=DEFAULT_SELECTION,
                 keep_heatmaps: bool = False):
        self.bundle = bundle
        self.engine = engine
        self.batch_size = batch_size
        self.selection = selection
        self.keep_heatmaps = keep_heatmaps
        self.preprocess: PreprocessConfig = bundle.preprocess
        self.layout: HeadLayout = bundle.layout
        self.groups = np.asarray(self.layout.keypoint_groups(), dtype=np.int32)
        priors = bundle.manifest.get("class_priors") or {}
        self.priors = {c: tuple(float(v) for v in priors.get(c, FALLBACK_PRIOR)) for c in CONDITIONS}
        #: Which backend serves this pipeline and why (set by :meth:`load`).
        self.backend_reason = f"{engine.name} (given)"
        self._active = False

    @classmethod
    def load(cls, bundle_path, backend: str = "auto", precision: Optional[str] = None, **kwargs) -> "Pipeline":
        """Open a bundle and an engine for it. ``backend`` is ``auto`` or a backend name;
        ``precision`` defaults to the best the backend runs (INT8, else FP32 on the CPU).
        :attr:`backend_reason` says which backend was picked and why."""
        from .backends import open_engine, select_backend
        from .bundle import Bundle

        bundle = Bundle.load(Path(bundle_path))
        engine_kwargs = {k: kwargs.pop(k) for k in ("threads",) if k in kwargs}
        name, reason = select_backend(backend)
        engine = open_engine(bundle, backend=name, precision=precision, **engine_kwargs)
        pipeline = cls(bundle, engine, **kwargs)
        pipeline.backend_reason = reason
        return pipeline

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._active:
            self.engine.deactivate()
            self._active = False

    @property
    def description(self) -> str:
        return f"{self.bundle.name} on {self.engine.name} ({self.engine.precision})"

    # -- steps ---------------------------------------------------------------------------------

    def _ensure_active(self) -> None:
        if not self._active:
            self.engine.activate()
            self._active = True

    def _infer_slices(self, series, centres: Sequence[int], view: str, timings: Dict[str, float],
                      heatmap_sink: Optional[dict] = None) -> List[SlicePeaks]:
        """Preprocess 2.5D stacks around ``centres``, run the engine, decode; peaks of ``view``'s channels."""
        self._ensure_active()
        c0, c1 = self.layout.channels[view]
        cache: Dict[int, np.ndarray] = {}
        out: List[SlicePeaks] = []
        for start in range(0, len(centres), self.batch_size):
            chunk = centres[start:start + self.batch_size]
            t0 = time.perf_counter()
            stacks = []
            for centre in chunk:
                idx = channel_indices(len(series.instances), centre, self.preprocess.in_channels)
                for i in idx:
                    if i not in cache:
                        cache[i] = series.pixels(i)
                stacks.append([cache[i] for i in idx])
            t1 = time.perf_counter()
            prepped = [preprocess_stack(s, self.preprocess) for s in stacks]
            images = np.ascontiguousarray(np.stack([p[0] for p in prepped]))
            t2 = time.perf_counter()
            if heatmap_sink is not None:
                from .decode import decode_numpy

                raw = self.engine.infer(images)
                decoded = decode_numpy(raw["heatmap"], raw["offset"], raw["severity"], self.groups)
            else:
                decoded = self.engine.infer_decoded(images, self.groups)
            t3 = time.perf_counter()
            for j, centre in enumerate(chunk):
                out.append(SlicePeaks(slice_index=centre, instance=series.instances[centre], letterbox=prepped[j][1],
                                      xy=np.stack([decoded.x[j, c0:c1], decoded.y[j, c0:c1]], -1).astype(np.float64),
                                      score=np.asarray(decoded.score[j, c0:c1], dtype=np.float64),
                                      probs=np.asarray(decoded.probs[j, c0:c1], dtype=np.float64)))
                if heatmap_sink is not None:
                    heatmap_sink[centre] = raw["heatmap"][j, c0:c1]
            timings["decode_pixels"] = timings.get("decode_pixels", 0.0) + (t1 - t0)
            timings["preprocess"] = timings.get("preprocess", 0.0) + (t2 - t1)
            timings["infer"] = timings.get("infer", 0.0) + (t3 - t2)
        return out

    def run_study(self, study) -> StudyResult:
        """Process one study: a :class:`lumbar_edge.dicom.Study` or a folder holding exactly one.

        Raises :class:`StudyError` when no view has a usable series, or a folder holds several
        studies; a missing view only adds a warning and prior-based findings.
        """
        timings: Dict[str, float] = {}
        if not hasattr(study, "series"):
            from .dicom import scan_path

            t0 = time.perf_counter()
            scan = scan_path(Path(study), progress=False)
            timings["scan"] = time.perf_counter() - t0
            if not scan.studies:
                raise StudyError(f"no DICOM study found in {study}")
            if len(scan.studies) > 1:
                raise StudyError(f"{study} holds {len(scan.studies)} studies; run them through `infer` on the folder")
            study = scan.studies[0]
        t0 = time.perf_counter()
        chosen, warnings = select_series(study, self.layout.views, self.selection)
        timings["select"] = time.perf_counter() - t0
        if not chosen:
            raise StudyError(f"study {study.study_id}: none of the needed series (sagittal T1, sagittal T2/STIR, "
                             f"axial T2) was found")
        readings: Dict[str, Tuple] = {}
        slices: Dict[Tuple[str, str], np.ndarray] = {}
        heatmaps: Dict[Tuple[str, str], Dict[str, np.ndarray]] = {}

        def keep(series, peaks_used, maps=None, columns=None):
            for p in peaks_used:
                key = (series.series_uid, p.instance.sop_uid)
                if key not in slices:
                    slices[key] = series.pixels(p.slice_index)

        canal = {}
        if "sagittal_t2" in chosen:
            s = chosen["sagittal_t2"]
            sink = {} if self.keep_heatmaps else None
            peaks = self._infer_slices(s, list(range(len(s.instances))), "sagittal_t2", timings, sink)
            canal = sagittal_t2_findings(s, peaks)
            for level, r in canal.items():
                readings[f"spinal_canal_stenosis_{level}"] = r
            keep(s, [p for p in peaks if any(r[0].sop_uid == p.instance.sop_uid for r in canal.values())])
            if sink is not None:
                self._keep_maps(heatmaps, s, peaks, sink, canal, lambda lv: f"spinal_canal_stenosis_{lv}", LEVELS)
        if "sagittal_t1" in chosen:
            s = chosen["sagittal_t1"]
            sink = {} if self.keep_heatmaps else None
            peaks = self._infer_slices(s, list(range(len(s.instances))), "sagittal_t1", timings, sink)
            foramina = sagittal_t1_findings(s, peaks, midline_from_canal(canal))
            for (side, level), r in foramina.items():
                readings[f"{side}_neural_foraminal_narrowing_{level}"] = r
            used = {r[0].sop_uid for r in foramina.values()}
            keep(s, [p for p in peaks if p.instance.sop_uid in used])
        if "axial_t2" in chosen:
            s = chosen["axial_t2"]
            disc_mm = {lv: r[0].patient_mm for lv, r in canal.items()}
            if not disc_mm:
                warnings.append("axial levels need the discs found on a sagittal T2/STIR series; "
                                "subarticular findings use the class prior")
            else:
                level_slices = axial_slices_for_levels(s, disc_mm)
                missing = [lv for lv in LEVELS if lv not in level_slices and lv in disc_mm]
                if missing:
                    warnings.append(f"the axial series does not cover {', '.join(m.upper().replace('_', '/') for m in missing)}; "
                                    f"those subarticular findings use the class prior")
                centres = sorted(set(level_slices.values()))
                peaks = {p.slice_index: p for p in self._infer_slices(s, centres, "axial_t2", timings)} if centres else {}
                by_level = {lv: peaks[i] for lv, i in level_slices.items()}
                for (side, level), r in axial_findings(s, by_level).items():
                    readings[f"{side}_subarticular_stenosis_{level}"] = r
                keep(s, list(by_level.values()))
        findings = []
        for condition in CONDITIONS:
            for level in LEVELS:
                r = readings.get(f"{condition}_{level}")
                if r is None:
                    findings.append(Finding(condition, level, self.priors[condition], None, source="prior"))
                else:
                    findings.append(Finding(condition, level, _normalised(r[1]), r[0]))
        return StudyResult(study_id=str(study.study_id), study_uid=study.study_uid, findings=findings,
                           series_used={v: s.series_uid for v, s in chosen.items()}, warnings=warnings,
                           timings=timings, model=self.bundle.name, backend=f"{self.engine.name}/{self.engine.precision}",
                           slices=slices, heatmaps=heatmaps)

    @staticmethod
    def _keep_maps(heatmaps, series, peaks, sink, readings, column_of, keys) -> None:
        for k, key in enumerate(keys):
            r = readings.get(key)
            if r is None:
                continue
            for p in peaks:
                if p.instance.sop_uid == r[0].sop_uid:
                    heatmaps.setdefault((series.series_uid, p.instance.sop_uid), {})[column_of(key)] = sink[p.slice_index][k]

    def run(self, studies) -> Iterator[Tuple[object, "StudyResult | LumbarEdgeError"]]:
        """Run several studies; yields ``(study, result)`` or ``(study, error)``: one bad study
        never stops the others."""
        for study in studies:
            try:
                yield study, self.run_study(study)
            except LumbarEdgeError as exc:
                yield study, exc


def _normalised(p) -> Tuple[float, float, float]:
    arr = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    total = arr.sum()
    if not np.isfinite(total) or total <= 0:
        return (1 / 3, 1 / 3, 1 / 3)
    arr = arr / total
    return (float(arr[0]), float(arr[1]), float(arr[2]))
