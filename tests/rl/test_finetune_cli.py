"""``scorealign finetune``: every shipped config resolves; bad configs fail naming file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from scorealign.cli.app import app

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "finetune").glob("*.yaml"))
runner = CliRunner()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_finetune_config_resolves(path):
    res = runner.invoke(app, ["finetune", "--config", str(path), "--dry-run"])
    assert res.exit_code == 0, res.output
    resolved = yaml.safe_load(res.output)
    assert resolved["algo"]["loss"] == yaml.safe_load(path.read_text())["algo"]["loss"]


def test_one_config_per_algorithm():
    losses = {yaml.safe_load(p.read_text())["algo"]["loss"] for p in CONFIGS}
    assert losses >= {"reinforce", "ppo_clip", "loop", "grpo", "dpok", "score_as_action",
                      "reward_backprop"}


def test_bad_config_exits_2_naming_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo:\n  loss: loop\n  clipp: 0.1\n")
    res = runner.invoke(app, ["finetune", "--config", str(bad), "--dry-run"])
    assert res.exit_code == 2
    assert f"{bad}:3: algo.clipp: unknown key" in res.output
    res = runner.invoke(app, ["finetune", "--config", str(CONFIGS[0]), "--set", "algo.loss=nope",
                              "--dry-run"])
    assert res.exit_code == 2 and "unknown RL loss 'nope'" in res.output


def test_score_as_action_without_exploration_is_a_config_error(tmp_path):
    res = runner.invoke(app, ["finetune", "--set", "algo.loss=score_as_action", "--set",
                              "policy.eta=0.5", "--dry-run"])
    assert res.exit_code == 2 and "policy.exploration > 0" in res.output
    res = runner.invoke(app, ["finetune", "--set", "algo.loss=score_as_action", "--set",
                              "policy.eta=1.0", "--dry-run"])
    assert res.exit_code == 0, res.output  # the η = 1 SDE is a policy (Girsanov KL)


def test_reinforce_with_sample_reuse_fails_fast_naming_the_settings():
    for extra in ("train.inner_epochs=2", "train.minibatch_size=8"):
        res = runner.invoke(app, ["finetune", "--set", "algo.loss=reinforce", "--set", extra,
                                  "--dry-run"])
        assert res.exit_code == 2, res.output
        assert "train.inner_epochs" in res.output and "train.minibatch_size" in res.output
        assert len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.slow
def test_sd_tiny_lora_finetune_end_to_end(tmp_path):
    out = tmp_path / "run"
    cfg = CONFIGS[0].parent / "sd_tiny_ddpo_lora.yaml"
    res = runner.invoke(app, ["finetune", "--config", str(cfg), "--out", str(out), "--set",
                              "train.epochs=2", "--set", "policy.steps=3", "--set",
                              "prompts.per_epoch=2", "--set", "train.ckpt_every=1",
                              "--set", "device=cpu"])
    assert res.exit_code == 0, res.output
    from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint
    states, extra = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert extra["epoch"] == 2 and states["model"] and all("lora" in k for k in states["model"])
    assert (out / "report.html").is_file() and (out / "samples" / "after.png").is_file()


def test_nan_reward_exits_2_with_the_reward_named_and_keeps_checkpoints(tmp_path, monkeypatch):
    from scorealign.nets import ModelConfig, build_model, save_pretrained
    from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint
    cfg_m = ModelConfig(type="unet", cond="label", sample_size=8, block_out_channels=(16, 32))
    save_pretrained(build_model(cfg_m, seed=0), tmp_path / "base")
    (tmp_path / "nan_reward_mod.py").write_text(
        "def reward(samples, prompts, meta):\n"
        "    r = samples.flatten(1).mean(1).float()\n"
        "    return r / 0.0 * 0.0 if meta['epoch'] >= 1 else r\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    sets = [f"base.path={tmp_path / 'base'}", "reward.optimized=nan_reward_mod:reward",
            "reward.gold=null", "policy.steps=3", "prompts.per_epoch=2", "prompts.k=2",
            "train.minibatch_size=4", "train.sample_batch_size=4", "train.epochs=3",
            "train.ckpt_every=1", "device=cpu"]
    res = runner.invoke(app, ["finetune", "--out", str(out)] + [a for s in sets
                                                                for a in ("--set", s)])
    assert res.exit_code == 2, res.output
    assert "nan_reward_mod:reward" in res.output and "non-finite" in res.output
    assert "checkpoint is intact" in res.output
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))[1]["epoch"] == 1


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical(tmp_path, kill9_then_resume):
    import torch

    from scorealign.nets import ModelConfig, build_model, save_pretrained
    from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint
    cfg_m = ModelConfig(type="unet", cond="label", sample_size=8, block_out_channels=(16, 32))
    save_pretrained(build_model(cfg_m, seed=0), tmp_path / "base")
    sets = [f"base.path={tmp_path / 'base'}", "reward.gold=null", "policy.steps=3",
            "prompts.per_epoch=2", "prompts.k=2", "train.minibatch_size=2",
            "train.sample_batch_size=4", "train.epochs=3", "train.ckpt_every=1",
            "train.inner_epochs=2", "algo.loss=ppo_clip", "device=cpu",
            "algo.advantage_kwargs={min_count: 2}"]
    args = [a for s in sets for a in ("--set", s)]
    full = runner.invoke(app, ["finetune", "--out", str(tmp_path / "full"), *args])
    assert full.exit_code == 0, full.output
    kill9_then_resume(tmp_path / "cut", args, epoch=2)  # tests/conftest.py
    a = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))[0]
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints"))[0]
    for name in ("model", "advantage"):
        ka = a[name] if name == "model" else {"v": a[name]["values"]}
        kb = b[name] if name == "model" else {"v": b[name]["values"]}
        for k in ka:
            assert torch.equal(ka[k], kb[k]), (name, k)
