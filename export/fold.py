"""The network as exported: every concatenation a convolution reads is folded away.

Two places of :class:`~lumbar_edge.training.model.LumbarNet` concatenate feature maps before a
convolution: ASPP's projection reads its five branches, and the decoder's first 3x3 reads the
upsampled ASPP/attention output beside the projected low-level features; with
``coord_channels`` both also read two constant ramps (``CoordChannels``). A convolution is linear
in its input channels, so

    conv(concat(a, b, ramps)) = conv_a(a) + conv_b(b) + conv_ramps(ramps)

and with the input's height and width fixed (the model contract: only the batch axis is dynamic)
the last term is a constant map [1, C_out, h, w], zero padding and dilation included. The
BatchNorm after each such convolution is folded in (eval mode: a per-channel scale and shift), so
:class:`ConcatConv` computes ``sum of per-part convolutions + constant map`` and a ReLU follows.
:func:`export_network` returns that network; it is exact up to float rounding, which the export's
parity check against the unchanged PyTorch model measures.

Why: in the Q/DQ INT8 model a convolution reading a concatenation ran badly on OpenVINO's CPU
plugin without VNNI (AVX2): the ASPP projection's output was 15% off FP32 against ONNX Runtime's 6%
on the same file, and folding only the ramps put the decoder's largest convolution into the same
pattern (OpenVINO's INT8 output error 3.4x ONNX Runtime's). Split, every INT8 convolution reads one
quantized ReLU output, a pattern both runtimes get right, and no concatenation joins a quantized
map to float ramps (which, with a dynamic batch, made OpenVINO's INT8 wrong). The partial sums and
the constant maps are float Adds the INT8 pass leaves alone
(:data:`lumbar_edge.export.int8.CONCAT_CONV_MARK`).
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from lumbar_edge.training.model import ASPPPooling, CoordChannels, LumbarNet

from .errors import ExportError

#: The number of channels ``CoordChannels`` appends.
COORD_CHANNELS = 2
#: The attribute name of every :class:`ConcatConv`: the ONNX node names of its Adds contain
#: ``/concat_conv/``, which is how the INT8 pass finds them.
CONCAT_CONV = "concat_conv"


class ConcatConv(nn.Module):
    """``conv`` (then ``bn``, if given) over ``concat(*parts, ramps)`` as the sum of one
    convolution per part plus a constant map for the ramps.

    ``sizes``: the channel count of each part, in concatenation order. ``ramps``: the [1, 2, h, w]
    coordinate channels appended last, or None when the layer reads none. Raises
    :class:`ExportError` when the sizes do not add up to the convolution's input channels or the
    convolution is grouped.
    """

    def __init__(self, conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d], sizes: Sequence[int],
                 ramps: Optional[torch.Tensor] = None):
        super().__init__()
        extra = COORD_CHANNELS if ramps is not None else 0
        if conv.groups != 1 or not sizes or min(sizes) < 1 or sum(sizes) + extra != conv.in_channels:
            raise ExportError(f"cannot split a convolution with {conv.in_channels} inputs and {conv.groups} groups "
                              f"into parts of {list(sizes)} channels" + (" and 2 coordinate channels" if extra else ""))
        # float64 while folding, so the fold adds no rounding of its own.
        weight = conv.weight.detach().double()
        out = conv.out_channels
        bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(out, dtype=torch.float64)
        scale, shift = torch.ones(out, dtype=torch.float64), torch.zeros(out, dtype=torch.float64)
        if bn is not None:
            scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
            shift = bn.bias.detach().double() - bn.running_mean.detach().double() * scale
        weight = weight * scale[:, None, None, None]
        self.parts = nn.ModuleList()
        start = 0
        for i, n in enumerate(sizes):
            part = nn.Conv2d(n, out, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                             dilation=conv.dilation, bias=(i == 0))
            with torch.no_grad():
                part.weight.copy_(weight[:, start:start + n].float())
                if i == 0:
                    part.bias.copy_((bias * scale + shift).float())
            self.parts.append(part)
            start += n
        self.coord_map: Optional[torch.Tensor]
        if ramps is not None:
            with torch.no_grad():
                coord_map = F.conv2d(ramps.double(), weight[:, start:], None, conv.stride, conv.padding, conv.dilation)
            self.register_buffer("coord_map", coord_map.float())
        else:
            self.coord_map = None

    def forward(self, parts: List[torch.Tensor]) -> torch.Tensor:
        y = self.parts[0](parts[0])
        for conv, x in zip(self.parts[1:], parts[1:]):
            y = y + conv(x)
        return y + self.coord_map if self.coord_map is not None else y


class _ConvBranch(nn.Module):
    """An ASPP conv branch (conv, BN, ReLU) whose conv reads the map and the ramps."""

    def __init__(self, block: nn.Sequential, channels: int, ramps: Optional[torch.Tensor]):
        super().__init__()
        conv, bn, relu = block
        setattr(self, CONCAT_CONV, ConcatConv(conv, bn, [channels], ramps))
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(getattr(self, CONCAT_CONV)([x]))


def _pooling_branch(branch: ASPPPooling, ramps: Optional[torch.Tensor]) -> ASPPPooling:
    """The image-level branch pools first: the ramps' part is one constant per output channel,
    added to its 1x1 convolution's bias."""
    folded = copy.deepcopy(branch)
    if ramps is None:
        return folded
    conv = branch.conv
    cin = conv.in_channels - COORD_CHANNELS
    pooled = ramps.double().mean(dim=(2, 3))[0]                    # [2]
    extra = conv.weight.detach().double()[:, cin:, 0, 0] @ pooled  # [C_out]
    folded.conv = nn.Conv2d(cin, conv.out_channels, 1, bias=True)
    with torch.no_grad():
        folded.conv.weight.copy_(conv.weight[:, :cin])
        bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(extra)
        folded.conv.bias.copy_((bias + extra).float())
    return folded


