"""lumbar-edge: lumbar spine MRI keypoints and degenerative grading, from DICOM to report.

Importing this package is cheap: it never imports torch, tensorrt or pycuda. Those load inside the
backend or training module that needs them.
"""
from .errors import DicomError, InputError, LumbarEdgeError, MissingDependencyError

__version__ = "0.1.0"

__all__ = ["LumbarEdgeError", "InputError", "DicomError", "MissingDependencyError", "__version__"]
