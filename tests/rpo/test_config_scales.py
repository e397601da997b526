"""The shipped Diffusion-DPO configs train at their scales: each runs 8 steps on the shipped digits
model with its own link, β and learning rate, with finite losses, and lowers the expected loss
(the mean over 16 fixed (t, ε) draws per pair, on all pairs) below its value at policy = reference
(log 2 for sigmoid, ¼ for IPO: checked, then used as the bar).
This is what failed at the old scales (IPO β = 0.05 aims at a margin ~1000× out of reach; at
β = 5000 an lr of 2e-5 raises the expected loss)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from scorealign.config import config_from_dict, load_config
from scorealign.preference.rpo.base import load_base
from scorealign.preference.rpo.config import DEFAULT_BASE, BuildPairsConfig, DiffusionDPOConfig
from scorealign.preference.rpo.dataset import read_pairs
from scorealign.preference.diffusion_dpo import build_policy, dpo_loss_step, pair_batch, train
from scorealign.run.rundir import RunDir

CONFIGS = ["configs/dpo/digits_rpo.yaml", "configs/dpo/diffusion_reward.yaml",
           "configs/dpo/diffusion_lora.yaml"]


@pytest.fixture(scope="module")
def digits_base():
    """The shipped base, loaded once: training and the expected loss only read it (the policy
    is a deep copy; the reference is the base or the policy with its adapters off)."""
    return load_base(DEFAULT_BASE)


@pytest.fixture(scope="module")
def digits_pairs(tmp_path_factory, digits_base):
    from scorealign.preference.rpo.build import build_pairs

    cfg = config_from_dict({"seed": 0, "method": "reward", "base": {"path": DEFAULT_BASE},
                            "prompts": {"n": 24}, "generation": {"steps": 6}}, BuildPairsConfig)
    out, _ = build_pairs(cfg, tmp_path_factory.mktemp("pairs") / "reward", base=digits_base,
                         overwrite=True)
    return out


def _expected_loss(cfg, base, state, draws: int = 16) -> float:
    policy, ref_ctx, ref = build_policy(cfg, base)
    if state is not None:
        policy.load_state_dict(state)
    data = read_pairs(cfg.data.path)
    # every pair `draws` times in one batch: fixed (t, ε) draws per pair, one forward pass
    x_w, x_l, cond = pair_batch(data, list(range(len(data))) * draws, base, torch.device("cpu"))
    with torch.no_grad():
        return float(dpo_loss_step(cfg, base, policy, ref_ctx, ref, x_w, x_l, cond, 10_000)[0])


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_diffusion_config_lowers_the_expected_loss(path, digits_pairs, digits_base,
                                                           tmp_path):
    cfg = load_config(path, DiffusionDPOConfig, [
        f"data.path={digits_pairs}", "train.steps=8", "train.batch_size=8", "train.log_every=1",
        "train.ckpt_every=8", "device=cpu", "train.progress=false", "eval.enabled=false"])
    assert cfg.loss.beta == 5000.0 and cfg.base.path == DEFAULT_BASE
    base = digits_base
    # policy = reference: h = 0 for every pair and draw, so the expected loss is the link's
    # value at 0 exactly (checked on 2 draws per pair; more draws only repeat the same value)
    before = math.log(2) if cfg.loss.link == "sigmoid" else 0.25
    assert _expected_loss(cfg, base, None, draws=2) == pytest.approx(before, abs=1e-6)
    run = RunDir.create(tmp_path / "run", cfg)
    summary = train(cfg, run, base=base, export_final=False)
    losses = [r["loss"] for r in run.read_metrics() if "loss" in r]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    after = _expected_loss(cfg, base, summary["policy"].state_dict())
    assert math.isfinite(after) and after < before, (before, after)
    assert Path(path).is_file()
