"""lumbar_edge.decode_cuda against a fake pycuda whose "GPU" is the host shim.

No GPU is needed: the fake driver keeps device memory in numpy buffers (pointers are their host
addresses), checks every launch's grid, block, argument format and buffer sizes, and runs the
kernel's logic through the host shim with the launch's block size. This covers the loader's
control flow (buffers, group tables, streams, context handling, error wrapping, validation); the
real driver and kernel are covered by test_decode_cuda_gpu.py on a GPU machine. The fake follows
the pycuda API the loader uses: driver.{Error, init, Device, Context, mem_alloc, memcpy_htod,
memcpy_dtoh, memcpy_dtoh_async, module_from_file}, compiler.SourceModule, Function.prepare and
Function.prepared_async_call.
"""
import subprocess
import sys
import types

import numpy as np
import pytest

from lumbar_edge import decode_cuda
from lumbar_edge.decode import RECORD_SIZE, decode_numpy
from lumbar_edge.errors import InputError, MissingDependencyError


class FakeError(Exception):
    pass


class FakeLogicError(FakeError):
    pass


class FakeMemoryError(FakeError):
    pass


class FakeAllocation:
    def __init__(self, gpu, nbytes):
        self.gpu = gpu
        self.buf = np.zeros(nbytes, dtype=np.uint8)
        self.freed = False
        gpu.live[self.buf.ctypes.data] = self

    def __int__(self):
        if self.freed:
            raise FakeLogicError("use of a freed allocation")
        return self.buf.ctypes.data

    __index__ = __int__

    def free(self):
        if self.freed:
            raise FakeLogicError("double free")
        self.freed = True
        del self.gpu.live[self.buf.ctypes.data]


class FakeStream:
    def __init__(self):
        self.synchronized = 0

    def synchronize(self):
        self.synchronized += 1


