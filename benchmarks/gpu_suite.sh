#!/usr/bin/env bash
# The whole GPU verification in one command (under 10 minutes on one GPU):
#   1. installs the carried wheels of .whl/ (benchmarks/fetch_gpu_wheels.sh fills it) into a
#      private folder, and the TensorRT lean runtime's pure-Python tensorrt_lean/ folder beside them;
#   2. pytest -m gpu: the decode kernel against the numpy reference (random and adversarial inputs,
#      FP32 and FP16, the packaged fatbin and the source), the torch CUDA backend end to end, the
#      TensorRT engine round trip (built with the full TensorRT where it imports, run on
#      tensorrt_lean with and without CUDA graphs at alternating batch sizes, against ONNX
#      Runtime), the lean runtime's initialisation, training steps with AMP;
#   3. the decode benchmark (kernel vs PyTorch tensor ops vs host copy + numpy, batch 1 and 16,
#      every field checked against numpy first), the backend benchmark (torch CUDA FP16 + CUDA
#      graphs vs eager FP32 PyTorch, batch 1) and the gpu-full training preset's step time;
#   4. on a benchmark bundle (benchmarks/make_bundle.py: the default network, random weights, FP32 +
#      INT8 + model.pt, no TensorRT engine, so auto passes over tensorrt to torch): `lumbar-edge
#      bench` (every backend/precision, batch 1,8,16), the end-to-end baselines and the
#      scaling/overlap benchmark (50 studies), each given what is left of the 10-minute budget;
#      RESULTS.md (benchmarks/results_md.py) is written for benchmarks/RESULTS.md;
#   5. prints one table (benchmarks/suite_table.py): every row a figure or a named reason.
# Each step runs isolated (its own process and time limit, its output in STEP.log): one that
# crashes or times out is reported in the table and the others still run. Without a GPU the GPU
# steps say why in the table instead of running (pytest -m gpu still collects and skips).
# Results go to $OUT (the device tool's folder) or /tmp/gpu_suite; the exit status is pytest's.
# Device tool (the fatbin is git-ignored and the device machine may have no nvcc, so carry it):
#   run(command="bash benchmarks/gpu_suite.sh", timeout_s=600, carry=[".whl",
#       "lumbar_edge/kernels/decode.fatbin", "lumbar_edge/kernels/decode.fatbin.json"])
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-/tmp/gpu_suite}"
mkdir -p "$RESULTS"
: > "$RESULTS/steps.tsv"
export PYTHONUNBUFFERED=1
SECONDS=0
WORK=$(mktemp -d /tmp/gpu_suite_work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# lumbar_edge from this checkout, with training/, export/ and benchmarks/ under its namespace as
# setup.py maps them (a private copy, so the checkout is never written to).
PKG="$WORK/pkg"
mkdir -p "$PKG"
cp -r lumbar_edge "$PKG/lumbar_edge"
for top in training export benchmarks; do cp -r "$top" "$PKG/lumbar_edge/$top"; done
export PYTHONPATH="$PKG"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl \
    || echo "warning: installing the carried wheels failed"
  [ -d .whl/tensorrt_lean ] && rm -rf "$WORK/site/tensorrt_lean" && cp -r .whl/tensorrt_lean "$WORK/site/tensorrt_lean"
  export PYTHONPATH="$PKG:$WORK/site"
else
  echo "no .whl/ folder: run benchmarks/fetch_gpu_wheels.sh here first and carry .whl (pycuda, tensorrt_lean)"
fi
# The packaged fatbin, where this machine has nvcc and the checkout none (else the source is compiled).
if command -v nvcc >/dev/null 2>&1; then
  python3 -P -m lumbar_edge.kernels.build 2>&1 | head -3 || echo "warning: the decode fatbin did not build"
fi
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: no GPU listed"
# -P: the checkout's own folder is not put first on sys.path, so lumbar_edge comes from $PKG.
python3 -P - <<'PY'
import importlib
import lumbar_edge, lumbar_edge.export
print(f"  lumbar_edge {lumbar_edge.__version__} from {lumbar_edge.__file__}, export from {lumbar_edge.export.__file__}")
for name in ("torch", "pycuda.driver", "tensorrt_lean", "tensorrt", "pydicom", "onnxruntime"):
    try:
        m = importlib.import_module(name)
        print(f"  {name}: {getattr(m, '__version__', getattr(m, 'VERSION', 'ok'))}")
    except Exception as exc:  # report and go on: each test skips with its own reason
        print(f"  {name}: not importable ({type(exc).__name__}: {exc})")
PY
GPU_REASON=$(python3 -P -c "from lumbar_edge.backends.cuda_resources import gpu_missing_reason as r; print(r() or '')" 2>&1 | tail -1)

BUDGET=570  # seconds for the whole suite; each later step gets what is left (at least 30 s)
left() { local l=$((BUDGET - SECONDS)); [ "$l" -lt 30 ] && l=30; echo "$1 $l" | awk '{print ($1 < $2) ? $1 : $2}'; }
# step NAME LIMIT CMD...: run CMD isolated under a time limit, its output in NAME.log (and on the
# console), and record its exit status and seconds in steps.tsv.
step() {
  local name=$1 limit start rc
  limit=$(left "$2"); shift 2
  start=$SECONDS
  echo "--- $name (limit ${limit} s)"
  timeout "$limit" "$@" > >(tee "$RESULTS/$name.log") 2>&1
  rc=$?
  printf '%s\t%s\t%s\t\n' "$name" "$rc" "$((SECONDS - start))" >> "$RESULTS/steps.tsv"
  return 0
}
skip() { printf '%s\t0\t0\tskipped: %s\n' "$1" "$2" >> "$RESULTS/steps.tsv"; echo "--- $1 skipped: $2"; }

TESTS="tests/kernels tests/export/test_gpu_backends.py tests/export/test_tensorrt_build.py tests/export/test_tensorrt_roundtrip.py tests/backends/test_backend_tensorrt.py tests/training/test_train_gpu.py"
# shellcheck disable=SC2086
step pytest_gpu 300 python3 -P -m pytest -q -rsP -p no:cacheprovider -m gpu $TESTS --junitxml="$RESULTS/gpu_tests.xml"
PYTEST_RC=$(awk -F'\t' '$1 == "pytest_gpu" {print $2}' "$RESULTS/steps.tsv")
python3 - "$RESULTS" <<'PY'
import json, re, sys, pathlib
res = pathlib.Path(sys.argv[1])
log = (res / "pytest_gpu.log").read_text(errors="replace") if (res / "pytest_gpu.log").exists() else ""
summary = next((l.strip("= ") for l in reversed(log.splitlines())
                if re.search(r"\d+ (passed|failed|skipped|deselected|error)", l)), None)
if summary:
    (res / "pytest_gpu.json").write_text(json.dumps({"summary": summary}))
PY

step decode_bench 60 python3 -P -m lumbar_edge.benchmarks.decode_bench --batch 1,16 --json "$RESULTS/decode_bench.json"
step backend_bench 60 python3 -P -m lumbar_edge.benchmarks.backend_bench --batch 1 --json "$RESULTS/backend_bench.json"
if [ -n "$GPU_REASON" ]; then
  for s in train_speed make_bundle bench end_to_end scaling; do skip "$s" "$GPU_REASON"; done
else
  # The gpu-full training preset's step (ResNet-50, 512 px, AMP) against plain FP32, and its
  # projected training time on the 1975 studies of RSNA 2024.
  step train_speed 90 python3 -P -m lumbar_edge.benchmarks.train_speed --preset gpu-full --steps 10 --studies 1975 \
    --json "$RESULTS/train_speed.json"
  BUNDLE="$WORK/bench_bundle"
  step make_bundle 120 python3 -P -m lumbar_edge.benchmarks.make_bundle --out "$BUNDLE"
  if [ -f "$BUNDLE/manifest.json" ]; then
    step bench 120 python3 -P -m lumbar_edge.cli bench --model "$BUNDLE" --batch 1,8,16 --iters 5 \
      --json "$RESULTS/bench.json" -q
    step end_to_end 120 python3 -P -m lumbar_edge.benchmarks.end_to_end --model "$BUNDLE" --repeats 3 \
      --json "$RESULTS/end_to_end.json" -q
    step scaling 200 python3 -P -m lumbar_edge.benchmarks.scaling --model "$BUNDLE" --backend auto --studies 50 \
      --sizes 1,10,50 --slices 9,15,20,30 --json "$RESULTS/scaling.json"
  else
    for s in bench end_to_end scaling; do skip "$s" "no benchmark bundle (make_bundle failed: see make_bundle.log)"; done
  fi
  python3 -P -m lumbar_edge.benchmarks.results_md "$RESULTS" --command "bash benchmarks/gpu_suite.sh" \
    > "$RESULTS/RESULTS.md" || echo "RESULTS.md: not written"
fi

echo
python3 -P -m lumbar_edge.benchmarks.suite_table "$RESULTS" --seconds "$SECONDS" | tee "$RESULTS/table.txt"
exit "${PYTEST_RC:-1}"
