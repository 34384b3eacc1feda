"""`lumbar-edge infer` on a study whose series are Enhanced MR multi-frame objects, and on the
same study re-encoded JPEG 2000, JPEG-LS and RLE (each an Enhanced MR object too, so the
compressed frames are decoded one by one): the 25 findings, their grades and their keypoints
(patient space) are those of the plain classic study.

The bundle is the session's tiny one-epoch model (weights close to random): what is compared is
that the same pixels and geometry reach the engine, whatever the encoding.
"""
import json
import shutil

import numpy as np
import pytest

from lumbar_edge.cli import main
from lumbar_edge.synth.enhanced import convert_study
from lumbar_edge.synth.transcode import TRANSFER_SYNTAXES, transcode_tree


def _infer(root, bundle, out):
    code = main(["infer", str(root), "--model", str(bundle), "--out", str(out), "--backend", "onnxruntime", "-q"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["succeeded"]) == 1 and not summary["failed"]
    sid = summary["succeeded"][0]
    return json.loads((out / f"{sid}.json").read_text())


@pytest.fixture(scope="module")
def plain_report(tiny_rsna, tiny_bundle, tmp_path_factory):
    _, val_dir = tiny_rsna
    study = sorted(p for p in (val_dir / "train_images").iterdir() if p.is_dir())[0]
    root = tmp_path_factory.mktemp("plain") / "in"
    shutil.copytree(study, root / study.name)
    out = root.parent / "out"
    return study, _infer(root, tiny_bundle, out), out


@pytest.mark.parametrize("syntax", [None, "jpeg2000", "jpegls", "rle"])
def test_infer_grades_an_enhanced_or_compressed_study_as_the_plain_one(plain_report, tiny_bundle, tmp_path, syntax):
    study, plain, plain_out = plain_report
    root = tmp_path / "in"
    shutil.copytree(study, root / study.name)
    convert_study(root / study.name)
    if syntax is not None:
        transcode_tree(root, syntax)
        from pydicom import dcmread
        assert {str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
                for p in root.rglob("*.dcm")} == {TRANSFER_SYNTAXES[syntax]}
    report = _infer(root, tiny_bundle, tmp_path / "out")
    assert report["study_id"] == plain["study_id"] and report["series_used"] == plain["series_used"]
    assert len(report["findings"]) == 25
    model = 0
    for want, have in zip(plain["findings"], report["findings"]):
        assert (have["condition"], have["level"], have["source"]) == (want["condition"], want["level"], want["source"])
        assert have["severity"] == want["severity"]
        np.testing.assert_allclose(list(have["probabilities"].values()), list(want["probabilities"].values()),
                                   atol=1e-5)
        if want["keypoint"] is None:
            assert have["keypoint"] is None
            continue
        model += 1
        kp, ref = have["keypoint"], want["keypoint"]
        distance = float(np.linalg.norm(np.subtract(kp["patient_mm"], ref["patient_mm"])))
        assert distance < 1e-3, (have["condition"], have["level"], distance)
        # The same slice: frame k of the Enhanced object is classic instance k + 1.
        assert kp["instance_number"] == ref["instance_number"] and ref["frame"] is None
        assert kp["frame"] == kp["instance_number"] - 1
    assert model >= 10  # the comparison covers model findings of every view, not only priors
    assert {f["condition"] for f in report["findings"] if f["keypoint"] is not None} >= {
        "spinal_canal_stenosis", "left_neural_foraminal_narrowing", "left_subarticular_stenosis"}
    # One overlay per source slice (frames of one file are different slices).
    plain_pngs = sorted(p.name for p in (plain_out / "overlays").glob("*.png"))
    pngs = sorted(p.name for p in (tmp_path / "out" / "overlays").glob("*.png"))
    assert pngs and pngs == plain_pngs
