"""Real-scanner data check (issue 17): a synthetic root made with the realistic mix of variants
(angled per-disc axial stacks, split axial series, repeated sagittal T2s, patient positions that
store slices flipped, missing optional tags, Enhanced MR multi-frame series and compressed
transfer syntaxes: ``synth --realistic``) graded next to the same studies generated plainly
(same seed: same anatomy, grades and ids).

It reports, per part and never only overall:
- studies graded / failed (with the error), and any traceback (there must be none);
- subarticular coverage: per disc level whose true disc centre an axial slice of the realistic
  study lies near (the pipeline's own reach: two slice spacings plus 2 mm), whether both
  subarticular findings came from the model rather than the class prior, in the realistic and
  in the plain study; and the same by the discs the sagittal T2 reading found (which is what
  the pipeline places the axial levels by: a level the model put one disc off can fall outside
  the axial stack in both studies alike);
- keypoint distance (patient mm) between each finding's keypoint in the realistic study and in
  the plain one: median, 90th percentile and maximum per view (spinal canal on sagittal T2,
  foramina on sagittal T1, subarticular on axial T2) and per variant;
- grades equal to the plain study's, per view.

Usage: ``python -m lumbar_edge.benchmarks.realistic_check --model BUNDLE [--studies 20]
[--seed 2026] [--work DIR] [--backend auto] [--json OUT.json]``. Exit status 0 when every study
is graded without a traceback and every subarticular finding whose disc (as the sagittal T2
reading found it) an axial slice reaches comes from the model.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

VIEW_OF = {"spinal_canal_stenosis": "sagittal_t2 (canal)", "left_neural_foraminal_narrowing": "sagittal_t1 (foramina)",
           "right_neural_foraminal_narrowing": "sagittal_t1 (foramina)",
           "left_subarticular_stenosis": "axial_t2 (subarticular)", "right_subarticular_stenosis": "axial_t2 (subarticular)"}


def _grade_root(pipe, root: Path) -> Tuple[Dict[str, object], Dict[str, object]]:
    """The root's studies by study_id, and study_id -> StudyResult, or the error text (with its
    traceback for anything unexpected)."""
    from lumbar_edge.dicom import scan_path
    from lumbar_edge.errors import LumbarEdgeError

    out: Dict[str, object] = {}
    studies = {st.study_id: st for st in scan_path(root / "train_images", progress=False).studies}
    for study in studies.values():
        try:
            out[study.study_id] = pipe.run_study(study)
        except LumbarEdgeError as exc:
            out[study.study_id] = f"error: {exc}"
        except Exception:  # noqa: BLE001 - a traceback is what this check exists to catch; it is reported
            out[study.study_id] = "TRACEBACK:\n" + traceback.format_exc()
    return studies, out


def _covered_levels(study, discs: Dict[str, List[float]]) -> List[str]:
    """Levels whose true disc centre lies within reach of an axial T2 slice of ``study``."""
    from lumbar_edge.aggregate import axial_slices_for_levels

    axials = study.series_of_kind("axial_t2")
    if not axials:
        return []
    return sorted(axial_slices_for_levels(list(axials), {lv: tuple(v) for lv, v in discs.items()}))


def _summary(values: List[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"n": 0, "median": None, "p90": None, "max": None}
    arr = np.asarray(values)
    return {"n": int(arr.size), "median": round(float(np.median(arr)), 3), "p90": round(float(np.percentile(arr, 90)), 3),
            "max": round(float(arr.max()), 3)}


def run_check(model: Path, work: Path, n_studies: int, seed: int, backend: str) -> Dict[str, object]:
    from lumbar_edge.pipeline import Pipeline
    from lumbar_edge.synth import synthesize
    from lumbar_edge.synth.dataset import load_truth

    realistic, plain = work / "realistic", work / "plain"
    from lumbar_edge.synth.transcode import postprocess_realistic, realistic_encoding

    if not (realistic / "train.csv").exists():
        summary = synthesize(realistic, n_studies=n_studies, seed=seed, progress=False, realistic=True)
        print(summary.describe(), flush=True)
        counts = postprocess_realistic(realistic)
        print("encodings: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())), flush=True)
    if not (plain / "train.csv").exists():
        synthesize(plain, n_studies=n_studies, seed=seed, progress=False)
    truth = {str(st["study_id"]): st for st in load_truth(realistic)["studies"]}
    with Pipeline.load(model, backend=backend) as pipe:
        print(f"grading with {pipe.description}", flush=True)
        studies_r, got_r = _grade_root(pipe, realistic)
        _, got_p = _grade_root(pipe, plain)

    failures = {sid: r for sid, r in got_r.items() if isinstance(r, str)}
    tracebacks = [sid for sid, r in failures.items() if r.startswith("TRACEBACK")]
    dist: Dict[str, List[float]] = {}
    dist_by_variant: Dict[str, List[float]] = {}
    same_grade: Dict[str, List[int]] = {}
    coverage = {"levels_covered": 0, "findings_covered": 0, "from_model": 0, "from_prior": [],
                "plain_from_model": 0, "by_found_discs": 0, "by_found_discs_from_model": 0}
    per_study = []
    for sid, r in sorted(got_r.items()):
        p = got_p.get(sid)
        variant = truth[sid]["variant"]
        row = {"study_id": sid, "variant": variant, "encoding": realistic_encoding(seed, int(truth[sid]["index"]))}
        if isinstance(r, str) or isinstance(p, str) or p is None:
            row["error"] = r if isinstance(r, str) else f"plain study: {p}"
            per_study.append(row)
            continue
        covered = _covered_levels(studies_r[sid], truth[sid]["discs"])
        coverage["levels_covered"] += len(covered)
        for lv in covered:
            for side in ("left", "right"):
                f = r.finding(f"{side}_subarticular_stenosis", lv)
                coverage["findings_covered"] += 1
                if f.source == "model":
                    coverage["from_model"] += 1
                else:
                    coverage["from_prior"].append(f"{sid} {side} {lv}")
                coverage["plain_from_model"] += p.finding(f"{side}_subarticular_stenosis", lv).source == "model"
        # The pipeline places the axial levels by the discs it found on the sagittal T2 (not the
        # truth): by those, every level an axial slice reaches must be read by the model.
        found = {lv: r.finding("spinal_canal_stenosis", lv).keypoint.patient_mm for lv in truth[sid]["discs"]
                 if r.finding("spinal_canal_stenosis", lv).keypoint is not None}
        for lv in _covered_levels(studies_r[sid], found):
            for side in ("left", "right"):
                coverage["by_found_discs"] += 1
                coverage["by_found_discs_from_model"] += r.finding(f"{side}_subarticular_stenosis", lv).source == "model"
        tags = [f"axial {variant['axial_layout']}", f"position {variant['patient_position']}"]
        if variant["repeat_sagittal"]:
            tags.append("repeated sagittal")
        if variant["drop_optional_tags"]:
            tags.append("no optional tags")
        enhanced, syntax = realistic_encoding(seed, int(truth[sid]["index"]))
        tags.append(f"encoding {'enhanced MR ' if enhanced else ''}{syntax or 'explicit'}")
        study_d = []
        for f in r.findings:
            view = VIEW_OF[f.condition]
            g = p.finding(f.condition, f.level)
            same_grade.setdefault(view, []).append(int(f.severity == g.severity))
            if f.keypoint is None or g.keypoint is None:
                continue
            d = float(np.linalg.norm(np.subtract(f.keypoint.patient_mm, g.keypoint.patient_mm)))
            dist.setdefault(view, []).append(d)
            study_d.append(d)
            for tag in tags:
                dist_by_variant.setdefault(f"{tag} / {view}", []).append(d)
        row.update({"covered_levels": covered, "median_mm": _summary(study_d)["median"],
                    "warnings": r.warnings, "selection": r.selection})
        per_study.append(row)
    return {
        "studies": n_studies, "seed": seed, "backend": backend, "model": str(model),
        "graded": n_studies - len(failures), "failed": failures, "tracebacks": tracebacks,
        "subarticular": {k: v for k, v in coverage.items()},
        "distance_mm_per_view": {v: _summary(d) for v, d in sorted(dist.items())},
        "distance_mm_per_variant": {v: _summary(d) for v, d in sorted(dist_by_variant.items())},
        "same_grade_per_view": {v: f"{sum(x)}/{len(x)}" for v, x in sorted(same_grade.items())},
        "per_study": per_study,
    }


def _print(result: Dict[str, object]) -> None:
    print(f"studies graded: {result['graded']}/{result['studies']}; tracebacks: {len(result['tracebacks'])}")
    for sid, err in result["failed"].items():
        print(f"  {sid}: {err.splitlines()[0]}")
    cov = result["subarticular"]
    print(f"subarticular findings where an axial slice covers the true disc: {cov['from_model']}/{cov['findings_covered']} "
          f"from the model ({cov['levels_covered']} levels; the plain studies: {cov['plain_from_model']})"
          + (f"; from the prior: {', '.join(cov['from_prior'])}" if cov["from_prior"] else ""))
    print(f"subarticular findings where an axial slice covers the disc the sagittal T2 reading found: "
          f"{cov['by_found_discs_from_model']}/{cov['by_found_discs']} from the model")
    print("keypoint distance to the plainly generated study (patient mm):")
    print(f"  {'view':38s} {'n':>4s} {'median':>8s} {'p90':>8s} {'max':>8s}")
    for name, s in result["distance_mm_per_view"].items():
        print(f"  {name:38s} {s['n']:4d} {s['median']:8.3f} {s['p90']:8.3f} {s['max']:8.3f}")
    print("  per variant:")
    for name, s in result["distance_mm_per_variant"].items():
        print(f"  {name:58s} {s['n']:4d} {s['median']:8.3f} {s['p90']:8.3f} {s['max']:8.3f}")
    print("grades equal to the plain study's: " + ", ".join(f"{v} {x}" for v, x in result["same_grade_per_view"].items()))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="bundle folder")
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--work", type=Path, default=None, help="folder for the two roots (default: a temporary one)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", type=Path, default=None, help="write the full result here")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="lumbar-edge-realistic-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run_check(args.model, work, args.studies, args.seed, args.backend)
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    cov = result["subarticular"]
    ok = not result["failed"] and cov["by_found_discs_from_model"] == cov["by_found_discs"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
