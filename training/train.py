"""The training loop: ``lumbar-edge train --data RSNA_DIR --out runs/NAME``.

Fixed seed, AMP on CUDA, best/last checkpoints loadable with ``torch.load(weights_only=True)``
(the config is saved beside them as JSON and inside them as plain types), resume, a progress bar
per epoch with the losses, a wall-clock limit for CPU runs, and multi-GPU training under
``torchrun`` (DistributedDataParallel; each rank trains on its shard of the samples, rank 0
validates and writes; see :func:`train`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from lumbar_edge.errors import InputError, LumbarEdgeError
from lumbar_edge.labels import HeadLayout
from lumbar_edge.preprocess import PreprocessConfig
from lumbar_edge.progress import Progress

from .augment import AugmentConfig, augment_batch
from .data import RsnaDataset, Sample, SamplingConfig, build_samples, build_series, epoch_plan, split_studies
from .evaluation import evaluate_samples
from .losses import KeypointLoss
from .model import ModelConfig, build_model, load_backbone_weights
from .presets import PRESETS
from .targets import TargetConfig, collate_targets, make_targets

log = logging.getLogger("lumbar_edge.training")


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` beside the checkpoints."""

    data: str
    out: str
    val_data: Optional[str] = None
    val_fraction: float = 0.2
    views: Tuple[str, ...] = ("sagittal_t2", "sagittal_t1", "axial_t2")
    backbone: str = "resnet18"
    attention: bool = True
    decoder_channels: int = 128
    output_stride: int = 16  # encoder output stride: 16 (DeepLabV3+) or 32 (a third less compute)
    coord_channels: bool = True  # CoordConv x/y channels at the encoder output and decoder input
    width: int = 64  # ResNet base width; 64 is the standard ResNet, smaller is for tests and quick runs
    backbone_weights: Optional[str] = None
    size: int = 256
    in_channels: int = 3
    epochs: int = 20
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    heatmap_loss: str = "focal"
    offset_loss: bool = True
    identity_weight: float = 1.0  # losses.identity_loss: which level a disc is (0: CenterNet's losses only)
    sigma: float = 1.5
    augment: bool = True
    clahe_prob: float = 0.0
    seed: int = 0
    amp: bool = True  # mixed precision where the device runs it natively (mixed_precision())
    device: str = "auto"
    time_limit_min: Optional[float] = None
    max_studies: Optional[int] = None
    # Through-plane training (data.SamplingConfig): the target's Gaussian along the slice normal
    # and, per view (sagittal T2, sagittal T1, axial T2), how each epoch draws slices.
    through_plane_sigma_mm: float = 2.5
    positives: Tuple[int, int, int] = (3, 4, 2)
    neighbours: Tuple[int, int, int] = (1, 2, 0)
    negatives: Tuple[int, int, int] = (2, 1, 1)
    workers: int = 0  # data-loading processes (0: in the training process)
    cache_pixels: bool = False  # keep decoded slices in memory (small datasets read every epoch)
    # Under torchrun: how long a rank waits in a collective (gradient all-reduce, barrier) for the
    # others before it fails. It bounds a hang when a rank stops answering without exiting; it
    # must exceed rank 0's validation of an epoch, which the other ranks wait through.
    dist_timeout_s: float = 1800.0

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("views", *_TUPLE_FIELDS):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown training options in config: {', '.join(sorted(unknown))}")
        d = dict(d)
        for key in ("views", *_TUPLE_FIELDS):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(sigma_mm=self.through_plane_sigma_mm, positives=self.positives,
                              neighbours=self.neighbours, negatives=self.negatives)

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(height=self.size, width=self.size, in_channels=self.in_channels)

    @property
    def layout(self) -> HeadLayout:
        return HeadLayout(views=tuple(self.views))

    def model_config(self) -> ModelConfig:
        layout = self.layout
        return ModelConfig(backbone=self.backbone, in_channels=self.in_channels, num_keypoints=layout.num_keypoints,
                           num_conditions=layout.num_conditions, attention=self.attention,
                           decoder_channels=self.decoder_channels, width=self.width,
                           output_stride=self.output_stride, coord_channels=self.coord_channels)


_TUPLE_FIELDS = ("positives", "neighbours", "negatives")


