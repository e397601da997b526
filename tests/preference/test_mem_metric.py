"""``scorealign dpo`` logs ``mem/peak_gb`` (run/memory.py) on every metrics row."""

from scorealign.config import load_config
from scorealign.preference.config import DPOConfig
from scorealign.preference.trainer import train
from scorealign.run.memory import peak_gb
from scorealign.run.rundir import RunDir

CFG = """\
device: cpu
model: {{source: tiny_gpt2, n_layer: 1, n_embd: 16, n_head: 2, n_positions: 32}}
data: {{source: jsonl, path: {path}, max_length: 16, max_prompt_length: 8}}
loss: {{name: sigmoid, params: {{beta: 0.5}}}}
reference: {{mode: precompute, batch_size: 8}}
train: {{steps: 3, batch_size: 4, grad_accum: 1, lr: 1.0e-2, log_every: 1, ckpt_every: 3,
        seed: 3, progress: false}}
"""


def test_every_row_has_the_peak_so_far(tmp_path, pairs_file):
    (tmp_path / "dpo.yaml").write_text(CFG.format(path=pairs_file))
    cfg = load_config(tmp_path / "dpo.yaml", DPOConfig)
    run = RunDir.create(tmp_path / "run", cfg)
    train(cfg, run)
    rows = [r for r in run.read_metrics() if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    peaks = [r["mem/peak_gb"] for r in rows]
    # a running peak (metrics rows keep 6 significant digits)
    assert peaks == sorted(peaks) and 0 < peaks[-1] <= float(f"{peak_gb('cpu'):.6g}")
