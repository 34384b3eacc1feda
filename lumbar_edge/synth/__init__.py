"""Synthetic lumbar-spine MRI studies in the RSNA 2024 layout (demo, test and benchmark data).

- :func:`synthesize` writes a dataset folder (DICOM series and the three CSVs, plus
  ``synth_truth.json`` with the 3D ground truth) and returns a :class:`SynthSummary`.
- :func:`render_study` renders one study in memory (no files): plan + pixel arrays.
- :func:`plan_study` gives a study's geometry, protocol, grades and labels without pixels.
- :class:`SynthOptions` sets sizes and randomness (``SynthOptions.tiny()`` for fast tests).

The phantom (:mod:`.anatomy`) is one 3D spine per study, sampled on every series' slice planes;
stenosis grades narrow the canal, foramina and lateral recesses locally and visibly.
"""
from .dataset import TRUTH_FILE, SynthSummary, load_truth, synthesize
from .options import SynthOptions
from .plan import LabelPoint, SeriesPlan, StudyPlan, allocate_ids, plan_study
from .render import SeriesGeometry, paint_geometry
from .study import RenderedStudy, render_study

__all__ = ["synthesize", "SynthSummary", "load_truth", "TRUTH_FILE", "SynthOptions", "LabelPoint", "SeriesPlan", "StudyPlan", "allocate_ids", "plan_study",
           "SeriesGeometry", "paint_geometry", "RenderedStudy", "render_study"]
