"""``lumbar-edge bench``: study in, report out, for every backend and precision this machine runs.

Each row is one backend, precision and batch size. A row runs the whole job on one study folder
``warmup + iters`` times (header scan, pixel decode, preprocessing, engine, decode, report
writing into a scratch folder) with a :class:`~lumbar_edge.bench.timer.StageTimer` on the engine;
the timed runs give the latency percentiles, the throughput and the stage split. Backends and
precisions that cannot run here stay in the report as ``n/a`` with the reason.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import InputError, LumbarEdgeError
from ..progress import Progress
from .memory import host_peak, reset_host_peak
from .timer import DEVICE_STAGES, STAGES, StageTimer, percentiles

#: The backends a bench covers by default, in the order rows are listed.
BENCH_BACKENDS = ("onnxruntime", "openvino", "torch", "tensorrt")
#: Pipeline timings that are stages of their own (the rest of ``infer`` is batching overhead).
_PIPELINE_STAGES = ("scan", "decode_pixels", "preprocess")


def parse_batches(text: str) -> List[int]:
    """``"1,8,16"`` -> ``[1, 8, 16]``; raises :class:`InputError` for anything else."""
    try:
        batches = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        batches = []
    if not batches or any(b < 1 or b > 64 for b in batches):
        raise InputError(f"--batch takes comma-separated sizes from 1 to 64 (e.g. 1,8,16), got {text!r}")
    return list(dict.fromkeys(batches))


@dataclass
class BenchOptions:
    """What :func:`run_bench` measures. Empty ``backends`` / ``precisions``: all of them."""

    model: Path
    backends: Sequence[str] = ()
    precisions: Sequence[str] = ()
    batches: Sequence[int] = (8,)
    study: Optional[Path] = None
    warmup: int = 1
    iters: int = 5
    threads: Optional[int] = None
    #: The OpenVINO device of the openvino rows (None: CPU).
    device: Optional[str] = None
    overlays: bool = True
    seed: int = 0

    def check(self) -> None:
        if self.warmup < 0 or self.iters < 1:
            raise InputError(f"warmup must be >= 0 and iters >= 1, got {self.warmup} and {self.iters}")
        unknown = [b for b in self.backends if b not in BENCH_BACKENDS]
        if unknown:
            raise InputError(f"unknown backend {', '.join(unknown)}; choose from {', '.join(BENCH_BACKENDS)}")


@dataclass
class BenchReport:
    """The result: machine, bundle, study, and one row per configuration (see :meth:`to_dict`)."""

    machine: Dict[str, object]
    bundle: Dict[str, object]
    study: Dict[str, object]
    settings: Dict[str, object]
    rows: List[Dict[str, object]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return {"tool": "lumbar-edge bench", "format_version": 1, "machine": self.machine, "bundle": self.bundle,
                "study": self.study, "settings": self.settings,
                "stages": [{"key": k, "label": label} for k, label in STAGES], "rows": self.rows}

    @property
    def ok_rows(self) -> List[Dict[str, object]]:
        return [r for r in self.rows if r["status"] == "ok"]


def machine_info() -> Dict[str, object]:
    """Machine, OS and the versions that matter for the figures (no package is imported that is
    not already installed; missing ones are None)."""
    import importlib.metadata as md

    def version(dist: str) -> Optional[str]:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    from .. import __version__

    info: Dict[str, object] = {
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "os": platform.platform(), "python": platform.python_version(), "lumbar_edge": __version__,
        "numpy": version("numpy"), "pydicom": version("pydicom"), "onnxruntime": version("onnxruntime"),
        "openvino": version("openvino"), "torch": version("torch"), "tensorrt": version("tensorrt") or version("tensorrt-lean-cu13"),
    }
    try:
        from ..backends.cuda_resources import device_info, gpu_missing_reason

        reason = gpu_missing_reason()
        info["gpu"] = None if reason else device_info(0)[0]
        info["gpu_missing"] = reason
    except Exception as exc:  # noqa: BLE001 - the description is best effort; the bench runs without it
        info["gpu"], info["gpu_missing"] = None, f"{type(exc).__name__}: {exc}"
    return info


def _study_info(study: Path) -> Dict[str, object]:
    from ..dicom import scan_path

    scan = scan_path(study, progress=False)
    if len(scan.studies) != 1:
        raise InputError(f"--study must be a folder holding one DICOM study; {study} holds {len(scan.studies)}")
    st = scan.studies[0]
    return {"path": str(study), "study_id": st.study_id, "files": scan.n_files,
            "series": [{"kind": str(getattr(s.kind, "value", s.kind)), "slices": len(s.instances),
                        "matrix": f"{s.rows}x{s.columns}"} for s in st.series]}


def synth_study(folder: Path, seed: int = 0) -> Path:
    """A synthetic study of realistic size (the synth defaults: 15-19 slices per sagittal series,
    30-40 axial slices, 256-320 px) written into ``folder``; returns its study folder."""
    from ..synth import synthesize

    synthesize(folder, n_studies=1, seed=seed, workers=1)
    return next(p for p in (folder / "train_images").iterdir() if p.is_dir())


def _configurations(bundle, opts: BenchOptions) -> List[Tuple[str, Optional[str], Optional[str]]]:
    """``(backend, precision, why not)`` for every row; ``why not`` is None for runnable rows."""
    from ..backends import BACKENDS, _load_class

    rows: List[Tuple[str, Optional[str], Optional[str]]] = []
    for name in (opts.backends or BENCH_BACKENDS):
        if name not in BACKENDS:
            rows.append((name, None, "not part of this lumbar-edge"))
            continue
        cls = _load_class(name, BACKENDS)
        reason = cls.unavailable_reason()
        if reason is not None:
            rows.append((name, None, reason))
            continue
        have = cls.precisions_for(bundle)
        wanted = list(opts.precisions) or have
        if not have:
            rows.append((name, None, f"the bundle has no model this backend runs"
                                     f"{' (no TensorRT engine; build one with export --engine)' if name == 'tensorrt' else ''}"))
            continue
        for precision in wanted:
            rows.append((name, precision, None if precision in have else
                         f"the bundle has no {precision} model for {name} (it has {', '.join(have)})"))
    return rows


def _na_row(backend: str, precision: Optional[str], reason: str, status: str = "n/a") -> Dict[str, object]:
    return {"backend": backend, "precision": precision, "batch": None, "status": status, "reason": reason}


def _run_row(bundle, backend: str, precision: str, batch: int, study: Path, opts: BenchOptions,
             scratch: Path, bar: Progress) -> Dict[str, object]:
    from ..backends import open_engine
    from ..infer import write_study_outputs
    from ..pipeline import Pipeline

    # A bench times one study at a time: the latency hint where a backend has one.
    engine = open_engine(bundle, backend=backend, precision=precision, threads=opts.threads, hint="latency",
                         device=opts.device if backend == "openvino" else None)
    timer = StageTimer()
    engine.timer = timer
    totals: List[float] = []
    stages: Dict[str, List[float]] = {k: [] for k, _ in STAGES}
    slices = 0
    label = f"{backend}/{precision} b{batch}"
    with Pipeline(bundle, engine, batch_size=batch) as pipeline:
        pipeline.activate()
        reset_host_peak()
        engine.reset_device_memory()
        for i in range(opts.warmup + opts.iters):
            timer.reset()
            out = scratch / f"run{i}"
            t0 = time.perf_counter()
            result = pipeline.run_study(study)
            with timer.stage("report"):
                write_study_outputs(result, out, overlays=opts.overlays)
            total = time.perf_counter() - t0
            bar.set_postfix(label)
            bar.update()
            if i < opts.warmup:
                continue
            totals.append(total)
            seconds = dict(timer.seconds)
            for key in _PIPELINE_STAGES:
                seconds[key] = result.timings.get(key, 0.0)
            seconds["other"] = max(0.0, total - sum(seconds.get(k, 0.0) for k, _ in STAGES if k != "other"))
            for key, _ in STAGES:
                stages[key].append(seconds.get(key, 0.0))
            slices = timer.items.get("engine", 0)
        host_bytes, host_how = host_peak()
        device = engine.device_memory()
        describe = engine.describe() if hasattr(engine, "describe") else {}
    lat = percentiles(totals)
    stage_rows: Dict[str, object] = {}
    for key, _ in STAGES:
        if key in DEVICE_STAGES and not engine.DEVICE_COPIES:
            stage_rows[key] = {"na": f"{backend} runs on the host: no host-device copies"}
            continue
        values = stages[key]
        st = percentiles(values)
        stage_rows[key] = {"p50_s": st["p50"], "mean_s": st["mean"], "share": st["mean"] / lat["mean"] if lat["mean"] else 0.0}
    stage_rows["decode"]["implementation"] = engine.DECODER
    return {
        "backend": backend, "precision": precision, "batch": batch, "status": "ok", "reason": None,
        "runs": len(totals), "slices_per_study": slices,
        "latency_s": lat,
        "throughput": {"studies_per_s": 1.0 / lat["mean"], "slices_per_s": slices / lat["mean"]},
        "stages": stage_rows,
        "memory": {"host_peak_bytes": host_bytes, "host_peak_how": host_how,
                   "gpu_peak_bytes": device[0] if device else None,
                   "gpu_peak_how": device[1] if device else f"n/a ({backend} runs on the host)"},
        "engine": {k: v for k, v in describe.items() if isinstance(v, (str, int, float, bool, list, type(None)))},
    }


def run_bench(opts: BenchOptions, *, progress: bool = True) -> BenchReport:
    """Measure every configuration of ``opts``; see the module docstring. Raises
    :class:`InputError` for bad options, a bundle that cannot be loaded, or a ``study`` that is
    not one DICOM study; a configuration that fails is reported in its row, not raised."""
    from ..bundle import Bundle

    opts.check()
    bundle = Bundle.load(Path(opts.model))
    with tempfile.TemporaryDirectory(prefix="lumbar-edge-bench-") as tmp:
        tmp_path = Path(tmp)
        if opts.study is not None:
            study = Path(opts.study)
            if not study.exists():
                raise InputError(f"no such study folder: {study}")
            synthetic = False
        else:
            study = synth_study(tmp_path / "study", seed=opts.seed)
            synthetic = True
        study_info = _study_info(study)
        study_info["synthetic"] = synthetic
        configs = _configurations(bundle, opts)
        runnable = [c for c in configs if c[2] is None]
        report = BenchReport(
            machine=machine_info(),
            bundle={"path": str(opts.model), "name": bundle.name, "input": list(bundle.input_size),
                    "in_channels": bundle.in_channels, "precisions": bundle.precisions},
            study=study_info,
            settings={"batches": list(opts.batches), "warmup": opts.warmup, "iters": opts.iters,
                      "threads": opts.threads, "device": opts.device, "overlays": opts.overlays,
                      "job": "study folder in, JSON report" + (" and PNG overlays" if opts.overlays else "") + " out"})
        with Progress(len(runnable) * len(opts.batches) * (opts.warmup + opts.iters), "benchmarking",
                      enabled=progress) as bar:
            for backend, precision, why in configs:
                if why is not None:
                    report.rows.append(_na_row(backend, precision, why))
                    continue
                for batch in opts.batches:
                    scratch = tmp_path / f"out-{backend}-{precision}-b{batch}"
                    try:
                        row = _run_row(bundle, backend, precision, batch, study, opts, scratch, bar)
                    except LumbarEdgeError as exc:
                        row = _na_row(backend, precision, str(exc), status="failed")
                        row["batch"] = batch
                    report.rows.append(row)
    return report


__all__ = ["BENCH_BACKENDS", "BenchOptions", "BenchReport", "machine_info", "parse_batches", "run_bench",
           "synth_study"]
