"""End to end: export_bundle and `lumbar-edge export` on a tiny checkpoint."""
import importlib.util

import numpy as np
import pytest

from lumbar_edge.bundle import Bundle
from lumbar_edge.cli import main
from lumbar_edge.export.build import export_bundle
from lumbar_edge.export.errors import ExportError
from lumbar_edge.export.onnx_export import ort_outputs


def test_cli_fp32_fp16(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "bundle"
    rc = main(["export", "--checkpoint", str(tiny_checkpoint), "--precision", "fp16", "--out", str(out),
               "--name", "tiny", "-q"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "parity vs PyTorch on 2 synthetic inputs" in text and "fp16: model.fp16.onnx" in text
    bundle = Bundle.load(out)
    assert bundle.precisions == ["fp32", "fp16"] and bundle.name == "tiny"
    fp16 = bundle.model_entry("fp16")
    assert fp16["accuracy_vs_fp32"]["outputs"]["peak_agreement"] >= 0.9
    assert bundle.model_entry("fp32")["parity"]["synthetic_inputs"] is True
    assert bundle.manifest["training"]["epoch"] == 3
    outs = ort_outputs(bundle.model_path("fp16"), np.zeros((2, 3, 64, 64), np.float32))
    assert outs["severity"].shape == (2, 3, 16, 16)
    # The existing bundle is protected without --overwrite.
    rc = main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "-q"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert Bundle.load(out).precisions == ["fp32", "fp16"]


def test_cli_int8_needs_calib(tiny_checkpoint, tmp_path, capsys):
    rc = main(["export", "--checkpoint", str(tiny_checkpoint), "--precision", "int8", "--out", str(tmp_path / "b")])
    assert rc == 2 and "--calib" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_export_bundle_int8_with_arrays(tiny_checkpoint, calib, tmp_path):
    summary = export_bundle(tiny_checkpoint, tmp_path / "b", ["int8", "fp16"], calib_inputs=calib,
                            calib_method="minmax", progress=False)
    bundle = Bundle.load(tmp_path / "b")
    assert bundle.precisions == ["fp32", "fp16", "int8"]
    int8 = bundle.model_entry("int8")
    assert int8["calibration"]["method"] == "minmax" and int8["calibration"]["num_slices"] == len(calib)
    assert int8["qdq_check"]["ok"] and int8["opset"] >= 13
    assert "/heatmap_head/out/Conv" in int8["calibration"]["excluded_nodes"]
    # Parity used the calibration slices, not synthetic ones.
    assert bundle.model_entry("fp32")["parity"]["synthetic_inputs"] is False
    assert set(int8["accuracy_vs_fp32"]["outputs"]["max_abs"]) == {"heatmap", "offset", "severity"}
    assert "Q/DQ check ok" in summary.describe()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no work folders left
    if importlib.util.find_spec("openvino") is not None:
        # Where OpenVINO is installed, each model is run there too and compared with the same
        # FP32 reference; the record says on which CPU features (OpenVINO's kernels depend on them).
        from lumbar_edge.backends.openvino import cpu_isa

        ov = int8["accuracy_vs_fp32"]["openvino"]
        assert ov["measured_on"]["isa"] == cpu_isa() and ov["version"]
        assert set(ov["outputs"]["max_abs"]) == {"heatmap", "offset", "severity"}
        assert 0 <= ov["outputs"]["peak_agreement"] <= 1
        # (not == 1: on a tiny model a near-tie may fall either way between two FP32 runtimes)
        assert bundle.model_entry("fp32")["openvino"]["outputs_vs_onnxruntime"]["peak_agreement"] >= 0.9
        assert "on OpenVINO" in summary.describe()
    else:
        assert "openvino" not in int8["accuracy_vs_fp32"]


def test_export_bundle_rejects_unknown_precision(tiny_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="bf16"):
        export_bundle(tiny_checkpoint, tmp_path / "b", ["bf16"], progress=False)


def _synth_available() -> bool:
    return (importlib.util.find_spec("lumbar_edge.synth") is not None
            and hasattr(__import__("lumbar_edge.synth", fromlist=["synthesize"]), "synthesize")
            and importlib.util.find_spec("lumbar_edge.dicom") is not None
            and hasattr(__import__("lumbar_edge.dicom", fromlist=["scan_path"]), "scan_path"))


@pytest.mark.slow
@pytest.mark.skipif(not _synth_available(), reason="needs lumbar_edge.synth.synthesize and lumbar_edge.dicom")
def test_cli_int8_with_calib_and_val(tiny_checkpoint, tmp_path, capsys):
    from lumbar_edge.synth import synthesize

    data = tmp_path / "data"
    synthesize(data, n_studies=2, seed=0, progress=False)
    out = tmp_path / "bundle"
    rc = main(["export", "--checkpoint", str(tiny_checkpoint), "--precision", "int8", "--out", str(out),
               "--calib", str(data), "--calib-slices", "8", "--val", str(data), "-q"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    bundle = Bundle.load(out)
    int8 = bundle.model_entry("int8")
    assert int8["calibration"]["source"] == str(data) and int8["calibration"]["num_slices"] <= 8
    assert "score" in int8["accuracy_vs_fp32"]["deltas"]
    assert bundle.model_entry("fp32")["parity"]["synthetic_inputs"] is False
    if importlib.util.find_spec("openvino") is not None:
        ov = int8["accuracy_vs_fp32"]["openvino"]
        assert "score" in ov["deltas"] and "score" in ov["validation"]
