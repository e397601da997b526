#!/usr/bin/env bash
# DPO training step: scorealign vs TRL's DPOTrainer on the same tiny GPT-2, data and batch.
#   bash benchmarks/dpo_vs_trl/run.sh            # writes benchmarks/dpo_vs_trl/results_{cpu,cuda}.json
#   bash benchmarks/dpo_vs_trl/run.sh --parity-only   # loss parity only: loss_parity_{cpu,cuda}.json
# TRL lives in its own virtualenv (never in .venv): .cache/trl-venv, built on first use from the
# same torch wheel as the project, then trl, then this package (editable, no extra deps).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${TRL_VENV:-.cache/trl-venv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import trl, scorealign" 2>/dev/null; then
  python3 -m venv "$VENV"
  if command -v nvidia-smi > /dev/null; then
    "$VENV/bin/pip" install -q "torch==2.13.0"
  else  # the CPU wheel, as in .venv (the default index serves the CUDA build)
    "$VENV/bin/pip" install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  fi
  "$VENV/bin/pip" install -q trl "transformers==5.24.0" psutil
  "$VENV/bin/pip" install -q --no-deps -e .
  "$VENV/bin/pip" install -q typer rich pyyaml safetensors tqdm
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_DISABLED=true
exec "$VENV/bin/python" benchmarks/dpo_vs_trl/bench.py "$@"
