"""``lumbar-edge export``: checkpoint -> checked ONNX models (FP32 + FP16/INT8) -> bundle folder.

:func:`export_bundle` runs every step and writes the bundle atomically: FP32 export with the
PyTorch parity check, FP16 conversion, INT8 calibration and the Q/DQ check, the comparison of each
reduced precision against FP32 (output deltas on the parity inputs, and the competition score and
localisation on a validation folder when one is given), then the manifest.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import onnx

from lumbar_edge.bundle import MODEL_FILES, PRECISIONS, Bundle

from .errors import ExportError
from .onnx_export import DEFAULT_OPSET, FP32_TOLERANCES, export_checkpoint, opset_of, ort_outputs, synthetic_batch

log = logging.getLogger("lumbar_edge.export")

#: The FP32 state dict's file name in a bundle (for the torch backend).
WEIGHTS_FILE = "model.pt"
#: Parity inputs taken from validation or calibration data (enough to exercise every head).
PARITY_SLICES = 8


@dataclass
class ExportSummary:
    """What :func:`export_bundle` wrote and measured."""

    bundle: Bundle
    parity: dict
    models: List[dict] = field(default_factory=list)
    validation: Dict[str, dict] = field(default_factory=dict)

    def describe(self) -> str:
        """Lines for the CLI: files written, parity, and the accuracy of each precision vs FP32."""
        lines = [f"bundle {self.bundle.root} ({self.bundle.name})"]
        for entry in self.models:
            line = f"  {entry['precision']}: {entry['file']} (opset {entry['opset']})"
            if entry["precision"] == "fp32":
                p = entry["parity"]
                src = "synthetic inputs" if p["synthetic_inputs"] else "preprocessed slices"
                line += f"; parity vs PyTorch on {p['num_inputs']} {src}: " + ", ".join(
                    f"{k} {v:.2e}" for k, v in p["max_abs"].items())
            else:
                acc = entry.get("accuracy_vs_fp32", {})
                out = acc.get("outputs", {})
                if out:
                    line += "; vs FP32 max|diff| " + ", ".join(f"{k} {v:.3g}" for k, v in out["max_abs"].items())
                    line += f", peak agreement {out['peak_agreement']:.1%}"
                deltas = acc.get("deltas")
                if deltas:
                    line += "; validation deltas " + ", ".join(f"{k} {v:+.4f}" for k, v in deltas.items())
                ov = acc.get("openvino")
                if ov:
                    line += f"; on OpenVINO {ov['version']}: peak agreement {ov['outputs']['peak_agreement']:.1%}"
                    if ov.get("deltas"):
                        line += ", validation deltas " + ", ".join(f"{k} {v:+.4f}" for k, v in ov["deltas"].items())
                if entry.get("calibration"):
                    cal = entry["calibration"]
                    line += f"; calibrated ({cal['method']}) on {cal['num_slices']} slices"
                if entry.get("qdq_check"):
                    q = entry["qdq_check"]
                    line += (f"; Q/DQ check {'ok' if q['ok'] else 'FAILED'} ({q['weights_per_channel']} per-channel "
                             f"weights, {q['activations_per_tensor']} per-tensor activations)")
            lines.append(line)
        for precision, metrics in self.validation.items():
            figures = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("score", "loc_px_median", "severity_acc") if k in metrics)
            lines.append(f"  validation {precision}: {figures}")
        return "\n".join(lines)


def _training_labels(paths: Sequence[Optional[Union[str, Path]]]):
    """The per-study labels of the first readable RSNA folder's train.csv, with its path (or
    None, None): the class priors of the bundle and of the validation's prior baseline."""
    from lumbar_edge.errors import InputError
    from lumbar_edge.training.data import RsnaDataset

    for path in paths:
        if path and (Path(path) / "train.csv").is_file():
            try:
                dataset = RsnaDataset.load(Path(path))
            except InputError as exc:
                log.warning("class priors: %s is not usable (%s)", path, exc)
                continue
            return list(dataset.labels.values()), str(path)
    return None, None


