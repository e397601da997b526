#!/usr/bin/env bash
# DPO training step: scorealign vs TRL's DPOTrainer on the same tiny GPT-2, data and batch.
#   bash benchmarks/dpo_vs_trl/run.sh            # writes benchmarks/dpo_vs_trl/results_{cpu,cuda}.json
#   bash benchmarks/dpo_vs_trl/run.sh --parity-only   # loss parity only: loss_parity_{cpu,cuda}.json
#   bash benchmarks/dpo_vs_trl/run.sh --quick    # smoke run of the set-up (.cache/dpo_vs_trl-quick/)
# TRL lives in its own virtualenv (never in .venv): $TRL_VENV (default .cache/trl-venv), built on
# first use by scripts/setup_env.sh from the project's own dependency list (pyproject.toml; torch
# as there: a torch the base python has, else $TORCH_SPEC, $TORCH_INDEX_URL if set), with
# trl and psutil resolved in the same pip call.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${TRL_VENV:-.cache/trl-venv}
if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import trl, psutil, scorealign" 2>/dev/null; }; then
  rm -f "$VENV/.installed"
  VENV="$VENV" EXTRAS="" EXTRA_PACKAGES="${TRL_SPEC:-trl} psutil" bash scripts/setup_env.sh
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_DISABLED=true
exec "$VENV/bin/python" benchmarks/dpo_vs_trl/bench.py "$@"
