"""DistributedDataParallel training for real: ``torchrun --standalone --nproc_per_node 2`` runs
``python -m lumbar_edge train`` as two processes (gloo on the CPU), on a tiny synthetic set.

- The weights and the Adam moments after one step equal a single-process reference on the same
  global batch: the reference takes the epoch plan, gives each rank its part (disjoint plan
  positions), builds each part's batch as that rank does, averages the two gradients, clips, and
  steps. (BatchNorm statistics and the losses' normalisers are per rank in DDP, so the reference
  runs the global batch as the two ranks' halves, not as one concatenated batch: that is what
  data-parallel training computes. SyncBatchNorm does not run on the CPU.)
- Only rank 0 writes the run folder and logs (torchrun's per-rank log files show it).
- ``--resume`` under torchrun continues exactly: the resumed second epoch gives the reference's
  second step.
- A rank that dies (SIGKILL) or hangs (SIGSTOP) ends the job with an error, not a hang: torchrun
  stops the job when a rank dies; a hung rank makes the others fail after ``--dist-timeout``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch

from lumbar_edge.training.data import RsnaDataset, build_series, epoch_plan, split_studies
from lumbar_edge.training.losses import KeypointLoss
from lumbar_edge.training.model import build_model
from lumbar_edge.training.targets import TargetConfig
from lumbar_edge.training.train import TrainConfig, _Batches, dropout_seed, load_checkpoint, rank_plan

WORLD = 2
#: A tiny network and batch: with 4 studies an epoch is 64 slices, one step of 32 per rank.
TINY = ["--size", "64", "--width", "8", "--decoder-channels", "16", "--batch-size", "32", "--val-fraction", "0",
        "--no-amp", "--seed", "5"]
#: How long a launch may take before the test calls it a hang (a launch takes ~15 s here).
HANG_S = 180


def _torchrun(args: List[str], log_dir: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    """Start ``torchrun --standalone --nproc_per_node 2 -m lumbar_edge train ARGS``, each rank's
    stdout and stderr in its own file under ``log_dir`` (torchrun's --log-dir/--redirects)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           "--log-dir", str(log_dir), "--redirects", "3", *extra, "-m", "lumbar_edge", "train", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = HANG_S) -> str:
    """Wait for the launch; kill its process group if it outlives ``timeout`` (a hang fails the test)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun still ran after {timeout} s (a hang):\n{out[-3000:]}")
    return out


def _rank_logs(log_dir: Path) -> Dict[int, str]:
    """Each rank's stdout + stderr as torchrun redirected them (``RUN_ID/attempt_0/RANK/``)."""
    logs = {}
    for rank in range(WORLD):
        files = sorted(log_dir.glob(f"*/attempt_0/{rank}/std*.log"))
        assert files, f"no log files of rank {rank} under {log_dir}"
        logs[rank] = "".join(f.read_text() for f in files)
    return logs


def _workers(proc: subprocess.Popen) -> Dict[int, int]:
    """{rank: pid} of the worker processes torchrun started (children with RANK in their env)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != proc.pid:
                continue
            env = dict(kv.split("=", 1) for kv in (entry / "environ").read_bytes().decode().split("\0") if "=" in kv)
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = HANG_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"torchrun ended before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class _Reference:
    """The training step of two data-parallel ranks, computed in this one process."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        dataset = RsnaDataset.load(Path(cfg.data))
        train_ids, _ = split_studies(dataset.study_ids, cfg.val_fraction, cfg.seed)  # as train() orders them
        self.series = build_series(dataset, cfg.layout, train_ids, progress=False)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model_config()).to(memory_format=torch.channels_last)
        self.loss = KeypointLoss(heatmap=cfg.heatmap_loss, offset=cfg.offset_loss,
                                 keypoint_groups=cfg.layout.keypoint_groups(), identity_weight=cfg.identity_weight)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        plan_length = len(epoch_plan(self.series, cfg.sampling, np.random.default_rng(0)))
        self.steps = -(-(plan_length // WORLD) // cfg.batch_size)
        assert self.steps == 1, "the test expects one step per rank and epoch"
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=cfg.lr,
                                                             total_steps=cfg.epochs * self.steps, pct_start=0.15)
        self.parts: Dict[int, List[List]] = {}

    def gradient(self, epoch: int, rank: int, part) -> List[torch.Tensor]:
        batches = _Batches(self.series, part, self.cfg, TargetConfig(stride=4, sigma=self.cfg.sigma), epoch, rank)
        images, targets = batches[0]
        self.model.zero_grad(set_to_none=True)
        torch.manual_seed(dropout_seed(self.cfg.seed, rank, epoch))  # the rank's dropout masks
        outputs = self.model(images.contiguous(memory_format=torch.channels_last))
        total, _ = self.loss(tuple(o.float() for o in outputs), targets)
        total.backward()
        return [p.grad.detach().clone() for p in self.model.parameters()]

    def step(self, epoch: int) -> None:
        """One optimiser step on the two ranks' gradients, averaged. BatchNorm's running
        statistics end as rank 0's (DDP broadcasts rank 0's buffers before every forward)."""
        plan = epoch_plan(self.series, self.cfg.sampling, np.random.default_rng([self.cfg.seed, epoch]))
        parts = {rank: rank_plan(plan, rank, WORLD) for rank in range(WORLD)}
        self.parts[epoch] = [parts[r] for r in range(WORLD)]
        buffers = {k: v.clone() for k, v in self.model.named_buffers()}
        grads = {}
        for rank in reversed(range(WORLD)):
            with torch.no_grad():
                for name, buffer in self.model.named_buffers():
                    buffer.copy_(buffers[name])
            grads[rank] = self.gradient(epoch, rank, parts[rank])
        self.model.zero_grad(set_to_none=True)
        for i, p in enumerate(self.model.parameters()):
            p.grad = sum(grads[rank][i] for rank in range(WORLD)) / WORLD
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        self.scheduler.step()
        self.rank0_grads = grads[0]

    def assert_matches(self, checkpoint: Path) -> None:
        state = load_checkpoint(checkpoint)
        model = self.model.state_dict()
        assert set(state["model"]) == set(model)
        for name, value in model.items():
            torch.testing.assert_close(state["model"][name], value, rtol=1e-5, atol=1e-8, msg=lambda m: f"{name}: {m}")
        # Adam's moments hold the gradient itself (exp_avg = sum of (1 - beta1) beta1^k g), which
        # the weights after Adam's first steps do not show (g / |g| does not see a factor 2).
        mine = self.optimizer.state_dict()["state"]
        theirs = state["optimizer"]["state"]
        assert set(theirs) == set(mine)
        for index, moments in mine.items():
            for key in ("exp_avg", "exp_avg_sq"):
                scale = float(moments[key].abs().max()) or 1.0
                torch.testing.assert_close(theirs[index][key], moments[key], rtol=1e-5, atol=1e-6 * scale,
                                           msg=lambda m: f"parameter {index} {key}: {m}")


def test_two_ranks_average_gradients_write_once_and_resume_exactly(tiny_rsna, tmp_path):
    train_dir, _ = tiny_rsna
    out = tmp_path / "run"
    args = ["--data", str(train_dir), "--out", str(out), "--epochs", "2", *TINY]
    # 1. One epoch under torchrun: the time limit (0.06 ms) stops the run before its second
    #    epoch, with the schedule of two, as a job's time limit would.
    first = _torchrun([*args, "--time-limit", "0.000001"], tmp_path / "logs1", tmp_path)
    text = _finish(first)
    assert first.returncode == 0, text
    logs = _rank_logs(tmp_path / "logs1")
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "history.json", "last.pt",
                                                     "result.json"]
    assert json.loads((out / "result.json").read_text())["stopped_early"] is True
    # Rank 0 logs the run, shows progress and reports; rank 1 says nothing.
    for line in ("training on cpu in float32", "epoch 1:", "stopping before epoch 2", "epoch 1/2 [", "checkpoints:"):
        assert line in logs[0], line
    assert logs[1].strip() == "", logs[1]

    cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    # One thread, as torchrun gives each rank (OMP_NUM_THREADS=1): the same convolution
    # kernels, so the reference's arithmetic is the ranks' own.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = _Reference(cfg)
        reference.step(0)
    finally:
        torch.set_num_threads(threads)
    # The ranks' parts of the plan: disjoint positions, the whole plan, different slices.
    part0, part1 = reference.parts[0]
    plan = epoch_plan(reference.series, cfg.sampling, np.random.default_rng([cfg.seed, 0]))
    assert len(part0) == len(part1) == len(plan) // WORLD and part0 != part1
    assert sorted(part0 + part1) == sorted(plan)
    reference.assert_matches(out / "last.pt")
    # Each rank's gradient alone is far from the average the ranks trained on: the check above
    # could not pass if the gradients were not all-reduced.
    mine = reference.optimizer.state_dict()["state"]
    alone = max(float((0.1 * g - mine[i]["exp_avg"]).abs().max()) for i, g in enumerate(reference.rank0_grads))
    assert alone > 1e-3 * max(float(m["exp_avg"].abs().max()) for m in mine.values())

    # 2. --resume under torchrun runs the second epoch; it equals the reference's second step.
    second = _torchrun([*args, "--resume", str(out / "last.pt")], tmp_path / "logs2", tmp_path)
    text = _finish(second)
    assert second.returncode == 0, text
    logs = _rank_logs(tmp_path / "logs2")
    assert "resumed from" in logs[0] and "epoch 2:" in logs[0] and "epoch 1:" not in logs[0]
    assert logs[1].strip() == "", logs[1]
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [0, 1]
    torch.set_num_threads(1)
    try:
        reference.step(1)
    finally:
        torch.set_num_threads(threads)
    reference.assert_matches(out / "last.pt")
    assert not list(out.glob("*.tmp"))


