"""Accuracy of a reduced-precision ONNX model against the FP32 one, both run in ONNX Runtime.

Two levels:
- :func:`output_deltas` needs only inputs: per-output max/mean abs differences, and what the
  decoder would see differently (heatmap peak cell agreement, peak shift in model-input pixels,
  severity class agreement at the FP32 peak).
- :func:`evaluate_onnx` / :func:`accuracy_deltas` score a model on labelled validation samples
  with the training package's own validation (``evaluate_samples``: competition score and
  localisation error), through :class:`OrtModule`, which looks like the torch model to it.

Where OpenVINO is installed, the same figures are taken of OpenVINO running the same file
(:func:`openvino_outputs`, ``evaluate_onnx(..., runtime="openvino")``), so the manifest says how far
each runtime that may serve the bundle is from the FP32 reference.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import ExportError
from .onnx_export import ort_outputs, ort_session

#: Validation figures compared between precisions (lower is better for score and loc_*).
COMPARED_METRICS = ("score", "loc_px_median", "loc_px_mean", "loc_mm_median", "severity_acc")


class OrtModule:
    """An ONNX Runtime CPU session dressed as the torch model: ``module(images)`` takes a torch
    tensor [N, C, H, W] and returns ``(heatmap, offset, severity)`` torch tensors; ``eval()`` and
    ``to()`` return the module itself. ``progress`` (a :class:`~lumbar_edge.progress.Progress`)
    advances by the batch size on each call.
    """

    def __init__(self, path: Union[str, Path], threads: Optional[int] = None, progress=None):
        self.path = Path(path)
        self.session = ort_session(self.path, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.progress = progress

    def eval(self) -> "OrtModule":
        return self

    def to(self, *args, **kwargs) -> "OrtModule":
        return self

    def __call__(self, images):
        import torch

        array = images.detach().cpu().numpy().astype(np.float32, copy=False)
        outs = ort_outputs(self.session, array)
        if self.progress is not None:
            self.progress.update(len(array))
        return tuple(torch.from_numpy(outs[name]) for name in self.output_names)


class EngineModule:
    """A lumbar-edge :class:`~lumbar_edge.backends.base.Engine` dressed as the torch model, like
    :class:`OrtModule`: activated on creation; :meth:`close` releases it."""

    def __init__(self, engine, progress=None, batch: int = 16):
        self.engine = engine.activate()
        self.progress = progress
        self.batch = batch

    def eval(self) -> "EngineModule":
        return self

    def to(self, *args, **kwargs) -> "EngineModule":
        return self

    def __call__(self, images):
        import torch

        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        outs = engine_outputs(self.engine, array, self.batch)
        if self.progress is not None:
            self.progress.update(len(array))
        return tuple(torch.from_numpy(outs[name]) for name in ("heatmap", "offset", "severity"))

    def close(self) -> None:
        self.engine.deactivate()


def engine_outputs(engine, inputs: np.ndarray, batch: int = 16) -> Dict[str, np.ndarray]:
    """An active engine's outputs on ``inputs``, run in chunks of ``batch``; name -> float32 array."""
    parts = [engine.infer(np.ascontiguousarray(inputs[i:i + batch], dtype=np.float32))
             for i in range(0, len(inputs), batch)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def openvino_outputs(path: Union[str, Path], precision: str, inputs: np.ndarray) -> Optional[Dict[str, np.ndarray]]:
    """OpenVINO's outputs (CPU) for the ONNX model ``path`` run at ``precision`` on ``inputs``, or
    None when openvino is not installed or the CPU does not run that precision. Raises
    :class:`ExportError` when OpenVINO rejects the model (an INT8 graph its low-precision passes
    cannot compile would fail every ``--backend openvino`` user: the export stops instead)."""
    from lumbar_edge.backends.base import EngineError
    from lumbar_edge.backends.openvino import OpenVinoEngine

    if not OpenVinoEngine.is_available():
        return None
    if precision == "fp16" and "fp16" not in _openvino_cpu_precisions():
        return None
    engine = OpenVinoEngine(path, precision=precision)
    try:
        with engine:
            return engine_outputs(engine, inputs)
    except EngineError as exc:
        raise ExportError(f"OpenVINO cannot run the {precision} model: {exc}") from exc


def _openvino_cpu_precisions() -> Sequence[str]:
    from lumbar_edge.backends.openvino import device_capabilities

    return ["fp32", "int8"] + (["fp16"] if "FP16" in device_capabilities("CPU") else [])


def openvino_version() -> Optional[str]:
    """The installed OpenVINO's version, or None (read from the package metadata: no import)."""
    import importlib.metadata as md

    try:
        return md.version("openvino")
    except md.PackageNotFoundError:
        return None


def _peaks(heatmap: np.ndarray, offset: np.ndarray, stride: int):
    """Per image and keypoint: flat argmax index and the (x, y) point in model-input pixels."""
    n, k, h, w = heatmap.shape
    idx = heatmap.reshape(n, k, -1).argmax(-1)
    iy, ix = idx // w, idx % w
    off = offset.reshape(n, k, 2, h * w)
    dx = np.take_along_axis(off[:, :, 0], idx[..., None], 2)[..., 0]
    dy = np.take_along_axis(off[:, :, 1], idx[..., None], 2)[..., 0]
    return idx, np.stack([(ix + dx) * stride, (iy + dy) * stride], -1)


def output_deltas(fp32: Union[str, Path, Mapping[str, np.ndarray]], other: Union[str, Path, Mapping[str, np.ndarray]],
                  inputs: Optional[np.ndarray] = None, groups: Optional[Sequence[int]] = None, stride: int = 4) -> dict:
    """Compare two ONNX models (paths, run in ORT on ``inputs``) or two output dicts.

    Returns ``max_abs`` / ``mean_abs`` per output, ``peak_agreement`` (fraction of image x
    keypoint pairs whose heatmap peak is the same cell), ``peak_shift_px_max`` / ``_mean``
    (distance between the decoded points, model-input pixels) and, with ``groups`` (the layout's
    keypoint -> severity group), ``severity_agreement`` at the FP32 peaks. Raises
    :class:`ExportError` when a model fails to run or produces non-finite values.
    """
    ref = fp32 if isinstance(fp32, Mapping) else ort_outputs(fp32, inputs)
    cand = other if isinstance(other, Mapping) else ort_outputs(other, inputs)
    result: dict = {"max_abs": {}, "mean_abs": {}}
    for name, value in ref.items():
        if not np.isfinite(cand[name]).all():
            raise ExportError(f"the reduced-precision model gives non-finite {name} values (overflow?)")
        diff = np.abs(cand[name].astype(np.float64) - value.astype(np.float64))
        result["max_abs"][name] = float(diff.max())
        result["mean_abs"][name] = float(diff.mean())
    idx_r, pts_r = _peaks(ref["heatmap"], ref["offset"], stride)
    idx_c, pts_c = _peaks(cand["heatmap"], cand["offset"], stride)
    shift = np.hypot(*(pts_c - pts_r).transpose(2, 0, 1))
    result["peak_agreement"] = float((idx_r == idx_c).mean())
    result["peak_shift_px_max"] = float(shift.max())
    result["peak_shift_px_mean"] = float(shift.mean())
    if groups is not None:
        n, k = idx_r.shape
        cells = ref["severity"].shape[-2] * ref["severity"].shape[-1]
        sev_r = ref["severity"].reshape(n, -1, 3, cells)
        sev_c = cand["severity"].reshape(n, -1, 3, cells)
        g = np.asarray(groups)
        agree = []
        for i in range(n):
            for ch in range(k):
                a = sev_r[i, g[ch], :, idx_r[i, ch]].argmax()
                b = sev_c[i, g[ch], :, idx_r[i, ch]].argmax()
                agree.append(a == b)
        result["severity_agreement"] = float(np.mean(agree))
    result["num_inputs"] = int(len(next(iter(ref.values()))))
    return result


def evaluate_onnx(path: Union[str, Path], samples, dataset, layout, train_labels=None, progress: bool = False,
                  label: str = "validating", runtime: str = "onnxruntime", precision: str = "fp32") -> Dict[str, float]:
    """Score the ONNX model ``path`` on validation ``samples`` (from ``build_samples``) with the
    training package's ``evaluate_samples``: score, prior_score, loc_px_median/mean,
    loc_mm_median, severity_acc. ``train_labels`` (for the class priors of unpredicted rows)
    default to the dataset's labels. ``runtime``: ``onnxruntime`` or ``openvino`` (which runs it
    at ``precision``); raises the engine's errors when OpenVINO cannot run it.
    """
    import torch

    from lumbar_edge.progress import Progress
    from lumbar_edge.training.evaluation import evaluate_samples

    labels = list(train_labels) if train_labels is not None else list(dataset.labels.values())
    with Progress(len(samples), label, enabled=progress) as bar:
        if runtime == "openvino":
            from lumbar_edge.backends.openvino import OpenVinoEngine

            module = EngineModule(OpenVinoEngine(path, precision=precision), progress=bar)
            try:
                return evaluate_samples(module, samples, dataset, torch.device("cpu"), layout, labels)
            finally:
                module.close()
        module = OrtModule(path, progress=bar)
        return evaluate_samples(module, samples, dataset, torch.device("cpu"), layout, labels)


def accuracy_deltas(reference: Mapping[str, float], other: Mapping[str, float]) -> Dict[str, float]:
    """``other - reference`` for the compared validation figures present in both (NaN skipped)."""
    out = {}
    for key in COMPARED_METRICS:
        a, b = reference.get(key), other.get(key)
        if a is None or b is None or not np.isfinite(a) or not np.isfinite(b):
            continue
        out[key] = float(b) - float(a)
    return out


__all__ = ["COMPARED_METRICS", "EngineModule", "OrtModule", "accuracy_deltas", "engine_outputs", "evaluate_onnx",
           "openvino_outputs", "openvino_version", "output_deltas"]
