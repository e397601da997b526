#!/usr/bin/env bash
# GPU readiness benchmark in one command (see bench_gpu.py):
#   bash benchmarks/gpu/run.sh            # on a CUDA machine: writes benchmarks/gpu/results_cuda.json
#   bash benchmarks/gpu/run.sh --cpu-smoke  # the same logic on CPU, tiny sizes
# Offline machines: WHEELS=<dir of wheels> installs those wheels that fit this interpreter
# (python tag, ABI, platform) first, without an index or dependency resolution, into
# $SITE (default .cache/gpu-site in the checkout): e.g. the versions of this project's .venv
# for diffusers, trl==0.23.0, peft, accelerate, transformers and their pure-python dependencies, from
# `pip download <name>==<version> --no-deps -d <dir>` (binary ones per python version).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"  # the project's .venv (make setup) when there is one
[ -z "${PYTHON:-}" ] && [ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
SITE="${SITE:-$ROOT/.cache/gpu-site}"
if [ -n "${WHEELS:-}" ]; then
  mapfile -t FIT < <("$PY" - "$WHEELS" <<'PYEOF'
import sys
from pathlib import Path
try:
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename
except ImportError:  # pip vendors packaging
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import parse_wheel_filename
ok = set(sys_tags())
for w in sorted(Path(sys.argv[1]).glob("*.whl")):
    if ok & set(parse_wheel_filename(w.name)[3]):
        print(w)
PYEOF
)
  echo "installing ${#FIT[@]} wheels that fit $("$PY" -V 2>&1) into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    "${FIT[@]}"
  export PYTHONPATH="$SITE:${PYTHONPATH:-}"
fi
export PYTHONPATH="$ROOT/src:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONUNBUFFERED=1
exec "$PY" "$ROOT/benchmarks/gpu/bench_gpu.py" "$@"
