"""The model bundle: a folder with ``manifest.json``, ``model.onnx`` and its reduced-precision and
TensorRT variants; loading verifies it.

Light runtime only (json, hashlib and the numpy-based preprocessing config): importing this module
never imports torch or onnx. The writer lives in ``lumbar_edge.export.bundle_writer``.

Manifest (``format: "lumbar-edge-bundle"``, ``format_version: 1``)::

    name, created (UTC ISO 8601), lumbar_edge_version, clinical_use
    input   {name, channels, height, width, dtype, dynamic_batch, batch_axis}
    outputs [{name, channels, stride}], stride
    preprocess   PreprocessConfig.to_dict()
    layout       HeadLayout.to_dict()
    labels       {conditions, levels, severities}
    model_config, training {epoch, metrics, ...}, class_priors {condition: [3 floats]} (optional)
    models  [{precision, file, sha256, opset, parity?, calibration?, accuracy_vs_fp32?, ...}]
    engines [{file, sha256, precision, tensorrt_version, gpu_name, compute_capability,
              version_compatible, max_batch, ...}]
    weights {file: "model.pt", sha256, format: "torch-state-dict"} (optional: the FP32 weights, for the
            torch backend, which rebuilds the network from ``model_config``)

:meth:`Bundle.load` checks that the manifest exists and parses, that the format and version are
supported, and that every listed file (models and engines) exists with its recorded sha256.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List, Mapping, Tuple, Union

from .errors import LumbarEdgeError
from .labels import HeadLayout
from .preprocess import PreprocessConfig

FORMAT = "lumbar-edge-bundle"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8")
#: The file name of each precision's ONNX model inside a bundle.
MODEL_FILES: Mapping[str, str] = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
CLINICAL_USE = ("Research software. Trained on synthetic or research data; not a medical device and "
                "not for clinical use or diagnosis.")
_CHUNK = 1 << 20


class BundleError(LumbarEdgeError):
    """A bundle is missing, incomplete, tampered with, or of an unsupported format."""


def sha256_file(path: Union[str, Path]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_file(root: Path, name: object, what: str) -> Path:
    """A manifest file name as a path inside ``root``; refuses absolute paths and ``..``."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise BundleError(f"bundle {root}: {what} has an invalid file name {name!r}")
    return root / name


