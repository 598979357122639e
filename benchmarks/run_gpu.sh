#!/usr/bin/env bash
# One command on a GPU machine: build, GPU parity tests, compute-sanitizer, full benchmark, report.
#
#   benchmarks/run_gpu.sh OUT_DIR [extra pytest-benchmark args, e.g. --bench-problems=toy,small]
#   HEBM_GPU_QUICK=1 benchmarks/run_gpu.sh OUT_DIR     # fits one 10-minute device command:
#       parity matrix on the GPU backends, fixed cost, toy/small x B 64/1024 Langevin + one
#       training iteration (plain, ref, graph, cuda, triton; no torch.compile, no sanitizer)
#
# Writes under OUT_DIR: build.log, parity.log, sanitizer.log, bench.json (+ bench.log),
# bench_tf32.json (TF32 baselines, unless HEBM_BENCH_NO_TF32=1), report/ (report.md, PNG plots),
# report_tf32/, summary.txt.  Exit status: non-zero if any step failed (all steps still run).
# Env: HEBM_BENCH_NO_COMPILE=1 skips the torch.compile provider (≈ 30–60 s of compile per shape);
#      CUDA_HOME (default /usr/local/cuda), HEBM_EXTENSIONS_DIR (build cache) pass through.
set -uo pipefail
OUT=${1:?usage: benchmarks/run_gpu.sh OUT_DIR [pytest args]}
shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$PATH"
PY=${PYTHON:-python}
status=0
step() {  # step NAME LOG CMD...: run, log, remember failure, carry on
  local name=$1 log=$2; shift 2
  echo "== $name: $*" | tee -a "$OUT/summary.txt"
  local t0=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  echo "   rc=$rc ($((SECONDS - t0)) s) log: $log" | tee -a "$OUT/summary.txt"
  tail -n 3 "$log" | sed 's/^/   | /' | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || status=1
  return $rc
}

: >"$OUT/summary.txt"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true

# 1. build every extension (JIT, cached) and say which backends can run here
step build "$OUT/build.log" "$PY" -c '
import torch, hebm
from hebm.sampler import backends
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
bad = 0
for name in ("cpu", "triton", "cuda", "graph"):
    why = backends.unavailable(name)
    print(f"{name:7s}", "OK" if why is None else f"UNAVAILABLE: {why}")
    bad += why is not None and name in ("cuda", "graph")
raise SystemExit(1 if bad else 0)'

QUICK=${HEBM_GPU_QUICK:-}
# 2. GPU parity: the one parity matrix (tests/test_parity.py runs the real cuda/triton/graph
#    backends when a GPU is present) and the backends' build/environment tests
tests=()
for f in tests/test_parity.py tests/test_metropolis.py tests/test_triton_backend.py tests/test_cuda_backend.py tests/test_graph_backend.py; do
  [ -f "$f" ] && tests+=("$f")
done
if [ -n "$QUICK" ]; then
  step parity "$OUT/parity.log" "$PY" -m pytest -q -rs -x tests/test_parity.py tests/test_metropolis.py -k "cuda or triton or graph"
else
  step parity "$OUT/parity.log" "$PY" -m pytest -q -rs "${tests[@]}"
fi

# 3. compute-sanitizer (memcheck) once over the CUDA kernel's parity tests
if [ -n "$QUICK" ]; then
  echo "== sanitizer: skipped (quick mode)" | tee -a "$OUT/summary.txt"
elif [ -f tests/test_cuda_backend.py ] && command -v compute-sanitizer >/dev/null; then
  step sanitizer "$OUT/sanitizer.log" compute-sanitizer --tool memcheck --error-exitcode 1 --target-processes all \
    "$PY" -m pytest -q -x tests/test_cuda_backend.py
else
  echo "== sanitizer: skipped (no tests/test_cuda_backend.py or no compute-sanitizer on PATH)" | tee -a "$OUT/summary.txt"
fi

# 4. the full benchmark (fp32, docs/design.md §5), then the TF32 baselines
if [ -n "$QUICK" ]; then
  export HEBM_BENCH_NO_COMPILE=1 HEBM_BENCH_NO_TF32=1
  set -- --bench-problems=toy,small --bench-batches=64,1024 --bench-max-time=0.5 \
    --bench-providers=plain,torchebm,ref,graph,cuda,triton "$@"
else
  # the full benchmark: ref and compile are opt-in in a plain `pytest benchmarks` (conftest.py)
  set -- --bench-full "$@"
fi
step bench "$OUT/bench.log" "$PY" -m pytest benchmarks -q -rs --bench-device=cuda --benchmark-json="$OUT/bench.json" "$@"
if [ -z "${HEBM_BENCH_NO_TF32:-}" ]; then
  step bench_tf32 "$OUT/bench_tf32.log" "$PY" -m pytest benchmarks/test_langevin.py benchmarks/test_matmul_peak.py -q -rs \
    --bench-device=cuda --bench-precision=tf32 --bench-providers=ref,graph,triton,cuda --benchmark-json="$OUT/bench_tf32.json" "$@"
fi

# 5. the report (tables for benchmarks/RESULTS.md, plots, roofline)
[ -f "$OUT/bench.json" ] && step report "$OUT/report.log" "$PY" -m benchmarks.report --json "$OUT/bench.json" --out "$OUT/report"
[ -f "$OUT/bench_tf32.json" ] && step report_tf32 "$OUT/report_tf32.log" "$PY" -m benchmarks.report --json "$OUT/bench_tf32.json" --out "$OUT/report_tf32"
echo "done: status $status; see $OUT/summary.txt and $OUT/report/report.md" | tee -a "$OUT/summary.txt"
exit $status
