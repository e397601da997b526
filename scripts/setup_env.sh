#!/usr/bin/env bash
# Create .venv (or $VENV) and install scorealign into it with the dependencies of pyproject.toml
# ($EXTRAS: its optional groups, default [dev]; $EXTRA_PACKAGES: more requirements resolved in the
# same pip call, e.g. trl for benchmarks/dpo_vs_trl), preferring a torch that is already there.
#
# Order of preference for torch:
#   1. a torch importable by the base python (CPU or CUDA build): the venv sees it through
#      --system-site-packages and pip keeps it, since it satisfies torch>=2.3;
#   2. $TORCH_SPEC (default torch==2.13.0): here this resolves to the local CPU wheel that pip's
#      find-links names; on a user's machine it is the ordinary PyPI build (CUDA on Linux);
#      set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for a CPU-only build elsewhere;
#   3. plain `torch` if that version is not available.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS-[dev]}   # the optional dependencies of pyproject.toml to add ('' for none)
cd "$(dirname "$0")/.."

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import scorealign, torch" 2>/dev/null \
   && [ "$VENV/.installed" -nt pyproject.toml ]; then
  exit 0
fi
if "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "setup: reusing the base interpreter's torch ($("$PYTHON" -c 'import torch; print(torch.__version__)'))"
  "$PYTHON" -m venv --system-site-packages "$VENV"
else
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  extra=()
  [ -n "${TORCH_INDEX_URL:-}" ] && extra=(--index-url "$TORCH_INDEX_URL")
  echo "setup: installing $TORCH_SPEC"
  "${PIP[@]}" install -q "${extra[@]}" "$TORCH_SPEC" || "${PIP[@]}" install -q "${extra[@]}" torch
fi
echo "setup: installing scorealign and its dependencies"
"${PIP[@]}" install -q -e ".$EXTRAS" ${EXTRA_PACKAGES:-}
"$VENV/bin/python" -c "import torch, scorealign; print('setup: torch', torch.__version__, '| cuda:', torch.cuda.is_available())"
touch "$VENV/.installed"
