"""A study as a real scanner sends it (angled per-disc axial stacks in one series, a repeated
sagittal T2, every slice stored for a feet-first patient) sent by dcmtk's storescu to the
listener: answered with an SR and Secondary Captures whose findings and points are what the
pipeline reads from the same files (the stored pixel grid, the chosen series)."""
from __future__ import annotations

import subprocess

import pydicom
import pytest
from dicom_checks import check_results
from serve_helpers import Pacs, tool, wait_until

from lumbar_edge.serve.sr import read_sr_findings
from lumbar_edge.synth import SynthOptions, synthesize

pytestmark = pytest.mark.usefixtures("dcmtk")


def test_a_study_of_angled_stacks_stored_feet_first_is_answered_as_the_pipeline_reads_it(
        listener, tiny_pipeline, tmp_path):
    from lumbar_edge.serve import parse_forward
    from lumbar_edge.serve.state import read_journal

    opts = SynthOptions.tiny(partly_unlabelled_fraction=0.0, axial_layout="stacks", repeat_sagittal=True,
                             patient_position="FFS")
    synthesize(tmp_path / "d", n_studies=1, seed=23, workers=1, options=opts, progress=False)
    folder = next((tmp_path / "d" / "train_images").iterdir())
    files = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*.dcm"))}
    study_uid = next(iter(files.values())).StudyInstanceUID
    sent = {"study_uid": study_uid, "sop_uids": [ds.SOPInstanceUID for ds in files.values()], "folder": folder}
    expected = tiny_pipeline.run_study(folder)
    pacs = Pacs(tmp_path / "pacs").start()
    try:
        with listener(forward=parse_forward(pacs.target)) as server:
            proc = subprocess.run([tool("storescu"), "-aet", "SCANNER", "-aec", "LUMBAR_EDGE", "+sd", "+r", "-to", "20",
                                   "127.0.0.1", str(server.port), str(folder)], capture_output=True, text=True,
                                  timeout=120)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            spool = server.config.spool
            wait_until(lambda: any(e["event"] == "forwarded" and e["study_uid"] == study_uid
                                   for e in read_journal(spool)), 120, 0.2, "the results at the PACS")
    finally:
        pacs.stop()
    mine = [ds for ds in pacs.received() if ds.StudyInstanceUID == study_uid]
    srs = [ds for ds in mine if ds.Modality == "SR"]
    scs = [ds for ds in mine if ds.Modality == "OT"]
    check_results(srs, scs, sent)
    got = {(f["condition"], f["level"]): f for f in read_sr_findings(srs[0])}
    assert len(got) == 25
    for finding in expected.findings:
        f = got[(finding.condition, finding.level)]
        assert f["basis"] == finding.source
        if finding.keypoint is None:
            continue
        # The same instance and the same point on its stored grid as the pipeline's own reading
        # (SCOORD counts from the top-left corner of the image, the report from pixel centres).
        assert f["sop_uid"] == finding.keypoint.sop_uid
        assert f["point"] == pytest.approx((finding.keypoint.x + 0.5, finding.keypoint.y + 0.5), abs=1e-3)
    # The axial findings come from the angled stacks; the canal from the later of the two T2s.
    assert sum(f.source == "model" for f in expected.findings if "subarticular" in f.condition) >= 2
    t2 = {files[p].SeriesInstanceUID: int(files[p].SeriesNumber) for p in files
          if "T2" in str(files[p].get("SeriesDescription", "")) and "AX" not in str(files[p].get("SeriesDescription", ""))}
    assert expected.series_used["sagittal_t2"] == max(t2, key=t2.get)
