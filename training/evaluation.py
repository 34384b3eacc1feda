"""Validation during training: localisation error and the competition score on labelled slices.

Each validation sample is run through the model; per present keypoint the heatmap peak (with its
offset) gives the predicted point and the severity softmax at that peak gives the three
probabilities for that keypoint's condition and level. Slices are the labelled ones (an "oracle"
slice choice), so this measures the network; the full pipeline, which also picks the slices, is
scored by ``lumbar-edge infer`` + ``lumbar-edge evaluate``. Conditions with no sample get the
training class prior, as they would in a submission.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from lumbar_edge.labels import CONDITIONS, LABEL_COLUMNS, LEVELS, SEVERITY_WEIGHTS, HeadLayout

from .metrics import competition_score


#: A validation keypoint farther than this (mm) from its label is counted as on another structure.
FAR_MM = 10.0


def _condition_column(sample, channel: int, layout: HeadLayout, coords_side: Dict[int, str]) -> Optional[str]:
    view = sample.view
    c0, _ = layout.channels[view]
    k = channel - c0
    if view == "sagittal_t2":
        return f"spinal_canal_stenosis_{LEVELS[k]}"
    if view == "sagittal_t1":
        side = coords_side.get(channel)
        return f"{side}_neural_foraminal_narrowing_{LEVELS[k]}" if side else None
    level = sample.extra.get("level")
    side = "left" if k == 0 else "right"
    return f"{side}_subarticular_stenosis_{level}" if level else None


def class_priors(train_labels: Sequence[Dict[str, int]]) -> Dict[str, np.ndarray]:
    """Class frequencies per condition (pooled over levels), Laplace-smoothed."""
    out = {}
    for cond in CONDITIONS:
        counts = np.ones(3)
        for lab in train_labels:
            for lv in LEVELS:
                v = lab.get(f"{cond}_{lv}", -1)
                if v >= 0:
                    counts[v] += 1
        out[cond] = counts / counts.sum()
    return out


@torch.no_grad()
def predict_samples(model: torch.nn.Module, samples, device: torch.device, batch_size: int = 16):
    """Run the model; per sample return peaks [K, 2] (model pixels), scores [K] and probs [K, 3]."""
    model.eval()
    results = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        images = torch.from_numpy(np.stack([s.image for s in chunk])).to(device)
        heatmap, offset, severity = (o.float().cpu() for o in model(images))
        n, k, h, w = heatmap.shape
        flat = heatmap.view(n, k, -1)
        idx = flat.argmax(-1)  # first maximum: the lowest index wins ties, as the decoders do
        iy, ix = idx // w, idx % w
        off = offset.view(n, k, 2, -1)
        dx = torch.gather(off[:, :, 0], 2, idx[..., None])[..., 0]
        dy = torch.gather(off[:, :, 1], 2, idx[..., None])[..., 0]
        stride = images.shape[-1] / w
        px, py = (ix + dx) * stride, (iy + dy) * stride
        score = torch.sigmoid(torch.gather(flat, 2, idx[..., None])[..., 0])
        sev = severity.view(n, -1, 3, h * w)
        for j in range(len(chunk)):
            results.append({"points": torch.stack([px[j], py[j]], -1).numpy(), "score": score[j].numpy(),
                            "idx": idx[j].numpy(), "sev": sev[j]})
    return results


def evaluate_samples(model: torch.nn.Module, samples, dataset, device: torch.device, layout: HeadLayout,
                     train_labels: Sequence[Dict[str, int]]) -> Dict[str, float]:
    """Validation figures: ``score`` (competition, lower is better), ``prior_score`` (class-prior
    baseline on the same rows), ``loc_px_median``/``loc_px_mean`` (model-input pixels),
    ``loc_mm_median``, ``loc_far_share`` (share of keypoints more than :data:`FAR_MM` off),
    ``selection`` (``score + loc_far_share``: what the best checkpoint minimises, so a
    checkpoint whose grades look good but whose points sit on other levels is not picked), and
    ``severity_acc`` over present labelled keypoints."""
    preds = predict_samples(model, samples, device)
    groups = layout.keypoint_groups()
    priors = class_priors(train_labels)
    errors_px: List[float] = []
    errors_mm: List[float] = []
    correct, total = 0, 0
    study_preds: Dict[str, Dict[str, np.ndarray]] = {}
    for s, p in zip(samples, preds):
        side_of = s.extra.get("sides", {})
        for ch in np.flatnonzero(s.present):
            err = float(np.hypot(*(p["points"][ch] - s.points[ch])))
            errors_px.append(err)
            errors_mm.append(err * s.mm_per_pixel)
            g = groups[ch]
            logits = p["sev"][g, :, int(p["idx"][ch])]
            probs = torch.softmax(logits, 0).numpy()
            if s.severity[ch] >= 0:
                correct += int(probs.argmax() == s.severity[ch])
                total += 1
            col = _condition_column(s, int(ch), layout, side_of)
            if col is not None:
                study_preds.setdefault(s.study_id, {})[col] = probs
    study_ids = sorted({s.study_id for s in samples})
    labels = {sid: dataset.labels[sid] for sid in study_ids if sid in dataset.labels}
    full, prior = {}, {}
    for sid in labels:
        for col in LABEL_COLUMNS:
            cond = next(c for c in CONDITIONS if col.startswith(c))
            row = f"{sid}_{col}"
            prior[row] = priors[cond]
            full[row] = study_preds.get(sid, {}).get(col, priors[cond])
    out = {
        "loc_px_median": float(np.median(errors_px)) if errors_px else float("nan"),
        "loc_px_mean": float(np.mean(errors_px)) if errors_px else float("nan"),
        "loc_mm_median": float(np.median(errors_mm)) if errors_mm else float("nan"),
        # Keypoints on another structure (another level, the wrong side of the canal), which a
        # median hides: a quarter of the 30-45 mm between discs.
        "loc_far_share": float(np.mean(np.asarray(errors_mm) > FAR_MM)) if errors_mm else float("nan"),
        "severity_acc": correct / total if total else float("nan"),
    }
    scored = competition_score(full, labels)
    out["score"] = float(scored["score"])
    out["selection"] = out["score"] + (out["loc_far_share"] if np.isfinite(out["loc_far_share"]) else 1.0)
    out["prior_score"] = float(competition_score(prior, labels)["score"])
    return out
