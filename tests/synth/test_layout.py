"""The RSNA 2024 layout: folders, the three CSVs, the truth file, the summary, refusals, CLI."""
from __future__ import annotations

import json
import re

import pytest

from lumbar_edge.cli import main
from lumbar_edge.errors import InputError
from lumbar_edge.labels import LABEL_COLUMNS, LEVELS, SERIES_DESCRIPTIONS, SEVERITIES, level_title
from lumbar_edge.synth import TRUTH_FILE, SynthOptions, load_truth, synthesize

from synth_helpers import TINY_STUDIES, read_csv


def test_folders_and_files(tiny_dataset):
    root, summary = tiny_dataset
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["train_images", "train.csv", "train_label_coordinates.csv", "train_series_descriptions.csv", TRUTH_FILE])
    studies = sorted(p.name for p in (root / "train_images").iterdir())
    assert len(studies) == TINY_STUDIES
    n_files = 0
    for study in (root / "train_images").iterdir():
        series = list(study.iterdir())
        assert len(series) == 3
        for s in series:
            names = sorted(p.name for p in s.iterdir())
            # Only complete DICOM files named {instance_number}.dcm, numbered 1..n.
            assert all(re.fullmatch(r"[1-9][0-9]*\.dcm", n) for n in names), names
            assert sorted(int(n[:-4]) for n in names) == list(range(1, len(names) + 1))
            n_files += len(names)
    assert n_files == summary.n_files
    assert summary.n_series == 3 * TINY_STUDIES


def test_ids_are_positive_unique_integers(tiny_dataset):
    root, _ = tiny_dataset
    _, rows = read_csv(root / "train_series_descriptions.csv")
    study_ids = {r["study_id"] for r in rows}
    series_ids = [r["series_id"] for r in rows]
    for v in list(study_ids) + series_ids:
        assert v.isdigit() and int(v) > 0
    assert len(set(series_ids)) == len(series_ids) == 3 * TINY_STUDIES
    assert not study_ids & set(series_ids)


def test_train_csv_schema(tiny_dataset):
    root, summary = tiny_dataset
    header, rows = read_csv(root / "train.csv")
    assert header == ["study_id", *LABEL_COLUMNS]
    assert len(rows) == TINY_STUDIES
    assert [int(r["study_id"]) for r in rows] == sorted(int(r["study_id"]) for r in rows)
    for r in rows:
        assert all(r[c] in SEVERITIES or r[c] == "" for c in LABEL_COLUMNS)
    counts = {s: sum(r[c] == s for r in rows for c in LABEL_COLUMNS) for s in SEVERITIES}
    assert counts == summary.label_counts


def test_series_descriptions_schema(tiny_dataset):
    root, _ = tiny_dataset
    header, rows = read_csv(root / "train_series_descriptions.csv")
    assert header == ["study_id", "series_id", "series_description"]
    per_study = {}
    for r in rows:
        per_study.setdefault(r["study_id"], []).append(r["series_description"])
    for descs in per_study.values():
        assert sorted(descs) == sorted(SERIES_DESCRIPTIONS)
        for r in rows:
            assert (root / "train_images" / r["study_id"] / r["series_id"]).is_dir()


def test_coordinates_schema_and_references(tiny_dataset):
    root, _ = tiny_dataset
    header, rows = read_csv(root / "train_label_coordinates.csv")
    assert header == ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    _, train = read_csv(root / "train.csv")
    _, descs = read_csv(root / "train_series_descriptions.csv")
    desc = {(r["study_id"], r["series_id"]): r["series_description"] for r in descs}
    expected_series = {"Spinal Canal Stenosis": "Sagittal T2/STIR",
                       "Left Neural Foraminal Narrowing": "Sagittal T1",
                       "Right Neural Foraminal Narrowing": "Sagittal T1",
                       "Left Subarticular Stenosis": "Axial T2", "Right Subarticular Stenosis": "Axial T2"}
    labelled = {(r["study_id"], c) for r in train for c in LABEL_COLUMNS if r[c]}
    seen = set()
    for r in rows:
        assert r["condition"] in expected_series and r["level"] in {level_title(lv) for lv in LEVELS}
        assert desc[(r["study_id"], r["series_id"])] == expected_series[r["condition"]]
        assert (root / "train_images" / r["study_id"] / r["series_id"] / f"{int(r['instance_number'])}.dcm").is_file()
        float(r["x"]), float(r["y"])
        column = r["condition"].lower().replace(" ", "_") + "_" + r["level"].lower().replace("/", "_")
        seen.add((r["study_id"], column))
    # One coordinate row per labelled condition-level, none for the unlabelled ones.
    assert seen == labelled and len(rows) == len(labelled)


def test_truth_file(tiny_dataset):
    root, summary = tiny_dataset
    truth = load_truth(root)
    assert truth["seed"] == summary.seed and len(truth["studies"]) == TINY_STUDIES
    study = truth["studies"][0]
    assert len(study["keypoints"]) == 25 and set(study["discs"]) == set(LEVELS)
    assert all(len(k["xyz_mm"]) == 3 for k in study["keypoints"])
    with pytest.raises(InputError):
        load_truth(root / "train_images")


def test_describe(tiny_dataset):
    root, summary = tiny_dataset
    text = summary.describe()
    assert str(root) in text and f"{TINY_STUDIES} synthetic studies" in text
    assert "Normal/Mild" in text and "Severe" in text and f"{summary.n_files} DICOM files" in text


def test_refuses_non_empty_out_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        synthesize(out, 1, seed=0, options=SynthOptions.tiny())
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    file_out = tmp_path / "a_file"
    file_out.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        synthesize(file_out, 1, seed=0)


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError):
        synthesize(tmp_path / "a", 0, seed=0)
    with pytest.raises(InputError):
        synthesize(tmp_path / "b", 1, seed=0, workers=0)
    with pytest.raises(InputError, match="unknown synth option"):
        synthesize(tmp_path / "c", 1, seed=0, matrix=64)
    with pytest.raises(InputError):
        SynthOptions(severity_prior=(0.5, 0.5, 0.5))
    with pytest.raises(InputError):
        SynthOptions(sagittal_matrix=(16,))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_empty_existing_dir_is_used(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    summary = synthesize(out, 1, seed=2, workers=1, options=SynthOptions.tiny(), axial_slices=(8, 8))
    assert (out / "train.csv").is_file() and summary.n_studies == 1


def test_partly_unlabelled_studies(tmp_path):
    summary = synthesize(tmp_path / "u", 2, seed=4, workers=1,
                         options=SynthOptions.tiny(partly_unlabelled_fraction=1.0))
    _, rows = read_csv(tmp_path / "u" / "train.csv")
    blanks = [sum(r[c] == "" for c in LABEL_COLUMNS) for r in rows]
    assert all(0 < b < 25 for b in blanks) and summary.unlabelled == sum(blanks)
    truth = json.loads((tmp_path / "u" / TRUTH_FILE).read_text())
    # The truth keeps the grade of unlabelled points (the anatomy is still graded).
    assert sum(not k["labelled"] for s in truth["studies"] for k in s["keypoints"]) == sum(blanks)


def test_cli_synth(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "cli"), "--studies", "2", "--seed", "1", "-q"]) == 0
    assert "wrote 2 synthetic studies" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "cli"), "--studies", "1", "-q"]) == 2
    assert "not empty" in capsys.readouterr().err
