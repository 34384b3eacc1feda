"""The packaged decode fatbin: what the build puts in it, that cuobjdump sees the same, and which
image the loader would pick for a GPU (a pure choice, testable without one)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lumbar_edge.decode_cuda import fatbin_image_for, kernel_plan
from lumbar_edge.kernels import build
from lumbar_edge.kernels.build import KernelBuildError, fatbin_images, plan_architectures, resource_problems


def _cuobjdump():
    """cuobjdump from PATH, or from the nvidia-cuda-cuobjdump wheel beside this Python."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    for base in map(Path, sys.path):
        candidate = base / "nvidia" / "cu13" / "bin" / "cuobjdump"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _nvcc_codes():
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found on PATH")
    return build.nvcc_gpu_codes(nvcc)


def test_the_fatbin_holds_sass_for_every_target_nvcc_supports_and_ptx(fatbin_folder):
    codes = _nvcc_codes()
    manifest = build.read_manifest(fatbin_folder)
    images = fatbin_images((fatbin_folder / build.FATBIN_NAME).read_bytes())
    sass = sorted(a for kind, a in images if kind == "sass")
    ptx = sorted(a for kind, a in images if kind == "ptx")
    assert sass == [a for a in build.TARGET_SASS if a in codes]
    assert {80, 86, 87, 89, 90, 100, 120} <= set(sass)
    assert ptx == sorted({min(codes), 120 if 120 in codes else max(codes)})
    assert manifest["sass"] == [f"sm_{a}" for a in sass]
    # What could not be built is named with the reason, never silently dropped.
    assert set(manifest["not_built"]) == {f"sm_{a}" for a in build.TARGET_SASS if a not in codes}
    if 72 not in codes:
        assert re.match(r"nvcc \d+\.\d+ does not support sm_72 \(its oldest is sm_\d+\)", manifest["not_built"]["sm_72"])
    assert manifest["source_sha256"] == build.source_sha256()
    assert not resource_problems({tuple(k.split(" ")): v for k, v in manifest["resources"].items()}, sass)


def test_cuobjdump_lists_the_same_images_and_no_spills(fatbin_folder):
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found (CUDA toolkit or the nvidia-cuda-cuobjdump wheel)")
    path = fatbin_folder / build.FATBIN_NAME
    elf = subprocess.run([tool, "--list-elf", str(path)], capture_output=True, text=True, check=True).stdout
    ptx = subprocess.run([tool, "--list-ptx", str(path)], capture_output=True, text=True, check=True).stdout
    images = fatbin_images(path.read_bytes())
    assert sorted(int(a) for a in re.findall(r"\.sm_(\d+)\.cubin", elf)) == sorted(a for k, a in images if k == "sass")
    assert sorted(int(a) for a in re.findall(r"\.sm_(\d+)\.ptx", ptx)) == sorted(a for k, a in images if k == "ptx")
    usage = subprocess.run([tool, "--dump-resource-usage", str(path)], capture_output=True, text=True, check=True).stdout
    # One "Fatbin elf code" block per cubin, each with its resource usage (PTX blocks have none).
    elf_blocks = re.split(r"Fatbin elf code:", usage)[1:]
    assert len(elf_blocks) == len([k for k, _ in images if k == "sass"])
    for block in elf_blocks:
        arch = re.search(r"arch = (\S+)", block).group(1)
        functions = re.findall(r"Function (\w+):\s+REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", block)
        assert sorted(f[0] for f in functions) == ["decode_peaks_f16", "decode_peaks_f32"], (arch, block)
        for name, _reg, stack, local in functions:
            assert stack == "0" and local == "0", f"{name} on {arch} uses stack {stack} / local {local}"


def test_the_fatbin_parser_reads_headers_and_refuses_other_files(tmp_path):
    with pytest.raises(KernelBuildError, match="not a CUDA fatbin: magic"):
        fatbin_images(b"\x7fELF" + b"\0" * 60)
    with pytest.raises(KernelBuildError, match="shorter than"):
        fatbin_images(b"\x50\xed\x55\xba")
    import struct

    entry = struct.pack("<HHIQ", 2, 0x101, 64, 8) + b"\0" * 12 + struct.pack("<I", 87) + b"\0" * 32 + b"x" * 8
    blob = struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(entry)) + entry
    assert fatbin_images(blob) == [("sass", 87)]
    with pytest.raises(KernelBuildError, match="truncated fatbin"):
        fatbin_images(blob[:-4])


