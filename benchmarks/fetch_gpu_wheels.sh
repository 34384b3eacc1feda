#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what benchmarks/gpu_suite.sh installs on the GPU device machine
# (Python 3.12, x86-64, torch/cupy/onnx/onnxruntime already there): pycuda and pydicom with their
# pure-Python needs (copied from /work/shared/wheels, or downloaded), and the TensorRT lean
# runtime: the cp312 wheels of tensorrt-lean-cu13-libs and -bindings, plus the tensorrt_lean/
# folder of the pure-Python tensorrt-lean-cu13 sdist (saved as .whl/tensorrt_lean/).
# Usage: benchmarks/fetch_gpu_wheels.sh   (run in the repository root, where pip can download)
set -euo pipefail
cd "$(dirname "$0")/.."
TRT_VERSION="${TRT_VERSION:-11.4.0.106}"
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
if [ -d /work/shared/wheels ]; then
  cp -n /work/shared/wheels/*.whl .whl/
fi
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64)
pip_dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
             "${PLAT[@]}" -d .whl "$@"; }
ls .whl/pycuda-*.whl >/dev/null 2>&1 || pip_dl pycuda pytools platformdirs mako siphash24
ls .whl/pydicom-*.whl >/dev/null 2>&1 || pip_dl pydicom
ls .whl/tensorrt_lean_cu13_libs-*.whl >/dev/null 2>&1 || pip_dl "tensorrt-lean-cu13-libs==$TRT_VERSION"
ls .whl/tensorrt_lean_cu13_bindings-*.whl >/dev/null 2>&1 || pip_dl "tensorrt-lean-cu13-bindings==$TRT_VERSION"
if [ ! -f .whl/tensorrt_lean/__init__.py ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary=:all: -d "$tmp" "tensorrt-lean-cu13==$TRT_VERSION"
  tar -xzf "$tmp"/tensorrt_lean_cu13-*.tar.gz -C "$tmp"
  src=$(find "$tmp" -type d -name tensorrt_lean -path '*tensorrt_lean' | head -1)
  [ -n "$src" ] && [ -f "$src/__init__.py" ] || { echo "no tensorrt_lean/ folder in the sdist" >&2; exit 1; }
  rm -rf .whl/tensorrt_lean && cp -r "$src" .whl/tensorrt_lean
  rm -rf "$tmp"
fi
du -sh .whl; ls .whl
