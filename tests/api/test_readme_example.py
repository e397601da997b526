"""The README's Python API example runs as written (with a smaller budget and a tiny base), and the
run it makes, whose reward is a Python function, resumes from the shell."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from typer.testing import CliRunner

from scorealign.cli.app import app

from scorealign.nets import ModelConfig, build_model, save_pretrained

ROOT = Path(__file__).resolve().parents[2]
QUICK = ('set=["train.epochs=2", "policy.steps=3", "prompts.per_epoch=2", "prompts.k=2", '
         '"train.minibatch_size=4", "train.sample_batch_size=4", "device=cpu", '
         '"base.path={base}"]')


def readme_blocks() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    return dict(re.findall(r"<!-- api-example: (\S+) -->\n```python\n(.*?)```", text, re.S))


def test_readme_api_example_runs_and_its_run_resumes(tmp_path, monkeypatch, capsys):
    blocks = readme_blocks()
    assert set(blocks) == {"my_rewards.py", "example.py"}
    assert len(blocks["example.py"].splitlines()) <= 12
    base = save_pretrained(build_model(ModelConfig(
        type="unet_cond", cond="label", sample_size=8, block_out_channels=(8, 16),
        label_dim=16), seed=0), tmp_path / "base")
    (tmp_path / "my_rewards.py").write_text(blocks["my_rewards.py"])
    script = blocks["example.py"]
    assert 'set=["train.epochs=4"]' in script
    script = script.replace('set=["train.epochs=4"]', QUICK.format(base=base))
    (tmp_path / "example.py").write_text(script)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    exec(compile(script, str(tmp_path / "example.py"), "exec"), {"__name__": "__main__"})
    assert re.search(r"brightness -?[\d.]+ -> -?[\d.]+", capsys.readouterr().out)
    run = tmp_path / "runs" / "bright"
    cfg = (run / "config.yaml").read_text()
    assert "optimized: my_rewards:brightness" in cfg and (run / "final").is_dir()
    sys.modules.pop("my_rewards")  # --resume imports it again by its recorded path
    res = CliRunner().invoke(app, ["finetune", "--resume", "runs/bright", "--set",
                                   "train.epochs=3"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2, 3]