def preset_config(name: str, **overrides) -> "TrainConfig":
    """A :class:`TrainConfig` from preset ``name``, with ``overrides`` (e.g. data, out) on top.

    Raises :class:`InputError` for an unknown preset or option."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[name].values)
    values.update(overrides)
    return TrainConfig.from_dict(values)


@dataclass
class TrainResult:
    out: Path
    best_epoch: int
    best: Dict[str, float]
    history: List[Dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    rank: int = 0  # under torchrun, the rank that returned it (only rank 0's holds the figures)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but torch sees no CUDA GPU")
    return torch.device(name)


def mixed_precision(device: torch.device) -> Optional[torch.dtype]:
    """The autocast type for ``device``: FP16 on CUDA; BF16 on a CPU with native BF16 arithmetic
    (AVX512-BF16 or AMX, where oneDNN's BF16 convolutions are several times faster than FP32: a
    cpu-demo step 4.4x on a 2-core Xeon with AMX, benchmarks/train_speed.py); None (FP32)
    elsewhere, where BF16 would be emulated and slower."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
            check = getattr(cpu, probe, None)
            if check is not None and check():
                return torch.bfloat16
    return None


class DistributedTrainingError(LumbarEdgeError):
    """A rank of a torchrun job cannot go on: its own user error, or the other ranks are gone."""


def _dist_info() -> Tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise.

    Raises :class:`InputError` when the variables are not integers or do not fit together."""
    try:
        rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise InputError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them): {exc}") from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise InputError(f"RANK={rank} does not fit WORLD_SIZE={world} (torchrun sets them)")
    return rank, world, local


def dropout_seed(seed: int, rank: int, epoch: int) -> int:
    """The torch seed that rank ``rank`` of a torchrun job sets at the start of ``epoch``: its
    dropout draws for the epoch (the augmentation has its own generators, see ``_Batches``)."""
    return int(np.random.SeedSequence([seed, rank, epoch], spawn_key=(1,)).generate_state(1)[0])


def rank_plan(plan: Sequence[Tuple[int, int]], rank: int, world: int) -> List[Tuple[int, int]]:
    """The part of an epoch's ``plan`` that ``rank`` of ``world`` trains on: every world-th entry
    from position ``rank``, cut to ``len(plan) // world`` entries (at least 1) so that every rank
    runs the same number of steps (DistributedDataParallel waits for all of them). The ranks'
    parts are disjoint sets of plan positions; together they cover the plan but its last
    ``len(plan) % world`` entries."""
    per_rank = max(1, len(plan) // world)
    return list(plan[rank::world][:per_rank])


def make_batch(samples: Sequence[Sample], cfg: TrainConfig, gen: Optional[torch.Generator],
               target_cfg: TargetConfig) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Stack samples, augment (when ``gen`` is given) and build the targets at stride 4.

    Each keypoint's through-plane weight (``Sample.weight``) travels with it through the
    augmentation (an axial flip swaps left and right) and becomes its target's peak."""
    images = torch.from_numpy(np.stack([s.image for s in samples]))
    points = torch.from_numpy(np.stack([np.nan_to_num(s.points, nan=-1e4) for s in samples]))
    present = torch.from_numpy(np.stack([s.weight * s.present for s in samples]).astype(np.float32))
    severity = torch.from_numpy(np.stack([s.severity for s in samples]))
    if gen is not None and cfg.augment:
        pre = cfg.preprocess
        aug = AugmentConfig(clahe_prob=cfg.clahe_prob)
        images, points, present, severity = augment_batch(images, points, present, severity,
                                                          [s.flip_pair for s in samples], pre.mean, pre.std, aug, gen)
    h, w = images.shape[-2] // target_cfg.stride, images.shape[-1] // target_cfg.stride
    targets = collate_targets([
        make_targets(points[i].numpy(), present[i].numpy(), severity[i].numpy(), samples[i].channel_mask, h, w, target_cfg)
        for i in range(len(samples))
    ])
    return images.float(), {k: torch.from_numpy(v) for k, v in targets.items()}


class _Batches:
    """The batches of one epoch's plan, built on demand (in DataLoader workers when asked):
    slices decoded and preprocessed, augmented with a generator seeded by (seed, rank, epoch,
    batch), so a batch is the same whichever process builds it and after a resume."""

    def __init__(self, series, plan: Sequence[Tuple[int, int]], cfg: TrainConfig, target_cfg: TargetConfig,
                 epoch: int, rank: int):
        self.series, self.cfg, self.target_cfg = series, cfg, target_cfg
        self.chunks = [plan[i:i + cfg.batch_size] for i in range(0, len(plan), cfg.batch_size)]
        self.seed = (cfg.seed, rank, epoch)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        pre, sigma = self.cfg.preprocess, self.cfg.through_plane_sigma_mm
        samples = [self.series[s].sample(c, pre, sigma) for s, c in self.chunks[i]]
        seed = int(np.random.SeedSequence([*self.seed, i]).generate_state(1)[0])
        return make_batch(samples, self.cfg, torch.Generator().manual_seed(seed), self.target_cfg)


