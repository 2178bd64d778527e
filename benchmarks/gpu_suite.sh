#!/usr/bin/env bash
# The test suite, the recipe's iteration speed and the demo on a GPU, in one command
# (each part under its own time limit, logs and results into OUT):
#   OUT=gpu_out bash benchmarks/gpu_suite.sh
# Every `train.device: auto` run in the tests then trains on the GPU; tests that prove
# CPU bit-equality pin train.device=cpu themselves. Needs the package's dependencies and
# pytest-xdist; skips nothing by itself (the real-data tests skip without ../shared).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
OUT="${OUT:?set OUT to a folder for the logs}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"  # several test workers share the host's cores
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  grep -m1 "model name" /proc/cpuinfo; echo "logical CPUs $(nproc --all)"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  git -C "$here" rev-parse --short HEAD 2>/dev/null || true
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

t0=$(date +%s)
timeout "${SUITE_LIMIT:-330}" "$PY" -m pytest -q -p no:cacheprovider -p no:benchmark -n "${WORKERS:-8}" --timeout 300 \
    --junitxml "$OUT/junit.xml" tests > "$OUT/pytest.log" 2>&1
echo "pytest rc $? in $(( $(date +%s) - t0 )) s"; tail -n 25 "$OUT/pytest.log"

t0=$(date +%s)
timeout "${SPEED_LIMIT:-90}" "$PY" -m mpscl bench-speed --preset cpu --device cuda --iters 20 --rounds 3 \
    --warmup 5 --out "$OUT/speed_cpu_preset_cuda.json" > "$OUT/speed.log" 2>&1
echo "bench-speed rc $? in $(( $(date +%s) - t0 )) s"; tail -n 8 "$OUT/speed.log"

t0=$(date +%s)
timeout "${DEMO_LIMIT:-150}" "$PY" -m mpscl demo --out /tmp/mpscl_demo > "$OUT/demo.log" 2>&1
echo "demo rc $? in $(( $(date +%s) - t0 )) s"
tr '\r' '\n' < "$OUT/demo.log" | grep -v "it/s\]$" | tail -n 20
cp /tmp/mpscl_demo/report/README.md "$OUT/demo_report.md" 2>/dev/null || true
