"""OrtModule stands in for the torch model in the training validation; deltas between precisions."""
from types import SimpleNamespace

import numpy as np
import torch

from lumbar_edge.export.accuracy import OrtModule, accuracy_deltas, evaluate_onnx
from lumbar_edge.export.onnx_export import load_checkpoint_model
from lumbar_edge.labels import LABEL_COLUMNS, HeadLayout
from lumbar_edge.training.data import Sample
from lumbar_edge.training.evaluation import evaluate_samples


def _samples(images):
    rng = np.random.default_rng(0)
    samples = []
    for i, image in enumerate(images):
        points = rng.uniform(8, 56, size=(5, 2)).astype(np.float32)
        samples.append(Sample(image=image, points=points, present=np.ones(5, bool),
                              severity=rng.integers(0, 3, 5).astype(np.int64), channel_mask=np.ones(5, np.float32),
                              flip_pair=None, study_id=str(i % 2 + 1), view="sagittal_t2", series_id="1",
                              instance_number=i, mm_per_pixel=0.5))
    labels = {sid: {c: (0 if c.startswith("spinal") else -1) for c in LABEL_COLUMNS} for sid in ("1", "2")}
    return samples, SimpleNamespace(labels=labels)


def test_ort_module_matches_torch_validation(tiny_checkpoint, fp32_onnx, slices):
    layout = HeadLayout(views=("sagittal_t2",))
    samples, dataset = _samples(slices)
    model, _ = load_checkpoint_model(tiny_checkpoint)
    train_labels = list(dataset.labels.values())
    ref = evaluate_samples(model, samples, dataset, torch.device("cpu"), layout, train_labels)
    got = evaluate_onnx(fp32_onnx, samples, dataset, layout, train_labels)
    for key in ("score", "loc_px_median", "severity_acc"):
        assert abs(ref[key] - got[key]) < 1e-3, key
    deltas = accuracy_deltas(ref, got)
    assert set(deltas) >= {"score", "loc_px_median", "severity_acc"}
    module = OrtModule(fp32_onnx)
    assert module.eval() is module
    heatmap, offset, severity = module(torch.from_numpy(slices[:2]))
    assert heatmap.shape == (2, 5, 16, 16) and offset.dtype == torch.float32