def _loader(batches: _Batches, workers: int):
    """Iterate over ``batches`` in order; with ``workers`` > 0 through a torch DataLoader whose
    processes build the next batches while the model trains on this one."""
    if workers <= 0:
        return (batches[i] for i in range(len(batches)))
    return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers,
                                       persistent_workers=False, prefetch_factor=2)


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, epoch: int, cfg: TrainConfig,
                    metrics: Dict[str, float], best_score: float) -> None:
    """Write a checkpoint atomically (temp file + rename); only plain types and tensors inside."""
    state = {
        "format": "lumbar-edge-checkpoint/1",
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "best_score": best_score,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "train_config": cfg.to_dict(),
        "model_config": cfg.model_config().to_dict(),
        "layout": cfg.layout.to_dict(),
        "preprocess": cfg.preprocess.to_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; raises :class:`InputError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise InputError(f"{path} is not a readable lumbar-edge checkpoint: {exc}".splitlines()[0]) from exc
    if not isinstance(state, dict) or state.get("format") != "lumbar-edge-checkpoint/1":
        raise InputError(f"{path} is not a lumbar-edge checkpoint")
    return state


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _earlier_history(path: Path, first_epoch: int) -> List[Dict[str, float]]:
    """The entries of a run's ``history.json`` for the epochs before ``first_epoch`` (none when
    the file is missing or unreadable: the history is a record, never needed to train)."""
    if first_epoch <= 0 or not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s is unreadable (%s); the history restarts at the resumed epoch", path, exc)
        return []
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("epoch"), (int, float))
            and e["epoch"] < first_epoch]


_COMMUNICATION = re.compile(r"gloo|nccl|c10d|ProcessGroup|Connection (closed|reset)|timed out", re.IGNORECASE)


def _collective_failure(exc: BaseException) -> Optional[str]:
    """The first line of ``exc``'s message when it reports a failed collective (a distributed
    error type, or a RuntimeError whose text comes from gloo, NCCL or c10d), else None."""
    import torch.distributed as dist

    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, dist.DistError) or _COMMUNICATION.search(text):
        # Gloo prefixes its source location ("[.../unbound_buffer.cc:78] "): noise to a user.
        return re.sub(r"^\[[^\]]*\]\s*", "", first)
    return None


def _broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag``, on every rank (a collective: every rank must call it)."""
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def train(cfg: TrainConfig, resume: Optional[Path] = None, progress: bool = True) -> TrainResult:
    """Train a model as ``cfg`` says; returns the best epoch's validation figures.

    Under torchrun (``WORLD_SIZE`` > 1) this is one rank of DistributedDataParallel training
    (gloo on the CPU, NCCL on GPUs): every rank builds the same epoch plan and trains on its own
    disjoint part of it (:func:`rank_plan`), gradients are averaged over the ranks at every step,
    and only rank 0 validates, logs and writes the run folder; a resume loads the checkpoint on
    every rank, and the time limit is judged by rank 0 for all. Each collective waits at most
    ``cfg.dist_timeout_s`` for the other ranks.

    Raises :class:`InputError` for unusable data or options; under torchrun,
    :class:`DistributedTrainingError` naming the rank, for its own errors and when the other
    ranks failed or stopped answering.
    """
    rank, world, local_rank = _dist_info()
    if world == 1:
        return _train(cfg, resume, progress, 0, 1, 0)
    import datetime

    import torch.distributed as dist

    if cfg.dist_timeout_s <= 0:
        raise InputError(f"the distributed timeout must be positive, got {cfg.dist_timeout_s} s")
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(torch.device("cuda", local_rank))
    # The timeout bounds every collective: a rank that hangs (rather than exits, which torchrun
    # notices at once) fails the others after this long instead of blocking them for ever.
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=cfg.dist_timeout_s))
    try:
        return _train(cfg, resume, progress, rank, world, local_rank)
    except LumbarEdgeError as exc:
        # torchrun interleaves the ranks' output: say which rank could not go on.
        raise DistributedTrainingError(f"rank {rank} of {world}: {exc}") from exc
    except RuntimeError as exc:
        # The gradient all-reduce or a barrier failed: another rank died (torchrun then stops the
        # job and names it) or stopped answering for dist_timeout_s. Gloo and NCCL report that
        # as a RuntimeError from backward(); any other RuntimeError is a bug and keeps its traceback.
        reason = _collective_failure(exc)
        if reason is None:
            raise
        raise DistributedTrainingError(
            f"rank {rank} of {world}: lost the other ranks in a collective ({reason}); another rank "
            f"failed or hung for {cfg.dist_timeout_s:g} s. Continue with --resume {Path(cfg.out) / 'last.pt'}"
        ) from exc
    finally:
        dist.destroy_process_group()


def _train(cfg: TrainConfig, resume: Optional[Path], progress: bool, rank: int, world: int,
           local_rank: int) -> TrainResult:
    """:func:`train` in one process: rank ``rank`` of ``world`` (the process group, if any, is set up)."""
    start_time = time.perf_counter()
    distributed = world > 1
    device = resolve_device(cfg.device)
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", local_rank)
    is_main = rank == 0
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    out = Path(cfg.out)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", cfg.to_dict())

    dataset = RsnaDataset.load(Path(cfg.data))
    if cfg.val_data:
        val_dataset = RsnaDataset.load(Path(cfg.val_data))
        train_ids, val_ids = dataset.study_ids, val_dataset.study_ids
    else:
        val_dataset = dataset
        train_ids, val_ids = split_studies(dataset.study_ids, cfg.val_fraction, cfg.seed)
    if cfg.max_studies:
        train_ids = train_ids[: cfg.max_studies]
    layout, pre, sampling = cfg.layout, cfg.preprocess, cfg.sampling
    train_series = build_series(dataset, layout, train_ids, progress=progress and is_main,
                                cache_pixels=cfg.cache_pixels)
    val_samples = build_samples(val_dataset, layout, pre, val_ids, negatives=False, progress=progress and is_main) if val_ids else []
    # The plan has the same length every epoch: the schedule is laid out from the first one.
    plan_length = len(epoch_plan(train_series, sampling, np.random.default_rng(0)))
    if plan_length < world:
        raise InputError(f"an epoch has {plan_length} training slices" + (f", fewer than the {world} ranks of this "
                                                                         "torchrun job" if world > 1 else ""))
    if is_main:
        log.info("%d labelled series from %d studies (%d slices an epoch), %d validation samples from %d studies",
                 len(train_series), len(train_ids), plan_length, len(val_samples), len(val_ids))

    model = build_model(cfg.model_config())
    if cfg.backbone_weights:
        load_backbone_weights(model, Path(cfg.backbone_weights))
    # channels-last: the layout cuDNN's tensor-core convolutions and oneDNN's BF16 ones run in
    # (in FP32 on a 2-core CPU it is neither faster nor slower); the weights are the same.
    model = model.to(device).to(memory_format=torch.channels_last)
    loss_fn = KeypointLoss(heatmap=cfg.heatmap_loss, offset=cfg.offset_loss, keypoint_groups=layout.keypoint_groups(),
                           identity_weight=cfg.identity_weight)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Each rank takes every world-th slice of the plan, cut to a multiple of the world size so
    # that all ranks run the same number of steps (DistributedDataParallel waits for all).
    per_rank = plan_length // world
    steps_per_epoch = math.ceil(per_rank / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                    pct_start=0.15)
    amp_dtype = mixed_precision(device) if cfg.amp else None
    use_amp = amp_dtype is not None
    # Loss scaling guards FP16's narrow range; BF16 has FP32's range and needs none.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if is_main:
        log.info("training on %s in %s", device, "mixed precision " + str(amp_dtype).replace("torch.", "")
                 if use_amp else "float32")
    first_epoch, best_score, best_epoch, best_metrics = 0, math.inf, -1, {}
    if resume is not None:
        state = load_checkpoint(resume)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch = int(state["epoch"]) + 1
        if int(state["scheduler"].get("total_steps", -1)) == cfg.epochs * steps_per_epoch:
            scheduler.load_state_dict(state["scheduler"])
        else:
            # The run was extended (or its data changed): continue with a fresh one-cycle schedule
            # over the epochs that remain rather than stepping past the old schedule's end.
            remaining = max(1, cfg.epochs - first_epoch) * steps_per_epoch
            for group in optimizer.param_groups:
                group.pop("initial_lr", None)
                group.pop("max_lr", None)
                group.pop("min_lr", None)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=remaining,
                                                            pct_start=0.15)
            if is_main:
                log.warning("the schedule length changed since the checkpoint; the learning-rate schedule "
                            "restarts for the %d remaining epochs", cfg.epochs - first_epoch)
        best_score = float(state["best_score"])
        torch.set_rng_state(state["torch_rng"])
        if is_main:
            log.info("resumed from %s at epoch %d", resume, first_epoch)
    train_model = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        # Without the offset loss the offset head gets no gradient, which DDP must be told of.
        train_model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None,
                                              find_unused_parameters=not cfg.offset_loss)

    target_cfg = TargetConfig(stride=4, sigma=cfg.sigma)
    history: List[Dict[str, float]] = []
    # history.json of a resumed run keeps the epochs before its checkpoint.
    earlier = _earlier_history(out / "history.json", first_epoch) if is_main else []
    stopped_early = False
    epoch_seconds: List[float] = []
    for epoch in range(first_epoch, cfg.epochs):
        if cfg.time_limit_min is not None and epoch_seconds:
            # Stop before an epoch that would end past the limit (judged by the epochs so far),
            # rather than after it: the limit is a budget, not a trigger.
            elapsed = time.perf_counter() - start_time
            stop = elapsed + float(np.mean(epoch_seconds)) > cfg.time_limit_min * 60
            if distributed:
                # Rank 0's clock decides for all: ranks that judged alone could part ways, and
                # the ones still training would wait for the others for ever.
                stop = _broadcast_flag(stop, device)
            if stop:
                stopped_early = True
                if is_main:
                    log.warning("stopping before epoch %d: it would end past the time limit of %.1f min",
                                epoch + 1, cfg.time_limit_min)
                break
        epoch_start = time.perf_counter()
        train_model.train()
        if distributed:
            # Every rank starts from the same seed (the weights must agree); its dropout masks
            # must not: each rank draws from its own stream, set per epoch so a resume goes on
            # with the same draws without the other ranks' generator states.
            torch.manual_seed(dropout_seed(cfg.seed, rank, epoch))
        plan = rank_plan(epoch_plan(train_series, sampling, np.random.default_rng([cfg.seed, epoch])), rank, world)
        batches = _Batches(train_series, plan, cfg, target_cfg, epoch, rank)
        sums: Dict[str, float] = {}
        with Progress(len(batches), f"epoch {epoch + 1}/{cfg.epochs}", enabled=progress and is_main) as bar:
            for images, targets in _loader(batches, cfg.workers):
                images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
                with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=use_amp):
                    outputs = train_model(images)
                total, parts = loss_fn(tuple(o.float() for o in outputs), targets)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                for k, v in {"loss": total, **parts}.items():
                    if k != "total":
                        sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
                bar.update()
                bar.set_postfix(" ".join(f"{k}={v / bar.count:.3f}" for k, v in sums.items()))
        epoch_metrics = {f"train_{k}": v / max(1, len(batches)) for k, v in sums.items()}
        if is_main:
            if val_samples:
                val = evaluate_samples(model, val_samples, val_dataset, device, layout,
                                       train_labels=[dataset.labels[s] for s in train_ids if s in dataset.labels])
                epoch_metrics.update({f"val_{k}": v for k, v in val.items()})
                score = val["selection"]
            else:
                score = epoch_metrics["train_loss"]
            epoch_metrics["epoch"] = epoch
            epoch_metrics["seconds"] = time.perf_counter() - start_time
            history.append(epoch_metrics)
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in epoch_metrics.items()))
            if score < best_score:
                best_score, best_epoch, best_metrics = score, epoch, dict(epoch_metrics)
                save_checkpoint(out / "best.pt", model, optimizer, scheduler, epoch, cfg, epoch_metrics, best_score)
            save_checkpoint(out / "last.pt", model, optimizer, scheduler, epoch, cfg, epoch_metrics, best_score)
            _write_json(out / "history.json", earlier + history)
        epoch_seconds.append(time.perf_counter() - epoch_start)
    if distributed:
        import torch.distributed as dist

        dist.barrier()  # every rank ends with rank 0's checkpoints written
    result = TrainResult(out=out, best_epoch=best_epoch, best=best_metrics, history=history,
                         seconds=time.perf_counter() - start_time, rank=rank)
    if is_main:
        _write_json(out / "result.json", {"best_epoch": best_epoch, "best": best_metrics, "seconds": result.seconds,
                                          "stopped_early": stopped_early})
    return result
