#!/usr/bin/env bash
# Non-editable install check: build a wheel, install it into a fresh virtualenv (dependencies
# reused from .venv through a path entry, no downloads), run `scorealign demo` end to end (a short
# budget by default; DEMO_SETS= for the full demo) from an unrelated directory, and check that
# the shipped configs are found by name and nothing is written inside the installed package.
#   bash scripts/check_wheel.sh [WORKDIR]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
WORK="${1:-$(mktemp -d)}"
DEMO_SETS="${DEMO_SETS---set train.epochs=2 --set prompts.per_epoch=4 --set prompts.k=2 --set train.minibatch_size=8 --set train.sample_batch_size=8 --set policy.steps=5}"
mkdir -p "$WORK/wheel"
"$PY" -m pip wheel --no-deps --no-build-isolation "$ROOT" -w "$WORK/wheel" -q
"$PY" -m venv "$WORK/venv"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
VSITE="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$SITE" > "$VSITE/_deps_from_dev_venv.pth"   # a plain path: its .pth (editable) not run
"$WORK/venv/bin/python" -m pip install --no-deps -q "$WORK"/wheel/scorealign-*.whl
PKG="$("$WORK/venv/bin/python" -c 'import scorealign, os; print(os.path.dirname(scorealign.__file__))')"
case "$PKG" in "$VSITE"*) ;; *) echo "scorealign imported from $PKG, not the wheel"; exit 1;; esac
listing() { find "$PKG" -not -path '*__pycache__*' | sort | md5sum; }
before="$(listing)"
mkdir -p "$WORK/cwd" && cd "$WORK/cwd"
"$WORK/venv/bin/scorealign" configs > "$WORK/configs.txt"
grep -q "finetune/digits_loop" "$WORK/configs.txt"
"$WORK/venv/bin/scorealign" finetune --config digits_loop --dry-run > /dev/null
# shellcheck disable=SC2086
"$WORK/venv/bin/scorealign" demo --out runs/demo $DEMO_SETS
test -f runs/demo/report.html && test -f runs/demo/final/model.safetensors
[ "$before" = "$(listing)" ] || { echo "files were written inside $PKG"; exit 1; }
echo "wheel check passed: $WORK"
