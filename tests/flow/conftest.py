"""Small flow-matching policies: a label-conditional UNet with random weights (v-prediction) on
the linear interpolant, and the exact velocity of a Gaussian data distribution."""

from __future__ import annotations

import pytest
import torch

from scorealign.nets import ModelConfig, build_model
from scorealign.nets.cond import Cond
from scorealign.policy.policy import Policy
from scorealign.rl.setup import Setup
from scorealign.sde.flow import FlowSDE


def label_encode(prompts: list[str]) -> Cond:
    """'digit 3' → Cond(labels=3)."""
    return Cond(labels=torch.tensor([int(p.split()[-1]) for p in prompts]))


@pytest.fixture(scope="session")
def flow_unet():
    cfg = ModelConfig(type="unet", cond="label", kind="v", sample_size=8,
                      block_out_channels=(16, 32))
    return build_model(cfg, seed=0).eval()


def _flow_policy(model, **kw) -> Policy:
    base = dict(kind="v", shape=(1, 8, 8), sampler="flow_sde", steps=6, eta=0.7, guidance=2.0,
                encode=label_encode)
    base.update(kw)
    # transition policies start at pure noise (t = 1), as the SD3/FLUX pipelines and rl/setup.py
    # do; an ε-space score action cannot be turned into a velocity at t = 1 (x̂_0 = (x − tε)/(1−t))
    sde = FlowSDE(t_max=1.0) if not base.get("exploration") else FlowSDE()
    return Policy(model, sde, **base)


@pytest.fixture(scope="session")
def flow_policy():
    """Factory: ``flow_policy(model, **overrides) -> Policy`` (flow, 6 flow_sde steps, CFG 2)."""
    return _flow_policy


def _flow_setup() -> Setup:
    import copy

    cfg = ModelConfig(type="unet", cond="label", kind="v", sample_size=8,
                      block_out_channels=(16, 32))
    model = build_model(cfg, seed=0).eval()
    ref = copy.deepcopy(model).requires_grad_(False)
    return Setup(model, ref, FlowSDE(t_max=1.0), "v", (1, 8, 8), label_encode, lambda x: x,
                 [f"digit {d}" for d in range(10)])


@pytest.fixture(scope="session")
def flow_setup():
    """Factory: ``flow_setup() -> Setup``, a fresh random label-UNet flow task for the trainer."""
    return _flow_setup
