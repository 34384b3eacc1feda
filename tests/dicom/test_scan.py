"""scan_path: finding files, grouping studies and series, ids, slice order, bad input."""
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import BasicTextSRStorage, generate_uid

from lumbar_edge.dicom import ScanResult, SeriesKind, format_scan, scan_path
from lumbar_edge.errors import InputError


def _ids(result: ScanResult):
    return {st.study_uid: {se.series_uid: len(se.instances) for se in st.series} for st in result.studies}


def test_rsna_layout_gives_folder_ids(tmp_path, dcm):
    study = generate_uid()
    t1 = dcm.write_series(tmp_path / "4003253" / "1054713880", "sagittal_t1", n=6, study_uid=study, series_number=1)
    t2 = dcm.write_series(tmp_path / "4003253" / "702807833", "sagittal_stir", n=5, study_uid=study, series_number=2)
    ax = dcm.write_series(tmp_path / "4003253" / "2448190387", "axial_t2", n=7, study_uid=study, series_number=3)
    for root in (tmp_path, tmp_path / "4003253"):  # scanning the root or the study folder itself
        (st,) = scan_path(root).studies
        assert (st.study_id, st.study_uid) == ("4003253", study)
        assert [s.series_id for s in st.series] == ["1054713880", "702807833", "2448190387"]
        assert [s.series_uid for s in st.series] == [t1.series_uid, t2.series_uid, ax.series_uid]
        assert [len(s.series_of_kind(k)) for s in [st] for k in SeriesKind] == [1, 1, 1, 0]
        assert st.series_of_kind("axial_t2")[0].series_id == "2448190387"
        assert st.patient_id == "P001"


def test_several_studies_and_series_in_one_folder(tmp_path, dcm):
    a = dcm.write_series(tmp_path, "sagittal_t1", n=3, name=lambda i: f"a{i}.dcm")
    b = dcm.write_series(tmp_path, "axial_t2", n=4, study_uid=a.study_uid, series_number=2, name=lambda i: f"b{i}.dcm")
    c = dcm.write_series(tmp_path, "sagittal_t2", n=2, name=lambda i: f"c{i}.dcm")
    result = scan_path(tmp_path)
    assert _ids(result) == {a.study_uid: {a.series_uid: 3, b.series_uid: 4}, c.study_uid: {c.series_uid: 2}}
    # Not the RSNA layout: the ids are the UIDs.
    for st in result.studies:
        assert st.study_id == st.study_uid
        assert all(se.series_id == se.series_uid for se in st.series)
    assert result.n_files == 9 and not result.skipped


def test_deep_nesting(tmp_path, dcm):
    a = dcm.write_series(tmp_path / "site" / "2024" / "01" / "pat1" / "exam" / "s1", "sagittal_t2", n=3)
    b = dcm.write_series(tmp_path / "site" / "2024" / "02" / "pat2" / "exam" / "s7", "axial_t2", n=2)
    b2 = dcm.write_series(tmp_path / "site" / "2024" / "02" / "pat2" / "exam" / "s8", "sagittal_t1", n=2,
                          study_uid=b.study_uid)
    result = scan_path(tmp_path)
    assert _ids(result) == {a.study_uid: {a.series_uid: 3}, b.study_uid: {b.series_uid: 2, b2.series_uid: 2}}
    # Both exams follow {study}/{series}/{n}.dcm, but their folder names are not RSNA's integer
    # ids ("exam", "s1"), so the UIDs name them rather than a folder that merely holds them.
    assert all(st.study_id == st.study_uid for st in result.studies)


