"""Small policies for the policy tests: a label-conditional UNet with random weights, and exact
Gaussian scores in 2-D (a perfect model, so solver comparisons have a closed form)."""

from __future__ import annotations

import pytest
import torch

from scorealign.nets import ModelConfig, build_model
from scorealign.nets.cond import Cond
from scorealign.policy.policy import Policy
from scorealign.sde import build_sde


def label_encode(prompts: list[str]) -> Cond:
    """'digit 3' → Cond(labels=3)."""
    return Cond(labels=torch.tensor([int(p.split()[-1]) for p in prompts]))


@pytest.fixture(scope="session")
def unet():
    cfg = ModelConfig(type="unet", cond="label", sample_size=8, block_out_channels=(16, 32))
    return build_model(cfg, seed=0).eval()


def _unet_policy(model, **kw) -> Policy:
    # action_steps="all": these tests check the per-step closed forms at every step; the
    # default "auto" action set is tested in test_action_steps.py.
    base = dict(kind="eps", shape=(1, 8, 8), sampler="ddim", steps=6, eta=1.0, guidance=2.0,
                encode=label_encode, action_steps="all")
    base.update(kw)
    return Policy(model, build_sde("vp"), **base)


@pytest.fixture(scope="session")
def unet_policy():
    """Factory: ``unet_policy(model, **overrides) -> Policy`` (VP, 6 DDIM steps, CFG 2, every
    stochastic step an action)."""
    return _unet_policy
