"""A run directory written by the previous release (tests/fixtures/finetune_19f6aa4: no run.json,
no final/) is recognized from its config, loads, samples, evaluates and resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from typer.testing import CliRunner

import scorealign.commands.load as L
from scorealign.commands.evaluate import evaluate
from scorealign.commands.kinds import kind_of
from scorealign.commands.sample import sample

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "finetune_19f6aa4"


def _copy(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


def test_old_run_loads_samples_and_evaluates(tmp_path):
    run = _copy(tmp_path)
    assert not (run / "run.json").exists() and kind_of(run) == "finetune"
    loaded = L.load(run)
    assert loaded.kind == "finetune" and loaded.task is not None
    x = loaded.sample("a handwritten 3", n=2, seed=1)
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()
    torch.testing.assert_close(x, loaded.sample("a handwritten 3", n=2, seed=1))
    assert not torch.equal(x, loaded.sample("a handwritten 3", n=2, seed=1, base=True))
    done = sample(run, ["a handwritten 7"], n=2, steps=2)
    assert done.path.is_file() and "a_handwritten_7" in done.path.name
    ev = evaluate(run, n=10, steps=2)
    saved = json.loads((run / "eval.json").read_text())
    for k in ("reward/mean", "eval/accuracy", "base/reward/mean"):
        assert k in ev.metrics and k in saved, k


def test_old_run_resumes(tmp_path):
    from scorealign.cli.app import app
    from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint

    run = _copy(tmp_path)
    res = CliRunner().invoke(app, ["finetune", "--resume", str(run), "--set", "train.epochs=3"])
    assert res.exit_code == 0, res.output
    states, extra = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert extra["epoch"] == 3 and all("lora" in k for k in states["model"])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2, 3]
    assert L.load(run).sample("a handwritten 3", n=1).shape == (1, 1, 8, 8)
