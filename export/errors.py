"""Errors of the export tool chain (ONNX export, precision conversion, calibration, bundle writing)."""
from lumbar_edge.errors import LumbarEdgeError


class ExportError(LumbarEdgeError):
    """An export step failed in a way the user can act on: a checkpoint that does not export, an
    ONNX model that fails the checker, outputs that drift from PyTorch beyond the tolerance, a
    reduced-precision model that ONNX Runtime cannot run, or a Q/DQ model TensorRT would reject."""


class ParityError(ExportError):
    """An exported model's outputs differ from the reference beyond the tolerance.

    ``report`` holds the per-output max abs differences and tolerances that were exceeded.
    """

    def __init__(self, message: str, report: "dict | None" = None):
        super().__init__(message)
        self.report = report or {}
