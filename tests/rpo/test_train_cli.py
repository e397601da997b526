"""``scorealign rpo build-pairs`` and ``scorealign dpo`` (task: diffusion) end to end, tiny model."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from scorealign.cli.app import app
from scorealign.preference.rpo.dataset import read_pairs
from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def reward_pairs(tiny_model_dir, tmp_path_factory):
    """A reward-labelled dataset from the tiny model, built through the CLI."""
    out = tmp_path_factory.mktemp("pairs") / "reward"
    res = runner.invoke(app, ["rpo", "build-pairs", "--config", "configs/rpo/digits_reward.yaml",
                              "--set", f"base.path={tiny_model_dir}", "--set", "prompts.n=24",
                              "--set", "generation.steps=4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "pairs from 48 images" in res.output
    return out


def _config(tmp_path, data, **over):
    cfg = yaml.safe_load(open("configs/dpo/digits_rpo.yaml"))
    cfg["data"]["path"] = str(data)
    cfg["device"] = "cpu"
    cfg["train"].update(steps=4, batch_size=6, log_every=1, ckpt_every=2, progress=False)
    cfg["eval"] = {"enabled": False}
    for k, v in over.items():
        cfg.setdefault(k, {}).update(v)
    path = tmp_path / f"cfg_{len(list(tmp_path.glob('cfg_*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _dpo(cfg, out, *extra):
    return runner.invoke(app, ["dpo", "--config", str(cfg), "--out", str(out), *extra])


def test_rpo_build_pairs_cli_writes_a_sealed_dataset(tiny_model_dir, tmp_path):
    out = tmp_path / "rpo"
    res = runner.invoke(app, ["rpo", "build-pairs", "--config", "configs/rpo/digits.yaml",
                              "--set", f"base.path={tiny_model_dir}", "--set", "prompts.n=10",
                              "--set", "generation.steps=3", "--set", "edit.steps=4",
                              "--set", "edit.attempts=1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ds = read_pairs(out)
    assert ds.info["stats"]["images"] == 10 and len(ds) == ds.info["stats"]["kept"]
    for r in ds.records:  # every kept pair carries its critique, instructions and verdict
        assert r["source"] == "rpo" and r["meta"]["instructions"] and r["meta"]["verdict"]
    res = runner.invoke(app, ["rpo", "build-pairs", "--config", "configs/rpo/digits.yaml",
                              "--set", "prompts.nn=3"])
    assert res.exit_code == 2 and "prompts.nn: unknown key" in res.output


@pytest.mark.slow
def test_dpo_resume_is_bit_exact(reward_pairs, tiny_model_dir, tmp_path):
    cfg = _config(tmp_path, reward_pairs, base={"path": str(tiny_model_dir)})
    assert _dpo(cfg, tmp_path / "full").exit_code == 0
    res = _dpo(cfg, tmp_path / "split", "--set", "train.stop_after_steps=2")
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["dpo", "--resume", str(tmp_path / "split"),
                              "--set", "train.stop_after_steps=null"])
    assert res.exit_code == 0, res.output
    a, _ = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))
    b, extra = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))
    assert extra["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = [l for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4  # logged once per step, no duplicates after resume
    first = yaml.safe_load(rows[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference at step 1
    assert (tmp_path / "full" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "full" / "report.html").is_file()


@pytest.mark.slow
def test_lora_disabled_reference_and_links(reward_pairs, tiny_model_dir, tmp_path):
    cfg = _config(tmp_path, reward_pairs, base={"path": str(tiny_model_dir)},
                  reference={"mode": "lora_disabled"}, lora={"enabled": True, "r": 2},
                  loss={"link": "ipo", "beta": 0.1})
    res = _dpo(cfg, tmp_path / "lora", "--set", "train.lr=0.01")
    assert res.exit_code == 0, res.output
    rows = [yaml.safe_load(l) for l in (tmp_path / "lora" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] == pytest.approx((0.1 * 0 - 0.5) ** 2, rel=1e-6)  # IPO (βh − ½)², h = 0
    assert rows[-1]["loss"] < rows[0]["loss"]
    states, _ = load_checkpoint(latest_checkpoint(tmp_path / "lora" / "checkpoints"))
    from safetensors.torch import load_file
    base_w = load_file(str(tiny_model_dir / "model.safetensors"))
    lora = {k: v for k, v in states["model"].items() if "lora_" in k}
    assert lora and any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)
    for k, v in states["model"].items():  # only the adapters moved
        if "lora_" not in k:
            key = k.replace(".base_layer", "")
            assert torch.equal(v, base_w[key]), k


def test_bad_inputs_exit_2_with_clear_messages(reward_pairs, tiny_model_dir, tmp_path):
    cfg = _config(tmp_path, reward_pairs, base={"path": str(tiny_model_dir)},
                  loss={"link": "nope"})
    res = _dpo(cfg, tmp_path / "a")
    assert res.exit_code == 2 and "unknown pairwise loss 'nope'" in res.output
    cfg = _config(tmp_path, tmp_path / "missing", base={"path": str(tiny_model_dir)})
    res = _dpo(cfg, tmp_path / "b")
    assert res.exit_code == 2 and "no such pair dataset" in res.output
    cfg = _config(tmp_path, reward_pairs, base={"path": str(tiny_model_dir)},
                  reference={"mode": "lora_disabled"})
    res = _dpo(cfg, tmp_path / "c")
    assert res.exit_code == 2 and "needs lora.enabled" in res.output


def test_train_callback_sees_the_checkpointed_weights(reward_pairs, tiny_model_dir, tmp_path):
    """``train(callback=...)`` runs after every optimizer step on the policy the checkpoint of
    that step holds (the RPO experiment evaluates along training this way); export_final=False
    writes no ``final/``."""
    from scorealign.config import load_config
    from scorealign.preference.rpo.config import DiffusionDPOConfig
    from scorealign.preference.diffusion_dpo import train
    from scorealign.run.rundir import RunDir

    cfg = load_config(_config(tmp_path, reward_pairs, base={"path": str(tiny_model_dir)}),
                      DiffusionDPOConfig, ["train.keep_checkpoints=10"])
    seen = {}
    run = RunDir.create(tmp_path / "run", cfg)
    train(cfg, run, export_final=False, callback=lambda step, policy: seen.__setitem__(
        step, {k: v.detach().clone() for k, v in policy.state_dict().items()}))
    assert sorted(seen) == [1, 2, 3, 4]
    for step in (2, 4):
        states, extra = load_checkpoint(run.checkpoints / f"step_{step:06d}")
        assert extra["step"] == step
        for k, v in states["model"].items():
            assert torch.equal(v, seen[step][k]), (step, k)
    assert any(not torch.equal(seen[2][k], seen[4][k]) for k in seen[2])  # training moved
    assert not (run.path / "final").exists()
