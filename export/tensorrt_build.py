"""Build TensorRT engines from a bundle's ONNX models and add them to the bundle.

Written against the documented Python API of TensorRT 10 (JetPack 6 ships 10.3) and 11, and needs
the full ``tensorrt`` package (the builder), which comes from NVIDIA's package index and is not part
of any extra here. Per build:

* the bundle's ONNX of the requested precision (the FP16 graph, the Q/DQ INT8 graph) is parsed
  with ``OnnxParser``;
* the network is strongly typed on TensorRT 11 (the only mode there) and on 10.12+ (weak typing was
  deprecated in 10.12); on older 10.x (JetPack 6's 10.3) it is weakly typed with the FP16 / INT8
  builder flags that the graph's precision needs (:func:`network_flags_for`);
* one optimisation profile, batch 1..``max_batch`` (optimum ``opt_batch``);
* a timing cache file reused between builds (``timing.cache`` beside the bundle by default);
* ``dla_core`` builds for a Jetson DLA core with GPU fallback; ``version_compatible`` builds an
  engine the lean runtime can run (it then loads with ``engine_host_code_allowed``);
* progress through an ``IProgressMonitor`` driving :class:`lumbar_edge.progress.Progress`.

The engine ``model.{precision}.sm{cc}.trt{major}.engine`` is added to the bundle with its TensorRT
version, GPU name, compute capability, version compatibility, max batch and sha256 by
:func:`lumbar_edge.export.bundle_writer.add_engine`, which rewrites the manifest atomically.

Command line (where ``tensorrt`` imports and a GPU is present)::

    python -m lumbar_edge.export.tensorrt_build BUNDLE --precision fp16 [--max-batch 16]
        [--dla-core 0] [--version-compatible] [--timing-cache FILE]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from lumbar_edge.backends.tensorrt import version_tuple  # one parser, shared with the runtime's engine checks
from lumbar_edge.bundle import PRECISIONS, Bundle

from .errors import ExportError

log = logging.getLogger("lumbar_edge.export")

#: First TensorRT 10 release where the build is strongly typed (weak typing deprecated in 10.12).
STRONG_TYPING_FROM: Tuple[int, int] = (10, 12)
#: The timing cache's default file name, kept beside the bundle folder.
TIMING_CACHE_NAME = "timing.cache"
NO_BUILDER = ("building TensorRT engines needs the full TensorRT (`import tensorrt`, from NVIDIA's package "
              "index; the lean runtime `tensorrt_lean` cannot build); the bundle keeps its ONNX models, from "
              "which engines can be built later with `python -m lumbar_edge.export.tensorrt_build BUNDLE`")




@dataclass(frozen=True)
class TypingPlan:
    """How a precision is built on a TensorRT version: strongly typed, or weakly typed with the
    named ``BuilderFlag`` members."""

    strongly_typed: bool
    builder_flags: Tuple[str, ...]


def network_flags_for(tensorrt_version: str, precision: str) -> TypingPlan:
    """The typing mode and builder flags for ``precision`` on ``tensorrt_version``.

    Raises :class:`ExportError` for an unknown precision or a TensorRT older than 10.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    version = version_tuple(tensorrt_version)
    if not version or version[0] < 10:
        raise ExportError(f"TensorRT {tensorrt_version} is too old; lumbar-edge builds with TensorRT 10 or 11")
    if version[:2] >= STRONG_TYPING_FROM:
        return TypingPlan(True, ())
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]
    return TypingPlan(False, flags)


def engine_file_name(precision: str, compute_capability: str, tensorrt_version: str) -> str:
    """``model.{precision}.sm{cc}.trt{major}.engine``, e.g. ``model.fp16.sm87.trt10.engine``."""
    cc = str(compute_capability).replace(".", "")
    if not cc.isdigit():
        raise ExportError(f"compute capability {compute_capability!r} is not of the form 8.7")
    major = version_tuple(tensorrt_version)[:1]
    if not major:
        raise ExportError(f"unreadable TensorRT version {tensorrt_version!r}")
    return f"model.{precision}.sm{cc}.trt{major[0]}.engine"


def builder_missing_reason() -> Optional[str]:
    """Why engines cannot be built here (one line), or ``None`` when ``tensorrt`` imports and a
    GPU is present."""
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        return NO_BUILDER
    from lumbar_edge.backends.cuda_resources import gpu_missing_reason

    reason = gpu_missing_reason()
    return f"building TensorRT engines needs a GPU: {reason}" if reason else None


