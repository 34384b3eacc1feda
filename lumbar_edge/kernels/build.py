"""Build ``decode.cu`` into the fatbin packaged with lumbar_edge, and check ptxas's resource report.

Usage: ``python -m lumbar_edge.kernels.build [--out DIR] [--nvcc PATH] [--force] [--check]``

One nvcc call builds SASS for every architecture of :data:`TARGET_SASS` that this nvcc supports
and PTX for :data:`PTX_FOR` (forward compatibility), writes ``decode.fatbin`` and then
``decode.fatbin.json`` (what was built, what was not and why, the sha256 of the sources it was
built from, ptxas's registers / spills per entry point and architecture) into ``--out`` (default:
this folder, i.e. the installed package), each atomically. The build fails when any entry point
spills, uses a stack frame or local memory on any architecture. ``setup.py`` runs :func:`build`
when nvcc is present (package build and ``pip install -e``); CI runs this module with ``--check``.

At run time :mod:`lumbar_edge.decode_cuda` loads the fatbin with pycuda's ``module_from_file``
when it holds an image for the GPU and was built from the installed sources, and compiles the
source with nvcc (pycuda's ``SourceModule``) only otherwise.

This module uses the standard library only (``setup.py`` imports it before anything is installed).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import LumbarEdgeError

#: SASS wanted: Xavier (sm_72, JetPack 5), A100, RTX 30xx / A10, Orin (sm_87), L4 / RTX 40xx,
#: H100 / H200, B200, RTX 50xx. CUDA 13's nvcc has dropped sm_72 (its oldest is sm_75); the
#: manifest then lists it as not built, with the reason.
TARGET_SASS: Tuple[int, ...] = (72, 80, 86, 87, 89, 90, 100, 120)
#: PTX kept in the fatbin, JIT-compiled by the driver for a GPU without matching SASS: the newest
#: target (GPUs after sm_120) and the oldest architecture this nvcc supports (any GPU at least
#: that old, e.g. T4 sm_75 or Thor sm_110). ``"oldest"`` is resolved against the nvcc used.
PTX_FOR: Tuple[object, ...] = (120, "oldest")
FATBIN_NAME = "decode.fatbin"
MANIFEST_NAME = "decode.fatbin.json"
SOURCES: Tuple[str, ...] = ("decode.cu", "decode_common.cuh")
ENTRY_POINTS: Tuple[str, ...] = ("decode_peaks_f32", "decode_peaks_f16")
_FATBIN_MAGIC = 0xBA55ED50

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+a?)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_LMEM = re.compile(r"(\d+) bytes lmem")


class KernelBuildError(LumbarEdgeError):
    """decode.cu cannot be built into the fatbin: no nvcc, nvcc failed, or the resource report
    shows spills, a stack frame or local memory."""


def kernel_dir() -> Path:
    """The folder holding the kernel sources (and, once built, the packaged fatbin)."""
    return Path(__file__).resolve().parent


def source_sha256(folder: "Path | None" = None) -> str:
    """sha256 over :data:`SOURCES` (name and bytes): a fatbin is used only when it was built
    from exactly the installed sources. Raises :class:`KernelBuildError` if one is missing."""
    folder = Path(folder) if folder is not None else kernel_dir()
    digest = hashlib.sha256()
    for name in SOURCES:
        try:
            data = (folder / name).read_bytes()
        except OSError as exc:
            raise KernelBuildError(f"the decode kernel source {folder / name} cannot be read: {exc}") from exc
        digest.update(name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def parse_ptxas(report: str) -> Dict[Tuple[str, str], Dict[str, int]]:
    """``{(entry, "sm_XX"): {"registers", "stack", "spill_stores", "spill_loads", "lmem"}}`` from
    ptxas -v output (the lines after each "Compiling entry function" up to the next one)."""
    out: Dict[Tuple[str, str], Dict[str, int]] = {}
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


def resource_problems(parsed: Dict[Tuple[str, str], Dict[str, int]], sass: Sequence[int]) -> List[str]:
    """What is wrong in a parsed ptxas report for the architectures ``sass``: an entry point not
    reported, or one with spills, a stack frame or local memory. Empty when clean."""
    problems = []
    for arch in sass:
        for entry in ENTRY_POINTS:
            usage = parsed.get((entry, f"sm_{arch}"))
            if usage is None:
                problems.append(f"{entry} sm_{arch}: not in ptxas's report")
                continue
            bad = {k: usage.get(k, -1) for k in ("spill_stores", "spill_loads", "stack", "lmem") if usage.get(k, -1) != 0}
            if bad:
                problems.append(f"{entry} sm_{arch}: {bad}")
    return problems


def nvcc_gpu_codes(nvcc: str) -> List[int]:
    """The SASS architectures ``nvcc --list-gpu-code`` names (``sm_XX`` without a suffix).
    Raises :class:`KernelBuildError` when nvcc cannot be run."""
    try:
        proc = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelBuildError(f"{nvcc} --list-gpu-code failed: {exc}") from exc
    if proc.returncode != 0:
        raise KernelBuildError(f"{nvcc} --list-gpu-code exited {proc.returncode}: {proc.stderr.strip()}")
    return sorted({int(m.group(1)) for m in re.finditer(r"^sm_(\d+)$", proc.stdout, re.M)})


def nvcc_release(nvcc: str) -> str:
    """``"13.0"`` from ``nvcc --version`` ("" when it does not say)."""
    try:
        proc = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelBuildError(f"{nvcc} --version failed: {exc}") from exc
    m = re.search(r"release (\d+\.\d+)", proc.stdout)
    return m.group(1) if m else ""


def plan_architectures(supported: Sequence[int], release: str = "this nvcc") -> Tuple[List[int], List[int], Dict[str, str]]:
    """``(sass, ptx, not_built)`` for an nvcc that supports ``supported``: the targets of
    :data:`TARGET_SASS` it can build, the PTX of :data:`PTX_FOR` ("oldest" resolved; a PTX
    target it lacks falls back to its newest), and ``{"sm_XX": reason}`` for the rest.
    Raises :class:`KernelBuildError` when it supports none of the targets."""
    have = set(int(a) for a in supported)
    if not have:
        raise KernelBuildError(f"{release} lists no GPU architectures")
    sass = [a for a in TARGET_SASS if a in have]
    not_built = {f"sm_{a}": (f"nvcc {release} does not support sm_{a} (its oldest is sm_{min(have)}); "
                             f"on such a GPU the decoder compiles decode.cu with the device's own nvcc "
                             f"(JetPack's CUDA), or the PTX of an older compute capability is needed")
                 for a in TARGET_SASS if a not in have}
    if not sass:
        raise KernelBuildError(f"nvcc {release} supports none of sm_{', sm_'.join(map(str, TARGET_SASS))}")
    ptx = []
    for want in PTX_FOR:
        arch = min(have) if want == "oldest" else (int(want) if int(want) in have else max(have))
        if arch not in ptx:
            ptx.append(arch)
    return sass, sorted(ptx), not_built


def fatbin_command(nvcc: str, out: "str | Path", source: "str | Path", sass: Sequence[int],
                   ptx: Sequence[int]) -> List[str]:
    """The nvcc command line: a fatbin of SASS ``sass`` and PTX ``ptx``, with ptxas's -v
    resource report, every warning an error."""
    cmd = [nvcc, "--fatbin", "-O3", "-Xptxas", "-v", "-Werror", "all-warnings"]
    for arch in sass:
        cmd += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    for arch in ptx:
        cmd += ["-gencode", f"arch=compute_{arch},code=compute_{arch}"]
    return cmd + ["-o", str(out), str(source)]


def fatbin_images(data: bytes) -> List[Tuple[str, int]]:
    """The images of a fatbin, in file order: ``("sass", 87)`` for an ELF cubin of sm_87,
    ``("ptx", 120)`` for PTX of compute_120. Reads the container headers only (magic
    0xBA55ED50; per entry: kind 1 = PTX / 2 = ELF, header size, payload size, architecture at
    byte 28), the layout cuobjdump lists. Raises :class:`KernelBuildError` on anything else."""
    if len(data) < 16:
        raise KernelBuildError("not a CUDA fatbin: shorter than its 16-byte header")
    magic, _version, header, size = struct.unpack_from("<IHHQ", data, 0)
    if magic != _FATBIN_MAGIC:
        raise KernelBuildError(f"not a CUDA fatbin: magic {magic:#x}")
    end = header + size
    if end > len(data):
        raise KernelBuildError(f"truncated fatbin: {len(data)} bytes, the header says {end}")
    images, at = [], header
    while at < end:
        if at + 32 > end:
            raise KernelBuildError(f"truncated fatbin entry at byte {at}")
        kind, _ver, entry_header, payload = struct.unpack_from("<HHIQ", data, at)
        (arch,) = struct.unpack_from("<I", data, at + 28)
        if kind not in (1, 2) or entry_header < 32 or at + entry_header + payload > end:
            raise KernelBuildError(f"unreadable fatbin entry at byte {at} (kind {kind}, header {entry_header})")
        images.append(("ptx" if kind == 1 else "sass", int(arch)))
        at += entry_header + payload
    return images


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(folder: "Path | None" = None) -> Optional[dict]:
    """The ``decode.fatbin.json`` of ``folder`` (default: the installed package), or ``None``
    when there is none or it is unreadable."""
    folder = Path(folder) if folder is not None else kernel_dir()
    try:
        return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_current(folder: "Path | None" = None, source_folder: "Path | None" = None) -> bool:
    """Whether ``folder`` holds a fatbin and manifest built from the sources of ``source_folder``."""
    folder = Path(folder) if folder is not None else kernel_dir()
    manifest = read_manifest(folder)
    return (manifest is not None and (folder / FATBIN_NAME).is_file()
            and manifest.get("source_sha256") == source_sha256(source_folder))


def build(out_dir: "Path | str | None" = None, nvcc: Optional[str] = None,
          source_dir: "Path | str | None" = None) -> dict:
    """Build the fatbin into ``out_dir`` (default: this folder) and return its manifest.

    ``nvcc`` defaults to the one on PATH. Raises :class:`KernelBuildError` without nvcc, when nvcc
    fails, or when the resource report shows spills, stack or local memory on any architecture
    (nothing is written then)."""
    source_dir = Path(source_dir) if source_dir is not None else kernel_dir()
    out_dir = Path(out_dir) if out_dir is not None else kernel_dir()
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        raise KernelBuildError("nvcc is not on PATH: the CUDA toolkit is needed to build the decode kernel")
    release = nvcc_release(nvcc)
    sass, ptx, not_built = plan_architectures(nvcc_gpu_codes(nvcc), release or "(unknown release)")
    digest = source_sha256(source_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lumbar-edge-kernel-") as tmp:
        target = Path(tmp) / FATBIN_NAME
        cmd = fatbin_command(nvcc, target, source_dir / "decode.cu", sass, ptx)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KernelBuildError(f"nvcc could not build decode.cu: {exc}") from exc
        if proc.returncode != 0:
            raise KernelBuildError(f"nvcc failed on decode.cu (exit {proc.returncode}): "
                                   f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        parsed = parse_ptxas(proc.stdout + proc.stderr)
        problems = resource_problems(parsed, sass)
        if problems:
            raise KernelBuildError("the decode kernel spills or uses local memory: " + "; ".join(problems))
        data = target.read_bytes()
    images = fatbin_images(data)
    if sorted(a for k, a in images if k == "sass") != sorted(sass) or sorted(a for k, a in images if k == "ptx") != ptx:
        raise KernelBuildError(f"the fatbin holds {images}, not SASS {sass} + PTX {ptx}")
    manifest = {
        "fatbin": FATBIN_NAME, "source_sha256": digest, "nvcc_release": release,
        "sass": [f"sm_{a}" for a in sass], "ptx": [f"compute_{a}" for a in ptx], "not_built": not_built,
        "resources": {f"{entry} {arch}": usage for (entry, arch), usage in sorted(parsed.items())},
        "command": " ".join(Path(c).name if i in (0, len(cmd) - 1) else c for i, c in enumerate(cmd)),
    }
    # The fatbin first, the manifest last: a manifest names only a complete fatbin.
    _atomic_write(out_dir / FATBIN_NAME, data)
    _atomic_write(out_dir / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="Folder for decode.fatbin and its manifest (default: the package).")
    parser.add_argument("--nvcc", default=None, help="nvcc to use (default: the one on PATH).")
    parser.add_argument("--force", action="store_true", help="Rebuild even when the fatbin is current.")
    parser.add_argument("--check", action="store_true",
                        help="Exit 1 unless the result holds SASS for every target nvcc supports, with no spills.")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else kernel_dir()
    try:
        if not args.force and is_current(out):
            manifest = read_manifest(out)
            print(f"decode kernel: {out / FATBIN_NAME} is current")
        else:
            manifest = build(out, args.nvcc)
            print(f"decode kernel: built {out / FATBIN_NAME}")
        images = fatbin_images((out / FATBIN_NAME).read_bytes())
    except LumbarEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"  SASS {', '.join(manifest['sass'])}; PTX {', '.join(manifest['ptx'])}; nvcc {manifest['nvcc_release']}")
    for arch, why in manifest["not_built"].items():
        print(f"  not built: {arch}: {why}")
    worst = max(u.get("registers", 0) for u in manifest["resources"].values())
    print(f"  no spills, stack or local memory on any architecture; at most {worst} registers per thread")
    if args.check:
        problems = resource_problems({tuple(k.split(" ")): v for k, v in manifest["resources"].items()},
                                     [int(a[3:]) for a in manifest["sass"]])
        listed = sorted(f"sm_{a}" for k, a in images if k == "sass")
        if problems or listed != sorted(manifest["sass"]):
            print(f"error: check failed: {problems or f'the fatbin holds {listed}'}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
