"""The CUDA decode kernel's sources (``decode.cu``, ``decode_common.cuh``, the host test shim
``decode_host.cpp``) and, where the package was built with nvcc, its prebuilt ``decode.fatbin``
with ``decode.fatbin.json`` (see :mod:`lumbar_edge.kernels.build`). Nothing here imports pycuda.
"""
