"""format_scan, to_dict and the `lumbar-edge scan` command."""
import json

from pydicom.uid import generate_uid

from lumbar_edge.cli import main
from lumbar_edge.dicom import format_scan, scan_path


def _study(root, dcm):
    study = generate_uid()
    dcm.write_series(root / "100" / "11", "sagittal_t1", n=4, study_uid=study, series_number=1)
    dcm.write_series(root / "100" / "12", "sagittal_stir", n=3, study_uid=study, series_number=2)
    dcm.write_series(root / "100" / "13", "axial_t2", n=5, study_uid=study, series_number=3)
    (root / "readme.txt").write_text("hello")
    return study


def test_table_lists_studies_series_skips_and_summary(tmp_path, dcm):
    study = _study(tmp_path, dcm)
    result = scan_path(tmp_path)
    text = format_scan(result)
    lines = text.splitlines()
    assert lines[0].startswith(f"study 100 (UID {study})")
    rows = [line.split() for line in lines[2:5]]
    assert [r[:7] for r in rows] == [["11", "1", "sagittal_t1", "sagittal", "T1", "tags", "4"],
                                     ["12", "2", "sagittal_t2", "sagittal", "STIR", "tags", "3"],
                                     ["13", "3", "axial_t2", "axial", "T2", "tags", "5"]]
    assert all(r[7] == "8x8" for r in rows)
    assert "skipped (1):" in text and "readme.txt: not a DICOM file" in text
    assert lines[-1] == result.summary()
    assert lines[-1].startswith("1 studies, 3 series, 12 images from 13 files in ")
    assert lines[-1].endswith("; 1 skipped (1 not dicom)")


def test_to_dict_is_json_and_complete(tmp_path, dcm):
    _study(tmp_path, dcm)
    d = json.loads(json.dumps(scan_path(tmp_path).to_dict()))
    assert (d["n_files"], d["n_studies"], d["n_series"], d["n_instances"]) == (13, 1, 3, 12)
    (st,) = d["studies"]
    assert st["study_id"] == "100"
    sag = st["series"][0]
    assert (sag["kind"], sag["plane"], sag["weighting"], sag["slices"]) == ("sagittal_t1", "sagittal", "T1", 4)
    assert sag["sequence"]["TR"] == 550.0 and sag["spacing_mm"] == 4.0
    assert [i["instance_number"] for i in sag["instances"]] == [1, 2, 3, 4]
    assert sag["instances"][0]["geometry"]["normal"] == [-1.0, 0.0, 0.0]
    assert d["skipped"][0]["category"] == "not_dicom" and d["skip_counts"] == {"not_dicom": 1}


def test_cli_scan_prints_the_table(tmp_path, dcm, capsys):
    _study(tmp_path, dcm)
    assert main(["scan", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "sagittal_t2" in out and "1 studies, 3 series, 12 images" in out


def test_cli_scan_json(tmp_path, dcm, capsys):
    _study(tmp_path, dcm)
    assert main(["scan", str(tmp_path), "--json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["n_instances"] == 12


def test_cli_scan_shows_progress_on_stderr(tmp_path, dcm, capsys):
    _study(tmp_path, dcm)
    assert main(["scan", str(tmp_path), "--workers", "2"]) == 0
    assert "reading DICOM headers" in capsys.readouterr().err


def test_cli_missing_path_is_one_line_exit_2(tmp_path, capsys):
    assert main(["scan", str(tmp_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [f"error: no such file or folder: {tmp_path / 'missing'}"]