class _ASPP(nn.Module):
    """ASPP with the ramps folded into each branch and the projection split over the branches."""

    def __init__(self, aspp, channels: int, ramps: Optional[torch.Tensor]):
        super().__init__()
        branches: List[nn.Module] = []
        for branch in aspp.branches:
            if isinstance(branch, ASPPPooling):
                branches.append(_pooling_branch(branch, ramps))
            elif isinstance(branch, nn.Sequential) and len(branch) == 3:
                branches.append(_ConvBranch(branch, channels, ramps))
            else:
                raise ExportError(f"cannot export ASPP branch {type(branch).__name__}")
        self.branches = nn.ModuleList(branches)
        (conv, bn, relu), _dropout = aspp.project  # dropout is the identity in eval mode
        setattr(self, CONCAT_CONV, ConcatConv(conv, bn, [conv.out_channels] * len(branches)))
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(getattr(self, CONCAT_CONV)([b(x) for b in self.branches]))


class _Decoder(nn.Module):
    """The decoder with its first convolution split over its two inputs (and the ramps folded)."""

    def __init__(self, decoder: nn.Sequential, sizes: Sequence[int], ramps: Optional[torch.Tensor]):
        super().__init__()
        conv, bn, relu = decoder[0]
        setattr(self, CONCAT_CONV, ConcatConv(conv, bn, sizes, ramps))
        self.relu = relu
        self.rest = decoder[1:]

    def forward(self, parts: List[torch.Tensor]) -> torch.Tensor:
        return self.rest(self.relu(getattr(self, CONCAT_CONV)(parts)))


class ExportNet(nn.Module):
    """:class:`LumbarNet`'s computation for [N, C, ``height``, ``width``] inputs with no
    concatenation before a convolution (module docstring). Shares the backbone, attention,
    low-level projection and heads with ``model`` (not copied: the export only reads them)."""

    def __init__(self, model: LumbarNet, height: int, width: int):
        super().__init__()
        cfg = model.config
        self.backbone = model.backbone
        with torch.no_grad():
            low, high = model.backbone.eval()(torch.zeros(1, cfg.in_channels, height, width))
        high_ramps = _ramps(tuple(high.shape[-2:])) if cfg.coord_channels else None
        low_ramps = _ramps(tuple(low.shape[-2:])) if cfg.coord_channels else None
        self.aspp = _ASPP(model.aspp, model.backbone.out_channels, high_ramps)
        self.attention = model.attention
        self.low_proj = model.low_proj
        sizes = [cfg.decoder_channels, cfg.low_level_channels]
        self.decoder = _Decoder(model.decoder, sizes, low_ramps)
        self.heatmap_head, self.offset_head, self.severity_head = model.heatmap_head, model.offset_head, model.severity_head
        self.eval()

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low, high = self.backbone(image)
        x = self.attention(self.aspp(high))
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.decoder([x, self.low_proj(low)])
        return self.heatmap_head(x), self.offset_head(x), self.severity_head(x)


def _ramps(size: Tuple[int, int]) -> torch.Tensor:
    """The coordinate channels ``CoordChannels`` appends to a map of ``size`` (its own code)."""
    return CoordChannels()(torch.zeros(1, 0, *size))


def export_network(model: LumbarNet, height: int, width: int) -> ExportNet:
    """The network the export writes for ``model`` at input size ``height`` x ``width`` (eval
    mode; only that size is valid). Raises :class:`ExportError` on a layout it does not know."""
    return ExportNet(model.eval(), height, width)


__all__ = ["ConcatConv", "ExportNet", "export_network", "CONCAT_CONV", "COORD_CHANNELS"]
