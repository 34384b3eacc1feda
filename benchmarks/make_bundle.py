"""A benchmark bundle without training: the default network (ResNet-18 DeepLabV3+ with attention,
all three views, 256 px) with seeded random weights, exported like any checkpoint (FP32 ONNX with
its parity check, INT8 Q/DQ calibrated on a few synthetic slices, model.pt). Speed does not depend
on the weights, so the GPU suite measures with it where the trained demo bundle (125 MB) cannot
be carried. Its grades are meaningless.

Usage: ``python -m lumbar_edge.benchmarks.make_bundle --out DIR [--size 256] [--no-int8]``
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence


def make_bundle(out: Path, size: int = 256, int8: bool = True, seed: int = 0) -> Path:
    import torch

    from lumbar_edge.export.build import export_bundle
    from lumbar_edge.labels import ALL_VIEWS
    from lumbar_edge.preprocess import PreprocessConfig
    from lumbar_edge.synth import SynthOptions, synthesize
    from lumbar_edge.training.model import ModelConfig, build_model

    cfg = ModelConfig(num_keypoints=ALL_VIEWS.num_keypoints, num_conditions=ALL_VIEWS.num_conditions)
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with tempfile.TemporaryDirectory(prefix="lumbar-edge-bench-bundle-") as tmp:
        ckpt = Path(tmp) / "best.pt"
        torch.save({"format": "lumbar-edge-checkpoint/1", "model": model.state_dict(), "epoch": 0, "best_score": 0.0,
                    "metrics": {}, "train_config": {"size": size, "note": "random weights (benchmark bundle)"},
                    "model_config": cfg.to_dict(), "layout": ALL_VIEWS.to_dict(),
                    "preprocess": PreprocessConfig(height=size, width=size, in_channels=cfg.in_channels).to_dict()},
                   ckpt)
        calib = None
        if int8:
            calib = Path(tmp) / "calib"
            synthesize(calib, n_studies=1, seed=seed, workers=1, options=SynthOptions.tiny())
        export_bundle(ckpt, out, ("fp32", "int8") if int8 else ("fp32",), calib=calib, calib_slices=16,
                      name="benchmark-random-weights", overwrite=True, progress=False)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--no-int8", action="store_true")
    args = parser.parse_args(argv)
    print(f"benchmark bundle (random weights): {make_bundle(args.out, args.size, not args.no_int8)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
