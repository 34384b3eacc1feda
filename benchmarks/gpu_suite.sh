#!/usr/bin/env bash
# The whole GPU verification in one command (under 10 minutes on one GPU):
#   1. installs the carried wheels of .whl/ (benchmarks/fetch_gpu_wheels.sh fills it) into /tmp/site,
#      and the TensorRT lean runtime's pure-Python tensorrt_lean/ folder beside them;
#   2. pytest -m gpu: the decode kernel against the numpy reference (random and adversarial inputs,
#      FP32 and FP16), the torch CUDA backend end to end on a synthetic study, the lean runtime's
#      initialisation, training steps with AMP (plus the CPU-side TensorRT checks of the same files);
#   3. the decode benchmark (kernel vs PyTorch tensor ops vs host copy + numpy, batch 1 and 16),
#      the backend benchmark (torch CUDA FP16 + CUDA graphs vs eager FP32 PyTorch, batch 1) and the
#      gpu-full training preset's step time (benchmarks/train_speed.py);
#   4. on a benchmark bundle (benchmarks/make_bundle.py: the default network, random weights, FP32 +
#      INT8 + model.pt): `lumbar-edge bench` (every backend/precision, batch 1,8,16, stage table +
#      JSON + chart), the end-to-end baselines (benchmarks/end_to_end.py) and the scaling/overlap
#      benchmark (benchmarks/scaling.py, 50 studies), each step given what is left of a 10-minute
#      budget; RESULTS.md (benchmarks/results_md.py) is written for benchmarks/RESULTS.md;
#   5. prints one table. Results also go to $OUT (the device tool's folder) or /tmp/gpu_suite.
# On a machine without a GPU every step says why it skipped; the exit status is pytest's.
# Device tool: run(command="bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-/tmp/gpu_suite}"
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1
SECONDS=0

# lumbar_edge from this checkout, with training/, export/ and benchmarks/ under its namespace as
# setup.py maps them (a copy in /tmp, so the checkout is never written to).
PKG=/tmp/lumbar_edge_pkg
rm -rf "$PKG" && mkdir -p "$PKG"
cp -r lumbar_edge "$PKG/lumbar_edge"
for top in training export benchmarks; do cp -r "$top" "$PKG/lumbar_edge/$top"; done
export PYTHONPATH="$PKG"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "warning: installing the carried wheels failed"
  [ -d .whl/tensorrt_lean ] && rm -rf /tmp/site/tensorrt_lean && cp -r .whl/tensorrt_lean /tmp/site/tensorrt_lean
  export PYTHONPATH="$PKG:/tmp/site"
else
  echo "no .whl/ folder: run benchmarks/fetch_gpu_wheels.sh here first and carry .whl (pycuda, tensorrt_lean)"
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

TESTS="tests/kernels tests/export/test_gpu_backends.py tests/export/test_tensorrt_build.py tests/backends/test_backend_tensorrt.py tests/training/test_train_gpu.py"
# shellcheck disable=SC2086
BUDGET=570  # seconds for the whole suite; each later step gets what is left (at least 30 s)
left() { local l=$((BUDGET - SECONDS)); [ "$l" -lt 30 ] && l=30; echo "$1 $l" | awk '{print ($1 < $2) ? $1 : $2}'; }
timeout "$(left 300)" python3 -P -m pytest -q -rsP -p no:cacheprovider -m gpu $TESTS --junitxml="$RESULTS/gpu_tests.xml" 2>&1 \
  | tee "$RESULTS/gpu_tests.log"
PYTEST_RC=${PIPESTATUS[0]}
# shellcheck disable=SC2086
timeout "$(left 60)" python3 -P -m pytest -q -p no:cacheprovider -m "not gpu" tests/backends/test_backend_tensorrt.py 2>&1 | tail -2