def test_slices_sorted_along_the_normal_not_by_instance_number(tmp_path, dcm):
    study, series = generate_uid(), generate_uid()
    numbers = [4, 1, 5, 2, 3]  # the scanner numbered them out of spatial order
    for k, number in enumerate(numbers):
        # Sagittal normal is -x: position along it = -x. Write x = 10 - 3.5*k (ascending along normal).
        ds = dcm.make_dataset(study_uid=study, series_uid=series, instance_number=number, ipp=(10 - 3.5 * k, -5, 7),
                              tr=500, te=10)
        dcm.save(ds, tmp_path / f"{number}.dcm")
    (s,) = scan_path(tmp_path).studies[0].series
    assert s.instance_numbers == numbers
    positions = s.positions
    assert positions == sorted(positions)
    assert np.diff(positions) == pytest.approx([3.5] * 4)
    assert s.spacing == pytest.approx(3.5)
    np.testing.assert_allclose(s.normal, [-1, 0, 0])
    assert s.instance_by_number(5) is s.instances[2]
    assert s.index_of_number(2) == 3
    with pytest.raises(KeyError):
        s.instance_by_number(99)
    # The pixels of sorted index i are those of that instance (make_dataset stamps the number in).
    np.testing.assert_array_equal(s.pixels(0), s.instances[0].pixel_array())
    assert s.pixels(0)[0, 0] == 4  # instance number 4 is first along the normal
    assert s.instances[0].geometry.position_along(s.normal) == pytest.approx(positions[0])


def test_a_single_file_can_be_scanned(tmp_path, dcm):
    spec = dcm.write_series(tmp_path, "axial_t2", n=2)
    result = scan_path(spec.paths[1])
    assert result.n_files == 1 and result.n_instances == 1


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        scan_path(tmp_path / "nope")
    with pytest.raises(InputError, match="workers"):
        scan_path(tmp_path, workers=0)


def test_empty_folder_gives_an_empty_result(tmp_path):
    result = scan_path(tmp_path)
    assert (result.studies, result.skipped, result.n_files) == ([], [], 0)
    assert "no DICOM image series found" in format_scan(result)


@pytest.mark.parametrize("executor, workers", [("process", 2), ("thread", 3), ("serial", None)])
def test_every_executor_gives_the_same_result(tmp_path, dcm, executor, workers):
    study = generate_uid()
    for k in range(3):
        dcm.write_series(tmp_path / "st" / f"se{k}", "sagittal_t2", n=4, study_uid=study, series_number=k)
    (tmp_path / "junk.txt").write_text("not dicom")
    serial = scan_path(tmp_path, workers=1)
    other = scan_path(tmp_path, workers=workers, executor=executor)
    assert other.to_dict()["studies"] == serial.to_dict()["studies"]
    assert [(s.path, s.category) for s in other.skipped] == [(s.path, s.category) for s in serial.skipped]


