"""Bundle format: write/load round trip, verification failures, atomic writes, light imports."""
import json
import subprocess
import sys

import pytest

from lumbar_edge.bundle import FORMAT, FORMAT_VERSION, Bundle, BundleError, sha256_file
from lumbar_edge.labels import HeadLayout
from lumbar_edge.preprocess import PreprocessConfig

export = pytest.importorskip("lumbar_edge.export.bundle_writer", reason="needs the export extra (onnx)")
from lumbar_edge.export.errors import ExportError  # noqa: E402


@pytest.fixture
def sources(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.onnx").write_bytes(b"fp32 model bytes")
    (src / "b.onnx").write_bytes(b"fp16 model bytes")
    return src


def _manifest(precisions=("fp32", "fp16")):
    files = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
    models = [{"precision": p, "file": files[p], "opset": 17} for p in precisions]
    return export.build_manifest("tiny", PreprocessConfig(height=64, width=64), HeadLayout(views=("sagittal_t2",)),
                                 {"width": 8}, models, training={"epoch": 3}, class_priors={"spinal_canal_stenosis": [0.7, 0.2, 0.1]})


def _write(out, sources, **kw):
    return export.write_bundle(out, _manifest(), {"model.onnx": sources / "a.onnx",
                                                  "model.fp16.onnx": sources / "b.onnx"}, **kw)


def test_round_trip(tmp_path, sources):
    written = _write(tmp_path / "bundle", sources)
    bundle = Bundle.load(tmp_path / "bundle")
    assert bundle.manifest == written.manifest
    m = bundle.manifest
    assert m["format"] == FORMAT and m["format_version"] == FORMAT_VERSION and m["engines"] == []
    assert "not for clinical use" in m["clinical_use"]
    assert bundle.name == "tiny" and bundle.input_size == (64, 64) and bundle.in_channels == 3
    assert bundle.preprocess == PreprocessConfig(height=64, width=64)
    assert bundle.layout.views == ("sagittal_t2",)
    assert bundle.precisions == ["fp32", "fp16"]
    assert bundle.model_path("fp16").read_bytes() == b"fp16 model bytes"
    assert m["models"][0]["sha256"] == sha256_file(sources / "a.onnx")
    assert m["outputs"][1] == {"name": "offset", "channels": 10, "stride": 4, "dtype": "float32"}
    assert m["labels"]["severities"] == ["Normal/Mild", "Moderate", "Severe"]
    with pytest.raises(BundleError, match="no int8 model; it has fp32, fp16"):
        bundle.model_path("int8")
    assert "fp16: model.fp16.onnx" in bundle.describe()
    # No temporary folders are left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "src"]


def test_tampered_file(tmp_path, sources):
    _write(tmp_path / "b", sources)
    (tmp_path / "b" / "model.fp16.onnx").write_bytes(b"something else")
    with pytest.raises(BundleError, match=r"model\.fp16\.onnx hash mismatch"):
        Bundle.load(tmp_path / "b")


def test_missing_file(tmp_path, sources):
    _write(tmp_path / "b", sources)
    (tmp_path / "b" / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx is missing"):
        Bundle.load(tmp_path / "b")


def test_bad_manifest(tmp_path, sources):
    _write(tmp_path / "b", sources)
    path = tmp_path / "b" / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(BundleError, match="unknown format version 99"):
        Bundle.load(tmp_path / "b")
    path.write_text("{not json")
    with pytest.raises(BundleError, match="cannot be parsed"):
        Bundle.load(tmp_path / "b")
    path.write_text(json.dumps({**data, "models": [{"precision": "fp32", "file": "../x.onnx", "sha256": ""}]}))
    with pytest.raises(BundleError, match="invalid file name"):
        Bundle.load(tmp_path / "b")
    path.unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Bundle.load(tmp_path / "b")
    with pytest.raises(BundleError, match="no bundle folder"):
        Bundle.load(tmp_path / "nowhere")


def test_refuses_overwrite_and_replaces_with_flag(tmp_path, sources):
    _write(tmp_path / "b", sources)
    with pytest.raises(ExportError, match="overwrite"):
        _write(tmp_path / "b", sources)
    (sources / "a.onnx").write_bytes(b"new fp32")
    _write(tmp_path / "b", sources, overwrite=True)
    assert Bundle.load(tmp_path / "b").model_path().read_bytes() == b"new fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "src"]
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty", sources)  # an empty folder is not a bundle to protect


def test_failure_midway_leaves_nothing(tmp_path, sources):
    # The second file is missing: the copy of the first has happened when the write fails.
    files = {"model.onnx": sources / "a.onnx", "model.fp16.onnx": sources / "gone.onnx"}
    with pytest.raises(ExportError, match="gone.onnx"):
        export.write_bundle(tmp_path / "b", _manifest(), files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    # ... and an existing bundle survives a failed overwrite untouched.
    _write(tmp_path / "b", sources)
    before = (tmp_path / "b" / "manifest.json").read_text()
    with pytest.raises(ExportError):
        export.write_bundle(tmp_path / "b", _manifest(), files, overwrite=True)
    assert (tmp_path / "b" / "manifest.json").read_text() == before
    Bundle.load(tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "src"]


def test_manifest_entry_without_file(tmp_path, sources):
    with pytest.raises(ExportError, match="model.fp16.onnx"):
        export.write_bundle(tmp_path / "b", _manifest(), {"model.onnx": sources / "a.onnx"})


def test_bundle_import_is_light():
    code = ("import sys, lumbar_edge.bundle; heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
