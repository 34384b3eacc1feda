"""The ``lumbar-edge`` command line.

Thin by design: each command turns its flags into one library call and prints the result. User
errors (:class:`~lumbar_edge.errors.LumbarEdgeError`) are printed as one line without a traceback
and give exit status 2; ``main(argv)`` returns the exit status instead of exiting, so it can be
called from tests and other programs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from . import __version__
from .errors import InputError, LumbarEdgeError
from .training.presets import PRESETS as TRAIN_PRESETS

EXIT_USER_ERROR = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lumbar-edge")
def cli() -> None:
    """Detect and grade degenerative lumbar spine disease on MRI (RSNA 2024 conditions)."""


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the scan as JSON instead of a table.")
@click.option("--workers", type=int, default=None, help="Header-reading processes (default: CPU count; small folders are read in one process).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def scan(path: Path, as_json: bool, workers: Optional[int], quiet: bool) -> None:
    """Scan PATH (a study folder or a root of many) and list studies, series and skipped files."""
    from .dicom import format_scan, scan_path

    result = scan_path(path, workers=workers, progress=not quiet)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(format_scan(result))


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder to write the RSNA-layout dataset into (created; must be empty or new).")
@click.option("--studies", "n_studies", type=click.IntRange(1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=None, help="Processes used to render studies (default: CPU count).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--axial-layout", type=click.Choice(["single", "stacks", "split"]), default="single", show_default=True,
              help="Axial T2 as one parallel stack, one stack angled along each disc in one series, or two "
                   "series over the upper and lower discs.")
@click.option("--repeat-sagittal", is_flag=True, help="An earlier sagittal T2 (stopped part-way or complete) "
                                                         "besides the one to use.")
@click.option("--patient-position", type=click.Choice(["HFS", "FFS", "HFP", "FFP"]), default="HFS", show_default=True,
              help="How the slices are stored (feet first: sagittal head-down; prone: axial upside down ...).")
@click.option("--drop-optional-tags", is_flag=True,
              help="Leave out SpacingBetweenSlices, SliceThickness, SeriesDescription, ProtocolName, SliceLocation.")
@click.option("--realistic", is_flag=True, help="The options above, Enhanced MR and the transfer syntax chosen per "
                                                 "study in the proportions of real exports (overrides them).")
@click.option("--enhanced-mr", is_flag=True, help="Write each series as one Enhanced MR multi-frame file.")
@click.option("--transfer-syntax", type=click.Choice(["explicit", "implicit", "deflated", "jpeg2000", "jpegls", "rle"]),
              default=None, help="Re-encode every file in this transfer syntax (lossless; default explicit VR LE).")
def synth(out_dir: Path, n_studies: int, seed: int, workers: Optional[int], quiet: bool, axial_layout: str,
          repeat_sagittal: bool, patient_position: str, drop_optional_tags: bool, realistic: bool, enhanced_mr: bool,
          transfer_syntax: Optional[str]) -> None:
    """Write synthetic lumbar-spine MRI studies in the RSNA 2024 layout (demo and test data)."""
    from .synth import synthesize
    from .synth.transcode import postprocess_dataset, postprocess_realistic

    summary = synthesize(out_dir, n_studies=n_studies, seed=seed, workers=workers, progress=not quiet,
                         axial_layout=axial_layout, repeat_sagittal=repeat_sagittal, patient_position=patient_position,
                         drop_optional_tags=drop_optional_tags, realistic=realistic)
    if realistic and not (enhanced_mr or transfer_syntax):
        # The realistic mix covers the encodings too: a quarter Enhanced MR, half compressed.
        counts = postprocess_realistic(out_dir)
        click.echo(summary.describe())
        click.echo("encodings: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))
        return
    postprocess_dataset(out_dir, enhanced_mr=enhanced_mr, transfer_syntax=transfer_syntax or "")
    click.echo(summary.describe())


@cli.command()
@click.option("--data", required=True, type=click.Path(path_type=Path), help="RSNA-layout training folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Run folder (checkpoints, config, history).")
@click.option("--preset", type=click.Choice(list(TRAIN_PRESETS)), default=None,
              help="A named setting (see the README): cpu-demo (the demo's CPU budget) or gpu-full (ResNet-50, "
                   "512 px, AMP); the options below override its values.")
@click.option("--val-data", type=click.Path(path_type=Path), default=None, help="Separate RSNA-layout validation folder.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=None,
              help="Fraction of studies held out when --val-data is not given (split by study). [default: 0.2]")
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "resnet50"]), default=None,
              help="[default: resnet18]")
@click.option("--size", type=int, default=None, help="Model input size in pixels (square). [default: 256]")
@click.option("--width", type=click.IntRange(1), default=None,
              help="ResNet base width: 64 is the standard ResNet, smaller makes quick smoke runs. [default: 64]")
@click.option("--decoder-channels", type=click.IntRange(1), default=None, help="[default: 128]")
@click.option("--epochs", type=click.IntRange(1), default=None, help="[default: 20]")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="[default: 8]")
@click.option("--lr", type=float, default=None, help="[default: 0.002]")
@click.option("--heatmap-loss", type=click.Choice(["focal", "bce"]), default=None, help="[default: focal]")
@click.option("--through-plane-sigma", "through_plane_sigma_mm", type=click.FloatRange(min=0, min_open=True),
              default=None, help="mm: a label supervises slices beside its own with a Gaussian weight of this "
                                 "sigma along the slice normal. [default: 2.5]")
@click.option("--workers", type=click.IntRange(0), default=None, help="Data-loading processes. [default: 0]")
@click.option("--no-offset-loss", is_flag=True, help="Ablation: train without the L1 offset loss.")
@click.option("--no-attention", is_flag=True, help="Ablation: no position/channel attention modules.")
@click.option("--clahe", "clahe_prob", type=click.FloatRange(0, 1), default=None, help="Probability of CLAHE augmentation.")
@click.option("--backbone-weights", type=click.Path(path_type=Path), default=None, help="Local backbone state-dict file.")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N. [default: auto]")
@click.option("--no-amp", is_flag=True, help="Train in FP32: no mixed precision (FP16 on CUDA, BF16 on CPUs with "
                                              "native BF16 otherwise).")
@click.option("--time-limit", "time_limit_min", type=float, default=None, help="Time budget in minutes: no epoch is started that would end past it.")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="Continue from a last.pt checkpoint.")
@click.option("--dist-timeout", "dist_timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Under torchrun: seconds a rank waits for the others in a collective before the job fails "
                   "(a hung rank). [default: 1800]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def train(data, out_dir, preset, val_data, val_fraction, backbone, size, width, decoder_channels, epochs, batch_size,
          lr, heatmap_loss, through_plane_sigma_mm, workers, no_offset_loss, no_attention, clahe_prob,
          backbone_weights, seed, device, no_amp, time_limit_min, resume, dist_timeout_s, quiet) -> None:
    """Train the keypoint-and-severity model on RSNA-layout data (several GPUs or machines: run under
    torchrun, see the README)."""
    import logging

    from .training.train import TrainConfig, preset_config, train as run_training

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    given = dict(val_fraction=val_fraction, backbone=backbone, size=size, width=width, decoder_channels=decoder_channels,
                 epochs=epochs, batch_size=batch_size, lr=lr, heatmap_loss=heatmap_loss,
                 through_plane_sigma_mm=through_plane_sigma_mm, workers=workers, clahe_prob=clahe_prob, seed=seed,
                 device=device, time_limit_min=time_limit_min, dist_timeout_s=dist_timeout_s,
                 backbone_weights=str(backbone_weights) if backbone_weights else None)
    values = {k: v for k, v in given.items() if v is not None}
    values.update(data=str(data), out=str(out_dir), val_data=str(val_data) if val_data else None)
    for flag, key in ((no_attention, "attention"), (no_offset_loss, "offset_loss"), (no_amp, "amp")):
        if flag:
            values[key] = False
    cfg = preset_config(preset, **values) if preset else TrainConfig(**values)
    result = run_training(cfg, resume=resume, progress=not quiet)
    if result.rank != 0:
        return  # under torchrun rank 0 reports for the job
    best = ", ".join(f"{k}={v:.4g}" for k, v in result.best.items() if k.startswith("val_"))
    click.echo(f"best epoch {result.best_epoch + 1}: {best or 'no validation set'}")
    click.echo(f"checkpoints: {out_dir / 'best.pt'} and {out_dir / 'last.pt'} ({result.seconds / 60:.1f} min)")


@cli.command()
@click.argument("predictions", type=click.Path(path_type=Path))
@click.option("--labels", "labels_path", required=True, type=click.Path(path_type=Path),
              help="train.csv-form labels: study_id + the 25 condition_level columns.")
@click.option("--only-predicted-studies", is_flag=True,
              help="Score only the studies that appear in PREDICTIONS (default: every labelled study must be predicted).")
@click.option("--coordinates", "coordinates_path", type=click.Path(path_type=Path),
              help="train_label_coordinates.csv-form labels: also measure where the reports' keypoints lie "
                   "(needs --reports).")
@click.option("--reports", "reports_dir", type=click.Path(path_type=Path),
              help="The folder of study reports (JSON) that `lumbar-edge infer` wrote beside PREDICTIONS.")
@click.option("--json", "as_json", is_flag=True, help="Print the score and its parts as JSON.")
def evaluate(predictions: Path, labels_path: Path, only_predicted_studies: bool, coordinates_path: Optional[Path],
             reports_dir: Optional[Path], as_json: bool) -> None:
    """Score a submission-form PREDICTIONS CSV with the RSNA 2024 competition metric and, with
    --coordinates and --reports, the keypoints of the study reports against labelled points."""
    from .training.metrics import (format_localisation, format_score, jsonable, report_localisation,
                                   score_submission)

    if (coordinates_path is None) != (reports_dir is None):
        raise InputError("--coordinates and --reports go together: the labelled points and the reports to check")
    result = score_submission(predictions, labels_path, only_predicted_studies=only_predicted_studies)
    located = report_localisation(reports_dir, coordinates_path) if reports_dir is not None else None
    if as_json:
        click.echo(json.dumps(jsonable(dict(result, localisation=located) if located else result), indent=2))
    else:
        click.echo(format_score(result))
        if located:
            click.echo("")
            click.echo(format_localisation(located))


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--model", required=True, type=click.Path(path_type=Path), help="Model bundle folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder (not inside PATH).")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "torch", "openvino", "onnxruntime"]), default="auto",
              show_default=True)
@click.option("--device", default=None, metavar="NAME",
              help="OpenVINO device: CPU, GPU (Intel iGPU/Arc), AUTO... (implies --backend openvino).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Model precision (default: the best the backend runs).")
@click.option("--batch-size", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--no-overlays", is_flag=True, help="Skip the PNG overlays.")
@click.option("--heatmaps", is_flag=True, help="Blend the heatmaps into the overlays.")
@click.option("--shard", "shard_text", default=None, metavar="K/N",
              help="Grade only shard K of N (K from 0 to N-1; studies split by a hash of their StudyInstanceUID): "
                   "one task of a job array. Writes OUT/shards/shard-K-of-N.json; the last shard to finish "
                   "merges submission.csv and summary.json.")
@click.option("--skip-done", is_flag=True,
              help="Do not grade again the studies whose complete report (same model and backend) is in OUT: "
                   "resume an interrupted run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_context
def infer(ctx, path, model, out_dir, backend, device, precision, batch_size, no_overlays, heatmaps, shard_text,
          skip_done, quiet) -> None:
    """Grade every study under PATH (a study folder or a root of many) with the bundle MODEL."""
    from .infer import run_infer
    from .shards import parse_shard

    shard = parse_shard(shard_text) if shard_text is not None else None
    summary = run_infer(path, model, out_dir, backend=backend, device=device, precision=precision,
                        batch_size=batch_size, overlays=not no_overlays, heatmaps=heatmaps, progress=not quiet,
                        shard=shard, skip_done=skip_done, echo=click.echo)
    click.echo(summary.describe())
    if not summary.ok:
        ctx.exit(1)


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for the merged submission.csv and summary.json (default: the RESULTS folder, when one).")
@click.pass_context
def merge(ctx, results, out_dir) -> None:
    """Merge the shards of `infer --shard K/N` runs (one shared RESULTS folder, or one per shard)
    into one submission.csv and summary.json."""
    from .shards import merge_shards

    merged = merge_shards(results, out_dir)
    click.echo(merged.describe())
    if merged.failed:
        ctx.exit(1)


@cli.command()
@click.option("--model", required=True, type=click.Path(path_type=Path), help="Model bundle folder.")
@click.option("--backend", "backends", multiple=True, type=click.Choice(["onnxruntime", "openvino", "torch", "tensorrt"]),
              help="Repeatable (default: every backend; those that cannot run here are listed as n/a with the reason).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="Repeatable (default: every precision each backend runs for the bundle).")
@click.option("--batch", "batch", default="8", show_default=True, help="Comma-separated batch sizes, e.g. 1,8,16.")
@click.option("--study", type=click.Path(path_type=Path), default=None,
              help="A folder holding one study (default: a synthetic study of realistic size: 3 series, "
                   "15-19 sagittal and 30-40 axial slices).")
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True, help="Untimed runs per row.")
@click.option("--iters", type=click.IntRange(1), default=5, show_default=True, help="Timed runs per row.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="ONNX Runtime and OpenVINO CPU threads (default: the usable CPUs).")
@click.option("--device", default=None, metavar="NAME", help="OpenVINO device for its rows (default: CPU).")
@click.option("--no-overlays", is_flag=True, help="Write only the JSON report (default: JSON and overlays, as infer).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the results as JSON.")
@click.option("--chart", type=click.Path(path_type=Path), default=None,
              help="PNG chart of the stage split (default: beside --json, same name with .png).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def bench(ctx, model, backends, precisions, batch, study, warmup, iters, threads, device, no_overlays, json_path,
          chart, quiet) -> None:
    """Time study in, report out on every backend and precision this machine runs, split by stage."""
    from .bench import BenchOptions, format_report, parse_batches, run_bench, write_chart, write_json

    opts = BenchOptions(model=model, backends=backends, precisions=precisions, batches=parse_batches(batch),
                        study=study, warmup=warmup, iters=iters, threads=threads, device=device,
                        overlays=not no_overlays)
    report = run_bench(opts, progress=not quiet)
    click.echo(format_report(report))
    if json_path:
        click.echo(f"JSON: {write_json(report, json_path)}")
    chart = chart or (json_path.with_suffix(".png") if json_path else None)
    if chart:
        click.echo(f"chart: {write_chart(report, chart)}")
    if not report.ok_rows:
        ctx.exit(1)


@cli.command("export")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="Training checkpoint (best.pt).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]),
              default=("fp32",), show_default=True, help="Repeatable; FP32 (the reference) is always included.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--calib", type=click.Path(path_type=Path), default=None, help="RSNA-layout folder for INT8 calibration.")
@click.option("--calib-slices", type=click.IntRange(1), default=256, show_default=True)
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="RSNA-layout folder: score every precision and record its delta against FP32.")
@click.option("--opset", type=click.IntRange(17), default=17, show_default=True)
@click.option("--name", default=None, help="Model name in the manifest (default: the run folder's name).")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--engine/--no-engine", default=None,
              help="Build TensorRT engines of each precision (default: when the full TensorRT and a GPU are present).")
@click.option("--max-batch", type=click.IntRange(1, 64), default=16, show_default=True, help="Engine batch limit.")
@click.option("--dla-core", type=click.IntRange(0), default=None, help="Build for this Jetson DLA core (GPU fallback).")
@click.option("--version-compatible", is_flag=True, help="Engines the TensorRT lean runtime can run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def export_cmd(checkpoint, precisions, out_dir, calib, calib_slices, calib_method, val, opset, name, overwrite,
               engine, max_batch, dla_core, version_compatible, quiet) -> None:
    """Export a checkpoint to a model bundle: checked ONNX (FP32) plus FP16 / INT8 (Q/DQ) variants,
    and TensorRT engines where a builder is present."""
    from .export.build import export_bundle
    from .export.tensorrt_build import build_engine, builder_missing_reason

    no_builder = builder_missing_reason() if engine is not False else None
    if engine and no_builder:
        raise click.UsageError(no_builder)
    summary = export_bundle(checkpoint, out_dir, precisions, calib=calib, calib_slices=calib_slices,
                            calib_method=calib_method, val=val, opset=opset, name=name, overwrite=overwrite,
                            progress=not quiet)
    click.echo(summary.describe())
    if engine is False:
        return
    if no_builder:
        click.echo(f"no TensorRT engines: {no_builder}")
        return
    for precision in summary.bundle.precisions:
        entry = build_engine(out_dir, precision, max_batch=max_batch, dla_core=dla_core,
                             version_compatible=version_compatible, progress=not quiet)
        click.echo(f"  engine {precision}: {entry['file']} (TensorRT {entry['tensorrt_version']}, "
                   f"{entry['gpu_name']}, sm {entry['compute_capability']})")


@cli.command()
@click.option("--model", required=True, type=click.Path(path_type=Path), help="Model bundle folder.")
@click.option("--spool", required=True, type=click.Path(path_type=Path),
              help="Folder for received instances and the listener's state (resumed after a restart).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the results: JSON, CSV, PNG overlays and the DICOM SR and Secondary Captures.")
@click.option("--ae-title", default="LUMBAR_EDGE", show_default=True, help="This listener's AE title.")
@click.option("--port", type=click.IntRange(0, 65535), default=11112, show_default=True, help="TCP port (0: any free port).")
@click.option("--host", default="", help="Address to listen on (default: all).")
@click.option("--forward", default=None, metavar="HOST:PORT:AET",
              help="Send the DICOM results by C-STORE to this AE (the PACS), retrying until delivered.")
@click.option("--allow", multiple=True, metavar="AET", help="Accept only these calling AE titles (repeatable).")
@click.option("--quiet-time", type=float, default=10.0, show_default=True,
              help="Seconds without new instances after which a released study counts as complete.")
@click.option("--max-associations", type=click.IntRange(1, 1000), default=8, show_default=True)
@click.option("--max-pdu", type=click.IntRange(4096), default=65536, show_default=True,
              help="Largest PDU received, in bytes.")
@click.option("--max-spool-mb", type=click.FloatRange(min=1), default=4096.0, show_default=True,
              help="Disk the waiting instances may take; beyond it instances are refused (status A700).")
@click.option("--hold-timeout", type=float, default=86400.0, show_default=True,
              help="Seconds a study from an aborted association waits to be sent again before it is set aside.")
@click.option("--keep-spool", is_flag=True, help="Keep received instances after processing.")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "torch", "openvino", "onnxruntime"]), default="auto",
              show_default=True)
@click.option("--device", default=None, metavar="NAME",
              help="OpenVINO device: CPU, GPU (Intel iGPU/Arc), AUTO... (implies --backend openvino).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Model precision (default: the best the backend runs).")
@click.option("--no-overlays", is_flag=True, help="Skip the PNG overlays (the DICOM Secondary Captures are still made).")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def serve(model, spool, out_dir, ae_title, port, host, forward, allow, quiet_time, max_associations, max_pdu,
          max_spool_mb, hold_timeout, keep_spool, backend, device, precision, no_overlays, verbose) -> None:
    """DICOM listener: receive MR studies (C-STORE), grade each, answer with a DICOM SR and overlays."""
    import logging

    from .serve import ServeConfig, parse_forward, run_server

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pynetdicom's own INFO lines repeat ours; its debug dumps are only for --verbose.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbose else logging.WARNING)
    config = ServeConfig(model=model, spool=spool, out=out_dir, ae_title=ae_title, host=host, port=port,
                         forward=parse_forward(forward) if forward else None, allow=tuple(allow),
                         quiet_time=quiet_time, hold_timeout=hold_timeout, max_associations=max_associations,
                         max_pdu=max_pdu, max_spool_bytes=int(max_spool_mb * 2 ** 20), keep_spool=keep_spool,
                         backend=backend, device=device, precision=precision, overlays=not no_overlays)
    run_server(config, echo=click.echo)


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("demo"), show_default=True,
              help="Folder for the data, run, bundle and results (must be new or empty).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo(out_dir: Path, quiet: bool) -> None:
    """Synthesise studies, train briefly, export, infer: the whole job on built-in data (CPU: 5-7 min
    with BF16, about 25 on a 2-core CPU without it)."""
    import logging

    from .demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    run_demo(out_dir, progress=not quiet, echo=click.echo)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    import logging

    # pydicom logs a traceback when a pixel plugin fails; lumbar-edge reports those as one-line
    # DicomErrors itself, so the CLI keeps pydicom's own log to critical messages.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    try:
        # Without standalone mode, click returns ctx.exit()'s code instead of exiting.
        status = cli.main(args=list(argv) if argv is not None else None, prog_name="lumbar-edge",
                          standalone_mode=False)
    except LumbarEdgeError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_USER_ERROR
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
