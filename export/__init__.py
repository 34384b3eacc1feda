"""ONNX export, FP16 conversion, INT8 calibration (Q/DQ) and the bundle writer.

Installed as ``lumbar_edge.export``. This package imports onnx (and, inside functions, torch and
onnxruntime.quantization): it is the heavy tool chain, installed by the ``export`` extra; the
runtime reads bundles through :mod:`lumbar_edge.bundle` without it.
"""