class FakeGpu:
    """State of the fake driver: device count, context stack, live allocations, launches."""

    def __init__(self, host_decoder, devices=1):
        self.host = host_decoder
        self.devices = devices
        self.stack = []
        self.live = {}
        self.launches = []
        self.compiled = []
        self.fail = {}  # call name -> exception to raise
        self.cc = (7, 0)  # no image of the packaged fatbin fits sm_70: the loader compiles the source

    def maybe_fail(self, name):
        if name in self.fail:
            raise self.fail[name]

    def array(self, ptr, dtype, shape):
        """A numpy view of device memory at ptr, checking it lies inside one live allocation."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        alloc = self.live.get(int(ptr))
        assert alloc is not None, f"pointer {ptr:#x} is not the start of a live allocation"
        assert alloc.buf.nbytes >= nbytes, f"allocation of {alloc.buf.nbytes} bytes read as {nbytes}"
        return alloc.buf[:nbytes].view(dtype).reshape(shape)

    def modules(self):
        gpu = self
        driver = types.ModuleType("pycuda.driver")
        driver.Error, driver.LogicError, driver.MemoryError = FakeError, FakeLogicError, FakeMemoryError

        def init():
            gpu.maybe_fail("init")

        class Context:
            def __init__(self, device):
                self.device = device

            def push(self):
                gpu.stack.append(self)

            @staticmethod
            def pop():
                if not gpu.stack:
                    raise FakeLogicError("cannot pop non-current context")
                gpu.stack.pop()

            @staticmethod
            def get_current():
                return gpu.stack[-1] if gpu.stack else None

            @staticmethod
            def get_device():
                if not gpu.stack:
                    raise FakeLogicError("no current context")
                return Device(gpu.stack[-1].device)

        class Device:
            def __init__(self, ordinal):
                self.ordinal = ordinal

            @staticmethod
            def count():
                return gpu.devices

            def retain_primary_context(self):
                return Context(self.ordinal)

            def compute_capability(self):
                return gpu.cc

        def mem_alloc(nbytes):
            gpu.maybe_fail("mem_alloc")
            return FakeAllocation(gpu, nbytes)

        def memcpy_htod(dst, src):
            src = np.ascontiguousarray(src)
            gpu.array(int(dst), np.uint8, (src.nbytes,))[:] = src.view(np.uint8).reshape(-1)

        def memcpy_dtoh(dst, src):
            dst.view(np.uint8).reshape(-1)[:] = gpu.array(int(src), np.uint8, (dst.nbytes,))

        def memcpy_dtoh_async(dst, src, stream=None):
            memcpy_dtoh(dst, src)

        class Function:
            def __init__(self, name):
                self.name = name
                self.arg_format = None

            def prepare(self, arg_format):
                self.arg_format = arg_format
                return self

            def prepared_async_call(self, grid, block, stream, *args):
                gpu.maybe_fail("launch")
                assert self.arg_format == "PPPPPiiiiif" and len(args) == len(self.arg_format)
                assert all(isinstance(a, int) for a in args[:10]) and isinstance(args[10], float)
                hm, off, sev, groups, out, n, k, c, h, w, stride = args
                assert grid == (n * k, 1), grid
                assert block[1:] == (1, 1) and block[0] % 32 == 0 and 32 <= block[0] <= 256, block
                dtype = np.float16 if self.name.endswith("f16") else np.float32
                inputs = [gpu.array(hm, dtype, (n, k, h, w)), gpu.array(off, dtype, (n, 2 * k, h, w)),
                          gpu.array(sev, dtype, (n, 3 * c, h, w))]
                table = gpu.array(groups, np.int32, (k,))
                gpu.array(out, np.float32, (n, k, RECORD_SIZE))[:] = gpu.host.decode(
                    *inputs, table, stride, block=block[0])
                gpu.launches.append((self.name, grid, block, stream))

        class Module:
            def get_function(self, name):
                if name not in ("decode_peaks_f32", "decode_peaks_f16"):
                    raise FakeLogicError(f"no function {name}")
                return Function(name)

        def module_from_file(path):
            gpu.maybe_fail("module_from_file")
            gpu.compiled.append(("file", path))
            return Module()

        compiler = types.ModuleType("pycuda.compiler")

        def SourceModule(source, nvcc="nvcc", no_extern_c=False, options=None, **kwargs):
            # pycuda runs nvcc through subprocess: a missing one raises FileNotFoundError (OSError).
            gpu.maybe_fail("compile")
            assert no_extern_c, "the source declares its own extern \"C\" entry points"
            assert '#include "decode_common.cuh"' not in source and "le_better" in source
            gpu.compiled.append(("source", tuple(options or ())))
            return Module()

        compiler.SourceModule = SourceModule
        for name, value in dict(init=init, Context=Context, Device=Device, mem_alloc=mem_alloc,
                                memcpy_htod=memcpy_htod, memcpy_dtoh=memcpy_dtoh,
                                memcpy_dtoh_async=memcpy_dtoh_async, module_from_file=module_from_file).items():
            setattr(driver, name, value)
        package = types.ModuleType("pycuda")
        package.driver, package.compiler = driver, compiler
        return {"pycuda": package, "pycuda.driver": driver, "pycuda.compiler": compiler}


@pytest.fixture
def gpu(monkeypatch, gxx_host_decoder, tmp_path_factory):
    fake = FakeGpu(gxx_host_decoder)
    for name, module in fake.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    # An nvcc on PATH for the loader to find (the fake SourceModule never runs it), so these tests
    # do not depend on the machine's CUDA toolkit; tests of a missing nvcc replace PATH.
    bin_dir = tmp_path_factory.mktemp("bin")
    stub = bin_dir / "nvcc"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    fake.nvcc = str(stub)
    return fake


@pytest.fixture
def decoder(gpu):
    with decode_cuda.primary_context(0), decode_cuda.CudaDecoder() as dec:
        yield dec
    assert not gpu.live, "the decoder leaked device buffers"
    assert not gpu.stack, "the primary context was not popped"


@pytest.mark.parametrize("block", [64, 256])
def test_decode_arrays_matches_numpy(gpu, decode_case, block, reference, assert_packed_matches):
    with decode_cuda.primary_context(0), decode_cuda.CudaDecoder(block=block) as dec:
        got = dec.decode_arrays(decode_case["heatmap"], decode_case["offset"], decode_case["severity"],
                                decode_case["groups"], stride=decode_case["stride"])
    assert_packed_matches(got.to_packed(), reference(decode_case), decode_case["heatmap"].shape[3])
    name, grid, launched_block, _ = gpu.launches[-1]
    n, k = decode_case["heatmap"].shape[:2]
    assert name == ("decode_peaks_f16" if decode_case["heatmap"].dtype == np.float16 else "decode_peaks_f32")
    assert grid == (n * k, 1) and launched_block == (block, 1, 1)
    assert not gpu.live and not gpu.stack


def _device_outputs(gpu, rng, n, k, c, h, w, dtype=np.float32):
    from lumbar_edge.decode_cuda import _driver

    cuda = _driver()
    host = [(rng.standard_normal(shape) * 3).astype(dtype) for shape in
            ((n, k, h, w), (n, 2 * k, h, w), (n, 3 * c, h, w))]
    bufs = []
    for arr in host:
        buf = cuda.mem_alloc(arr.nbytes)
        cuda.memcpy_htod(buf, arr)
        bufs.append(buf)
    return host, bufs


def test_decode_in_place_with_a_stream_reuses_buffers(gpu, decoder):
    rng = np.random.default_rng(1)
    host, bufs = _device_outputs(gpu, rng, 4, 5, 2, 9, 11, np.float16)
    groups = np.array([0, 1, 1, 0, 1])
    stream = FakeStream()
    out = decoder.decode(*(int(b) for b in bufs), 4, 5, 9, 11, groups, np.float16, stream)
    assert gpu.launches[-1][3] is stream
    got = decoder.download(4, 5, 11, stream)
    assert stream.synchronized == 1
    ref = decode_numpy(*host, groups)
    np.testing.assert_array_equal(got.index, ref.index)
    np.testing.assert_allclose(got.probs, ref.probs, rtol=1e-5)
    live = len(gpu.live)
    # Same groups and a smaller batch: no new allocation, the same output buffer.
    assert decoder.decode(*(int(b) for b in bufs), 2, 5, 9, 11, groups, "float16") is out
    assert len(gpu.live) == live
    # New groups: one more table; a bigger output: the buffer is replaced, not leaked.
    decoder.decode(*(int(b) for b in bufs), 4, 5, 9, 11, [1, 1, 1, 1, 1], "float16", num_conditions=2)
    assert len(gpu.live) == live + 1
    big = [FakeAllocation(gpu, 64 * 5 * 9 * 11 * 2 * 3) for _ in range(3)]
    assert decoder.decode(*(int(b) for b in big), 64, 5, 9, 11, groups, "float16") is not out
    assert out.freed and len(gpu.live) == live + 4
    for buf in bufs + big:
        buf.free()


def test_empty_batches_launch_nothing(gpu, decoder):
    before = len(gpu.launches)
    decoder.decode(0, 0, 0, 0, 5, 4, 4, [0] * 5, "float32")
    decoder.decode(0, 0, 0, 3, 0, 4, 4, [], "float32")
    assert len(gpu.launches) == before
    assert decoder.download(0, 5, 4).index.shape == (0, 5)
    got = decoder.decode_arrays(np.zeros((2, 0, 3, 3), np.float32), np.zeros((2, 0, 3, 3), np.float32),
                                np.zeros((2, 0, 3, 3), np.float32), [])
    assert got.probs.shape == (2, 0, 3)


def test_validation_raises_input_error(gpu, decoder):
    with pytest.raises(InputError, match="float32 or float16"):
        decoder.decode(1, 2, 3, 1, 1, 4, 4, [0], "float64")
    with pytest.raises(InputError, match="sizes"):
        decoder.decode(1, 2, 3, 1, 1, 0, 4, [0], "float32")
    with pytest.raises(InputError, match="sizes"):
        decoder.decode(1, 2, 3, -1, 1, 4, 4, [0], "float32")
    with pytest.raises(InputError, match="groups"):
        decoder.decode(1, 2, 3, 1, 2, 4, 4, [0], "float32")
    with pytest.raises(InputError, match="groups"):
        decoder.decode(1, 2, 3, 1, 2, 4, 4, [0, 3], "float32", num_conditions=2)
    with pytest.raises(InputError, match="too large"):
        decoder.decode(1, 2, 3, 2**16, 2**16, 4, 4, [0] * 2**16, "float32")
    with pytest.raises(InputError, match="offset"):
        decoder.decode_arrays(np.zeros((1, 2, 4, 4), np.float32), np.zeros((1, 2, 4, 4), np.float32),
                              np.zeros((1, 3, 4, 4), np.float32), [0, 0])
    with pytest.raises(InputError, match="4-D float"):
        decoder.decode_arrays(np.zeros((1, 1, 4, 4), np.int32), np.zeros((1, 2, 4, 4), np.float32),
                              np.zeros((1, 3, 4, 4), np.float32), [0])
    for block in (0, 48, 512, 2.5):
        with pytest.raises(InputError, match="block size"):
            decode_cuda.CudaDecoder(block=block)


def test_cuda_failures_become_cuda_decode_errors(gpu, decoder):
    gpu.fail["mem_alloc"] = FakeMemoryError("cuMemAlloc failed: out of memory")
    with pytest.raises(decode_cuda.CudaDecodeError, match="allocating .*out of memory"):
        decoder.decode_arrays(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2, 4, 4), np.float32),
                              np.zeros((1, 3, 4, 4), np.float32), [0])
    del gpu.fail["mem_alloc"]
    gpu.fail["launch"] = FakeError("cuLaunchKernel failed: too many resources requested for launch")
    with pytest.raises(decode_cuda.CudaDecodeError, match="launching decode_peaks_f32 on 1x1 maps of 4x4"):
        decoder.decode_arrays(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2, 4, 4), np.float32),
                              np.zeros((1, 3, 4, 4), np.float32), [0])
    del gpu.fail["launch"]
    # The failed calls freed their input buffers (the fixture checks nothing else leaked).
    gpu.fail["compile"] = FakeError("nvcc compilation failed")
    with pytest.raises(decode_cuda.CudaDecodeError, match="compiling decode.cu"):
        decode_cuda.CudaDecoder()


def test_free_is_idempotent_and_final(gpu):
    with decode_cuda.primary_context(0):
        dec = decode_cuda.CudaDecoder()
        dec.decode_arrays(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2, 4, 4), np.float32),
                          np.zeros((1, 3, 4, 4), np.float32), [0])
        assert gpu.live and not dec.closed
        dec.free()
        dec.free()
        assert not gpu.live and dec.closed
        with pytest.raises(decode_cuda.CudaDecodeError, match="after free"):
            dec.decode(1, 2, 3, 1, 1, 4, 4, [0])
        with pytest.raises(decode_cuda.CudaDecodeError, match="after free"):
            dec.download(1, 1, 4)


def test_needs_a_current_context_and_a_device(gpu):
    with pytest.raises(decode_cuda.CudaDecodeError, match="no CUDA context is current"):
        decode_cuda.CudaDecoder()
    with pytest.raises(decode_cuda.CudaDecodeError, match="device 3 does not exist"):
        with decode_cuda.primary_context(3):
            pass
    assert not gpu.stack
    with decode_cuda.primary_context(0) as ctx:
        assert gpu.stack == [ctx]
    assert not gpu.stack


def test_loads_a_cubin(gpu, tmp_path):
    with decode_cuda.primary_context(0):
        with pytest.raises(decode_cuda.CudaDecodeError, match="no kernel binary"):
            decode_cuda.CudaDecoder(cubin=tmp_path / "missing.cubin")
        binary = tmp_path / "decode.fatbin"
        binary.write_bytes(b"\0")
        with decode_cuda.CudaDecoder(cubin=binary):
            pass
    assert gpu.compiled == [("file", str(binary))]


def test_availability_reports_what_is_missing(gpu):
    assert decode_cuda.is_available() and decode_cuda.missing_dependencies() == []
    gpu.devices = 0
    assert decode_cuda.missing_dependencies() == ["a CUDA device (the driver reports none)"]
    assert not decode_cuda.is_available()
    gpu.fail["init"] = FakeError("cuInit failed: no CUDA-capable device is detected")
    assert "cuInit failed" in decode_cuda.missing_dependencies()[0]


def test_without_pycuda_everything_fails_cleanly(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda", None)  # import pycuda -> ImportError
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    assert not decode_cuda.is_available()
    assert "pycuda" in decode_cuda.missing_dependencies()[0]
    with pytest.raises(MissingDependencyError, match=r"lumbar-edge\[trt\]"):
        decode_cuda.CudaDecoder()
    with pytest.raises(MissingDependencyError):
        with decode_cuda.primary_context():
            pass


def test_kernel_source_inlines_the_header():
    source = decode_cuda.kernel_source()
    assert '#include "decode_common.cuh"' not in source
    assert "LUMBAR_EDGE_DECODE_COMMON_CUH" in source
    for name in decode_cuda.KERNEL_NAMES.values():
        assert f'extern "C" __global__ void __launch_bounds__(LE_DECODE_MAX_THREADS)\n{name}(' in source


def test_importing_the_decoders_imports_no_gpu_package():
    code = ("import sys, lumbar_edge.decode, lumbar_edge.decode_cuda; "
            "bad = [m for m in ('pycuda', 'torch', 'tensorrt') if m in sys.modules]; "
            "sys.exit(f'imported at module level: {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_decode_into_a_caller_owned_buffer(gpu, decoder):
    # What the TensorRT backend does: the records go to its own (e.g. mapped pinned) buffer.
    from lumbar_edge.decode_cuda import _driver

    cuda = _driver()
    rng = np.random.default_rng(5)
    host, bufs = _device_outputs(gpu, rng, 3, 4, 2, 7, 6)
    groups = np.array([0, 1, 0, 1])
    target = cuda.mem_alloc(3 * 4 * RECORD_SIZE * 4)
    assert decoder.decode(*(int(b) for b in bufs), 3, 4, 7, 6, groups, "float32", out_ptr=int(target)) == int(target)
    packed = np.empty((3, 4, RECORD_SIZE), np.float32)
    cuda.memcpy_dtoh(packed, target)
    for buf in bufs + [target]:
        buf.free()
    from lumbar_edge.decode import Decoded

    got, ref = Decoded.from_packed(packed, 6), decode_numpy(*host, groups)
    np.testing.assert_array_equal(got.index, ref.index)
    np.testing.assert_allclose(got.probs, ref.probs, rtol=1e-5)


# -- where the module comes from: the packaged fatbin, else nvcc, else a clear error ----------------

@pytest.mark.parametrize("cc, expect", [((8, 7), "SASS sm_87"), ((8, 8), "SASS sm_87 (binary compatible"),
                                        ((11, 0), "PTX compute_75"), ((12, 1), "SASS sm_120 (binary compatible")])
def test_the_packaged_fatbin_is_loaded_when_it_has_an_image_for_the_gpu(gpu, fatbin_folder, cc, expect):
    gpu.cc = cc
    with decode_cuda.primary_context(0), decode_cuda.CudaDecoder(kernel_folder=fatbin_folder) as dec:
        assert dec.module_source.startswith(f"decode.fatbin: {expect}")
    assert gpu.compiled == [("file", str(fatbin_folder / "decode.fatbin"))]


def test_without_an_image_for_the_gpu_the_source_is_compiled_with_nvcc(gpu, fatbin_folder):
    gpu.cc = (7, 2)  # Xavier: CUDA 13's nvcc builds no sm_72, and the PTX (compute_75) is newer
    with decode_cuda.primary_context(0), decode_cuda.CudaDecoder(kernel_folder=fatbin_folder) as dec:
        assert dec.module_source == f"decode.cu compiled for sm_72 by {gpu.nvcc}"
    assert gpu.compiled == [("source", ())]


def test_a_fatbin_that_fails_to_load_falls_back_to_nvcc(gpu, fatbin_folder):
    gpu.cc = (9, 0)
    gpu.fail["module_from_file"] = FakeError("cuModuleLoad failed: device kernel image is invalid")
    with decode_cuda.primary_context(0), decode_cuda.CudaDecoder(kernel_folder=fatbin_folder) as dec:
        assert dec.module_source.startswith("decode.cu compiled for sm_90")


def test_no_image_and_no_nvcc_is_a_clear_missing_dependency(gpu, fatbin_folder, tmp_path, monkeypatch):
    gpu.cc = (7, 2)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvcc anywhere
    with decode_cuda.primary_context(0):
        with pytest.raises(MissingDependencyError, match=r"the CUDA decode kernel on this GPU \(sm_72\) needs nvcc "
                                                         r".*has no image for sm_72.*nvcc is not on PATH"):
            decode_cuda.CudaDecoder(kernel_folder=fatbin_folder)
        # No packaged fatbin at all (a package built without nvcc): the same error, naming that.
        with pytest.raises(MissingDependencyError, match="no packaged decode.fatbin"):
            decode_cuda.CudaDecoder(kernel_folder=tmp_path)
    assert gpu.compiled == [] and not gpu.stack


def test_an_oserror_from_pycudas_nvcc_run_is_a_missing_dependency(gpu):
    # What pycuda's call_capture_output raises when the nvcc it runs is gone or not executable;
    # before the fix it escaped checked_call as a raw OSError. (sm_70: no fatbin image, so the
    # default decoder compiles the source.)
    gpu.fail["compile"] = FileNotFoundError(2, "No such file or directory", "nvcc")
    with decode_cuda.primary_context(0):
        with pytest.raises(MissingDependencyError, match=r"compiling the CUDA decode kernel at run time needs nvcc "
                                                         r"\(the CUDA toolkit\): running .*nvcc failed"):
            decode_cuda.CudaDecoder()
    assert not gpu.live and not gpu.stack


def test_a_fatbin_built_from_other_sources_is_not_used(gpu, fatbin_folder, tmp_path):
    import json
    import shutil

    from lumbar_edge.kernels import build

    for name in (build.FATBIN_NAME, build.MANIFEST_NAME):
        shutil.copyfile(fatbin_folder / name, tmp_path / name)
    manifest = json.loads((tmp_path / build.MANIFEST_NAME).read_text())
    manifest["source_sha256"] = "0" * 64
    (tmp_path / build.MANIFEST_NAME).write_text(json.dumps(manifest))
    gpu.cc = (8, 7)
    with decode_cuda.primary_context(0), decode_cuda.CudaDecoder(kernel_folder=tmp_path) as dec:
        assert dec.module_source.startswith("decode.cu compiled for sm_87")
    path, images, note = decode_cuda.packaged_fatbin(tmp_path)
    assert images is None and "other sources" in note


# -- group tables: never freed while a captured graph holds their address ---------------------------

def test_group_tables_held_by_a_graph_are_never_freed(gpu, decoder):
    rng = np.random.default_rng(5)
    n, k, c, h, w = 2, 3, 4, 5, 6
    host, bufs = _device_outputs(gpu, rng, n, k, c, h, w)
    ptrs = [int(b) for b in bufs]
    captured = [0, 1, 2]
    key = decoder.hold_groups(captured)  # what the TensorRT backend does before capturing a graph
    held = decoder._groups.get(captured)
    # Many more head layouts than the cache keeps: the unheld ones are evicted, the held one stays.
    layouts = [[a, b, d] for a in range(c) for b in range(c) for d in range(2)][:3 * decode_cuda._MAX_CACHED_GROUPS]
    for groups in layouts:
        decoder.decode(*ptrs, n, k, h, w, groups, "float32", num_conditions=c)
    assert not held.freed, "a table a graph holds was freed"
    assert int(held) in gpu.live
    assert len(decoder._groups) <= decode_cuda._MAX_CACHED_GROUPS + 1
    # A replay of the graph still reads the right table: decoding with it matches numpy.
    decoder.decode(*ptrs, n, k, h, w, captured, "float32", num_conditions=c)
    got = decoder.download(n, k, w)
    np.testing.assert_array_equal(got.index, decode_numpy(*host, np.array(captured)).index)
    # Released: it may go like any other.
    decoder.release_groups(key)
    for groups in layouts:
        decoder.decode(*ptrs, n, k, h, w, groups, "float32", num_conditions=c)
    assert held.freed
    for buf in bufs:
        buf.free()


def test_group_table_eviction_is_least_recently_used_and_bounded():
    from lumbar_edge.decode_cuda import GroupTables

    class Table:
        def __init__(self, values):
            self.values, self.freed = values.tolist(), False

        def free(self):
            assert not self.freed, "double free"
            self.freed = True

    made = []
    tables = GroupTables(lambda t: made.append(Table(t)) or made[-1], limit=2)
    a, b = tables.get([0]), tables.get([1])
    tables.get([0])  # [0] is now the most recent
    key = tables.hold([2])
    assert not a.freed and not b.freed  # a held table does not count against the limit
    tables.get([3])
    assert b.freed and not a.freed  # the least recently used unheld table went
    tables.get([4])
    assert a.freed and not made[2].freed
    tables.release(key)
    tables.get([5])
    assert made[2].freed and made[2].values == [2]
    assert [t.values for t in tables.buffers()] == [[4], [5]]
