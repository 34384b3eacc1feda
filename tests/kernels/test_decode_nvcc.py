"""decode.cu compiles for every architecture of the packaged fatbin without spills or local memory.

The report checked is the fatbin build's (lumbar_edge.kernels.build: one nvcc call, ptxas ``-v``
parsed per entry point and architecture), of the package's own fatbin when it is current, else of
one built for the session. An architecture this nvcc cannot build (sm_72 on CUDA 13) is skipped
with the build's reason. The figures are attached to the test report (``record_property``) and
printed (visible with ``-s`` or ``-rA``).
"""
import shutil
import subprocess

import pytest

from lumbar_edge.decode_cuda import KERNEL_NAMES, kernel_dir, nvcc_resource_command
from lumbar_edge.kernels.build import TARGET_SASS, parse_ptxas, read_manifest


def test_parse_ptxas_reads_the_report_format():
    report = """ptxas info    : Compiling entry function 'decode_peaks_f16' for 'sm_87'
ptxas info    : Function properties for decode_peaks_f16
    16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 40 registers, 16 bytes lmem, used 1 barriers, 64 bytes smem, 416 bytes cmem[0]
ptxas info    : Compiling entry function 'decode_peaks_f32' for 'sm_90'
ptxas info    : Function properties for decode_peaks_f32
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, used 1 barriers, 64 bytes smem
"""
    parsed = parse_ptxas(report)
    assert parsed[("decode_peaks_f16", "sm_87")] == {"lmem": 16, "stack": 16, "spill_stores": 4, "spill_loads": 8,
                                                      "registers": 40}
    assert parsed[("decode_peaks_f32", "sm_90")] == {"lmem": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0,
                                                      "registers": 30}


@pytest.mark.parametrize("arch", [f"sm_{a}" for a in TARGET_SASS])
@pytest.mark.parametrize("entry", KERNEL_NAMES.values())
def test_kernel_has_no_spills_or_local_memory(fatbin_folder, entry, arch, record_property):
    manifest = read_manifest(fatbin_folder)
    if arch in manifest["not_built"]:
        pytest.skip(manifest["not_built"][arch])
    assert arch in manifest["sass"], manifest["sass"]
    usage = manifest["resources"].get(f"{entry} {arch}")
    assert usage is not None, f"ptxas reported no {entry} for {arch}; command: {manifest['command']}"
    record_property(f"{entry}_{arch}_registers", usage.get("registers"))
    print(f"{entry} {arch}: {usage}")
    assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage
    assert usage["stack"] == 0 and usage["lmem"] == 0, usage
    # __launch_bounds__(256) lets ptxas use up to 255; staying low keeps many blocks resident.
    assert 0 < usage["registers"] <= 64, usage


def test_the_resource_command_builds_a_fatbin_of_the_named_architectures(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found on PATH: the CUDA toolkit is not installed")
    from lumbar_edge.kernels.build import fatbin_images

    out = tmp_path / "decode.fatbin"
    cmd = nvcc_resource_command(nvcc, out, ("sm_87",))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=kernel_dir())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fatbin_images(out.read_bytes()) == [("sass", 87)]
    assert parse_ptxas(proc.stdout + proc.stderr)[("decode_peaks_f32", "sm_87")]["spill_stores"] == 0


def test_inlined_source_compiles_as_pycuda_compiles_it(tmp_path):
    """pycuda's SourceModule writes the text to a temporary kernel.cu and runs nvcc --cubin there,
    with no include path: the inlined source must stand alone and keep unmangled entry names."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found on PATH: the CUDA toolkit is not installed")
    from lumbar_edge.decode_cuda import kernel_source

    (tmp_path / "kernel.cu").write_text(kernel_source(), encoding="utf-8")
    cmd = [nvcc, "--cubin", "-arch", "sm_90", "-o", "kernel.cubin", "kernel.cu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    binary = (tmp_path / "kernel.cubin").read_bytes()
    for name in KERNEL_NAMES.values():
        assert b"\0" + name.encode() + b"\0" in binary, f"{name} is not an unmangled symbol of the cubin"