def _progress_monitor(trt, enabled: bool):
    """An ``IProgressMonitor`` that shows the top-level build phase as a Progress bar."""
    from lumbar_edge.progress import Progress

    class BuildProgress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._bars: Dict[str, Progress] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:  # nested phases would redraw over the top-level bar
                self._bars[phase_name] = Progress(num_steps, f"TensorRT: {phase_name}", enabled=enabled)

        def step_complete(self, phase_name, step):
            bar = self._bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.count)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            bar = self._bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return BuildProgress()


def build_engine(bundle_path: Union[str, Path], precision: str = "fp16", *, max_batch: int = 16,
                 opt_batch: Optional[int] = None, dla_core: Optional[int] = None, version_compatible: bool = False,
                 timing_cache: Optional[Union[str, Path]] = None, workspace_mib: Optional[int] = None,
                 device: int = 0, progress: bool = True) -> dict:
    """Build a TensorRT engine from the bundle's ``precision`` ONNX and add it to the bundle.

    Returns the manifest entry added. Raises :class:`ExportError` when TensorRT or a GPU is
    missing, the ONNX does not parse, or the build fails; the bundle's errors when it does not load
    or lacks the precision. ``workspace_mib`` caps the builder's workspace memory pool.
    """
    reason = builder_missing_reason()
    if reason is not None:
        raise ExportError(reason)
    import tensorrt as trt

    from lumbar_edge.backends.cuda_resources import PrimaryContext, device_info

    from .bundle_writer import add_engine

    if not isinstance(max_batch, int) or max_batch < 1:
        raise ExportError(f"max_batch must be a positive integer, got {max_batch!r}")
    opt = min(max_batch, opt_batch or 1)
    bundle = Bundle.load(bundle_path)
    onnx_path = bundle.model_path(precision)
    plan = network_flags_for(trt.__version__, precision)
    gpu, (major, minor), _ = device_info(device)
    cc = f"{major}.{minor}"
    cache_path = Path(timing_cache) if timing_cache else bundle.root.parent / TIMING_CACHE_NAME

    logger = trt.Logger(trt.Logger.WARNING)
    with PrimaryContext(device) as ctx, ctx.current():
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ExportError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: "
                              f"{errors[0] if errors else 'unknown error'}")
        config = builder.create_builder_config()
        for flag in plan.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if workspace_mib:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
        if version_compatible:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if dla_core is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(dla_core)
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        profile = builder.create_optimization_profile()
        image = network.get_input(0)
        c, h, w = tuple(image.shape)[1:]
        profile.set_shape(image.name, (1, c, h, w), (opt, c, h, w), (max_batch, c, h, w))
        config.add_optimization_profile(profile)
        cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, ignore_mismatch=False)
        config.progress_monitor = _progress_monitor(trt, progress)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportError(f"TensorRT {trt.__version__} failed to build {onnx_path.name} (its log is above)")
        _write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))

    name = engine_file_name(precision, cc, trt.__version__)
    entry = {"file": name, "precision": precision, "tensorrt_version": trt.__version__, "gpu_name": gpu,
             "compute_capability": cc, "version_compatible": bool(version_compatible), "max_batch": max_batch,
             "opt_batch": opt, "strongly_typed": plan.strongly_typed, "builder_flags": list(plan.builder_flags),
             "source": onnx_path.name}
    if dla_core is not None:
        entry["dla_core"] = int(dla_core)
    with tempfile.TemporaryDirectory(prefix=".engine-", dir=bundle.root.parent) as work:
        engine_path = Path(work) / name
        engine_path.write_bytes(bytes(serialized))
        return add_engine(bundle.root, entry, engine_path)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m lumbar_edge.export.tensorrt_build BUNDLE ...``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lumbar_edge.export.tensorrt_build",
                                     description="Build a TensorRT engine from a bundle's ONNX and add it.")
    parser.add_argument("bundle")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--dla-core", type=int, default=None)
    parser.add_argument("--version-compatible", action="store_true")
    parser.add_argument("--timing-cache", default=None)
    args = parser.parse_args(argv)
    from lumbar_edge.errors import LumbarEdgeError

    try:
        entry = build_engine(args.bundle, args.precision, max_batch=args.max_batch, dla_core=args.dla_core,
                             version_compatible=args.version_compatible, timing_cache=args.timing_cache)
    except LumbarEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"added {entry['file']} (TensorRT {entry['tensorrt_version']}, {entry['gpu_name']}, "
          f"sm {entry['compute_capability']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["NO_BUILDER", "STRONG_TYPING_FROM", "TypingPlan", "build_engine", "builder_missing_reason",
           "engine_file_name", "network_flags_for", "version_tuple"]
