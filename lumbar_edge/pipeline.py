"""The study pipeline: DICOM study in, 25 findings out.

``Pipeline.load(bundle).run_study(path)`` is the embedding API; ``lumbar-edge infer`` and the
DICOM listener call the same thing. One step per module, as MONAI Deploy's operators:
:mod:`lumbar_edge.dicom` (load), :mod:`lumbar_edge.select` (series per view),
:mod:`lumbar_edge.preprocess`, the engine (:mod:`lumbar_edge.backends`) with its decode, and
:mod:`lumbar_edge.aggregate` (slices and views to findings); the writers live in
:mod:`lumbar_edge.report`.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .aggregate import (AggregationConfig, SlicePeaks, axial_findings, axial_slices_for_levels, sagittal_levels,
                        shared_point_warning, shared_points)
from .errors import DicomError, InputError, LumbarEdgeError, UnexpectedStudyError
from .labels import CONDITIONS, LEVELS, HeadLayout, level_title
from .preprocess import PreprocessConfig, pixel_aspect, preprocess_stack
from .results import Finding, SliceHeatmaps, StudyResult, slice_key
from .select import DEFAULT_SELECTION, select_series

log = logging.getLogger(__name__)

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
                 keep_heatmaps: bool = False, aggregation: AggregationConfig = AggregationConfig(),
                 prep_threads: Optional[int] = None):
        """``prep_threads``: threads that preprocess a batch's inputs together (default: the CPUs
        this process may use, at most ``batch_size``; 1 preprocesses them one by one). Raises
        :class:`InputError` for a batch size or thread count under 1."""
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        if prep_threads is not None and prep_threads < 1:
            raise InputError(f"prep_threads must be at least 1, got {prep_threads}")
        from .backends.base import usable_cpus

        #: Threads that preprocess one batch's inputs at once: the engine waits for the batch, so
        #: the CPUs it will use are idle meanwhile (1.6x faster preprocessing on 2 cores).
        self.prep_threads = min(batch_size, usable_cpus()) if prep_threads is None else prep_threads
        self._prep_pool = None
        self.bundle = bundle
        self.aggregation = aggregation
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
    def load(cls, bundle_path, backend: str = "auto", precision: Optional[str] = None, *,
             available_order: Optional[Sequence[str]] = None, **kwargs) -> "Pipeline":
        """Open a bundle and an activated engine for it. ``backend`` is ``auto`` or a backend name;
        ``precision`` defaults to the best the backend runs (INT8, else FP32 on the CPU).
        ``threads``, ``device`` (an OpenVINO device name) and ``hint`` (``latency`` for a study at
        a time, ``throughput`` for many) go to the engine; the other keywords to the pipeline.
        With ``auto``, a backend that cannot run this bundle here is passed over
        (:func:`~lumbar_edge.backends.activate_engine`); :attr:`backend_reason` says which backend
        was picked and why; ``available_order`` restricts the backends ``auto`` tries (default
        :data:`~lumbar_edge.backends.AUTO_ORDER`). Raises what ``activate_engine`` raises."""
        from .backends import activate_engine
        from .bundle import Bundle

        bundle = Bundle.load(Path(bundle_path))
        engine_kwargs = {k: kwargs.pop(k) for k in ("threads", "device", "hint") if k in kwargs}
        if available_order is not None:
            engine_kwargs["available_order"] = tuple(available_order)
        engine, reason = activate_engine(bundle, backend=backend, precision=precision, **engine_kwargs)
        try:
            pipeline = cls(bundle, engine, **kwargs)
        except BaseException:
            engine.deactivate()
            raise
        pipeline._active = True
        pipeline.backend_reason = reason
        return pipeline

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._prep_pool is not None:
            self._prep_pool.shutdown(wait=True)
            self._prep_pool = None
        if self._active:
            self.engine.deactivate()
            self._active = False

    @property
    def description(self) -> str:
        return f"{self.bundle.name} on {self.engine.name} ({self.engine.precision})"

    @property
    def model_sha256(self) -> str:
        """sha256 of the bundle's model file for the engine's precision ("" if the manifest has none)."""
        try:
            return str(self.bundle.model_entry(self.engine.precision).get("sha256") or "")
        except LumbarEdgeError:
            return ""  # an engine given directly, of a precision the bundle does not list

    @property
    def grader(self) -> Dict[str, str]:
        """What grades a study here, as each report records it: model name, model file sha256 and
        backend/precision. Reports of one archive must agree on it to be resumed or merged."""
        return {"model": self.bundle.name, "model_sha256": self.model_sha256,
                "backend": f"{self.engine.name}/{self.engine.precision}"}

    # -- steps ---------------------------------------------------------------------------------

    def _ensure_active(self) -> None:
        if not self._active:
            self.engine.activate()
            self._active = True

    def activate(self) -> "Pipeline":
        """Open the engine now rather than on the first study (benchmarks: no cold start in the
        timed runs). Returns ``self``."""
        self._ensure_active()
        return self

    def _gather(self, prepared: "_Prepared", series, centre: int) -> Tuple[Optional[Tuple], Optional[Tuple]]:
        """The input around slice ``centre``: ``(made, None)`` when a prefetch made it already,
        else ``(None, work)`` with the work :meth:`_make` turns into it (the decoded slices and
        their reorientation to the trained orientation), decoding the slices it needs once per
        study. Raises :class:`_BadSlice` when the centre slice itself cannot be decoded; a bad
        neighbour is replaced by the centre slice."""
        hit = prepared.images.get((series.series_uid, centre))
        if hit is not None:
            return hit, None
        t0 = time.perf_counter()
        centre_pixels = prepared.pixels(series, centre)
        if centre_pixels is None:
            raise _BadSlice(centre)
        stack = []
        for i in series.neighbour_indices(centre, self.preprocess.in_channels):
            pixels = prepared.pixels(series, i)
            stack.append(centre_pixels if pixels is None else pixels)
        orient = prepared.orientation(series, centre)
        aspect = pixel_aspect(series.instances[centre].pixel_spacing, orient.transpose)
        timings = prepared.timings
        timings["decode_pixels"] = timings.get("decode_pixels", 0.0) + (time.perf_counter() - t0)
        return None, (stack, orient, aspect)

    def _make(self, work: Tuple) -> Tuple[np.ndarray, object, object]:
        """The preprocessed input, its letterbox and its reorientation from :meth:`_gather`'s
        work. Touches no shared state, so several run at once (:meth:`_make_all`)."""
        stack, orient, aspect = work
        image, box = preprocess_stack(orient.apply(np.stack(stack)), self.preprocess, aspect)
        return image, box, orient

    def _make_all(self, works: Sequence[Tuple], timings: Dict[str, float]) -> List[Tuple]:
        """:meth:`_make` of each of ``works``, in order, on :attr:`prep_threads` threads."""
        t0 = time.perf_counter()
        if self.prep_threads > 1 and len(works) > 1:
            if self._prep_pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._prep_pool = ThreadPoolExecutor(max_workers=self.prep_threads,
                                                     thread_name_prefix="lumbar-edge-preprocess")
            made = list(self._prep_pool.map(self._make, works))
        else:
            made = [self._make(w) for w in works]
        timings["preprocess"] = timings.get("preprocess", 0.0) + (time.perf_counter() - t0)
        return made

    def _image(self, prepared: "_Prepared", series, centre: int) -> Tuple[np.ndarray, object, object]:
        """The preprocessed input around slice ``centre``, its letterbox and its reorientation
        (:meth:`_gather` then :meth:`_make`), kept in ``prepared.images``. Raises
        :class:`_BadSlice`."""
        made, work = self._gather(prepared, series, centre)
        if made is None:
            made = prepared.images[(series.series_uid, centre)] = self._make_all([work], prepared.timings)[0]
        return made

    def _input(self, prepared: "_Prepared", series, centre: int) -> Tuple[np.ndarray, object, object]:
        """:meth:`_image` for centres taken in ascending order, forgetting the decoded slices no
        later input needs (an input's slices lie within ``in_channels // 2`` of its centre), so a
        study holds a few decoded slices, not a whole series. Raises :class:`_BadSlice`."""
        hit = self._image(prepared, series, centre)
        prepared.release_pixels(series, below=centre - (self.preprocess.in_channels // 2 + 1))
        return hit

    def _infer_slices(self, prepared: "_Prepared", series, centres: Sequence[int], view: str,
                      heatmap_sink: Optional[dict] = None) -> List[SlicePeaks]:
        """Run the engine on the 2.5D inputs around ``centres`` and decode; peaks of ``view``'s channels."""
        self._ensure_active()
        c0, c1 = self.layout.channels[view]
        timings = prepared.timings
        out: List[SlicePeaks] = []

        def run(chunk) -> None:
            centres_, prepped = [c for c, _ in chunk], [p for _, p in chunk]
            images = np.ascontiguousarray(np.stack([p[0] for p in prepped]))
            t2 = time.perf_counter()
            if heatmap_sink is not None:
                from .decode import decode_numpy

                raw = self.engine.infer(images)
                decoded = decode_numpy(raw["heatmap"], raw["offset"], raw["severity"], self.groups)
            else:
                decoded = self.engine.infer_decoded(images, self.groups)
            t3 = time.perf_counter()
            for j, centre in enumerate(centres_):
                orient = prepped[j][2]
                out.append(SlicePeaks(slice_index=centre, instance=series.instances[centre], letterbox=prepped[j][1],
                                      xy=np.stack([decoded.x[j, c0:c1], decoded.y[j, c0:c1]], -1).astype(np.float64),
                                      score=np.asarray(decoded.score[j, c0:c1], dtype=np.float64),
                                      probs=np.asarray(decoded.probs[j, c0:c1], dtype=np.float64),
                                      orient=None if orient.is_identity else orient))
                if heatmap_sink is not None:
                    heatmap_sink[centre] = raw["heatmap"][j, c0:c1]
            timings["infer"] = timings.get("infer", 0.0) + (t3 - t2)

        def complete(pending) -> list:
            # The batch's inputs not prefetched are preprocessed together, then the batch runs.
            made = iter(self._make_all([work for _, hit, work in pending if hit is None], timings))
            return [(centre, hit if hit is not None else next(made)) for centre, hit, _ in pending]

        # Inputs are made a batch at a time and each is used once (the decoded slices behind
        # the current centre are forgotten): a study holds one batch of inputs, not a whole
        # series (a 200-slice series at 512 px would hold 600 MB of them).
        pending = []
        for centre in sorted(centres):
            try:
                hit, work = self._gather(prepared, series, centre)
            except _BadSlice:
                continue  # left out; _Prepared.pixels put the reason in the warnings
            prepared.images.pop((series.series_uid, centre), None)
            pending.append((centre, hit, work))
            # The work holds the arrays it needs; the cache lets go of those no later input needs.
            prepared.release_pixels(series, below=centre - (self.preprocess.in_channels // 2 + 1))
            if len(pending) == self.batch_size:
                run(complete(pending))
                pending = []
        if pending:
            run(complete(pending))
        prepared.release(series)
        return out

    #: Views whose every slice is inferred: a prefetch can prepare them before the engine runs.
    FULL_SERIES_VIEWS = ("sagittal_t2", "sagittal_t1")
    #: The most a prefetch prepares of a study's inputs ahead of the engine (bytes).
    PREFETCH_BYTES = 192 << 20

    def prepare(self, study, *, prefetch: bool = False, scan_executor: str = "auto") -> "_Prepared":
        """The CPU half of a study: scan (for a folder), series selection and, with ``prefetch``,
        pixel decoding and preprocessing of every slice the sagittal views will infer. Thread-safe
        (it never touches the engine), so :meth:`run` calls it for the next study in a background
        thread while the engine runs the current one. Raises what :meth:`run_study` raises for an
        unusable study."""
        timings: Dict[str, float] = {}
        if not hasattr(study, "series"):
            from .dicom import scan_path

            t0 = time.perf_counter()
            scan = scan_path(Path(study), progress=False, executor=scan_executor)
            timings["scan"] = time.perf_counter() - t0
            if not scan.studies:
                raise StudyError(f"no DICOM study found in {study}")
            if len(scan.studies) > 1:
                raise StudyError(f"{study} holds {len(scan.studies)} studies; run them through `infer` on the folder")
            study = scan.studies[0]
        t0 = time.perf_counter()
        selection = select_series(study, self.layout.views, self.selection)
        timings["select"] = time.perf_counter() - t0
        if not selection.chosen:
            reasons = "; ".join(selection.warnings)
            raise StudyError(f"study {study.study_id}: none of the needed series (sagittal T1, sagittal T2/STIR, "
                             f"axial T2) was found" + (f" ({reasons})" if reasons else ""))
        prepared = _Prepared(study, selection, timings)
        if prefetch:
            # Inputs made ahead wait for the engine, so they are capped (PREFETCH_BYTES): a
            # 2 x 200-slice study at 512 px would otherwise hold 2.4 GB of them.
            budget = self.PREFETCH_BYTES
            size = 4 * self.preprocess.in_channels * self.preprocess.height * self.preprocess.width
            for view in self.FULL_SERIES_VIEWS:
                if view in selection.chosen:
                    s = selection.chosen[view]
                    for centre in range(len(s.instances)):
                        if budget < size:
                            break
                        try:
                            self._input(prepared, s, centre)
                        except _BadSlice:
                            continue
                        budget -= size
                    # The decoded slices are not needed again until the few keypoint slices are
                    # kept for the overlays, or the engine makes the rest of the inputs.
                    prepared.release_pixels(s)
        return prepared

    def run_study(self, study) -> StudyResult:
        """Process one study: a :class:`lumbar_edge.dicom.Study` or a folder holding exactly one.

        Raises :class:`StudyError` when no view has a usable series, or a folder holds several
        studies; a missing view only adds a warning and prior-based findings.
        """
        return self.finish(self.prepare(study))

    def finish(self, prepared: "_Prepared") -> StudyResult:
        """The engine half of a study prepared by :meth:`prepare`: inference, decoding and
        aggregation into the 25 findings."""
        study, chosen, timings = prepared.study, prepared.chosen, prepared.timings
        used_series = prepared.selection.used
        readings: Dict[str, Tuple] = {}
        slices: Dict[Tuple[str, str], np.ndarray] = {}
        aspects: Dict[Tuple[str, str], float] = {}
        heatmaps: Dict[Tuple[str, str], SliceHeatmaps] = {}

        def keep(series, peaks_used):
            for p in peaks_used:
                key = slice_key(series.series_uid, p.instance.sop_uid, p.instance.frame)
                if key not in slices:
                    pixels = prepared.pixels(series, p.slice_index, cache=False)
                    if pixels is not None:
                        # Padding (NaN) shown as the darkest value on overlays.
                        slices[key] = np.nan_to_num(pixels, nan=float(np.nanmin(pixels)) if np.isfinite(pixels).any()
                                                    else 0.0)
                        aspect = pixel_aspect(p.instance.pixel_spacing)
                        if aspect != 1.0:
                            aspects[key] = aspect

        # Both sagittal views are inferred before either is read: the canal is looked for near
        # the midline between the T1 foramina, and the two views' levels are chosen to agree.
        views = {}
        for view in ("sagittal_t2", "sagittal_t1"):
            if view in chosen:
                s = chosen[view]
                sink = {} if self.keep_heatmaps and view == "sagittal_t2" else None
                views[view] = (s, self._infer_slices(prepared, s, list(range(len(s.instances))), view, sink), sink)
        t2, t2_peaks, t2_maps = views.get("sagittal_t2", (None, [], None))
        t1, t1_peaks, _ = views.get("sagittal_t1", (None, [], None))
        canal, foramina, _midline = sagittal_levels(t2, t2_peaks, t1, t1_peaks, self.aggregation)
        for level, r in canal.items():
            readings[f"spinal_canal_stenosis_{level}"] = r
        if canal:
            keep(t2, [p for p in t2_peaks if any(_same_slice(r[0], p.instance) for r in canal.values())])
            if t2_maps is not None:
                self._keep_maps(heatmaps, t2, t2_peaks, t2_maps, canal, lambda lv: f"spinal_canal_stenosis_{lv}", LEVELS)
        for (side, level), r in foramina.items():
            readings[f"{side}_neural_foraminal_narrowing_{level}"] = r
        if foramina:
            used = {(r[0].sop_uid, r[0].frame) for r in foramina.values()}
            keep(t1, [p for p in t1_peaks if (p.instance.sop_uid, p.instance.frame) in used])
        axial_warnings = []
        if "axial_t2" in chosen:
            candidates = used_series.get("axial_t2") or [chosen["axial_t2"]]
            disc_mm = {lv: r[0].patient_mm for lv, r in canal.items()}
            if not disc_mm:
                axial_warnings.append("axial levels need the discs found on a sagittal T2/STIR series; "
                                      "subarticular findings use the class prior")
            else:
                level_slices = axial_slices_for_levels(candidates, disc_mm)
                by_level, series_of_level = {}, {}
                for s in candidates:
                    centres = sorted({i for (ls, i) in level_slices.values() if ls is s})
                    if not centres:
                        continue
                    peaks = {p.slice_index: p for p in self._infer_slices(prepared, s, centres, "axial_t2")}
                    for lv, (ls, i) in level_slices.items():
                        if ls is s and i in peaks:
                            by_level[lv], series_of_level[lv] = peaks[i], s
                    keep(s, [by_level[lv] for lv in by_level if series_of_level[lv] is s])
                missing = [lv for lv in LEVELS if lv not in by_level and lv in disc_mm]
                if missing:
                    what = "axial series does" if len(candidates) == 1 else f"{len(candidates)} axial series do"
                    axial_warnings.append(f"the {what} not cover {', '.join(m.upper().replace('_', '/') for m in missing)}; "
                                          f"those subarticular findings use the class prior")
                for (side, level), r in axial_findings(series_of_level, by_level).items():
                    readings[f"{side}_subarticular_stenosis_{level}"] = r
        warnings = list(prepared.warnings) + axial_warnings
        warnings += _shared_point_warnings(canal, foramina)
        findings = []
        for condition in CONDITIONS:
            for level in LEVELS:
                r = readings.get(f"{condition}_{level}")
                if r is None:
                    findings.append(Finding(condition, level, self.priors[condition], None, source="prior"))
                else:
                    findings.append(Finding(condition, level, _normalised(r[1]), r[0]))
        return StudyResult(study_id=str(study.study_id), study_uid=study.study_uid, findings=findings,
                           series_used={v: s.series_uid for v, s in chosen.items()},
                           series_used_all={v: [s.series_uid for s in ss] for v, ss in used_series.items() if len(ss) > 1},
                           selection=dict(prepared.selection.reasons), warnings=warnings,
                           timings=timings, model=self.bundle.name, backend=f"{self.engine.name}/{self.engine.precision}",
                           model_sha256=self.model_sha256, slices=slices, slice_aspects=aspects,
                           heatmaps=heatmaps)

    @staticmethod
    def _keep_maps(heatmaps, series, peaks, sink, readings, column_of, keys) -> None:
        for k, key in enumerate(keys):
            r = readings.get(key)
            if r is None:
                continue
            for p in peaks:
                if _same_slice(r[0], p.instance):
                    # With the grid the maps are on: the slice's letterbox and reorientation.
                    heatmaps.setdefault(slice_key(series.series_uid, p.instance.sop_uid, p.instance.frame),
                                        SliceHeatmaps({}, p.letterbox, p.orient)).maps[column_of(key)] = (
                        sink[p.slice_index][k])

    def run(self, studies, prefetch: int = 1) -> Iterator[Tuple[object, "StudyResult | LumbarEdgeError"]]:
        """Run several studies (Study objects or folders); yields ``(study, result)`` or
        ``(study, error)`` in the order given: one bad study never stops the others.

        ``prefetch`` > 0 overlaps the CPU half of the next studies (scan, pixel decoding,
        preprocessing: :meth:`prepare`) in one background thread with the engine running the
        current one, holding at most ``prefetch`` prepared studies; 0 runs the stages one after
        another. Both give identical results.
        """
        if prefetch < 0:
            raise InputError(f"prefetch must be 0 or more, got {prefetch}")
        if prefetch == 0:
            for study in studies:
                try:
                    yield study, self.run_study(study)
                except LumbarEdgeError as exc:
                    yield study, exc
                except Exception as exc:  # noqa: BLE001 - a defect met on one study must not stop the batch
                    yield study, _unexpected(study, exc)
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        items = iter(studies)
        pending: "deque" = deque()
        # One worker: studies are prepared in order, one at a time, beside the engine. Folders are
        # scanned in that thread without forking worker processes (forking a threaded process is unsafe).
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lumbar-edge-prefetch")

        def top_up(limit: int) -> None:
            while len(pending) < limit:
                study = next(items, _END)
                if study is _END:
                    return
                pending.append((study, pool.submit(self.prepare, study, prefetch=True, scan_executor="thread")))

        try:
            top_up(1)
            while pending:
                study, future = pending.popleft()
                top_up(prefetch)  # the next studies are prepared while this one runs on the engine
                try:
                    result = self.finish(future.result())
                except LumbarEdgeError as exc:
                    yield study, exc
                    continue
                except Exception as exc:  # noqa: BLE001 - a defect met on one study must not stop the batch
                    yield study, _unexpected(study, exc)
                    continue
                yield study, result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


_END = object()


def _unexpected(study, exc: Exception) -> UnexpectedStudyError:
    """The one-line failure of ``study`` for an exception that is a defect, its traceback logged."""
    name = getattr(study, "study_id", None) or str(study)
    log.error("study %s: unexpected error (a defect of lumbar-edge; please report it with this traceback)",
              name, exc_info=exc)
    return UnexpectedStudyError(f"unexpected error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                f"the traceback is in the log")


class _BadSlice(Exception):
    """The centre slice of an input cannot be decoded (internal: the slice is left out)."""


class _Prepared:
    """A study after :meth:`Pipeline.prepare`: its selection, warnings, timings, and the decoded
    slices and preprocessed inputs made so far (keyed by series UID and slice index)."""

    __slots__ = ("study", "selection", "chosen", "warnings", "timings", "images", "_pixels", "_orients")

    def __init__(self, study, selection, timings: Dict[str, float]):
        self.study, self.selection, self.timings = study, selection, timings
        self.chosen = selection.chosen
        self.warnings: List[str] = list(selection.warnings)
        self.images: Dict[Tuple[str, int], Tuple[np.ndarray, object, object]] = {}
        self._pixels: Dict[Tuple[str, int], Optional[np.ndarray]] = {}
        self._orients: Dict[Tuple[str, object], object] = {}

    def pixels(self, series, index: int, cache: bool = True) -> Optional[np.ndarray]:
        """Slice ``index`` of ``series``, decoded once per study while it is cached (``cache``:
        keep it for the next inputs); None (and a warning in the report) when its pixel data
        cannot be decoded: one bad file costs its slice, not the study. A missing codec
        (MissingDependencyError) is not a bad file and is raised."""
        key = (series.series_uid, index)
        if key in self._pixels:
            return self._pixels[key]
        try:
            arr = series.pixels(index)
        except DicomError as exc:
            inst = series.instances[index]
            self.warnings.append(f"series {series.series_number if series.series_number is not None else series.series_id} "
                                 f"instance {inst.instance_number}: {exc}; the slice is left out")
            arr = None
        if cache or arr is None:
            self._pixels[key] = arr
        return arr

    def orientation(self, series, index: int):
        """The :class:`~lumbar_edge.dicom.orient.Reorientation` of slice ``index`` to the trained
        orientation of its series' plane (one per distinct orientation)."""
        from .dicom.orient import reorientation_for

        inst = series.instances[index]
        key = (series.series_uid, inst.image_orientation)
        hit = self._orients.get(key)
        if hit is None:
            hit = self._orients[key] = reorientation_for(inst.image_orientation, series.plane, inst.rows, inst.columns)
        return hit

    def release_pixels(self, series, below: Optional[int] = None) -> None:
        """Forget the decoded slices of ``series`` (those with an index under ``below`` when
        given); bad slices stay remembered as bad."""
        for key in [k for k, v in self._pixels.items() if k[0] == series.series_uid and v is not None
                    and (below is None or k[1] < below)]:
            del self._pixels[key]

    def release(self, series) -> None:
        """Forget the decoded slices and any preprocessed inputs of ``series``."""
        self.release_pixels(series)
        for key in [k for k in self.images if k[0] == series.series_uid]:
            del self.images[key]


def _shared_point_warnings(canal: Dict[str, Tuple], foramina: Dict[Tuple[str, str], Tuple]) -> List[str]:
    """One warning per group of levels the model put on one point (:func:`shared_points`): the
    findings stay (each level's grade is still read where the model looked), but the report
    says that their places, and so which level they describe, are not to be trusted."""
    views = [("sagittal T2/STIR (spinal canal)", {lv: r[0] for lv, r in canal.items()})]
    for side in ("left", "right"):
        views.append((f"sagittal T1 ({side} foramina)", {lv: r[0] for (sd, lv), r in foramina.items() if sd == side}))
    out = []
    for label, keypoints in views:
        for group in shared_points(keypoints):
            out.append(shared_point_warning(label, [level_title(lv) for lv in group]))
    return out


def _same_slice(keypoint, instance) -> bool:
    """Whether ``keypoint`` was read on ``instance`` (the frames of a multi-frame file share one
    SOPInstanceUID, so the frame counts too)."""
    return keypoint.sop_uid == instance.sop_uid and keypoint.frame == instance.frame


def _normalised(p) -> Tuple[float, float, float]:
    arr = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    total = arr.sum()
    if not np.isfinite(total) or total <= 0:
        return (1 / 3, 1 / 3, 1 / 3)
    arr = arr / total
    return (float(arr[0]), float(arr[1]), float(arr[2]))
