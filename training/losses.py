"""Training losses for the keypoint-and-severity network (outputs described in :mod:`.model`).

Target layout (one batch; the dataset code, :mod:`.targets`, produces exactly this), with ``K``
keypoint types and output maps of ``h x w`` cells (stride 4):

==================  ===========  =====  ===========================================================
key                 shape        dtype  meaning
==================  ===========  =====  ===========================================================
``heatmap``         [N, K, h, w] float  Gaussian per keypoint type, values in [0, 1], 1 at the cell
                                        of a present keypoint, all 0 for an absent one
``keypoint_index``  [N, K]       long   flat index ``iy * w + ix`` of the cell holding keypoint k
                                        (any value in range when the keypoint is absent)
``keypoint_mask``   [N, K]       float  keypoint k's weight in this image: 1 on its labelled slice,
                                        0 when absent, in between on slices beside the label (the
                                        through-plane weight, which is also the target's peak)
``offset``          [N, K, 2]    float  sub-cell position (dx, dy) of the keypoint, in [0, 1)
``severity``        [N, K]       long   class 0/1/2 (normal-mild/moderate/severe), -1 = unlabelled
``channel_mask``    [N, K]       float  optional: 1 where heatmap channel k is supervised for this
                                        image (a network serving several views supervises only
                                        the image's own view's channels); default all ones
==================  ===========  =====  ===========================================================

Positives of the heatmap loss are taken from ``keypoint_index``/``keypoint_mask`` (not from
``heatmap == 1``), so they never depend on float rounding in the rendered Gaussian. A keypoint of
weight ``w < 1`` is a soft positive: its peak cell counts ``w`` as a positive and ``1 - w`` (times
the focal down-weighting of the target ``w``) as a negative, so the score the network learns
there falls with the distance from the labelled slice; with weights 0 and 1 only, every loss is
exactly CenterNet's.

The severity logits of keypoint ``k`` are group ``keypoint_groups[k]``, i.e. channels
``3g .. 3g + 2`` of the severity output (``View.severity_group(k)``, or for a network serving
several views ``HeadLayout.keypoint_groups()``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from lumbar_edge.errors import InputError
from lumbar_edge.labels import SEVERITY_WEIGHTS, VIEWS


@dataclass
class KeypointTargets:
    """One batch of training targets; see the module docstring for shapes and meaning."""

    heatmap: torch.Tensor
    keypoint_index: torch.Tensor
    keypoint_mask: torch.Tensor
    offset: torch.Tensor
    severity: torch.Tensor
    channel_mask: Optional[torch.Tensor] = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> "KeypointTargets":
        """Build from a dict of tensors or numpy arrays (as :func:`.targets.collate_targets` gives).

        Raises :class:`InputError` if a required key is missing.
        """
        if isinstance(data, KeypointTargets):
            return data
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n != "channel_mask" and n not in data]
        if missing:
            raise InputError(f"training targets lack {', '.join(missing)}")
        return cls(**{n: torch.as_tensor(data[n]) for n in names if data.get(n) is not None})

    def to(self, device: Union[str, torch.device]) -> "KeypointTargets":
        """The same targets on ``device``."""
        return KeypointTargets(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                                  for f in fields(self)})


def keypoint_groups_for_view(view: str) -> Tuple[int, ...]:
    """``keypoint_groups`` for a single-view network: ``VIEWS[view].severity_group(k)`` per k.

    Raises :class:`InputError` for an unknown view name.
    """
    if view not in VIEWS:
        raise InputError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    v = VIEWS[view]
    return tuple(v.severity_group(k) for k in range(v.num_keypoints))


def _positive_map(index: torch.Tensor, mask: torch.Tensor, hw: int) -> torch.Tensor:
    """[N, K, h*w] float: ``mask[n, k]`` at ``index[n, k]``, 0 elsewhere."""
    n, k = index.shape
    pos = torch.zeros(n, k, hw, dtype=mask.dtype, device=mask.device)
    return pos.scatter_(2, index.clamp(0, hw - 1).unsqueeze(-1), mask.unsqueeze(-1))


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor, keypoint_index: torch.Tensor,
                       keypoint_mask: torch.Tensor, channel_mask: Optional[torch.Tensor] = None,
                       alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet penalty-reduced pixel-wise focal loss, normalised by the number of keypoints.

    ``-1/N_pos * sum( (1-p)^alpha log p  at positives;  (1-y)^beta p^alpha log(1-p)  elsewhere )``
    with ``p = sigmoid(logits)`` and ``y`` the Gaussian target. Positives are the cells
    ``keypoint_index`` where ``keypoint_mask`` is 1. ``N_pos`` is clamped to at least 1 (images
    with no keypoint still learn "no peak here"). Log-probabilities come from ``logsigmoid``, so
    confident logits neither overflow nor need CenterNet's probability clamp.
    """
    n, k, h, w = logits.shape
    flat = logits.reshape(n, k, h * w)
    y = target.reshape(n, k, h * w).to(flat.dtype)
    pos = _positive_map(keypoint_index, keypoint_mask.to(flat.dtype), h * w)
    weight = torch.ones_like(flat) if channel_mask is None else channel_mask.to(flat.dtype).unsqueeze(-1).expand_as(flat)
    pos = pos * weight
    p = torch.sigmoid(flat)
    log_p = F.logsigmoid(flat)
    log_not_p = F.logsigmoid(-flat)
    pos_term = (1 - p).pow(alpha) * log_p * pos
    neg_term = (1 - y).clamp(min=0).pow(beta) * p.pow(alpha) * log_not_p * (1 - pos) * weight
    num_pos = pos.sum().clamp(min=1.0)
    return -(pos_term.sum() + neg_term.sum()) / num_pos


