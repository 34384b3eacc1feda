"""``lumbar-edge infer --shard K/N --skip-done`` and ``lumbar-edge merge``: an archive graded by a
job array into one shared folder, with real processes, real ONNX Runtime and real files.

The end-to-end test is the issue's Done-when at small scale (benchmarks/shard_check.py runs it on
12 studies and 3 shards): 4 studies, 2 concurrent shard processes, the larger shard SIGKILLed
after its first study is done and started again.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lumbar_edge.cli import main
from lumbar_edge.dicom import scan_path
from lumbar_edge.errors import InputError
from lumbar_edge.infer import run_infer
from lumbar_edge.shards import MergeError, Shard, ShardLock, merge_shards, parse_shard, shard_of

SHARDS = 2


def _quiet(*_):
    return None


@pytest.fixture
def archive(tiny_rsna, tmp_path):
    """A root of 4 studies (the tiny training set's images), outside every output folder."""
    train_dir, _ = tiny_rsna
    root = tmp_path / "archive"
    shutil.copytree(train_dir / "train_images", root)
    return root


def _infer(root: Path, bundle: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lumbar_edge", "infer", str(root), "--model", str(bundle), "--out", str(out),
           "--backend", "onnxruntime", "-q", *extra]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait(proc: subprocess.Popen, timeout: float = 180) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"infer still ran after {timeout} s")


def _grades(report: Path) -> str:
    doc = json.loads(report.read_text())
    doc.pop("timings_s")
    return json.dumps(doc, sort_keys=True)


