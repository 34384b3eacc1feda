"""Write a model bundle folder atomically (see :mod:`lumbar_edge.bundle` for the format).

The bundle is assembled in a temporary folder next to the target, verified by loading it with
:meth:`lumbar_edge.bundle.Bundle.load`, and renamed into place, so a reader never sees a
half-written bundle and a failure leaves the previous bundle (or nothing) behind.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Union

from lumbar_edge import __version__
from lumbar_edge.bundle import CLINICAL_USE, FORMAT, FORMAT_VERSION, MANIFEST, Bundle, BundleError, sha256_file
from lumbar_edge.labels import CONDITIONS, LEVELS, SEVERITIES, HeadLayout
from lumbar_edge.preprocess import PreprocessConfig

from .errors import ExportError


def build_manifest(name: str, preprocess: PreprocessConfig, layout: HeadLayout, model_config: Mapping[str, object],
                   models: Iterable[Mapping[str, object]], *, training: Optional[Mapping[str, object]] = None,
                   class_priors: Optional[Mapping[str, Iterable[float]]] = None, stride: int = 4,
                   engines: Iterable[Mapping[str, object]] = (), clinical_use: str = CLINICAL_USE,
                   weights: Optional[Mapping[str, object]] = None) -> dict:
    """The manifest dict of a bundle (without sha256s: :func:`write_bundle` fills those in).

    ``models``: entries with at least ``precision`` and ``file`` (plus opset, parity, calibration,
    accuracy_vs_fp32...). ``weights``: the entry of the FP32 state dict (``{"file": "model.pt"}``)
    for the torch backend. Channel counts of the outputs come from ``layout``.
    """
    k, c = layout.num_keypoints, layout.num_conditions
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "lumbar_edge_version": __version__,
        "clinical_use": clinical_use,
        "input": {"name": "image", "channels": preprocess.in_channels, "height": preprocess.height,
                  "width": preprocess.width, "dtype": "float32", "dynamic_batch": True, "batch_axis": "batch"},
        "outputs": [{"name": "heatmap", "channels": k, "stride": stride, "dtype": "float32"},
                    {"name": "offset", "channels": 2 * k, "stride": stride, "dtype": "float32"},
                    {"name": "severity", "channels": 3 * c, "stride": stride, "dtype": "float32"}],
        "stride": stride,
        "preprocess": preprocess.to_dict(),
        "layout": layout.to_dict(),
        "labels": {"conditions": list(CONDITIONS), "levels": list(LEVELS), "severities": list(SEVERITIES)},
        "model_config": dict(model_config),
        "training": dict(training or {}),
        "models": [dict(m) for m in models],
        "engines": [dict(e) for e in engines],
    }
    if weights is not None:
        manifest["weights"] = dict({"format": "torch-state-dict", "precision": "fp32"}, **weights)
    if class_priors:
        manifest["class_priors"] = {cond: [float(v) for v in probs] for cond, probs in class_priors.items()}
    return manifest


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} already holds files; pass overwrite=True (--overwrite) to replace the bundle")


def write_bundle(out: Union[str, Path], manifest: Mapping[str, object], files: Mapping[str, Union[str, Path]],
                 overwrite: bool = False) -> Bundle:
    """Write ``manifest`` and ``files`` (bundle file name -> source path) as the bundle ``out``.

    Every manifest model/engine entry must name a file in ``files``; its ``sha256`` is computed
    from the copy. Atomic: built in a temporary folder beside ``out``, verified, then renamed into
    place (an old bundle is replaced only when ``overwrite``). Returns the loaded bundle. Raises
    :class:`ExportError` when ``out`` holds files and ``overwrite`` is false, a source is missing
    or an entry names no given file; nothing is left behind on failure.
    """
    out = Path(out)
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = dict(manifest)
    entries: List[Dict[str, object]] = [dict(e) for e in data.get("models", [])]
    engines: List[Dict[str, object]] = [dict(e) for e in data.get("engines", [])]
    weights: List[Dict[str, object]] = [dict(data["weights"])] if data.get("weights") is not None else []
    named = {str(e.get("file")) for e in entries + engines + weights}
    missing = sorted(named - set(files))
    if missing:
        raise ExportError(f"bundle manifest lists {', '.join(missing)} but no such file was given")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, src in files.items():
            src = Path(src)
            if not src.is_file():
                raise ExportError(f"cannot add {name} to the bundle: {src} does not exist")
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ExportError(f"bundle file name {name!r} must be relative and inside the bundle")
            shutil.copyfile(src, staging / name)
        for entry in entries + engines + weights:
            entry["sha256"] = sha256_file(staging / str(entry["file"]))
        data["models"], data["engines"] = entries, engines
        if weights:
            data["weights"] = weights[0]
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        (staging / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        try:
            Bundle.load(staging)
        except BundleError as exc:
            raise ExportError(f"the written bundle does not verify: {exc}") from exc
        _check_target(out, overwrite)  # again: something may have appeared while we worked
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "bundle")
        try:
            os.replace(staging, out)
        except OSError:
            if old is not None:
                os.replace(old / "bundle", out)  # put the previous bundle back
            raise
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle.load(out)


def add_engine(bundle_path: Union[str, Path], entry: Mapping[str, object], engine_file: Union[str, Path]) -> dict:
    """Add (or replace, by file name) a TensorRT engine in an existing bundle.

    ``entry`` is the engine's manifest entry (``file``, ``precision``, ``tensorrt_version``,
    ``gpu_name``, ``compute_capability``, ``version_compatible``, ``max_batch``...); ``sha256`` is
    computed here. The engine is copied in under a temporary name and renamed, then the manifest is
    rewritten to a temporary file and renamed over the old one, and the bundle is verified; on a
    failed verification the previous manifest is put back. Returns the entry as written. Raises
    :class:`ExportError` for a bad file name, a missing engine file or a bundle that does not load.
    """
    root = Path(bundle_path)
    try:
        bundle = Bundle.load(root)
    except BundleError as exc:
        raise ExportError(f"cannot add an engine: {exc}") from exc
    name = str(entry.get("file", ""))
    if not name or Path(name).name != name or not name.endswith(".engine"):
        raise ExportError(f"engine file name {name!r} must be a plain *.engine name inside the bundle")
    src = Path(engine_file)
    if not src.is_file():
        raise ExportError(f"cannot add {name} to the bundle: {src} does not exist")
    written = dict(entry)
    tmp_engine = root / f".{name}.tmp"
    shutil.copyfile(src, tmp_engine)
    written["sha256"] = sha256_file(tmp_engine)
    os.replace(tmp_engine, root / name)
    manifest = dict(bundle.manifest)
    manifest["engines"] = [e for e in bundle.engines if e.get("file") != name] + [written]
    manifest_path = root / MANIFEST
    old_text = manifest_path.read_text(encoding="utf-8")
    tmp_manifest = root / f".{MANIFEST}.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp_manifest, manifest_path)
    try:
        Bundle.load(root)
    except BundleError as exc:
        tmp_manifest.write_text(old_text, encoding="utf-8")
        os.replace(tmp_manifest, manifest_path)
        raise ExportError(f"the bundle does not verify after adding {name}: {exc}") from exc
    return written


__all__ = ["add_engine", "build_manifest", "write_bundle"]
