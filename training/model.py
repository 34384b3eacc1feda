"""The keypoint-and-severity network: DeepLabV3+ on a plain-PyTorch ResNet, with DANet attention.

Model contract (shared/DESIGN.md): input ``image`` float32 [N, C_in, H, W]; the forward returns the
tuple ``(heatmap, offset, severity)``, all at stride 4 (``h = ceil(H / 4)``, ``w = ceil(W / 4)``):

- ``heatmap`` [N, K, h, w]: logits, one channel per keypoint type (sigmoid gives the peak score).
- ``offset`` [N, 2K, h, w]: channels ``2k`` and ``2k + 1`` are ``dx`` and ``dy`` of keypoint type
  ``k``, the sub-cell position of the keypoint inside its stride-4 cell, in cells (target in [0, 1)).
- ``severity`` [N, 3C, h, w]: channels ``3g .. 3g + 2`` are the (normal/mild, moderate, severe)
  logits of condition group ``g``, read at a keypoint's cell.

Architecture: ResNet-18/34/50 (torchvision-compatible parameter names, so a local torchvision
state dict loads with :func:`load_backbone_weights`), encoder output stride 16 (layer4 dilated by
2) or 32 (layer4 strided, a third less compute: the CPU preset), ASPP with atrous rates (6, 12,
18) plus image pooling, optional DANet position (PAM) and channel (CAM) attention on the ASPP
output, and the DeepLabV3+ decoder fusing layer1 (stride 4) features. Optional coordinate
channels (CoordConv: x and y from -1 to 1 across the map) join the encoder output and the
decoder input: convolutions and DANet attention are blind to where they are in the image, and
which disc level a structure is depends on where it lies on the spine.

Export notes: the forward has no Python control flow on tensor shapes; resizes take their target
size from another tensor (ONNX ``Resize`` with ``sizes``), the image pooling is a global average
pool, and attention is ``MatMul`` + ``Softmax``. Nothing here downloads weights.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, List, Mapping, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from lumbar_edge.errors import InputError

#: ONNX input and output names, in the order the forward takes and returns them.
INPUT_NAME = "image"
OUTPUT_NAMES: Tuple[str, ...] = ("heatmap", "offset", "severity")
#: The network's output stride: heads run on the decoder output at 1/4 of the input size.
OUTPUT_STRIDE = 4


class BasicBlock(nn.Module):
    """ResNet-18/34 residual block: two 3x3 convolutions."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: "nn.Module | None" = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet-50 residual block: 1x1 reduce, 3x3 (carrying stride and dilation), 1x1 expand."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: "nn.Module | None" = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