def test_parse_shard_counts_from_zero_and_refuses_bad_values_in_one_line(archive, tiny_bundle, tmp_path, capsys):
    assert parse_shard("0/3") == Shard(0, 3) and parse_shard(" 2 / 3 ") == Shard(2, 3) and str(Shard(1, 4)) == "1/4"
    for text, why in (("4/3", "below N=3"), ("3/3", "below N=3"), ("0/0", "at least 1"), ("1", "K/N"),
                      ("-1/2", "K/N"), ("a/b", "K/N")):
        with pytest.raises(InputError, match=why):
            parse_shard(text)
        code = main(["infer", str(archive), "--model", str(tiny_bundle), "--out", str(tmp_path / "o"),
                     "--shard", text, "-q"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: --shard") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_assignment_is_a_stable_hash_that_splits_the_studies_into_disjoint_shards():
    # Fixed values: the assignment must never change between versions, machines or runs (a
    # restarted shard must find the same studies), unlike Python's salted hash().
    assert [shard_of("1.2.840.113619.2.55.3.1", n) for n in (1, 2, 3, 7)] == [0, 1, 1, 4]
    assert shard_of("1.2.3", 1000) == 654
    uids = [f"1.2.826.0.1.3680043.8.498.{i}" for i in range(600)]
    for n in (1, 3, 8):
        parts = [{u for u in uids if Shard(k, n).contains(u)} for k in range(n)]
        assert set().union(*parts) == set(uids) and sum(map(len, parts)) == len(uids)
        assert min(map(len, parts)) > len(uids) / n / 2  # no shard left nearly empty


def test_two_shards_one_killed_and_restarted_grade_each_study_once_as_the_unsharded_run(archive, tiny_bundle,
                                                                                         tmp_path):
    studies = scan_path(archive, progress=False).studies
    owner = {str(s.study_id): shard_of(s.study_uid, SHARDS) for s in studies}
    per_shard = {k: sorted(s for s, o in owner.items() if o == k) for k in range(SHARDS)}
    victim = max(per_shard, key=lambda k: len(per_shard[k]))
    assert len(studies) == 4 and len(per_shard[victim]) >= 2  # the killed shard has work left after one study

    single = tmp_path / "single"
    assert run_infer(archive, tiny_bundle, single, backend="onnxruntime", progress=False, echo=_quiet).ok

    shared = tmp_path / "shared"
    logs = {k: tmp_path / f"shard{k}.log" for k in range(SHARDS)}
    procs = {k: _infer(archive, tiny_bundle, shared, logs[k], "--shard", f"{k}/{SHARDS}", "--skip-done")
             for k in range(SHARDS)}
    deadline = time.monotonic() + 180
    while not any((shared / f"{sid}.json").exists() for sid in per_shard[victim]):
        assert procs[victim].poll() is None, logs[victim].read_text()
        assert time.monotonic() < deadline, "no study of the victim shard was done in time"
        time.sleep(0.02)
    procs[victim].send_signal(signal.SIGKILL)
    assert _wait(procs[victim]) == -signal.SIGKILL
    done_at_kill = sorted(sid for sid in per_shard[victim] if (shared / f"{sid}.json").exists())
    restart_log = tmp_path / "restart.log"
    procs[victim] = _infer(archive, tiny_bundle, shared, restart_log, "--shard", f"{victim}/{SHARDS}", "--skip-done")
    assert all(_wait(p) == 0 for p in procs.values()), restart_log.read_text()

    # One report per study, with the unsharded run's grades byte for byte; nothing half-written.
    reports = sorted(p.name for p in shared.glob("*.json") if p.name != "summary.json")
    assert reports == sorted(f"{sid}.json" for sid in owner)
    for name in reports:
        assert _grades(shared / name) == _grades(single / name), name
    assert not list(shared.rglob("*.tmp"))
    # The restarted shard skipped exactly the studies done before the kill, each logged, and
    # graded the rest: no study graded twice.
    restart = restart_log.read_text()
    skipped = [line for line in restart.splitlines() if line.startswith("skipped (done): study ")]
    assert sorted(line.split()[3].rstrip(":") for line in skipped) == done_at_kill, restart
    summary = json.loads((shared / "shards" / f"shard-{victim}-of-{SHARDS}.json").read_text())
    assert sorted(summary["skipped_done"]) == done_at_kill
    assert sorted(summary["succeeded"]) == sorted(set(per_shard[victim]) - set(done_at_kill))
    # The last shard to finish merged: one submission.csv, the unsharded run's byte for byte.
    assert (shared / "submission.csv").read_bytes() == (single / "submission.csv").read_bytes()
    assert len((shared / "submission.csv").read_text().splitlines()) == 1 + 25 * 4
    merged = json.loads((shared / "summary.json").read_text())
    assert sorted(merged["succeeded"]) == sorted(owner) and not merged["failed"] and merged["shards"] == SHARDS

    # The merge command gives the same files again, and a run over done studies grades none.
    csv = (shared / "submission.csv").read_bytes()
    assert main(["merge", str(shared)]) == 0
    assert (shared / "submission.csv").read_bytes() == csv
    again = run_infer(archive, tiny_bundle, shared, backend="onnxruntime", progress=False, skip_done=True,
                      echo=_quiet)
    assert again.succeeded == [] and sorted(again.skipped_done) == sorted(owner)
    assert (shared / "submission.csv").read_bytes() == csv


def _shard_runs(archive, bundle, out, *shards, **kw):
    return [run_infer(archive, bundle, out, backend="onnxruntime", progress=False, shard=s, echo=_quiet, **kw)
            for s in shards]


def test_merge_refuses_missing_duplicated_mixed_and_foreign_shards(archive, tiny_bundle, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    (first,) = _shard_runs(archive, tiny_bundle, a, Shard(0, 2))
    assert first.merged is None and "1/2 have not finished" in first.merge_note
    with pytest.raises(MergeError, match="shards 1/2 have not finished"):
        merge_shards([a])
    _shard_runs(archive, tiny_bundle, b, Shard(0, 2), Shard(1, 2))
    assert (b / "submission.csv").exists()
    # Shard 0 in two folders.
    with pytest.raises(MergeError, match="shard 0/2 is in two places"):
        merge_shards([a, b], tmp_path / "c")
    assert main(["merge", str(a), str(b)]) == 2
    assert "needs --out" in capsys.readouterr().err
    # One folder per shard merges into a third one.
    c = tmp_path / "c"
    _shard_runs(archive, tiny_bundle, c, Shard(1, 2), merge=False)
    merged = merge_shards([a, c], tmp_path / "merged")
    assert (tmp_path / "merged" / "submission.csv").read_bytes() == (b / "submission.csv").read_bytes()
    assert merged.rows == 100 and merged.shards == 2
    # A split of another N beside it.
    _shard_runs(archive, tiny_bundle, a, Shard(2, 3), merge=False)
    with pytest.raises(MergeError, match="different splits"):
        merge_shards([a])
    (a / "shards" / "shard-2-of-3.json").unlink()
    # Another grader (the summary of a shard run with another model).
    path = c / "shards" / "shard-1-of-2.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(dict(doc, grader=dict(doc["grader"], model_sha256="0" * 64))))
    with pytest.raises(MergeError, match="different models or backends"):
        merge_shards([a, c], tmp_path / "merged")
    # Another archive (the input changed between the shards' runs).
    path.write_text(json.dumps(dict(doc, archive={"studies": 5, "digest": "f" * 64})))
    with pytest.raises(MergeError, match="different archives"):
        merge_shards([a, c], tmp_path / "merged")
    # A graded study whose report is gone.
    path.write_text(json.dumps(doc))
    victim = next(s["study_id"] for s in doc["studies"] if s["status"] == "graded")
    (c / f"{victim}.json").unlink()
    with pytest.raises(MergeError, match=f"graded study {victim}, but its report"):
        merge_shards([a, c], tmp_path / "merged")
    assert main(["merge", str(tmp_path / "nothing")]) == 2
    assert "holds no shard summaries" in capsys.readouterr().err


def test_skip_done_trusts_only_complete_reports_of_the_same_grader(archive, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    first = run_infer(archive, tiny_bundle, out, backend="onnxruntime", progress=False, echo=_quiet)
    sids = sorted(first.succeeded)
    csv = (out / "submission.csv").read_bytes()
    # A truncated report (not written by lumbar-edge's atomic writer) and the temporary files a
    # killed run leaves: the study is graded again and the leftovers go.
    broken, stale = sids[0], sids[1]
    (out / f"{broken}.json").write_text((out / f"{broken}.json").read_text()[:100])
    leftovers = [out / f".{stale}.json.abc123.tmp", out / "overlays" / f".{stale}_sagittal_t2_7.png.xyz.tmp"]
    for path in leftovers:
        path.write_bytes(b"partial")
    (out / f"{stale}.json").unlink()
    lines = []
    second = run_infer(archive, tiny_bundle, out, backend="onnxruntime", progress=False, skip_done=True,
                       echo=lines.append)
    assert sorted(second.succeeded) == sorted([broken, stale])
    assert sorted(second.skipped_done) == sorted(set(sids) - {broken, stale})
    assert any(line.startswith(f"graded again: study {broken}: its report is unreadable") for line in lines)
    assert sum(line.startswith("skipped (done): study ") for line in lines) == len(sids) - 2
    assert not any(p.exists() for p in leftovers)
    assert (out / "submission.csv").read_bytes() == csv
    assert json.loads((out / "summary.json").read_text())["skipped_done"] == second.skipped_done
    # A report by another model is refused, before any study is graded, and left as it is.
    report = out / f"{sids[2]}.json"
    doc = json.loads(report.read_text())
    report.write_text(json.dumps(dict(doc, model_sha256="0" * 64)))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    with pytest.raises(InputError, match="use another --out"):
        run_infer(archive, tiny_bundle, out, backend="onnxruntime", progress=False, skip_done=True, echo=_quiet)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == before


def test_a_second_process_on_the_same_shard_refuses_to_start(archive, tiny_bundle, tmp_path):
    out = tmp_path / "out"
    with ShardLock(out, Shard(1, 2)):
        with pytest.raises(InputError, match=r"shard 1/2 is already running .*pid \d+ on "):
            run_infer(archive, tiny_bundle, out, backend="onnxruntime", progress=False, shard=Shard(1, 2),
                      echo=_quiet)
        # Other shards are not held up.
        (run,) = _shard_runs(archive, tiny_bundle, out, Shard(0, 2))
        assert run.ok
    # Released with its holder (by the kernel, however the process ends): the shard runs now.
    (run,) = _shard_runs(archive, tiny_bundle, out, Shard(1, 2))
    assert run.merged is not None and run.merged.rows == 100
