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
from typing import Callable, Optional, Tuple

from .errors import InputError


@dataclass(frozen=True)
class DemoConfig:
    """What the demo makes and trains: the ``cpu-demo`` training preset (see
    :mod:`lumbar_edge.training.presets`) on ``train_studies`` phantom studies, graded on
    ``val_studies`` others. The epochs are fixed (the one-cycle learning-rate schedule finishes,
    so the model's quality does not depend on how busy the machine is); the time limit is only a
    guard against a very slow machine. ``tiny`` (small studies) and ``overrides`` (training
    values that replace the preset's, e.g. a tiny network) exist for the tests."""
    train_studies: int = 32
    val_studies: int = 8
    seed: int = 0
    time_limit_min: float = 20.0
    tiny: bool = False
    preset: str = "cpu-demo"
    overrides: Tuple[Tuple[str, object], ...] = ()


def run_demo(out: Path, config: DemoConfig = DemoConfig(), progress: bool = True,
             echo: Callable[[str], None] = print) -> dict:
    """Run the demo into ``out`` (created; refused when it exists and is not empty).

    Returns a dict of the paths and figures it printed. Raises :class:`InputError` for an
    unusable output folder, and whatever the steps raise for real failures.
    """
    from .infer import run_infer
    from .synth import SynthOptions, synthesize
    from .training.metrics import jsonable

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

    from .training.train import preset_config, train

    run_dir = out / "run"
    train_config = preset_config(config.preset, **{**dict(config.overrides), "data": str(train_dir), "out": str(run_dir),
                                                    "val_data": str(val_dir), "seed": config.seed,
                                                    "time_limit_min": config.time_limit_min})
    echo(f"[2/4] training a {train_config.backbone} DeepLabV3+ at {train_config.size} px on the CPU "
         f"({train_config.epochs} epochs, at most {config.time_limit_min:.1f} min)")
    result = train(train_config, progress=progress)

    echo("[3/4] exporting to an ONNX bundle (FP32 reference + INT8 Q/DQ calibrated on the training studies)")
    from .export.build import export_bundle

    bundle_dir = out / "bundle"
    # The last epoch's weights: the one-cycle schedule ends there at its lowest learning rate, and
    # the best-on-validation pick among the last epochs follows the noise of 8 held-out studies.
    export_bundle(run_dir / "last.pt", bundle_dir, ("fp32", "int8"), calib=train_dir, calib_slices=64,
                  val=val_dir, name="lumbar-edge-demo", progress=progress)

    echo("[4/4] inferring the held-out studies with ONNX Runtime")
    results_dir = out / "results"
    summary = run_infer(val_dir / "train_images", bundle_dir, results_dir, backend="onnxruntime", progress=progress,
                        echo=echo)
    # The figures that matter end to end: the submission CSV and the reports' keypoints of the
    # run above (study folders in, INT8 on ONNX Runtime) against the held-out labels, per view.
    from .training.metrics import class_prior_baseline, format_localisation, report_localisation, score_submission

    scored = score_submission(summary.csv_path, val_dir / "train.csv", only_predicted_studies=True)
    prior = class_prior_baseline(val_dir / "train.csv", train_dir / "train.csv")
    located = report_localisation(results_dir, val_dir / "train_label_coordinates.csv")
    views = {group: {key: st[key] for key in ("n", "median_px", "within_px", "on_labelled_slice",
                                               "near_labelled_slice", "far")}
             for group, st in located["groups"].items()}
    figures = {
        "bundle": str(bundle_dir),
        "reports": str(results_dir),
        "submission_csv": str(summary.csv_path),
        "overlays": str(results_dir / "overlays"),
        "val_score": result.best.get("val_score"),
        "val_prior_score": result.best.get("val_prior_score"),
        "val_loc_px_median": result.best.get("val_loc_px_median"),
        "pipeline_score": scored["score"],
        "pipeline_prior_score": prior["score"],
        "pipeline_views": views,
        "pipeline_loc_px_median": located["overall"]["median_px"],
        "pipeline_keypoints": located["overall"]["n"],
        "pipeline_keypoints_far": located["overall"]["far"],
        "shared_point_reports": located["shared_point_reports"],
        "studies_ok": len(summary.succeeded),
        "studies_failed": len(summary.failed),
        "minutes": (time.perf_counter() - start) / 60,
    }
    (out / "demo.json").write_text(json.dumps(jsonable(figures), indent=2))
    echo("")
    echo(f"done in {figures['minutes']:.1f} min. NOT FOR CLINICAL USE: the model is trained on synthetic phantoms.")
    echo(f"  end to end on the {len(summary.succeeded)} held-out studies (study folders in, INT8 on ONNX Runtime):")
    echo(f"  competition score {figures['pipeline_score']:.3f} against {prior['score']:.3f} for the class prior "
         f"({figures['pipeline_score'] / prior['score']:.2f}x; lower is better)")
    for line in format_localisation(located).splitlines():
        echo(f"  {line}")
    if figures["val_score"] is not None:
        echo(f"  (training validation on the labelled slices only: score {figures['val_score']:.3f}, median "
             f"localisation {figures['val_loc_px_median']:.2f} px at {train_config.size} px)")
    echo(f"  bundle:     {bundle_dir}")
    echo(f"  reports:    {results_dir} (one JSON per study)")
    echo(f"  submission: {summary.csv_path}")
    echo(f"  overlays:   {results_dir / 'overlays'}")
    return figures