class Bundle:
    """A verified bundle. Use :meth:`load`; the constructor does not verify anything."""

    def __init__(self, root: Path, manifest: dict):
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def load(cls, path: Union[str, Path], verify_hashes: bool = True) -> "Bundle":
        """Open and verify the bundle folder ``path``.

        Raises :class:`BundleError` (one line naming the file and the problem) when the folder or
        manifest is missing, the manifest is not JSON or lacks required fields, its format or
        version is unsupported, or a listed file is missing or its sha256 differs.
        """
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"no bundle folder at {root}")
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"bundle {root}: {MANIFEST} is missing")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"bundle {root}: {MANIFEST} cannot be parsed ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError(f"bundle {root}: {MANIFEST} is not a {FORMAT} manifest")
        version = manifest.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise BundleError(f"bundle {root}: unknown format version {version!r} (this lumbar-edge reads "
                              f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); upgrade lumbar-edge or re-export")
        for key in ("input", "preprocess", "layout", "models"):
            if key not in manifest:
                raise BundleError(f"bundle {root}: {MANIFEST} lacks {key!r}")
        if not isinstance(manifest["models"], list) or not manifest["models"]:
            raise BundleError(f"bundle {root}: {MANIFEST} lists no model files")
        bundle = cls(root, manifest)
        for entry in bundle.files():
            file = _safe_file(root, entry.get("file"), "an entry")
            if not file.is_file():
                raise BundleError(f"bundle {root}: {entry.get('file')} is missing")
            if verify_hashes:
                expected = entry.get("sha256")
                actual = sha256_file(file)
                if actual != expected:
                    raise BundleError(f"bundle {root}: {entry.get('file')} hash mismatch (sha256 {actual[:12]}..., "
                                      f"manifest says {str(expected)[:12]}...); the file was changed or corrupted")
        try:
            bundle.preprocess
            bundle.layout
        except LumbarEdgeError as exc:
            raise BundleError(f"bundle {root}: {exc}") from exc
        return bundle

    def files(self) -> List[dict]:
        """Every file entry of the manifest: models, engines, then the weights (if any)."""
        entries = list(self.manifest.get("models", [])) + list(self.manifest.get("engines", []))
        if self.manifest.get("weights") is not None:
            entries.append(self.manifest["weights"])
        for entry in entries:
            if not isinstance(entry, dict):
                raise BundleError(f"bundle {self.root}: a file entry is not an object: {entry!r}")
        return entries

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.root.name)

    @property
    def format_version(self) -> int:
        return int(self.manifest["format_version"])

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.manifest["preprocess"])

    @property
    def layout(self) -> HeadLayout:
        return HeadLayout.from_dict(self.manifest["layout"])

    @property
    def input_name(self) -> str:
        return str(self.manifest["input"].get("name", "image"))

    @property
    def input_size(self) -> Tuple[int, int]:
        """(height, width) of the model input in pixels."""
        return int(self.manifest["input"]["height"]), int(self.manifest["input"]["width"])

    @property
    def in_channels(self) -> int:
        return int(self.manifest["input"]["channels"])

    @property
    def stride(self) -> int:
        return int(self.manifest.get("stride", 4))

    @property
    def precisions(self) -> List[str]:
        """The precisions with an ONNX model in this bundle, in manifest order."""
        return [str(m.get("precision")) for m in self.manifest["models"]]

    def model_entry(self, precision: str = "fp32") -> dict:
        """The manifest entry of the ``precision`` ONNX model; :class:`BundleError` if absent."""
        for entry in self.manifest["models"]:
            if entry.get("precision") == precision:
                return entry
        raise BundleError(f"bundle {self.name} has no {precision} model; it has {', '.join(self.precisions)}")

    def model_path(self, precision: str = "fp32") -> Path:
        """Path of the ``precision`` ONNX model; :class:`BundleError` listing the available ones if absent."""
        return _safe_file(self.root, self.model_entry(precision).get("file"), f"the {precision} model")

    @property
    def engines(self) -> List[dict]:
        """TensorRT engine entries (each with file, precision, tensorrt_version, compute_capability...)."""
        return list(self.manifest.get("engines", []))

    @property
    def weights_path(self) -> "Path | None":
        """The FP32 PyTorch state dict (``model.pt``) when the bundle has one, else ``None``."""
        entry = self.manifest.get("weights")
        return None if entry is None else _safe_file(self.root, entry.get("file"), "the weights")

    def engine_path(self, entry: Mapping[str, object]) -> Path:
        return _safe_file(self.root, entry.get("file"), "an engine")

    def describe(self) -> str:
        """A few lines for the CLI: name, input, precisions and their accuracy deltas."""
        h, w = self.input_size
        lines = [f"{self.name}: input {self.input_name} [batch, {self.in_channels}, {h}, {w}], "
                 f"views {', '.join(self.layout.views)}"]
        for entry in self.manifest["models"]:
            delta = entry.get("accuracy_vs_fp32") or {}
            extra = ", ".join(f"{k} {v:+.4g}" for k, v in (delta.get("deltas") or {}).items()
                              if isinstance(v, (int, float)))
            lines.append(f"  {entry.get('precision')}: {entry.get('file')}" + (f" ({extra})" if extra else ""))
        for entry in self.engines:
            lines.append(f"  engine {entry.get('precision')}: {entry.get('file')} (TensorRT "
                         f"{entry.get('tensorrt_version')}, sm {entry.get('compute_capability')})")
        return "\n".join(lines)


def load_manifest(path: Union[str, Path]) -> dict:
    """The parsed manifest of a bundle folder, verified like :meth:`Bundle.load`."""
    return Bundle.load(path).manifest


__all__ = ["Bundle", "BundleError", "FORMAT", "FORMAT_VERSION", "MANIFEST", "MODEL_FILES", "PRECISIONS",
           "CLINICAL_USE", "sha256_file", "load_manifest"]
