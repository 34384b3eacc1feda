"""decode.cu compiles for Jetson Orin (sm_87) and H100 (sm_90) without spills or local memory.

One nvcc call per session builds both architectures; ptxas's ``-v`` report is parsed per entry
point and architecture. The figures are attached to the test report (``record_property``) and
printed (visible with ``-s`` or ``-rA``).
"""
import re
import shutil
import subprocess

import pytest

from lumbar_edge.decode_cuda import KERNEL_NAMES, kernel_dir, nvcc_resource_command

ARCHS = ("sm_87", "sm_90")

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+a?)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_LMEM = re.compile(r"(\d+) bytes lmem")


def parse_ptxas(report: str) -> dict:
    """``{(entry, arch): {"registers", "stack", "spill_stores", "spill_loads", "lmem"}}`` from
    ptxas -v output (the lines after each "Compiling entry function" up to the next one)."""
    out = {}
    current = None
    for line in report.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = out.setdefault((m.group(1), m.group(2)), {"lmem": 0})
            continue
        if current is None:
            continue
        m = _FRAME.search(line)
        if m:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        m = _USED.search(line)
        if m:
            current["registers"] = int(m.group(1))
        m = _LMEM.search(line)
        if m:
            current["lmem"] = int(m.group(1))
    return out


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


@pytest.fixture(scope="session")
def ptxas_report(tmp_path_factory):
    """(command, parsed report) of one nvcc -Xptxas -v build of decode.cu for both architectures."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found on PATH: the CUDA toolkit is not installed")
    out = tmp_path_factory.mktemp("nvcc") / "decode.fatbin"
    cmd = nvcc_resource_command(nvcc, out, ARCHS)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=kernel_dir())
    if proc.returncode != 0:
        pytest.fail(f"nvcc failed on decode.cu:\n{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return cmd, parse_ptxas(proc.stdout + proc.stderr)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("entry", KERNEL_NAMES.values())
def test_kernel_has_no_spills_or_local_memory(ptxas_report, entry, arch, record_property):
    cmd, parsed = ptxas_report
    assert (entry, arch) in parsed, f"ptxas reported no {entry} for {arch}; command: {' '.join(cmd)}"
    usage = parsed[(entry, arch)]
    record_property(f"{entry}_{arch}_registers", usage.get("registers"))
    print(f"{entry} {arch}: {usage}")
    assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage
    assert usage["stack"] == 0 and usage["lmem"] == 0, usage
    # __launch_bounds__(256) lets ptxas use up to 255; staying low keeps many blocks resident.
    assert 0 < usage["registers"] <= 64, usage


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
