"""Storage check: one study stored the ways real archives and scanners store it, each graded
against the study as given.

From the study folder ``--study`` (its files are only read), ``--work`` gets one copy per
variant, every file rewritten:

- dcmtk transcodings, where dcmtk is installed: big endian (``dcmconv +tb``), deflated
  (``+td``), implicit VR (``+ti``), bare data sets without preamble or file meta
  (``dcmconv -F +ti``), JPEG lossless (``dcmcjpeg +e1``, ``+el``), JPEG extended 12-bit lossy
  (``+ee``), JPEG-LS lossless and near-lossless (``dcmcjls``, ``+en +md 2``), RLE (``dcmcrle``);
- pydicom rewrites: every file without an extension in one flat folder; file names and
  instance numbers shuffled; a second echo (PD, TE 12 ms) of the sagittal T2 at the same
  positions in the same series; a derived MPR copy of the sagittal T2 (the later series); the
  sagittal T2 stored with non-square pixels (rows x 0.8); one sagittal T1 slice of another
  matrix; every file as 8-bit data.

Each variant is graded with the same pipeline and compared with the original, per view
(spinal canal on sagittal T2, foramina on sagittal T1, subarticular on axial T2) and never only
overall: most likely grades equal, the largest probability difference, the largest keypoint
distance in patient mm, and the findings read on another slice (SOP instance); plus what the scan skipped and
the report's warnings. A variant that fails is a row with its error, and the check goes on.

Usage: ``python -m lumbar_edge.benchmarks.storage_variants --model BUNDLE --study DIR
[--work DIR] [--backend onnxruntime] [--precision fp32] [--json OUT.json]``. Exit status 0 when
every variant is graded.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

VIEWS = {"spinal_canal_stenosis": "sagittal_t2", "left_neural_foraminal_narrowing": "sagittal_t1",
         "right_neural_foraminal_narrowing": "sagittal_t1", "left_subarticular_stenosis": "axial_t2",
         "right_subarticular_stenosis": "axial_t2"}

#: name -> dcmtk command line (the input and output file are appended).
DCMTK: Dict[str, List[str]] = {
    "big endian": ["dcmconv", "+tb"], "deflated": ["dcmconv", "+td"], "implicit": ["dcmconv", "+ti"],
    "bare data set (no preamble, no meta)": ["dcmconv", "-F", "+ti"], "JPEG lossless SV1": ["dcmcjpeg", "+e1"],
    "JPEG lossless": ["dcmcjpeg", "+el"], "JPEG extended 12-bit lossy": ["dcmcjpeg", "+ee"],
    "JPEG-LS lossless": ["dcmcjpls"], "JPEG-LS near-lossless": ["dcmcjpls", "+en", "+md", "2"], "RLE": ["dcmcrle"],
}


def _files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _transcode(src: Path, dst: Path, command: List[str]) -> None:
    for f in _files(src):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(command + [str(f), str(out)], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} {f.name}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")


def _series_files(study, kind: str) -> List[Path]:
    series = study.series_of_kind(kind)
    return [Path(i.path) for i in series[0].instances] if series else []


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


def _flat(src: Path, dst: Path, study) -> None:
    dst.mkdir(parents=True)
    for k, f in enumerate(_files(src)):
        shutil.copy(f, dst / f"IM{k + 1:05d}")


def _shuffled(src: Path, dst: Path, study) -> None:
    import pydicom

    _copy(src, dst)
    rng = np.random.default_rng(5)
    for series in study.series:
        files = [dst / Path(i.path).relative_to(src) for i in series.instances]
        for f, number in zip(files, rng.permutation(len(files))):
            ds = pydicom.dcmread(f)
            ds.InstanceNumber = int(number) + 1
            ds.save_as(f.with_name(f"x{int(number)}.tmp"), enforce_file_format=True)
            f.unlink()
        for f in f.parent.glob("x*.tmp"):
            f.rename(f.with_suffix(".dcm"))


def _new_sop(ds) -> None:
    from pydicom.uid import generate_uid

    ds.SOPInstanceUID = generate_uid()
    if "MediaStorageSOPInstanceUID" in getattr(ds, "file_meta", {}):
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _dual_echo(src: Path, dst: Path, study) -> None:
    import pydicom

    _copy(src, dst)
    files = _series_files(study, "sagittal_t2")
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.EchoTime = 12.0
        a = ds.pixel_array.astype(np.float32) * 0.5 + 300
        ds.PixelData = np.clip(a, 0, 4095).astype(ds.pixel_array.dtype).tobytes()
        _new_sop(ds)
        ds.InstanceNumber = len(files) + k + 1
        ds.save_as(dst / f.relative_to(src).with_name(f"pd{k + 1}.dcm"), enforce_file_format=True)


def _derived_copy(src: Path, dst: Path, study) -> None:
    import pydicom
    from pydicom.uid import generate_uid

    _copy(src, dst)
    uid = generate_uid()
    files = _series_files(study, "sagittal_t2")
    folder = dst / files[0].relative_to(src).parent.with_name("mpr")
    folder.mkdir()
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        a = ds.pixel_array.astype(np.float32)
        a = (a + np.roll(a, 1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 0)) / 4
        ds.PixelData = a.astype(ds.pixel_array.dtype).tobytes()
        ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = uid, 999, "Sag T2 MPR"
        _new_sop(ds)
        ds.save_as(folder / f"{k + 1}.dcm", enforce_file_format=True)


def _non_square(src: Path, dst: Path, study) -> None:
    import pydicom

    _copy(src, dst)
    for f in _series_files(study, "sagittal_t2"):
        out = dst / f.relative_to(src)
        ds = pydicom.dcmread(out)
        a = ds.pixel_array.astype(np.float32)
        rows = int(round(a.shape[0] * 0.8))
        at = np.linspace(0, a.shape[0] - 1, rows)
        lo = np.floor(at).astype(int)
        hi = np.minimum(lo + 1, a.shape[0] - 1)
        w = (at - lo)[:, None]
        b = a[lo] * (1 - w) + a[hi] * w
        dr, dc = (float(v) for v in ds.PixelSpacing)
        ds.PixelSpacing = [f"{dr * (a.shape[0] - 1) / (rows - 1):.6f}", f"{dc:.6f}"]
        ds.Rows = rows
        ds.PixelData = np.round(b).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(out, enforce_file_format=True)


def _odd_matrix(src: Path, dst: Path, study) -> None:
    import pydicom

    _copy(src, dst)
    files = _series_files(study, "sagittal_t1")
    out = dst / files[len(files) // 2].relative_to(src)
    ds = pydicom.dcmread(out)
    a = ds.pixel_array[::2, ::2].copy()
    ds.Rows, ds.Columns = a.shape
    ds.PixelSpacing = [f"{float(v) * 2:.6f}" for v in ds.PixelSpacing]
    ds.PixelData = a.tobytes()
    ds.save_as(out, enforce_file_format=True)


def _eight_bit(src: Path, dst: Path, study) -> None:
    import pydicom

    _copy(src, dst)
    for out in _files(dst):
        ds = pydicom.dcmread(out)
        a = ds.pixel_array.astype(np.float32)
        ds.PixelData = np.clip(a / max(float(a.max()), 1.0) * 255, 0, 255).astype(np.uint8).tobytes()
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds["PixelData"].VR = "OB"
        ds.save_as(out, enforce_file_format=True)


REWRITES: Dict[str, Callable] = {
    "no extensions, one flat folder": _flat, "shuffled names and instance numbers": _shuffled,
    "sagittal T2 with a second echo per position": _dual_echo, "derived MPR copy of the sagittal T2": _derived_copy,
    "sagittal T2 of non-square pixels": _non_square, "one sagittal T1 slice of another matrix": _odd_matrix,
    "8-bit data": _eight_bit,
}


def compare(original, variant) -> Dict[str, Dict[str, float]]:
    """Per view: findings, equal most likely grades, largest probability difference, largest
    keypoint distance (patient mm) and findings read on another slice (SOP instance and frame)."""
    out: Dict[str, Dict[str, float]] = {}
    theirs = {f.column: f for f in variant.findings}
    for f in original.findings:
        g = theirs[f.column]
        row = out.setdefault(VIEWS[f.condition], {"n": 0, "grades_equal": 0, "max_dp": 0.0, "max_mm": 0.0,
                                                  "other_slice": 0})
        row["n"] += 1
        row["grades_equal"] += int(np.argmax(f.probabilities) == np.argmax(g.probabilities))
        row["max_dp"] = max(row["max_dp"], float(np.max(np.abs(np.subtract(f.probabilities, g.probabilities)))))
        if f.keypoint is not None and g.keypoint is not None:
            d = float(np.linalg.norm(np.subtract(f.keypoint.patient_mm, g.keypoint.patient_mm)))
            row["max_mm"] = max(row["max_mm"], d)
            row["other_slice"] += int(f.keypoint.sop_uid != g.keypoint.sop_uid or f.keypoint.frame != g.keypoint.frame)
        elif (f.keypoint is None) != (g.keypoint is None):
            row["max_mm"] = float("inf")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--study", required=True, type=Path, help="One study folder (read only).")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the variants (default: a temporary one).")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import logging
    import warnings

    # What the scan skips is counted in the table; pydicom's notes on padding are not findings here.
    logging.getLogger("lumbar_edge.dicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")

    from lumbar_edge.dicom import scan_path
    from lumbar_edge.errors import LumbarEdgeError
    from lumbar_edge.pipeline import Pipeline

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="lumbar-edge-storage-")
        args.work = Path(tmp.name)
    src = args.study.resolve()
    scan = scan_path(src, progress=False)
    if len(scan.studies) != 1:
        print(f"error: {src} holds {len(scan.studies)} studies, not one", file=sys.stderr)
        return 2
    study = scan.studies[0]
    have_dcmtk = shutil.which("dcmconv") is not None
    rows: List[dict] = []
    try:
        with Pipeline.load(args.model, backend=args.backend, precision=args.precision) as pipe:
            print(f"grading with {pipe.description}; study {study.study_id}, {len(study.series)} series", flush=True)
            original = pipe.run_study(study)
            makers: Dict[str, Callable[[Path], None]] = {}
            for name, command in DCMTK.items():
                makers[f"dcmtk: {name}"] = (lambda dst, c=command: _transcode(src, dst, c)) if have_dcmtk else None
            for name, rewrite in REWRITES.items():
                makers[name] = lambda dst, r=rewrite: r(src, dst, study)
            for k, (name, make) in enumerate(makers.items()):
                row: dict = {"variant": name}
                rows.append(row)
                if make is None:
                    row["error"] = "skipped: dcmtk is not installed"
                    continue
                dst = args.work / f"v{k:02d}" / src.name
                if dst.parent.exists():
                    shutil.rmtree(dst.parent)
                try:
                    make(dst)
                    vscan = scan_path(dst, progress=False)
                    row["skipped"] = dict(vscan.skip_counts())
                    if len(vscan.studies) != 1:
                        raise LumbarEdgeError(f"the scan found {len(vscan.studies)} studies")
                    result = pipe.run_study(vscan.studies[0])
                    row["views"] = compare(original, result)
                    row["warnings"] = list(result.warnings)
                except (LumbarEdgeError, RuntimeError, OSError) as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"
                except Exception:  # noqa: BLE001 - a traceback is what this check exists to find; reported
                    row["error"] = "TRACEBACK: " + traceback.format_exc()
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"{'variant':45s} {'view':12s} {'grades':>7s} {'max dp':>7s} {'max mm':>7s} {'slice':>5s}  skipped / warnings")
    for row in rows:
        if "error" in row:
            print(f"{row['variant']:45s} {row['error']}")
            continue
        for k, (view, v) in enumerate(sorted(row["views"].items())):
            extra = ""
            if k == 0:
                extra = (", ".join(f"{n} {c}" for c, n in row["skipped"].items()) or "-") + " / " + str(len(row["warnings"]))
            print(f"{row['variant'] if k == 0 else '':45s} {view:12s} {v['grades_equal']:>3d}/{v['n']:<3d} "
                  f"{v['max_dp']:7.4f} {v['max_mm']:7.3f} {v['other_slice']:5d}  {extra}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if any("error" in r and not r["error"].startswith("skipped") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