def test_architecture_plan_names_what_cannot_be_built():
    cuda13 = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121]
    sass, ptx, not_built = plan_architectures(cuda13, "13.0")
    assert sass == [80, 86, 87, 89, 90, 100, 120] and ptx == [75, 120]
    assert list(not_built) == ["sm_72"] and "nvcc 13.0 does not support sm_72 (its oldest is sm_75)" in not_built["sm_72"]
    # JetPack 5's CUDA 11.4 builds Xavier's sm_72 but nothing after sm_87; its newest PTX then.
    sass, ptx, not_built = plan_architectures([53, 60, 62, 70, 72, 75, 80, 86, 87], "11.4")
    assert sass == [72, 80, 86, 87] and ptx == [53, 87]
    assert sorted(not_built) == ["sm_100", "sm_120", "sm_89", "sm_90"]
    with pytest.raises(KernelBuildError, match="supports none"):
        plan_architectures([50, 52], "10.0")


def test_resource_problems_catch_spills_and_missing_entries():
    clean = {"lmem": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0, "registers": 30}
    parsed = {("decode_peaks_f32", "sm_80"): clean, ("decode_peaks_f16", "sm_80"): dict(clean, spill_stores=4)}
    assert resource_problems(parsed, [80]) == ["decode_peaks_f16 sm_80: {'spill_stores': 4}"]
    assert resource_problems(parsed, [90])[0] == "decode_peaks_f32 sm_90: not in ptxas's report"


IMAGES = [("sass", a) for a in (80, 86, 87, 89, 90, 100, 120)] + [("ptx", 120), ("ptx", 75)]


@pytest.mark.parametrize("cc, expect", [
    ((8, 7), "SASS sm_87"), ((9, 0), "SASS sm_90"), ((12, 0), "SASS sm_120"),
    ((8, 8), "SASS sm_87 (binary compatible with sm_88)"),
    ((10, 3), "SASS sm_100 (binary compatible with sm_103)"),
    ((7, 5), "PTX compute_75, JIT-compiled by the driver for sm_75"),
    ((11, 0), "PTX compute_75, JIT-compiled by the driver for sm_110"),
    ((13, 0), "PTX compute_120, JIT-compiled by the driver for sm_130"),
    ((7, 2), None),
])
def test_the_loader_picks_the_image_the_driver_would(cc, expect):
    assert fatbin_image_for(cc, IMAGES) == expect


def test_the_plan_prefers_the_fatbin_and_compiles_only_as_a_fallback():
    steps, refusals = kernel_plan((8, 7), IMAGES, None, "/usr/local/bin/nvcc")
    assert steps == [("fatbin", "SASS sm_87"), ("source", "compiled for sm_87 by /usr/local/bin/nvcc")]
    assert refusals == []
    steps, refusals = kernel_plan((8, 7), IMAGES, None, None)
    assert steps == [("fatbin", "SASS sm_87")] and refusals == ["nvcc is not on PATH, so decode.cu cannot be compiled here"]
    steps, refusals = kernel_plan((7, 2), IMAGES, None, "/usr/local/cuda/bin/nvcc")
    assert steps == [("source", "compiled for sm_72 by /usr/local/cuda/bin/nvcc")]
    assert refusals[0].startswith("the packaged decode.fatbin has no image for sm_72 (it holds sm_80, ")
    steps, refusals = kernel_plan((7, 2), None, "no packaged decode.fatbin in /x", None)
    assert steps == [] and refusals == ["no packaged decode.fatbin in /x",
                                        "nvcc is not on PATH, so decode.cu cannot be compiled here"]


def test_the_installed_package_contains_a_current_fatbin():
    """CI installs the package where nvcc is present (setup.py builds the fatbin) and sets
    LUMBAR_EDGE_REQUIRE_FATBIN=1; elsewhere this says what is missing and skips."""
    current = build.is_current()
    if os.environ.get("LUMBAR_EDGE_REQUIRE_FATBIN") != "1" and not current:
        pytest.skip("the package has no current decode.fatbin (run `python -m lumbar_edge.kernels.build`)")
    assert current, f"no current {build.FATBIN_NAME} in {build.kernel_dir()}"
    images = fatbin_images((build.kernel_dir() / build.FATBIN_NAME).read_bytes())
    assert {("sass", 87), ("sass", 90), ("ptx", 120)} <= set(images)
