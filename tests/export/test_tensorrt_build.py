"""The TensorRT builder: its pure-Python parts everywhere (typing plan per version, engine file
names, the atomic manifest update), and a real build where ``tensorrt`` imports and a GPU is present."""
import json

import pytest

from lumbar_edge.bundle import Bundle, BundleError
from lumbar_edge.export.errors import ExportError
from lumbar_edge.export.tensorrt_build import (NO_BUILDER, builder_missing_reason, engine_file_name,
                                               network_flags_for, version_tuple)
from lumbar_edge.labels import HeadLayout
from lumbar_edge.preprocess import PreprocessConfig

export = pytest.importorskip("lumbar_edge.export.bundle_writer", reason="needs the export extra (onnx)")


def test_strong_typing_on_11_and_recent_10_builder_flags_on_jetpack_10_3():
    for version in ("11.4.0.106", "11.0.0", "10.12.0.36", "10.13.3"):
        for precision in ("fp32", "fp16", "int8"):
            plan = network_flags_for(version, precision)
            assert plan.strongly_typed and plan.builder_flags == ()
    assert network_flags_for("10.3.0.30", "fp16").builder_flags == ("FP16",)
    assert network_flags_for("10.3.0.30", "int8").builder_flags == ("INT8", "FP16")
    assert network_flags_for("10.3.0.30", "fp32").builder_flags == ()
    assert not network_flags_for("10.11.0", "fp16").strongly_typed
    with pytest.raises(ExportError, match="too old"):
        network_flags_for("8.6.1", "fp16")
    with pytest.raises(ExportError, match="unknown precision"):
        network_flags_for("11.0.0", "bf16")


def test_engine_file_names():
    assert engine_file_name("fp16", "8.7", "10.3.0.30") == "model.fp16.sm87.trt10.engine"
    assert engine_file_name("int8", "9.0", "11.4.0.106") == "model.int8.sm90.trt11.engine"
    assert version_tuple("10.3.0.30") == (10, 3, 0, 30) and version_tuple("11.4.0.post1") == (11, 4, 0)
    with pytest.raises(ExportError):
        engine_file_name("fp16", "sm_87", "10.3")


@pytest.fixture
def bundle_dir(tmp_path):
    src = tmp_path / "a.onnx"
    src.write_bytes(b"fp32 model bytes")
    manifest = export.build_manifest("tiny", PreprocessConfig(height=64, width=64), HeadLayout(views=("sagittal_t2",)),
                                     {"width": 8}, [{"precision": "fp32", "file": "model.onnx", "opset": 17}])
    export.write_bundle(tmp_path / "bundle", manifest, {"model.onnx": src})
    return tmp_path / "bundle"


def _entry(name="model.fp16.sm87.trt10.engine", **extra):
    return dict({"file": name, "precision": "fp16", "tensorrt_version": "10.3.0.30", "gpu_name": "Orin",
                 "compute_capability": "8.7", "version_compatible": False, "max_batch": 16}, **extra)


def test_add_engine_rewrites_the_manifest_and_replaces_by_name(bundle_dir, tmp_path):
    engine = tmp_path / "built.engine"
    engine.write_bytes(b"engine v1")
    written = export.add_engine(bundle_dir, _entry(), engine)
    bundle = Bundle.load(bundle_dir)
    assert [e["file"] for e in bundle.engines] == ["model.fp16.sm87.trt10.engine"]
    assert bundle.engines[0]["sha256"] == written["sha256"] and bundle.engines[0]["gpu_name"] == "Orin"
    engine.write_bytes(b"engine v2")
    export.add_engine(bundle_dir, _entry(max_batch=8), engine)
    export.add_engine(bundle_dir, _entry("model.int8.sm87.trt10.engine", precision="int8"), engine)
    bundle = Bundle.load(bundle_dir)
    assert [(e["file"], e["max_batch"]) for e in bundle.engines] == [("model.fp16.sm87.trt10.engine", 8),
                                                                     ("model.int8.sm87.trt10.engine", 16)]
    assert not list(bundle_dir.glob(".*.tmp"))
    assert "engine fp16" in bundle.describe()


def test_add_engine_refuses_bad_names_and_missing_files(bundle_dir, tmp_path):
    before = (bundle_dir / "manifest.json").read_text()
    with pytest.raises(ExportError, match="plain"):
        export.add_engine(bundle_dir, _entry("../x.engine"), tmp_path / "none")
    with pytest.raises(ExportError, match="does not exist"):
        export.add_engine(bundle_dir, _entry(), tmp_path / "none")
    assert (bundle_dir / "manifest.json").read_text() == before


def test_a_tampered_engine_is_caught_on_load(bundle_dir, tmp_path):
    engine = tmp_path / "built.engine"
    engine.write_bytes(b"engine")
    export.add_engine(bundle_dir, _entry(), engine)
    (bundle_dir / "model.fp16.sm87.trt10.engine").write_bytes(b"changed")
    with pytest.raises(BundleError, match="hash mismatch"):
        Bundle.load(bundle_dir)
    assert json.loads((bundle_dir / "manifest.json").read_text())["engines"]


def test_without_a_builder_the_reason_says_so():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert builder_missing_reason() == NO_BUILDER
        assert "full TensorRT" in NO_BUILDER
    else:
        pytest.skip("tensorrt imports here")


@pytest.mark.gpu
def test_build_and_run_an_engine(bundle_dir, fp32_onnx, tmp_path):
    pytest.importorskip("tensorrt", reason="the TensorRT builder (tensorrt) is not installed")
    import shutil

    from lumbar_edge.export.tensorrt_build import build_engine

    # A real model in a real bundle: replace the fixture's placeholder ONNX.
    src = tmp_path / "real.onnx"
    shutil.copyfile(fp32_onnx, src)
    manifest = export.build_manifest("tiny", PreprocessConfig(height=64, width=64, in_channels=3),
                                     HeadLayout(views=("sagittal_t2",)), {"width": 8},
                                     [{"precision": "fp32", "file": "model.onnx", "opset": 17}])
    export.write_bundle(tmp_path / "real", manifest, {"model.onnx": src})
    entry = build_engine(tmp_path / "real", "fp32", max_batch=4, progress=False)
    assert (tmp_path / "timing.cache").is_file()
    assert Bundle.load(tmp_path / "real").engines[0]["file"] == entry["file"]


def test_export_engine_flag_without_a_builder_is_refused_before_any_work(tiny_checkpoint, tmp_path, capsys):
    if builder_missing_reason() is None:
        pytest.skip("a TensorRT builder and GPU are present here")
    from lumbar_edge.cli import main

    rc = main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--engine", "-q"])
    assert rc == 2 and "full TensorRT" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_export_without_a_builder_writes_the_onnx_and_says_so(tiny_checkpoint, tmp_path, capsys):
    if builder_missing_reason() is None:
        pytest.skip("a TensorRT builder and GPU are present here")
    from lumbar_edge.cli import main

    rc = main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "-q"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "no TensorRT engines: building TensorRT engines needs the full TensorRT" in text
    assert Bundle.load(tmp_path / "b").engines == []
