"""The named baselines of the end-to-end benchmark: the pipeline a user would write first.

Each does the same job as lumbar-edge, study folder in, report out, and differs from it exactly
where a straightforward script does:

* **I/O** (``naive_load_study``): every file of the folder read completely with
  ``pydicom.dcmread`` in one thread, and every file's pixels decoded up front (lumbar-edge reads
  headers only, then decodes just the slices it infers, once each);
* **engine**: (a) PyTorch eager FP32 (``EagerTorchEngine``), (b) PyTorch eager FP16 (CUDA only),
  (c) ONNX Runtime FP32 on the CPU with its default session settings;
* **decode**: the three output maps copied to the host and decoded with numpy (the
  :class:`~lumbar_edge.backends.base.Engine` default), where a GPU backend of lumbar-edge decodes
  on the device.

Everything else is shared with lumbar-edge, so the baselines are not slowed by anything a user
would do better: series classification, slice selection (the axial slices at the disc levels
only), preprocessing, batching (same batch size), aggregation and the report writers.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from lumbar_edge.backends.base import Engine, EngineError
from lumbar_edge.dicom.model import Series, Study

#: The three baselines: key -> (label, engine, precision, device needed).
BASELINES: Dict[str, Tuple[str, str, str]] = {
    "a": ("naive: pydicom every file, 1 thread + PyTorch eager FP32 + maps to host + numpy decode", "torch", "fp32"),
    "b": ("naive: pydicom every file, 1 thread + PyTorch eager FP16 + maps to host + numpy decode", "torch", "fp16"),
    "c": ("naive: pydicom every file, 1 thread + ONNX Runtime FP32 (CPU, default session) + numpy decode",
          "onnxruntime", "fp32"),
}


@dataclasses.dataclass(eq=False)
class LoadedSeries(Series):
    """A series whose slices were all decoded when it was read (the naive loader)."""

    arrays: List[np.ndarray] = dataclasses.field(default_factory=list)

    def pixels(self, index: int) -> np.ndarray:
        return self.arrays[index]


def naive_load_study(folder: Path) -> Study:
    """Read every file under ``folder`` with ``pydicom.dcmread`` (whole file) in this thread and
    decode every file's pixels; one Study. Files pydicom cannot read are skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from lumbar_edge.dicom.headers import HeaderRecord, _DatasetValues, _record
    from lumbar_edge.dicom.pixels import to_float
    from lumbar_edge.dicom.scan import build_studies
    from lumbar_edge.pipeline import StudyError

    records, pixels = [], {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            try:
                ds = pydicom.dcmread(path)
            except (InvalidDicomError, OSError):
                continue
            if "PixelData" not in ds:
                continue
            meta = ds.file_meta
            rec = _record(path, _DatasetValues(ds), str(meta.get("TransferSyntaxUID", "")),
                          str(meta.get("MediaStorageSOPClassUID", "")), None)
            if not isinstance(rec, HeaderRecord):
                continue
            records.append(rec)
            pixels[path] = to_float(ds.pixel_array, rec.rescale_slope, rec.rescale_intercept, rec.photometric,
                                    rec.bits_stored, rec.pixel_representation)
    studies = build_studies(records, None, [])
    if len(studies) != 1:
        raise StudyError(f"{folder} holds {len(studies)} studies, not one")
    study = studies[0]
    fields = [f.name for f in dataclasses.fields(Series)]
    study.series = [LoadedSeries(**{f: getattr(s, f) for f in fields}, arrays=[pixels[i.file] for i in s.instances])
                    for s in study.series]
    return study


class EagerTorchEngine(Engine):
    """The bundle's network in plain PyTorch: ``model(x)`` eagerly, outputs copied to the host
    (decoded with numpy by :meth:`Engine.infer_decoded`). On CUDA when there is one, else the CPU;
    FP16 only on CUDA."""

    name = "torch-eager"
    DEPENDENCIES = (("torch", "torch"),)
    EXTRA = "train"

    def __init__(self, bundle, precision: str = "fp32", device: Optional[str] = None):
        layout = bundle.layout
        super().__init__(precision=precision, max_batch=64, stride=bundle.stride, num_keypoints=layout.num_keypoints,
                         num_conditions=layout.num_conditions)
        self.bundle = bundle
        self.device = device
        self._model = None

    @classmethod
    def unavailable_reason_for(cls, precision: str) -> Optional[str]:
        reason = cls.unavailable_reason()
        if reason is not None:
            return reason
        import torch

        if precision == "fp16" and not torch.cuda.is_available():
            return (f"PyTorch FP16 needs CUDA (torch {torch.__version__} has none here; FP16 convolutions on the "
                    f"CPU are not a meaningful baseline)")
        return None

    def _activate(self) -> None:
        import torch

        from lumbar_edge.training.model import build_model

        if self.bundle.weights_path is None:
            raise EngineError(f"bundle {self.bundle.name} has no model.pt for the PyTorch baselines")
        reason = self.unavailable_reason_for(self.precision)
        if reason:
            raise EngineError(reason)
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = build_model(self.bundle.manifest.get("model_config") or {})
        model.load_state_dict(torch.load(self.bundle.weights_path, map_location="cpu", weights_only=True))
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self._dtype = dtype
        self._model = model.eval().to(device=self.device, dtype=dtype)
        h, w = self.bundle.input_size
        self.input_shape = (None, self.bundle.in_channels, h, w)

    def _infer(self, images: np.ndarray):
        import torch

        with torch.inference_mode():
            heatmap, offset, severity = self._model(torch.from_numpy(images).to(self.device, self._dtype))
            return {"heatmap": heatmap.float().cpu().numpy(), "offset": offset.float().cpu().numpy(),
                    "severity": severity.float().cpu().numpy()}

    def _deactivate(self) -> None:
        self._model = None

    def describe(self) -> Dict[str, object]:
        return {"backend": self.name, "precision": self.precision, "device": self.device}


def baseline_engine(key: str, bundle) -> Engine:
    """The (inactive) engine of baseline ``key`` (``a``, ``b`` or ``c``)."""
    _label, backend, precision = BASELINES[key]
    if backend == "onnxruntime":
        from lumbar_edge.backends.ort import OrtEngine

        layout = bundle.layout
        # What a user writes: the FP32 model in a session with ONNX Runtime's defaults (all graph
        # optimisations, spinning threads; intra-op threads = physical cores, as OrtEngine sets).
        return OrtEngine(bundle.model_path("fp32"), precision="fp32", num_keypoints=layout.num_keypoints,
                         num_conditions=layout.num_conditions, ort_defaults=True)
    return EagerTorchEngine(bundle, precision)


def baseline_unavailable(key: str, bundle) -> Optional[str]:
    """Why baseline ``key`` cannot run here, or None."""
    _label, backend, precision = BASELINES[key]
    if backend == "onnxruntime":
        return None if "fp32" in bundle.precisions else "the bundle has no FP32 ONNX model"
    if bundle.weights_path is None:
        return "the bundle has no model.pt (FP32 weights)"
    return EagerTorchEngine.unavailable_reason_for(precision)


__all__ = ["BASELINES", "EagerTorchEngine", "LoadedSeries", "baseline_engine", "baseline_unavailable",
           "naive_load_study"]