#: backbone name -> (block type, blocks per stage)
BACKBONES: Mapping[str, Tuple[Type[nn.Module], Tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """ResNet trunk at output stride 16 (layer4 keeps stride 1 and dilates its 3x3 convs by 2) or
    32 (the plain ResNet).

    Parameter names match torchvision's ``resnet18/34/50`` (without ``fc``). ``width`` is the
    channel count of the stem and layer1 (64 in the standard ResNet); stages double it.
    ``forward`` returns ``(layer1 output at stride 4, layer4 output at the output stride)``.
    """

    def __init__(self, block: Type[nn.Module], layers: Tuple[int, int, int, int], in_channels: int = 3,
                 width: int = 64, output_stride: int = 16):
        super().__init__()
        self.inplanes = width
        self.dilation = 1
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        # Output stride 16: replace layer4's stride by dilation (DeepLabV3 "multi-grid" off).
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2, dilate=output_stride == 16)
        self.low_level_channels = width * block.expansion
        self.out_channels = width * 8 * block.expansion

    def _make_layer(self, block: Type[nn.Module], planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        # As torchvision: the first block of a dilated stage uses the previous dilation.
        layers = [block(self.inplanes, planes, stride, previous_dilation, downsample)]
        self.inplanes = planes * block.expansion
        layers.extend(block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        high = self.layer4(self.layer3(self.layer2(low)))
        return low, high


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CoordChannels(nn.Module):
    """Appends two channels to a feature map: x and y running linearly from -1 to 1 across it.

    The ramps are a constant 2x2 map resized to the feature map's size (bilinear, corners
    aligned, so the ends are exactly -1 and 1) and expanded over the batch: ONNX ``Resize`` with
    sizes from the tensor and ``Expand``, which every runtime of the project has, no shape
    arithmetic in Python. (Broadcasting by ``x * 0 + ramps`` instead put an INT8 Add of two
    dequantized tensors in the Q/DQ model, which OpenVINO's low-precision passes reject.)"""

    def __init__(self):
        super().__init__()
        ramp = torch.tensor([[[-1.0, 1.0], [-1.0, 1.0]], [[-1.0, -1.0], [1.0, 1.0]]]).unsqueeze(0)
        self.register_buffer("ramp", ramp, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coords = F.interpolate(self.ramp.to(x.dtype), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return torch.cat([x, coords.expand(x.shape[0], -1, -1, -1)], dim=1)


class ASPPPooling(nn.Module):
    """Image-level branch of ASPP: global average pool, 1x1 conv, bilinear resize back.

    No BatchNorm here (unlike torchvision): a BatchNorm over a 1x1 map sees one value per channel
    and cannot train at batch size 1, which small-CPU runs use.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(cin, cout, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(self.pool(x)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three atrous 3x3 (``rates``), image pooling; projected."""

    def __init__(self, cin: int, cout: int, rates: Tuple[int, ...] = (6, 12, 18), dropout: float = 0.1):
        super().__init__()
        branches: List[nn.Module] = [_conv_bn_relu(cin, cout, 1)]
        branches.extend(_conv_bn_relu(cin, cout, 3, dilation=r) for r in rates)
        branches.append(ASPPPooling(cin, cout))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(_conv_bn_relu(cout * len(branches), cout, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class PositionAttention(nn.Module):
    """DANet position attention module (PAM): every position attends to every other position.

    ``out = gamma * (V softmax(Q^T K)^T) + x`` with Q, K 1x1 projections to ``channels // 8`` and
    ``gamma`` initialised to 0, so the module starts as the identity.
    """

    def __init__(self, channels: int):
        super().__init__()
        reduced = max(1, channels // 8)
        self.query = nn.Conv2d(channels, reduced, 1)
        self.key = nn.Conv2d(channels, reduced, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query(x).flatten(2).transpose(1, 2)           # [N, HW, C']
        k = self.key(x).flatten(2)                              # [N, C', HW]
        attn = torch.softmax(torch.bmm(q, k), dim=-1)           # [N, HW, HW]
        v = self.value(x).flatten(2)                            # [N, C, HW]
        out = torch.bmm(v, attn.transpose(1, 2)).reshape_as(x)  # reshape_as: no shape arithmetic
        return self.gamma * out + x


class ChannelAttention(nn.Module):
    """DANet channel attention module (CAM): every channel attends to every other channel.

    ``out = gamma * (softmax(max(E) - E) X) + x`` with ``E = X X^T`` over flattened positions and
    ``gamma`` initialised to 0. (Subtracting from the row max is DANet's formulation; it keeps the
    softmax argument non-negative and bounded by the row's range.)
    """

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)                                     # [N, C, HW]
        energy = torch.bmm(flat, flat.transpose(1, 2))          # [N, C, C]
        energy = torch.amax(energy, dim=-1, keepdim=True) - energy
        attn = torch.softmax(energy, dim=-1)
        out = torch.bmm(attn, flat).reshape_as(x)
        return self.gamma * out + x


class DualAttention(nn.Module):
    """DANet head: parallel PAM and CAM branches on reduced features, summed, projected back."""

    def __init__(self, channels: int):
        super().__init__()
        inter = max(8, channels // 4)
        self.pam_in = _conv_bn_relu(channels, inter, 3)
        self.pam = PositionAttention(inter)
        self.pam_out = _conv_bn_relu(inter, inter, 3)
        self.cam_in = _conv_bn_relu(channels, inter, 3)
        self.cam = ChannelAttention()
        self.cam_out = _conv_bn_relu(inter, inter, 3)
        self.project = _conv_bn_relu(inter, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.pam_out(self.pam(self.pam_in(x))) + self.cam_out(self.cam(self.cam_in(x)))
        # Residual: with attention initialised to identity the head refines, never replaces, ASPP.
        return x + self.project(fused)


class Head(nn.Module):
    """CenterNet-style output head: 3x3 conv + ReLU, then a 1x1 conv to ``cout`` channels."""

    def __init__(self, cin: int, mid: int, cout: int, bias_init: "float | None" = None):
        super().__init__()
        self.conv = nn.Conv2d(cin, mid, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.out = nn.Conv2d(mid, cout, 1)
        if bias_init is not None:
            nn.init.constant_(self.out.bias, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.relu(self.conv(x)))


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (stored in checkpoints and the bundle manifest).

    ``width`` is the ResNet base width (64 = standard, 32 = a quarter of the FLOPs for CPUs);
    ``decoder_channels`` the ASPP/attention/decoder width (256 in the DeepLabV3+ paper, 128 here by
    default to keep CPU training practical). Raises :class:`InputError` on invalid values.
    """

    backbone: str = "resnet18"
    in_channels: int = 3
    num_keypoints: int = 5
    num_conditions: int = 1
    attention: bool = True
    width: int = 64
    decoder_channels: int = 128
    low_level_channels: int = 48
    head_channels: int = 64
    aspp_rates: Tuple[int, ...] = (6, 12, 18)
    aspp_dropout: float = 0.1
    # logit(0.1): CenterNet's prior so the focal loss starts near its background equilibrium.
    heatmap_bias: float = -2.19
    output_stride: int = 16
    coord_channels: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise InputError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        self.aspp_rates = tuple(int(r) for r in self.aspp_rates)
        for name in ("in_channels", "num_keypoints", "num_conditions", "width", "decoder_channels",
                     "low_level_channels", "head_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"model config {name} must be a positive integer, got {value!r}")
        if not self.aspp_rates or any(r < 1 for r in self.aspp_rates):
            raise InputError(f"model config aspp_rates must be positive integers, got {self.aspp_rates}")
        for name in ("attention", "coord_channels"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"model config {name} must be true or false, got {getattr(self, name)!r}")
        if self.output_stride not in (16, 32):
            raise InputError(f"model config output_stride must be 16 or 32, got {self.output_stride!r}")
        if not 0.0 <= float(self.aspp_dropout) < 1.0:
            raise InputError(f"model config aspp_dropout must be in [0, 1), got {self.aspp_dropout}")

    def to_dict(self) -> dict:
        """A JSON-serialisable dict that :meth:`from_dict` turns back into an equal config."""
        data = asdict(self)
        data["aspp_rates"] = list(self.aspp_rates)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "ModelConfig":
        """Rebuild a config; raises :class:`InputError` on unknown keys or invalid values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown model config keys: {', '.join(unknown)}")
        kwargs = dict(data)
        if "aspp_rates" in kwargs:
            kwargs["aspp_rates"] = tuple(kwargs["aspp_rates"])  # type: ignore[arg-type]
        return cls(**kwargs)  # type: ignore[arg-type]


class LumbarNet(nn.Module):
    """DeepLabV3+ (ResNet, OS 16) with optional DANet attention and heatmap/offset/severity heads.

    ``forward(image)`` returns ``(heatmap, offset, severity)``; see the module docstring.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        block, layers = BACKBONES[config.backbone]
        self.backbone = ResNet(block, layers, in_channels=config.in_channels, width=config.width,
                               output_stride=config.output_stride)
        dc = config.decoder_channels
        extra = 2 if config.coord_channels else 0
        self.coords = CoordChannels() if config.coord_channels else nn.Identity()
        self.aspp = ASPP(self.backbone.out_channels + extra, dc, config.aspp_rates, config.aspp_dropout)
        self.attention = DualAttention(dc) if config.attention else nn.Identity()
        self.low_proj = _conv_bn_relu(self.backbone.low_level_channels, config.low_level_channels, 1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(dc + config.low_level_channels + extra, dc, 3),
            _conv_bn_relu(dc, dc, 3),
        )
        k, c, hc = config.num_keypoints, config.num_conditions, config.head_channels
        self.heatmap_head = Head(dc, hc, k, bias_init=config.heatmap_bias)
        self.offset_head = Head(dc, hc, 2 * k)
        self.severity_head = Head(dc, hc, 3 * c)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Output layers: small weights so the initial outputs sit at their bias (CenterNet).
        for head in (self.heatmap_head, self.offset_head, self.severity_head):
            nn.init.normal_(head.out.weight, std=0.001)
        nn.init.constant_(self.heatmap_head.out.bias, self.config.heatmap_bias)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low, high = self.backbone(image)
        x = self.attention(self.aspp(self.coords(high)))
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.decoder(self.coords(torch.cat([x, self.low_proj(low)], dim=1)))
        return self.heatmap_head(x), self.offset_head(x), self.severity_head(x)


def build_model(config: "ModelConfig | Mapping[str, object] | None" = None) -> LumbarNet:
    """Build a randomly initialised network from a :class:`ModelConfig` (or its dict form).

    Raises :class:`InputError` on an invalid config. No weights are downloaded.
    """
    if config is None:
        config = ModelConfig()
    elif not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    return LumbarNet(config)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def output_size(height: int, width: int) -> Tuple[int, int]:
    """The (h, w) of the stride-4 outputs for an input of ``height`` x ``width`` pixels."""
    # conv1 (stride 2, pad 3, k 7) then maxpool (stride 2, pad 1, k 3): each is ceil(n / 2).
    return math.ceil(math.ceil(height / 2) / 2), math.ceil(math.ceil(width / 2) / 2)


def load_backbone_weights(model: LumbarNet, path: Union[str, Path], adapt_in_channels: bool = False) -> List[str]:
    """Load a local ResNet state dict into ``model.backbone``; returns the loaded key names.

    Accepts a torchvision-style ResNet state dict (keys ``conv1.weight``, ``layer1.0...``), keys
    prefixed ``backbone.`` (as saved from this model), or either wrapped as ``{"state_dict": ...}``
    / ``{"model": ...}``. Classifier keys (``fc.*``) are ignored. Loading is strict: every backbone
    tensor must be present with the right shape. With ``adapt_in_channels`` a 3-channel stem
    (ImageNet) is adapted to ``config.in_channels`` by averaging over its input channels and
    repeating (scaled by 3 / C_in so activations keep their scale).

    Raises :class:`InputError` if the file is missing or unreadable, is not a state dict, or has
    missing, unexpected or mis-shaped tensors (the message names them).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"backbone weights file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise InputError(f"cannot read backbone weights {path}: {exc}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise InputError(f"{path} does not hold a state dict of tensors")

    state: Dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name.startswith("fc."):
            continue
        if name.startswith("backbone."):
            name = name[len("backbone."):]
        elif any(name.startswith(p) for p in ("aspp.", "attention.", "low_proj.", "decoder.", "heatmap_head.",
                                                "offset_head.", "severity_head.")):
            continue  # a whole-model checkpoint: take only its backbone
        state[name] = value

    expected = model.backbone.state_dict()
    stem = "conv1.weight"
    if adapt_in_channels and stem in state and state[stem].dim() == 4:
        want = expected[stem].shape[1]
        have = state[stem].shape[1]
        if have != want:
            state[stem] = state[stem].mean(dim=1, keepdim=True).repeat(1, want, 1, 1) * (have / want)

    # In model (or file) order, so messages name the first layers first.
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensors (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:3])})")
    if problems:
        cfg = model.config
        raise InputError(
            f"backbone weights {path} do not fit {cfg.backbone} (width {cfg.width}, in_channels "
            f"{cfg.in_channels}): " + "; ".join(problems)
        )
    model.backbone.load_state_dict(state, strict=True)
    return sorted(state)
