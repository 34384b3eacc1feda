"""Named training settings for ``lumbar-edge train --preset NAME`` (no torch import here: the CLI
lists them without loading the training stack).

- ``cpu-demo``: what ``lumbar-edge demo`` trains, sized for 2 CPU cores (ResNet-18 at 256 px,
  encoder output stride 32: a third less compute than 16 for the same accuracy at this budget).
- ``gpu-full``: the full-size model of the design card on a GPU: ResNet-50 at 512 px, decoder
  width 256 as in the DeepLabV3+ paper, mixed precision, data loading in worker processes, several
  GPUs under ``torchrun`` (DistributedDataParallel; the batch size is per GPU).

Both use the through-plane sampling and targets of :mod:`.data`; the augmentations are those of
:mod:`.augment` in both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class Preset:
    """A named training setting: TrainConfig values and what it is for."""

    name: str
    description: str
    values: Dict[str, object]


PRESETS: Dict[str, Preset] = {
    "cpu-demo": Preset("cpu-demo", "ResNet-18 at 256 px, encoder stride 32, 5 epochs of through-plane sampling, "
                       "slices kept in memory: the demo's budget on 2 CPU cores",
                       dict(backbone="resnet18", size=256, epochs=5, batch_size=8, lr=2e-3, output_stride=32,
                            coord_channels=True, cache_pixels=True)),
    "gpu-full": Preset("gpu-full", "ResNet-50 at 512 px, encoder stride 16, decoder 256, 40 epochs, batch 16 per GPU, "
                       "AMP, 6 data-loading workers; several GPUs under torchrun",
                       dict(backbone="resnet50", size=512, epochs=40, batch_size=16, lr=1e-3, decoder_channels=256,
                            output_stride=16, coord_channels=True, amp=True, workers=6, device="auto")),
}
