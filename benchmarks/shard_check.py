"""The job-array check of ``lumbar-edge infer --shard K/N --skip-done``, end to end with real
processes: a synthetic root graded once unsharded, then by N concurrent shard processes into one
shared folder, one of them SIGKILLed just after its first study is done and started again.

It checks, and prints: one report per study; every report's grades (findings: probabilities,
keypoints, sources) and every overlay byte-identical to the unsharded run's; the merged
``submission.csv`` byte-identical to the unsharded one, with 25 rows per study; no temporary file
left; the restarted shard skipped exactly the studies done before the kill (its log lines) and
graded only the others, so no study was graded twice after the restart.

Usage: ``python -m lumbar_edge.benchmarks.shard_check [--studies 12] [--shards 3] [--work DIR]
[--model BUNDLE]`` (default model: a random-weights bundle made by ``make_bundle``; ONNX Runtime).
Exit status 0 when every check holds.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence


def _infer(root: Path, model: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lumbar_edge", "infer", str(root), "--model", str(model), "--out", str(out),
           "--backend", "onnxruntime", "-q", *extra]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _grades(report: Path) -> str:
    """A report without its timings: what the grader decided, byte for byte."""
    doc = json.loads(report.read_text())
    doc.pop("timings_s")
    return json.dumps(doc, sort_keys=True)


def run_check(work: Path, n_studies: int, n_shards: int, model: Optional[Path], seed: int) -> Dict[str, object]:
    from lumbar_edge.dicom import scan_path
    from lumbar_edge.shards import shard_of
    from lumbar_edge.synth import synthesize

    from .make_bundle import make_bundle

    for stale in ("single", "sharded"):
        if (work / stale).exists():
            raise SystemExit(f"{work / stale} exists: give a new --work folder (the archive and bundle may stay)")
    root = work / "archive"
    if not root.exists():
        synthesize(root, n_studies=n_studies, seed=seed, progress=False)
    images = root / "train_images"
    if model is None:
        model = work / "bundle"
        if not (model / "manifest.json").exists():
            make_bundle(model)
    studies = scan_path(images, progress=False).studies
    owner = {str(s.study_id): shard_of(s.study_uid, n_shards) for s in studies}
    per_shard = {k: sorted(sid for sid, o in owner.items() if o == k) for k in range(n_shards)}
    print(f"{len(studies)} studies; per shard: " + ", ".join(f"{k}/{n_shards}: {len(v)}" for k, v in per_shard.items()))

    t0 = time.monotonic()
    single = work / "single"
    proc = _infer(images, model, single, work / "single.log")
    if proc.wait() != 0:
        raise SystemExit(f"the unsharded run failed: see {work / 'single.log'}")
    print(f"unsharded run: {time.monotonic() - t0:.1f} s")

    shared = work / "sharded"
    victim = max(per_shard, key=lambda k: len(per_shard[k]))
    logs = {k: work / f"shard{k}.log" for k in range(n_shards)}
    t0 = time.monotonic()
    procs = {k: _infer(images, model, shared, logs[k], "--shard", f"{k}/{n_shards}", "--skip-done")
             for k in range(n_shards)}
    # SIGKILL the victim as soon as one of its studies has its report (the study is done).
    while True:
        done = [sid for sid in per_shard[victim] if (shared / f"{sid}.json").exists()]
        if done:
            procs[victim].send_signal(signal.SIGKILL)
            break
        if procs[victim].poll() is not None:
            raise SystemExit(f"shard {victim} ended before it could be killed: see {logs[victim]}")
        time.sleep(0.02)
    procs[victim].wait()
    done_at_kill = sorted(sid for sid in per_shard[victim] if (shared / f"{sid}.json").exists())
    leftovers = sorted(p.name for p in shared.rglob("*.tmp"))
    print(f"shard {victim}/{n_shards} SIGKILLed with {len(done_at_kill)} of its {len(per_shard[victim])} studies done "
          f"({', '.join(done_at_kill)}); temporary files it left: {len(leftovers)}")
    restart_log = work / f"shard{victim}.restart.log"
    procs[victim] = _infer(images, model, shared, restart_log, "--shard", f"{victim}/{n_shards}", "--skip-done")
    codes = {k: p.wait() for k, p in procs.items()}
    print(f"sharded run ({n_shards} concurrent, one killed and restarted): {time.monotonic() - t0:.1f} s, exit codes {codes}")
    merged_by_shard = [k for k, log in {**logs, victim: restart_log}.items()
                       if any(line.startswith("merged ") for line in Path(log).read_text().splitlines())]
    if not (shared / "submission.csv").exists():
        subprocess.run([sys.executable, "-m", "lumbar_edge", "merge", str(shared)], check=True)

    checks: Dict[str, object] = {}
    reports = sorted(p.name for p in shared.glob("*.json") if p.name != "summary.json")
    checks["reports"] = len(reports)
    checks["one report per study"] = reports == sorted(f"{sid}.json" for sid in owner)
    same = [name for name in reports if _grades(shared / name) == _grades(single / name)]
    checks["reports with byte-identical grades"] = len(same)
    png_single = {p.name: p.read_bytes() for p in (single / "overlays").glob("*.png")}
    png_shared = {p.name: p.read_bytes() for p in (shared / "overlays").glob("*.png")}
    checks["overlays byte-identical"] = f"{sum(png_shared.get(n) == b for n, b in png_single.items())} of " \
                                        f"{len(png_single)} (sharded folder has {len(png_shared)})"
    rows = (shared / "submission.csv").read_text().splitlines()
    checks["merged submission.csv rows"] = len(rows) - 1
    checks["merged CSV byte-identical to the unsharded CSV"] = \
        (shared / "submission.csv").read_bytes() == (single / "submission.csv").read_bytes()
    checks["merged by the shard run itself"] = [f"{k}/{n_shards}" for k in merged_by_shard]
    checks["temporary files left"] = len(list(shared.rglob("*.tmp")))
    restart = restart_log.read_text()
    skipped = sorted(line.split("study ", 1)[1].split(":", 1)[0] for line in restart.splitlines()
                     if line.startswith("skipped (done): study "))
    summary = json.loads((shared / "shards" / f"shard-{victim}-of-{n_shards}.json").read_text())
    checks["restart: skipped (done) log lines"] = [line for line in restart.splitlines() if line.startswith("skipped")]
    checks["restart skipped exactly the studies done before the kill"] = skipped == done_at_kill
    checks["restart graded only the others (none twice)"] = (
        sorted(summary["succeeded"]) == sorted(set(per_shard[victim]) - set(done_at_kill))
        and not set(summary["succeeded"]) & set(summary["skipped_done"]))
    others = {sid for k in range(n_shards) if k != victim
              for sid in json.loads((shared / "shards" / f"shard-{k}-of-{n_shards}.json").read_text())["succeeded"]}
    checks["other shards graded each of their studies once"] = others == {s for s, o in owner.items() if o != victim}
    return checks


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: a random-weights bundle)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lumbar-edge-shard-check-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        checks = run_check(work, args.studies, args.shards, args.model, args.seed)
    ok = True
    for name, value in checks.items():
        print(f"{name}: {value}")
    expected = {"reports": args.studies, "reports with byte-identical grades": args.studies,
                "merged submission.csv rows": 25 * args.studies, "temporary files left": 0}
    for name, value in checks.items():
        if (name in expected and value != expected[name]) or value is False:
            print(f"FAILED: {name}")
            ok = False
    print("all checks hold" if ok else "some checks FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
