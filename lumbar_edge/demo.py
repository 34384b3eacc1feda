"""``lumbar-edge demo``: the whole job on built-in data, in one command.

Synthesises RSNA-layout phantom studies (a training set and a held-out set made with another
seed), trains a small model for a few minutes on the CPU, exports it to an FP32 + INT8 bundle
(calibrated on the training studies, accuracy measured on the held-out ones), and runs
``infer`` on the held-out studies. Ends by printing where the bundle, the reports, the CSV and
the overlays are. Everything it trains is trained on synthetic data: not for clinical use.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import InputError


@dataclass(frozen=True)
class DemoConfig:
    """What the demo makes and trains. The defaults take 7-9 minutes on 2 CPU cores: the
    epochs are fixed (the one-cycle learning-rate schedule finishes, so the model's quality does
    not depend on how busy the machine is); the time limit is only a guard against a very slow
    machine. ``tiny`` (small studies) and ``width`` exist for the tests."""
    train_studies: int = 32
    val_studies: int = 8
    seed: int = 0
    size: int = 256
    epochs: int = 4
    time_limit_min: float = 20.0
    batch_size: int = 8
    width: int = 64
    tiny: bool = False


def run_demo(out: Path, config: DemoConfig = DemoConfig(), progress: bool = True,
             echo: Callable[[str], None] = print) -> dict:
    """Run the demo into ``out`` (created; refused when it exists and is not empty).

    Returns a dict of the paths and figures it printed. Raises :class:`InputError` for an
    unusable output folder, and whatever the steps raise for real failures.
    """
    from .infer import run_infer
    from .synth import SynthOptions, synthesize

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; give the demo a new folder with --out")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_dir, val_dir = out / "data" / "train", out / "data" / "heldout"
    echo(f"[1/4] synthesising {config.train_studies} training and {config.val_studies} held-out phantom studies")
    options = SynthOptions.tiny() if config.tiny else None
    synthesize(train_dir, n_studies=config.train_studies, seed=config.seed, progress=progress, options=options)
    synthesize(val_dir, n_studies=config.val_studies, seed=config.seed + 1, progress=progress, options=options)

    echo(f"[2/4] training a ResNet-18 DeepLabV3+ at {config.size} px on the CPU "
         f"(at most {config.epochs} epochs / {config.time_limit_min:.1f} min)")
    from .training.train import TrainConfig, train

    run_dir = out / "run"
    result = train(TrainConfig(data=str(train_dir), out=str(run_dir), val_data=str(val_dir), size=config.size,
                               epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                               width=config.width, time_limit_min=config.time_limit_min), progress=progress)

    echo("[3/4] exporting to an ONNX bundle (FP32 reference + INT8 Q/DQ calibrated on the training studies)")
    from .export.build import export_bundle

    bundle_dir = out / "bundle"
    export_bundle(run_dir / "best.pt", bundle_dir, ("fp32", "int8"), calib=train_dir, calib_slices=64,
                  val=val_dir, name="lumbar-edge-demo", progress=progress)

    echo("[4/4] inferring the held-out studies with ONNX Runtime")
    results_dir = out / "results"
    summary = run_infer(val_dir / "train_images", bundle_dir, results_dir, backend="onnxruntime", progress=progress,
                        echo=echo)
    # The same figures end to end: the submission CSV and the reports' keypoints of the run above
    # (study folders in, INT8 on ONNX Runtime), against the held-out labels.
    from .training.metrics import report_localisation, score_submission

    scored = score_submission(summary.csv_path, val_dir / "train.csv", only_predicted_studies=True)
    located = report_localisation(results_dir, val_dir / "train_label_coordinates.csv")["overall"]
    figures = {
        "bundle": str(bundle_dir),
        "reports": str(results_dir),
        "submission_csv": str(summary.csv_path),
        "overlays": str(results_dir / "overlays"),
        "val_score": result.best.get("val_score"),
        "val_prior_score": result.best.get("val_prior_score"),
        "val_loc_px_median": result.best.get("val_loc_px_median"),
        "pipeline_score": scored["score"],
        "pipeline_loc_px_median": located["median_px"],
        "pipeline_keypoints": located["n"],
        "pipeline_keypoints_far": located["far"],
        "studies_ok": len(summary.succeeded),
        "studies_failed": len(summary.failed),
        "minutes": (time.perf_counter() - start) / 60,
    }
    (out / "demo.json").write_text(json.dumps(figures, indent=2))
    echo("")
    echo(f"done in {figures['minutes']:.1f} min. NOT FOR CLINICAL USE: the model is trained on synthetic phantoms.")
    if figures["val_score"] is not None:
        echo(f"  held-out score {figures['val_score']:.3f} (class prior {figures['val_prior_score']:.3f}), "
             f"median localisation error {figures['val_loc_px_median']:.2f} px at {config.size} px")
    echo(f"  end to end (study folders in, INT8 on ONNX Runtime): score {figures['pipeline_score']:.3f}, keypoints "
         f"median {figures['pipeline_loc_px_median']:.2f} px, {figures['pipeline_keypoints_far']} of "
         f"{figures['pipeline_keypoints']} more than 20 px off (source pixels)")
    echo(f"  bundle:     {bundle_dir}")
    echo(f"  reports:    {results_dir} (one JSON per study)")
    echo(f"  submission: {summary.csv_path}")
    echo(f"  overlays:   {results_dir / 'overlays'}")
    return figures
