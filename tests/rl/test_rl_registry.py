"""Registry hygiene for RL losses and advantage estimators: provenance, docs, conventions,
declared special cases, and finite values/gradients at extreme inputs. New entries are picked up
automatically as long as their tensor arguments use the standard names below."""

import inspect
import math
from pathlib import Path

import pytest
import torch

from scorealign.rl import ADVANTAGES, DEFAULT_ADVANTAGE, RL_LOSSES, build_advantage
from scorealign.rl.losses import LossOut, split_signature

DOCS = Path(__file__).resolve().parents[2] / "docs" / "methods"
DOC_PAGE = {"ppo_clip": "ddpo", "flow_grpo_fast": "flow_grpo", "mixgrpo": "flow_grpo",
            "dance_grpo": "flow_grpo", "diffusion_nft": "flow_nft"}  # documented elsewhere
B, T = 6, 4


def _inputs(names, scale, seed=0):
    """Tensors for the standard argument names; ``scale`` pushes them to extremes."""
    g = torch.Generator().manual_seed(seed)
    logp = (scale * torch.randn(B, T, generator=g)).requires_grad_()
    pool = {
        "logp": logp,
        "logp_old": scale * torch.randn(B, T, generator=g),
        "adv": scale * torch.randn(B, generator=g),
        "kl": (scale * torch.rand(B, T, generator=g)).requires_grad_(),
        "kl_rate": (scale * torch.rand(B, T, generator=g)).requires_grad_(),
        "dt": torch.full((T,), 1.0 / T),
        "reward": (scale * torch.randn(B, generator=g)).requires_grad_(),
        "mask": torch.ones(B, T),
        # forward-process losses (DiffusionNFT): velocities [B, D] and times [B]
        "v": (scale * torch.randn(B, 5, generator=g)).requires_grad_(),
        "v_old": scale * torch.randn(B, 5, generator=g),
        "v_target": scale * torch.randn(B, 5, generator=g),
        "v_ref": scale * torch.randn(B, 5, generator=g),
        "t": torch.rand(B, generator=g),
        # adjoint matching: controls and adjoints [B, K, D], step stds [B, K]
        "control": (scale * torch.randn(B, T, 5, generator=g)).requires_grad_(),
        "adjoint": scale * torch.randn(B, T, 5, generator=g),
        "sigma": torch.rand(B, T, generator=g) + 0.01,
    }
    missing = set(names) - set(pool)
    assert not missing, f"unknown tensor argument names {missing}: extend _inputs"
    return {n: pool[n] for n in names}


@pytest.mark.parametrize("registry", [RL_LOSSES, ADVANTAGES], ids=lambda r: r.kind)
def test_every_entry_has_paper_and_equation(registry):
    for name, entry in registry.items():
        assert entry.paper.strip() and entry.equation.strip(), name
        assert entry.fn.__doc__ and "[" in entry.fn.__doc__, f"{name}: docstring needs [Ref] key"


@pytest.mark.parametrize("name", sorted(RL_LOSSES))
def test_loss_entry_has_docs_page_and_config_ready_signature(name):
    assert (DOCS / f"{DOC_PAGE.get(name, name)}.md").is_file(), f"docs/methods page for {name}"
    _, hyper = split_signature(RL_LOSSES.get(name).fn)
    assert all(v is not inspect.Parameter.empty for v in hyper.values()), "need defaults"
    assert name in DEFAULT_ADVANTAGE
    adv_name = DEFAULT_ADVANTAGE[name]
    assert adv_name is None or adv_name in ADVANTAGES


@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("name", sorted(RL_LOSSES))
def test_loss_outputs_and_gradients_are_finite_at_extreme_inputs(name, scale):
    fn = RL_LOSSES.get(name).fn
    data, hyper = split_signature(fn)
    kwargs = {"beta": 0.1} if "beta" in hyper else {}
    x = _inputs(data, scale)
    out = fn(**x, **kwargs)
    assert isinstance(out, LossOut) and out.loss.dim() == 0 and torch.isfinite(out.loss)
    leaves = [v for v in x.values() if v.requires_grad]
    for grad in torch.autograd.grad(out.loss, leaves, allow_unused=True):
        assert grad is None or torch.isfinite(grad).all()
    for k, v in out.metrics.items():
        assert v.dim() == 0 and not v.requires_grad and torch.isfinite(v), k


@pytest.mark.parametrize("name", [n for n in sorted(RL_LOSSES) if RL_LOSSES[n].special_cases])
def test_declared_special_cases_hold_on_policy(name):
    entry = RL_LOSSES.get(name)
    for kwargs, other_name, other_kwargs in entry.special_cases:
        other = RL_LOSSES.get(other_name).fn
        data, _ = split_signature(entry.fn)
        x = _inputs(data, 1.0, seed=7)
        x["logp_old"] = x["logp"].detach()
        g1 = torch.autograd.grad(entry.fn(**x, **kwargs).loss, x["logp"])[0]
        y = {k: x[k] for k in split_signature(other)[0] if k in x}
        g2 = torch.autograd.grad(other(**y, **other_kwargs).loss, x["logp"])[0]
        torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_advantages_finite_shaped_and_clipped_at_extremes(name):
    rewards = torch.tensor([1e8, -1e8, 3.0, 3.0, 0.0, 1e-8])
    ids = [0, 0, 1, 1, 2, 2]
    est = build_advantage(name, adv_clip=5.0)
    adv = est(rewards, ids, torch.zeros(6))
    assert adv.shape == (6,) and adv.dtype == rewards.dtype
    assert torch.isfinite(adv).all() and adv.abs().max() <= 5.0
    if "zero_mean_per_group" in ADVANTAGES.get(name).properties:
        for g in range(3):
            assert math.isclose(float(adv[2 * g: 2 * g + 2].sum()), 0.0, abs_tol=1e-6)