def _long_run(tiny_rsna, tmp_path, name: str, timeout_s: float) -> "tuple[subprocess.Popen, Path, Path]":
    train_dir, _ = tiny_rsna
    out = tmp_path / name
    args = ["--data", str(train_dir), "--out", str(out), "--epochs", "200", *TINY, "-q",
            "--dist-timeout", str(timeout_s)]
    proc = _torchrun(args, tmp_path / f"logs-{name}", tmp_path)
    # Rank 0 has finished an epoch: both ranks are in the training loop.
    _wait_for(lambda: (out / "last.pt").exists(), proc, "first checkpoint")
    return proc, out, tmp_path / f"logs-{name}"


def test_a_killed_rank_ends_the_job_with_an_error_naming_it(tiny_rsna, tmp_path):
    proc, out, _ = _long_run(tiny_rsna, tmp_path, "killed", timeout_s=120)
    workers = _workers(proc)
    assert sorted(workers) == [0, 1]
    os.kill(workers[1], signal.SIGKILL)
    text = _finish(proc)
    assert proc.returncode != 0
    # torchrun's summary names the root cause: rank 1, killed.
    cause = text.split("Root Cause", 1)[1]
    assert "rank      : 1" in cause and "SIGKILL" in cause, text[-2000:]
    assert not (out / "result.json").exists()  # rank 0 never got past the others


def test_a_hung_rank_fails_the_others_after_the_timeout_with_one_clear_line(tiny_rsna, tmp_path):
    proc, out, log_dir = _long_run(tiny_rsna, tmp_path, "hung", timeout_s=5)
    workers = _workers(proc)
    os.kill(workers[1], signal.SIGSTOP)  # alive but silent: torchrun cannot see a problem
    try:
        # Rank 0 waits in the gradient all-reduce for 5 s, then fails on its own.
        _wait_for(lambda: not _alive(workers[0]), proc, "end of rank 0", timeout=60)
    finally:
        # torchrun then stops rank 1 with SIGTERM, which a stopped process only receives once
        # it runs again (torchrun would SIGKILL it after 30 s).
        os.kill(workers[1], signal.SIGCONT)
    text = _finish(proc)
    assert proc.returncode != 0
    rank0 = _rank_logs(log_dir)[0]
    errors = [line for line in rank0.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, rank0[-3000:]
    assert errors[0].startswith("error: rank 0 of 2: lost the other ranks in a collective (")
    assert "Timed out" in errors[0] and "--resume" in errors[0] and "Traceback" not in rank0
    assert "rank      : 0" in text.split("Root Cause", 1)[1]
    assert not (out / "result.json").exists()