def export_bundle(checkpoint: Union[str, Path], out: Union[str, Path], precisions: Sequence[str] = ("fp32",), *,
                  calib: Optional[Union[str, Path]] = None, calib_inputs: Optional[np.ndarray] = None,
                  calib_slices: int = 256, calib_method: str = "minmax", val: Optional[Union[str, Path]] = None,
                  parity_inputs: Optional[np.ndarray] = None, opset: int = DEFAULT_OPSET, name: Optional[str] = None,
                  overwrite: bool = False, progress: bool = True) -> ExportSummary:
    """Export ``checkpoint`` to the bundle folder ``out`` with the given precisions (FP32 always).

    ``calib`` (an RSNA-layout folder) or ``calib_inputs`` (preprocessed [N, C, H, W]) is needed
    for INT8; ``calib_slices`` caps the slices used. ``val`` (an RSNA-layout folder) adds the
    validation score/localisation of every precision and its delta against FP32. Parity inputs
    are ``parity_inputs``, else the first validation or calibration slices, else synthetic.

    Raises :class:`ExportError` for an unknown precision, INT8 without calibration data, an
    existing bundle without ``overwrite``, and any failed check (parity, checker, Q/DQ);
    :class:`~lumbar_edge.errors.InputError` for an unreadable checkpoint or dataset folder.
    """
    from lumbar_edge.training.data import RsnaDataset, build_samples

    from .accuracy import accuracy_deltas, evaluate_onnx, openvino_outputs, openvino_version, output_deltas
    from .bundle_writer import build_manifest, write_bundle
    from .fp16 import convert_to_fp16
    from .int8 import calibration_inputs_from_folder, check_qdq, quantize_int8
    from .onnx_export import load_checkpoint_model

    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ExportError(f"unknown precision {', '.join(unknown)}; choose from {', '.join(PRECISIONS)}")
    wanted = [p for p in PRECISIONS if p == "fp32" or p in precisions]
    if "int8" in wanted and calib is None and calib_inputs is None:
        raise ExportError("INT8 needs calibration slices: pass --calib RSNA_DIR (a folder of the training data layout)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace the bundle")
    if calib_slices < 1:
        raise ExportError(f"--calib-slices must be at least 1, got {calib_slices}")

    from lumbar_edge.labels import HeadLayout
    from lumbar_edge.preprocess import PreprocessConfig

    _, state = load_checkpoint_model(checkpoint)
    pre = PreprocessConfig.from_dict(state["preprocess"])
    layout = HeadLayout.from_dict(state["layout"])
    groups = layout.keypoint_groups()
    name = name or (Path(checkpoint).resolve().parent.name if Path(checkpoint).parent.name else out.name)

    train_cfg = dict(state.get("train_config") or {})
    # Priors come from the training labels (the validation folder only when nothing else is
    # readable): priors taken from the validation labels themselves would flatter the baseline.
    train_labels, priors_source = _training_labels([train_cfg.get("data"), calib, val])
    val_samples, val_dataset = None, None
    if val is not None:
        val_dataset = RsnaDataset.load(Path(val))
        val_samples = build_samples(val_dataset, layout, pre, negatives=False, progress=progress)
    if "int8" in wanted and calib_inputs is None:
        calib_inputs = calibration_inputs_from_folder(calib, pre, layout, max_slices=calib_slices, progress=progress)
    if parity_inputs is None:
        if val_samples:
            parity_inputs = np.stack([s.image for s in val_samples[:PARITY_SLICES]])
        elif calib_inputs is not None:
            parity_inputs = np.asarray(calib_inputs[:PARITY_SLICES], dtype=np.float32)

    models: List[dict] = []
    validation: Dict[str, dict] = {}
    files: Dict[str, Path] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.work-", dir=out.parent) as work_dir:
        work = Path(work_dir)
        fp32_path = work / MODEL_FILES["fp32"]
        exported = export_checkpoint(checkpoint, fp32_path, opset=opset, inputs=parity_inputs,
                                     tolerances=FP32_TOLERANCES, model_name=name)
        compare_inputs = (parity_inputs if parity_inputs is not None
                          else synthetic_batch(pre.in_channels, pre.height, pre.width, n=2))
        files[MODEL_FILES["fp32"]] = fp32_path
        models.append({"precision": "fp32", "file": MODEL_FILES["fp32"], "opset": opset,
                       "parity": exported.parity.to_dict()})
        # The FP32 reference on the comparison inputs (ONNX Runtime), run once: every reduced
        # precision and, where OpenVINO is installed, every model run there is compared with it.
        reference = ort_outputs(fp32_path, compare_inputs)
        ov_version = openvino_version()
        if ov_version is not None:
            ov_fp32 = openvino_outputs(fp32_path, "fp32", compare_inputs)
            if ov_fp32 is not None:
                models[0]["openvino"] = {"version": ov_version,
                                         "outputs_vs_onnxruntime": output_deltas(reference, ov_fp32, groups=groups,
                                                                                 stride=4)}
        if val_samples:
            validation["fp32"] = evaluate_onnx(fp32_path, val_samples, val_dataset, layout, progress=progress,
                                               train_labels=train_labels, label="validating fp32")

        for precision in wanted[1:]:
            path = work / MODEL_FILES[precision]
            entry: Dict[str, object] = {"precision": precision, "file": MODEL_FILES[precision]}
            if precision == "fp16":
                report = convert_to_fp16(fp32_path, path)
                entry["conversion"] = report.to_dict()
                entry["io_dtype"] = "float32"
            else:
                report = quantize_int8(fp32_path, path, calib_inputs, method=calib_method, max_slices=calib_slices,
                                       source=str(calib) if calib is not None else "arrays", progress=progress)
                qdq = check_qdq(path)
                if not qdq.ok:
                    raise ExportError(f"the INT8 model breaks TensorRT's Q/DQ rules: {qdq.problems[0]}")
                entry["calibration"] = report.to_dict()
                entry["qdq_check"] = qdq.to_dict()
            entry["opset"] = opset_of(onnx.load(str(path), load_external_data=False))
            accuracy: Dict[str, object] = {"outputs": output_deltas(reference, ort_outputs(path, compare_inputs),
                                                                     groups=groups, stride=4),
                                           "outputs_on": ("synthetic inputs" if exported.parity.synthetic_inputs
                                                          else "preprocessed slices")}
            if val_samples:
                metrics = evaluate_onnx(path, val_samples, val_dataset, layout, train_labels, progress=progress,
                                        label=f"validating {precision}")
                validation[precision] = metrics
                accuracy["validation"] = metrics
                accuracy["deltas"] = accuracy_deltas(validation["fp32"], metrics)
                accuracy["validation_source"] = str(val)
                accuracy["validation_slices"] = len(val_samples)
            ov_out = openvino_outputs(path, precision, compare_inputs) if ov_version is not None else None
            if ov_out is not None:
                from lumbar_edge.backends.openvino import cpu_isa

                ov: Dict[str, object] = {"version": ov_version, "measured_on": {"isa": cpu_isa()},
                                         "outputs": output_deltas(reference, ov_out, groups=groups, stride=4)}
                if val_samples:
                    ov["validation"] = evaluate_onnx(path, val_samples, val_dataset, layout, train_labels,
                                                     progress=progress, label=f"validating {precision} (openvino)",
                                                     runtime="openvino", precision=precision)
                    ov["deltas"] = accuracy_deltas(validation["fp32"], ov["validation"])
                accuracy["openvino"] = ov
            entry["accuracy_vs_fp32"] = accuracy
            files[MODEL_FILES[precision]] = path
            models.append(entry)
        if val_samples:
            models[0]["validation"] = validation["fp32"]

        priors = None
        if train_labels is not None:
            from lumbar_edge.training.evaluation import class_priors

            priors = {k: [float(x) for x in v] for k, v in class_priors(train_labels).items()}
        training = {"checkpoint": str(checkpoint), "epoch": state.get("epoch"), "best_score": state.get("best_score"),
                    "metrics": state.get("metrics", {}), "train_config": train_cfg}
        if priors_source:
            training["class_priors_source"] = priors_source
        # The FP32 weights alone (a state dict, loadable with weights_only=True) for the torch backend.
        import torch

        weights_path = work / WEIGHTS_FILE
        torch.save(state["model"], weights_path)
        files[WEIGHTS_FILE] = weights_path
        manifest = build_manifest(name, pre, layout, state["model_config"], models, training=training,
                                  class_priors=priors, weights={"file": WEIGHTS_FILE})
        bundle = write_bundle(out, manifest, files, overwrite=overwrite)
    return ExportSummary(bundle=bundle, parity=exported.parity.to_dict(), models=bundle.manifest["models"],
                         validation=validation)


__all__ = ["export_bundle", "ExportSummary"]
