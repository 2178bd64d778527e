#!/usr/bin/env bash
# One-command GPU check of the paper preset on the phantom (options: see gpu_check.py --help).
#   bash benchmarks/gpu_check.sh                      # CUDA, 256x256, 150 + 150 iterations, fp32 and bf16
#   bash benchmarks/gpu_check.sh --device cpu --iters 3 --size 64 --width 8 --out /tmp/gc   # tiny CPU mode
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