def _bad_corpus(root: Path, dcm) -> dict:
    """A folder of good series mixed with every kind of bad input. Returns what was written."""
    study = generate_uid()
    good = dcm.write_series(root / "study" / "t2", "sagittal_t2", n=5, study_uid=study)
    dcm.write_series(root / "study" / "ax", "axial_t2", n=3, study_uid=study)
    (root / "notes.txt").write_text("these are not the images you are looking for\n")
    (root / "empty.dcm").write_bytes(b"")
    whole = good.paths[0].read_bytes()
    (root / "cut_meta.dcm").write_bytes(whole[:300])  # ends inside the file meta
    (root / "cut_header.dcm").write_bytes(whole[:555])  # ends inside the data set header
    (root / "cut_pixels.dcm").write_bytes(whole[:-40])  # ends inside the pixel data
    no_pixels = dcm.make_dataset(study_uid=study, series_uid=generate_uid())
    del no_pixels.PixelData
    dcm.save(no_pixels, root / "no_pixels.dcm")
    sr = dcm.make_dataset(study_uid=study, series_uid=generate_uid())
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    for kw in ("Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
               "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(sr, kw)
    dcm.save(sr, root / "report.dcm")
    shutil.copy(pydicom.data.get_testdata_file("DICOMDIR"), root / "DICOMDIR")
    # One slice of another size in the sagittal series.
    odd = dcm.make_dataset(study_uid=study, series_uid=good.series_uid, instance_number=9, rows=16, cols=16,
                           ipp=(-40, -30, 40))
    dcm.save(odd, root / "study" / "t2" / "9.dcm")
    shutil.copy(good.paths[1], root / "study" / "copy_of_2.dcm")  # same SOPInstanceUID
    os.symlink("..", root / "study" / "loop")  # a folder link back up: a loop
    os.symlink(root / "gone.dcm", root / "dangling.dcm")
    os.mkfifo(root / "pipe.dcm")
    (root / "folder.dcm").mkdir()  # a folder named like a file: walked, holds nothing
    return {"study": study, "good": good}


def test_bad_corpus_is_skipped_counted_and_left_untouched(tmp_path, dcm, caplog):
    root = tmp_path / "in"
    made = _bad_corpus(root, dcm)
    before = dcm.tree_digest(root)
    with caplog.at_level(logging.WARNING, logger="lumbar_edge.dicom"):
        result = scan_path(root, workers=2)
    assert dcm.tree_digest(root) == before  # nothing under the input was written, moved or touched
    by_name = {Path(s.path).name: s for s in result.skipped}
    expected = {
        "notes.txt": "not_dicom", "empty.dcm": "not_dicom", "cut_meta.dcm": "truncated", "cut_header.dcm": "truncated",
        "cut_pixels.dcm": "truncated", "no_pixels.dcm": "no_pixel_data", "report.dcm": "no_pixel_data",
        "DICOMDIR": "no_pixel_data", "9.dcm": "size_mismatch", "copy_of_2.dcm": "duplicate", "loop": "link_loop",
        "dangling.dcm": "unreadable", "pipe.dcm": "not_regular",
    }
    assert {name: s.category for name, s in by_name.items()} == expected
    assert len(result.skipped) == len(expected)
    assert result.skip_counts() == {"not_dicom": 2, "truncated": 3, "no_pixel_data": 3, "size_mismatch": 1,
                                     "duplicate": 1, "link_loop": 1, "unreadable": 1, "not_regular": 1}
    assert "broken symbolic link" in by_name["dangling.dcm"].reason
    assert "FIFO" in by_name["pipe.dcm"].reason
    assert "DICOMDIR" in by_name["DICOMDIR"].reason
    assert "16x16" in by_name["9.dcm"].reason and "8x8" in by_name["9.dcm"].reason
    assert "copy_of_2.dcm" not in str(by_name["copy_of_2.dcm"].reason)  # it names the kept file
    assert by_name["copy_of_2.dcm"].reason.endswith(str(made["good"].paths[1]))
    # The good data is all there, the duplicate and the odd-size slice are not in it.
    (st,) = result.studies
    assert {se.series_uid: len(se.instances) for se in st.series}[made["good"].series_uid] == 5
    assert result.n_instances == 8
    # Every entry that is not a folder was looked at: 8 + 1 odd-size + 1 copy images, 10 bad
    # files (the loop link is a folder entry).
    assert result.n_files == 8 + 1 + 1 + 10
    # One one-line warning per skip, on the package logger.
    records = [r for r in caplog.records if r.name == "lumbar_edge.dicom"]
    assert len(records) == len(result.skipped)
    assert all("\n" not in r.getMessage() for r in records)
    text = format_scan(result)
    assert "skipped (13):" in text and text.splitlines()[-1] == result.summary()
    json.dumps(result.to_dict())


def test_pydicom_test_files_scan_without_an_exception(tmp_path):
    # pydicom's own test files: odd VRs, no meta, big endian, deflate, RGB, multi-frame, SR,
    # RT objects, a DICOMDIR tree, truncated files. Copied so that nothing can touch the install.
    src = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    shutil.copytree(src, tmp_path / "files")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "files").rglob("*")}
    result = scan_path(tmp_path / "files", workers=2)
    assert result.n_files == sum(1 for p in (tmp_path / "files").rglob("*") if not p.is_dir())
    assert result.n_files == result.n_instances + len(result.skipped)
    assert result.studies and result.skipped
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "files").rglob("*")} == before
    text = format_scan(result)
    assert text.splitlines()[-1].startswith(f"{len(result.studies)} studies, ")
    json.dumps(result.to_dict())
    # MR_small.dcm is a 64x64 MR image: it is found and decodes.
    mr = [i for st in result.studies for se in st.series for i in se.instances if i.path.name == "MR_small.dcm"]
    assert mr and mr[0].pixel_array().shape == (64, 64)