def bce_heatmap_loss(logits: torch.Tensor, target: torch.Tensor,
                     channel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Plain binary cross-entropy against the Gaussian target, averaged over supervised cells."""
    loss = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    if channel_mask is None:
        return loss.mean()
    weight = channel_mask.to(logits.dtype)[:, :, None, None].expand_as(loss)
    return (loss * weight).sum() / weight.sum().clamp(min=1.0)


def gather_at_keypoints(maps: torch.Tensor, keypoint_index: torch.Tensor, per_keypoint: int) -> torch.Tensor:
    """Read ``maps`` [N, K*per_keypoint, h, w] at each keypoint's cell -> [N, K, per_keypoint]."""
    n, _, h, w = maps.shape
    k = keypoint_index.shape[1]
    flat = maps.reshape(n, k, per_keypoint, h * w)
    idx = keypoint_index.clamp(0, h * w - 1)[:, :, None, None].expand(n, k, per_keypoint, 1)
    return flat.gather(3, idx).squeeze(3)


def offset_l1_loss(offset: torch.Tensor, target: torch.Tensor, keypoint_index: torch.Tensor,
                   keypoint_mask: torch.Tensor) -> torch.Tensor:
    """L1 between predicted and target (dx, dy) at present keypoints' cells only.

    ``offset`` [N, 2K, h, w] (channels 2k, 2k+1 = dx, dy of keypoint k); ``target`` [N, K, 2].
    Averaged over present keypoints and both coordinates; 0 when no keypoint is present.
    """
    pred = gather_at_keypoints(offset, keypoint_index, 2)
    mask = keypoint_mask.to(pred.dtype).unsqueeze(-1)
    diff = (pred - target.to(pred.dtype)).abs() * mask
    return diff.sum() / (2 * mask.sum()).clamp(min=1.0)


def identity_loss(logits: torch.Tensor, keypoint_index: torch.Tensor, keypoint_mask: torch.Tensor,
                  channel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Which keypoint type is at a keypoint's cell: cross-entropy over the heatmap channels there.

    At the cell of keypoint ``k`` the logits of every channel supervised for the image (its view's
    channels, ``channel_mask``) compete, and channel ``k`` must win: the disc levels of a view look
    alike, and this teaches the network which level a disc is directly, where the focal loss only
    sees each channel on its own. Weighted by ``keypoint_mask`` (the through-plane weights) and
    averaged over them; 0 when no keypoint is present.
    """
    n, k, h, w = logits.shape
    flat = logits.reshape(n, k, h * w)
    idx = keypoint_index.clamp(0, h * w - 1)
    at = flat.gather(2, idx[:, None, :].expand(n, k, k)).transpose(1, 2)  # [N, keypoint, channel]
    compete = torch.ones(n, k, dtype=torch.bool, device=logits.device) if channel_mask is None else channel_mask > 0
    at = at.masked_fill(~compete[:, None, :], float("-inf"))
    nll = -torch.log_softmax(at, dim=-1).diagonal(dim1=1, dim2=2)  # [N, keypoint]
    weight = keypoint_mask.to(logits.dtype) * compete.to(logits.dtype)
    nll = torch.where(weight > 0, nll, torch.zeros_like(nll))
    return (nll * weight).sum() / weight.sum().clamp(min=1e-12)


def gather_severity_logits(severity: torch.Tensor, keypoint_index: torch.Tensor,
                           keypoint_groups: torch.Tensor) -> torch.Tensor:
    """[N, K, 3] logits: for keypoint k, group ``keypoint_groups[k]`` read at its cell."""
    n, c3, h, w = severity.shape
    groups = severity.reshape(n, c3 // 3, 3, h * w)[:, keypoint_groups]   # [N, K, 3, h*w]
    k = keypoint_index.shape[1]
    idx = keypoint_index.clamp(0, h * w - 1)[:, :, None, None].expand(n, k, 3, 1)
    return groups.gather(3, idx).squeeze(3)


def severity_loss(severity: torch.Tensor, target: torch.Tensor, keypoint_index: torch.Tensor,
                  keypoint_mask: torch.Tensor, keypoint_groups: torch.Tensor,
                  class_weights: torch.Tensor) -> torch.Tensor:
    """Class-weighted cross-entropy of the severity logits read at present, labelled keypoints.

    ``sum_i m_i w[y_i] * -log softmax(z_i)[y_i] / sum_i m_i w[y_i]`` over keypoints with
    ``target >= 0``, ``m_i`` the keypoint mask (its weight): the competition's sample-weighted
    log loss (weights 1/2/4 by true class). 0 when no keypoint is labelled.
    """
    logits = gather_severity_logits(severity, keypoint_index, keypoint_groups)
    valid = (target >= 0) & (keypoint_mask > 0)
    safe_target = target.clamp(min=0)
    nll = -torch.log_softmax(logits, dim=-1).gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)
    w = class_weights.to(logits.dtype)[safe_target] * valid.to(logits.dtype) * keypoint_mask.to(logits.dtype)
    return (w * nll).sum() / w.sum().clamp(min=1e-12)


class KeypointLoss(nn.Module):
    """Heatmap + offset + severity loss; ``forward(outputs, targets) -> (total, parts)``.

    ``heatmap``: ``"focal"`` (CenterNet, ``alpha``/``beta``) or ``"bce"``; ``offset``: whether the
    offset loss is part of the total; ``keypoint_groups``: severity group of each keypoint type
    (default: all 0, one condition group); ``severity_class_weights``: the competition's 1/2/4.
    ``identity_weight``: weight of :func:`identity_loss` (0: CenterNet's losses only).
    ``parts`` holds detached tensors ``heatmap``, ``offset``, ``severity``, ``identity``
    (unweighted) and ``total``. Raises :class:`InputError` for an unknown heatmap loss, and for outputs that do not
    match ``keypoint_groups``.
    """

    def __init__(self, heatmap: str = "focal", offset: bool = True, heatmap_weight: float = 1.0,
                 offset_weight: float = 1.0, severity_weight: float = 1.0, identity_weight: float = 0.0,
                 keypoint_groups: Optional[Sequence[int]] = None,
                 severity_class_weights: Sequence[float] = SEVERITY_WEIGHTS,
                 alpha: float = 2.0, beta: float = 4.0):
        super().__init__()
        if heatmap not in ("focal", "bce"):
            raise InputError(f"heatmap loss must be 'focal' or 'bce', got {heatmap!r}")
        if len(severity_class_weights) != 3:
            raise InputError("severity_class_weights needs 3 values (normal/mild, moderate, severe)")
        self.heatmap = heatmap
        self.use_offset = bool(offset)
        self.heatmap_weight = float(heatmap_weight)
        self.offset_weight = float(offset_weight)
        self.severity_weight = float(severity_weight)
        self.identity_weight = float(identity_weight)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.register_buffer("class_weights", torch.tensor([float(v) for v in severity_class_weights]),
                             persistent=False)
        groups = None if keypoint_groups is None else torch.tensor([int(g) for g in keypoint_groups], dtype=torch.long)
        self.register_buffer("keypoint_groups", groups, persistent=False)

    def _groups(self, num_keypoints: int, num_groups: int, device: torch.device) -> torch.Tensor:
        groups = self.keypoint_groups
        if groups is None:
            return torch.zeros(num_keypoints, dtype=torch.long, device=device)
        if groups.numel() != num_keypoints:
            raise InputError(f"keypoint_groups has {groups.numel()} entries but the heatmap has {num_keypoints} channels")
        if int(groups.min()) < 0 or int(groups.max()) >= num_groups:
            raise InputError(f"keypoint_groups {groups.tolist()} out of range for {num_groups} severity groups")
        return groups.to(device)

    def forward(self, outputs: Sequence[torch.Tensor], targets: "KeypointTargets | Mapping[str, object]"
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        heatmap, offset, severity = outputs
        t = KeypointTargets.from_mapping(targets).to(heatmap.device)  # no copy when already there
        k = heatmap.shape[1]
        if offset.shape[1] != 2 * k or severity.shape[1] % 3 != 0:
            raise InputError(f"outputs do not fit K={k}: offset has {offset.shape[1]} channels, "
                             f"severity {severity.shape[1]}")
        if tuple(t.heatmap.shape) != tuple(heatmap.shape):
            raise InputError(f"heatmap target {tuple(t.heatmap.shape)} != output {tuple(heatmap.shape)}")
        index = t.keypoint_index.long()
        if self.heatmap == "focal":
            hm = focal_heatmap_loss(heatmap, t.heatmap, index, t.keypoint_mask, t.channel_mask, self.alpha, self.beta)
        else:
            hm = bce_heatmap_loss(heatmap, t.heatmap, t.channel_mask)
        off = offset_l1_loss(offset, t.offset, index, t.keypoint_mask)
        groups = self._groups(k, severity.shape[1] // 3, severity.device)
        sev = severity_loss(severity, t.severity.long(), index, t.keypoint_mask, groups, self.class_weights)
        ident = identity_loss(heatmap, index, t.keypoint_mask, t.channel_mask)
        total = self.heatmap_weight * hm + self.severity_weight * sev
        if self.use_offset:
            total = total + self.offset_weight * off
        if self.identity_weight:
            total = total + self.identity_weight * ident
        parts = {"heatmap": hm.detach(), "offset": off.detach(), "severity": sev.detach(), "identity": ident.detach(),
                 "total": total.detach()}
        return total, parts