timeout "$(left 60)" python3 -P -m lumbar_edge.benchmarks.decode_bench --batch 1,16 --json "$RESULTS/decode_bench.json"
timeout "$(left 60)" python3 -P -m lumbar_edge.benchmarks.backend_bench --batch 1 --json "$RESULTS/backend_bench.json"
# The gpu-full training preset's step (ResNet-50, 512 px, AMP) against plain FP32, and its projected
# training time on the 1975 studies of RSNA 2024.
timeout "$(left 90)" python3 -P -m lumbar_edge.benchmarks.train_speed --preset gpu-full --steps 10 --studies 1975 \
  --json "$RESULTS/train_speed.json" 2>&1 | tee "$RESULTS/train_speed.txt"

BUNDLE=/tmp/bench_bundle
timeout "$(left 120)" python3 -P -m lumbar_edge.benchmarks.make_bundle --out "$BUNDLE"
timeout "$(left 120)" python3 -P -m lumbar_edge.cli bench --model "$BUNDLE" --batch 1,8,16 --iters 5 \
  --json "$RESULTS/bench.json" -q 2>&1 | tee "$RESULTS/bench.txt"
timeout "$(left 120)" python3 -P -m lumbar_edge.benchmarks.end_to_end --model "$BUNDLE" --repeats 3 \
  --json "$RESULTS/end_to_end.json" -q 2>&1 | tee "$RESULTS/end_to_end.txt"
timeout "$(left 200)" python3 -P -m lumbar_edge.benchmarks.scaling --model "$BUNDLE" --backend auto --studies 50 \
  --sizes 1,10,50 --slices 9,15,20,30 --json "$RESULTS/scaling.json" 2>&1 | tee "$RESULTS/scaling.txt"
python3 -P -m lumbar_edge.benchmarks.results_md "$RESULTS" --command "bash benchmarks/gpu_suite.sh" \
  > "$RESULTS/RESULTS.md" || echo "RESULTS.md: not written"

python3 - "$RESULTS" "$PYTEST_RC" "$SECONDS" <<'PY'
import json, re, sys, pathlib
res, rc, secs = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
log = (res / "gpu_tests.log").read_text() if (res / "gpu_tests.log").exists() else ""
summary = next((l for l in reversed(log.splitlines()) if re.search(r"\d+ (passed|failed|skipped|deselected)", l)), "no summary")
rows = [("pytest -m gpu", "", summary.strip("= "), f"exit {rc}")]
for name in ("decode_bench.json", "backend_bench.json", "bench.json", "end_to_end.json", "scaling.json"):
    path = res / name
    if not path.exists():
        rows.append((name, "", "did not run", ""))
        continue
    data = json.loads(path.read_text())
    if name == "bench.json":
        for r in data["rows"]:
            cfg = f"{r['backend']}/{r['precision']} b{r['batch']}"
            rows.append(("bench", cfg, f"p50 {r['latency_s']['p50'] * 1e3:.0f} ms" if r["status"] == "ok" else r["status"],
                         f"{r['throughput']['slices_per_s']:.0f} slices/s" if r["status"] == "ok" else r["reason"][:60]))
        continue
    if name == "end_to_end.json":
        for r in data["ratios"]:
            rows.append(("end_to_end", r["ratio"][:48], f"{r['value']:.2f}x" if r["value"] else "n/a",
                         f"target {r['target']}x" if r["target"] else ""))
        continue
    if name == "scaling.json":
        for r in data["roots"]:
            rows.append(("scaling", f"{r['studies']} studies", f"{r['overlapped_studies_per_s']:.2f} studies/s",
                         f"overlap {r['overlap_speedup']:.2f}x"))
        continue
    if "skipped" in data:
        rows.append((data["bench"], "", "skipped: " + data["skipped"], ""))
        continue
    for r in data["rows"]:
        ratio = r.get("kernel_speedup", r.get("speedup_vs_eager_fp32"))
        label = "kernel faster by" if "kernel_speedup" in r else "vs eager FP32"
        rows.append((f"{r['bench']} b{r['batch']}", r["way"], f"{r['ms']} ms", f"{label} {ratio}x"))
w = [max(len(str(r[i])) for r in rows) for i in range(4)]
print(f"\n=== lumbar-edge GPU suite ({secs} s) ===")
for r in rows:
    print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)))
PY
exit "$PYTEST_RC"
