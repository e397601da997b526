#!/usr/bin/env bash
# GPU readiness benchmark in one command (see bench_gpu.py):
#   bash benchmarks/gpu/run.sh            # on a CUDA machine: writes benchmarks/gpu/results_cuda.json
#   bash benchmarks/gpu/run.sh --cpu-smoke  # the same logic on CPU, tiny sizes
# Offline machines: WHEELS=<dir of wheels> installs them first (no index, no deps), e.g. diffusers
# and trl==0.23.0 from `pip download diffusers trl==0.23.0 --no-deps -d <dir>`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$ROOT/src:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONUNBUFFERED=1
exec "$PY" "$ROOT/benchmarks/gpu/bench_gpu.py" "$@"
