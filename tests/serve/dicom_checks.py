"""Checks of the DICOM results shared by the listener tests: the validators (dcmtk's dsrdump,
dicom3tools' dciodvfy when installed) and the SR/SC content against the study that was sent."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterable, List, Optional

import pydicom
from serve_helpers import tool

from lumbar_edge.labels import CONDITIONS, LEVELS
from lumbar_edge.serve.sr import COMPREHENSIVE_SR, read_sr_findings

#: dciodvfy warns about every code of a private coding scheme ("99..." designators are private
#: by PS3.16 8.2, and declared in the Coding Scheme Identification Sequence): expected.
EXPECTED_WARNING = "Unrecognized defined term <99LUMBAR>"


def dsrdump_problems(path: Path) -> List[str]:
    """dsrdump's error, warning and fatal lines for ``path`` (plus a line for a non-zero exit)."""
    proc = subprocess.run([tool("dsrdump"), "-v", str(path)], capture_output=True, text=True, timeout=60)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln[:2] in ("E:", "W:", "F:")]
    if proc.returncode != 0:
        lines.append(f"dsrdump exited with {proc.returncode}")
    return lines


def dciodvfy_path() -> Optional[str]:
    return shutil.which("dciodvfy")


def dciodvfy_problems(path: Path) -> List[str]:
    """dciodvfy's Error lines and unexpected Warning lines for ``path``."""
    proc = subprocess.run([dciodvfy_path(), str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines()
            if ln.startswith("Error") or (ln.startswith("Warning") and EXPECTED_WARNING not in ln)]


def check_results(srs: Iterable[pydicom.Dataset], scs: Iterable[pydicom.Dataset], sent: dict) -> None:
    """The SR and Secondary Captures of one study against the study ``sent``
    (``{"study_uid", "sop_uids", "folder"}``): same study, new series, 25 findings whose keypoints
    reference sent instances, Secondary Captures naming sent instances."""
    srs, scs = list(srs), list(scs)
    assert len(srs) == 1, f"{len(srs)} SRs for one study"
    sr = srs[0]
    source_series = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in Path(sent["folder"]).rglob("*.dcm")}
    sent_sops = set(sent["sop_uids"])
    assert sr.SOPClassUID == COMPREHENSIVE_SR and sr.Modality == "SR"
    assert sr.StudyInstanceUID == sent["study_uid"]
    assert sr.SeriesInstanceUID not in source_series
    findings = read_sr_findings(sr)
    assert sorted((f["condition"], f["level"]) for f in findings) == sorted((c, lv) for c in CONDITIONS for lv in LEVELS)
    for f in findings:
        assert abs(sum(f["probabilities"]) - 1) < 1e-6
        if f["basis"] == "model":
            assert f["sop_uid"] in sent_sops and f["point"] is not None
        else:
            assert f["sop_uid"] is None
    assert any(f["basis"] == "model" for f in findings)
    evidence = {ref.ReferencedSOPInstanceUID for st in sr.CurrentRequestedProcedureEvidenceSequence
                for se in st.ReferencedSeriesSequence for ref in se.ReferencedSOPSequence}
    assert evidence == {f["sop_uid"] for f in findings if f["sop_uid"]}
    assert scs, "no Secondary Capture"
    assert len({sc.SeriesInstanceUID for sc in scs}) == 1
    for sc in scs:
        assert sc.StudyInstanceUID == sent["study_uid"]
        assert sc.SeriesInstanceUID not in source_series and sc.SeriesInstanceUID != sr.SeriesInstanceUID
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID in sent_sops
        assert sc.PhotometricInterpretation == "RGB" and sc.BurnedInAnnotation == "YES"
        assert sc.pixel_array.shape == (sc.Rows, sc.Columns, 3)
    # Every slice a keypoint was read on has its overlay.
    assert {sc.SourceImageSequence[0].ReferencedSOPInstanceUID for sc in scs} == {
        f["sop_uid"] for f in findings if f["sop_uid"]}
