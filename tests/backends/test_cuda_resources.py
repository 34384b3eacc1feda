"""The GPU resource owners fail with a clear error where there is no CUDA driver or pycuda."""
import ctypes.util

import pytest

from lumbar_edge.backends.cuda_resources import CudaError, driver_call, gpu_missing_reason
from lumbar_edge.errors import MissingDependencyError


def test_gpu_missing_reason_is_one_line_or_none():
    reason = gpu_missing_reason()
    assert reason is None or (reason and "\n" not in reason)


def test_driver_calls_without_a_driver_raise_cuda_error():
    if ctypes.util.find_library("cuda") is not None:
        pytest.skip("a CUDA driver library is present")
    with pytest.raises(CudaError, match="cannot load the driver library"):
        driver_call("launching a CUDA graph", "cuGraphLaunch", None, None)


def test_owners_without_pycuda_name_the_extra():
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        from lumbar_edge.backends.cuda_resources import DeviceBuffer, PrimaryContext

        for make in (lambda: PrimaryContext(0), lambda: DeviceBuffer(16)):
            with pytest.raises(MissingDependencyError, match=r"lumbar-edge\[trt\]"):
                make()
    else:
        pytest.skip("pycuda is installed")
