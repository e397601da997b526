"""Diffusion-DPO loss [Wallace+23, Eq. 14]: closed form, log 2 at init, log-ratio sign."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from scorealign.preference.diffusion_logratio import (diffusion_dpo_loss, implicit_logratio,
                                                      pair_denoising_errors)
from scorealign.preference.losses import robust
from scorealign.sde import build_sde

E = dict(err_policy_w=torch.tensor([0.30, 0.50, 0.20]), err_ref_w=torch.tensor([0.40, 0.45, 0.20]),
         err_policy_l=torch.tensor([0.60, 0.40, 0.10]), err_ref_l=torch.tensor([0.50, 0.45, 0.30]))


def _inside(beta, scale):
    """β T ω(λ_t) [(e_θ^w − e_ref^w) − (e_θ^l − e_ref^l)], written out by hand."""
    d = [(E["err_policy_w"][i] - E["err_ref_w"][i]) - (E["err_policy_l"][i] - E["err_ref_l"][i])
         for i in range(3)]
    return [beta * scale * float(x) for x in d]


def test_sigmoid_matches_eq14_closed_form():
    beta, scale = 7.0, 0.5
    out = diffusion_dpo_loss(**E, link="sigmoid", beta=beta, scale=scale)
    want = [-math.log(1.0 / (1.0 + math.exp(z))) for z in _inside(beta, scale)]  # −log σ(−z)
    torch.testing.assert_close(out.losses, torch.tensor(want), rtol=1e-6, atol=1e-7)


def test_hinge_and_ipo_match_closed_forms():
    beta, scale = 3.0, 2.0
    h = [-z / beta for z in _inside(beta, scale)]  # unscaled margin Δ_w − Δ_l
    hinge = diffusion_dpo_loss(**E, link="hinge", beta=beta, scale=scale).losses
    ipo = diffusion_dpo_loss(**E, link="ipo", beta=beta, scale=scale).losses
    torch.testing.assert_close(hinge, torch.tensor([max(0.0, 1 - beta * x) for x in h]))
    torch.testing.assert_close(ipo, torch.tensor([(beta * x - 0.5) ** 2 for x in h]))


def test_log2_when_policy_equals_reference(tiny_base):
    """Policy = reference (a copy of the same weights): Δ = 0 and the sigmoid loss is log 2."""
    base = tiny_base
    policy = copy.deepcopy(base.model)
    g = torch.Generator().manual_seed(0)
    x_w, x_l = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    t = torch.rand(4, generator=g, dtype=torch.float64) * 0.9 + 0.05
    noise = torch.randn(4, 1, 8, 8, generator=g)
    cond = base.cond(["a handwritten 3", "a handwritten 7", "the digit one", "a handwritten 0"])
    ep = pair_denoising_errors(policy, base.sde, x_w, x_l, t, noise, cond)
    er = pair_denoising_errors(base.model, base.sde, x_w, x_l, t, noise, cond)
    out = diffusion_dpo_loss(ep[0], er[0], ep[1], er[1], link="sigmoid", beta=5000.0)
    assert torch.equal(out.logratio_w, torch.zeros(4)) and torch.equal(out.logratio_l, torch.zeros(4))
    torch.testing.assert_close(out.losses, torch.full((4,), math.log(2.0)))


def test_logratio_sign_follows_denoising_errors():
    err_ref = torch.tensor([0.5, 0.5, 0.5])
    err_pol = torch.tensor([0.2, 0.5, 0.9])  # better, equal, worse than the reference
    d = implicit_logratio(err_pol, err_ref, scale=0.5)
    assert d[0] > 0 and d[1] == 0 and d[2] < 0
    # The implicit reward of a pair whose winner the policy denoises better is positive.
    out = diffusion_dpo_loss(err_pol[:1], err_ref[:1], err_ref[:1], err_ref[:1], beta=10.0)
    assert out.reward_w.item() > 0 and out.metrics()["rewards/accuracy"] == 1.0
    assert out.losses.item() < math.log(2.0)


def test_pair_shares_time_and_noise(tiny_base):
    """Identical chosen and rejected images get identical errors (same t, same ε)."""
    base = tiny_base
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    cond = base.cond(["a handwritten 1", "a handwritten 2", "a handwritten 3"])
    ew, el = pair_denoising_errors(base.model, base.sde, x, x.clone(), t, noise, cond)
    # Rows B..2B-1 of the one batched forward are the same inputs at other batch positions;
    # multi-threaded fp32 CPU kernels round them differently (~1e-7, seen with 2 threads), so the
    # pair agrees to fp32 rounding, not bit for bit. A different t or ε would move it by O(1).
    torch.testing.assert_close(ew, el, rtol=1e-5, atol=1e-6)
    # The error is ‖ε̂(x_t) − ε‖² averaged over pixels, x_t = m x + s ε.
    mg = base.sde.marginal(t)
    x_t = (mg.mean_coef[:, None, None, None] * x + mg.std[:, None, None, None] * noise).float()
    with torch.no_grad():
        want = (base.model(x_t, t.float(), cond) - noise).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(ew.detach(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(el.detach(), want, rtol=1e-5, atol=1e-6)


def test_gradient_step_lowers_winner_error_relative_to_loser(tiny_base):
    """One SGD step on the sigmoid loss raises the margin Δ_w − Δ_l at the same (t, ε)."""
    base = tiny_base
    policy = copy.deepcopy(base.model).train()
    g = torch.Generator().manual_seed(3)
    x_w, x_l = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1, torch.rand(8, 1, 8, 8, generator=g) * 2 - 1
    t = torch.full((8,), 0.3, dtype=torch.float64)
    noise = torch.randn(8, 1, 8, 8, generator=g)
    cond = base.cond([f"a handwritten {i % 10}" for i in range(8)])
    with torch.no_grad():
        er = pair_denoising_errors(base.model, base.sde, x_w, x_l, t, noise, cond)

    def margin_and_loss():
        ep = pair_denoising_errors(policy, base.sde, x_w, x_l, t, noise, cond)
        out = diffusion_dpo_loss(ep[0], er[0], ep[1], er[1], beta=100.0)
        return (out.logratio_w - out.logratio_l).mean(), out.losses.mean()

    m0, loss = margin_and_loss()
    loss.backward()
    with torch.no_grad():
        for p in policy.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad
    m1, _ = margin_and_loss()
    assert m0.item() == pytest.approx(0.0, abs=1e-7) and m1.item() > 0


def test_shape_errors_are_clear(tiny_base):
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        pair_denoising_errors(tiny_base.model, build_sde("vp"), x, torch.zeros(3, 1, 8, 8),
                              torch.zeros(2, dtype=torch.float64), x)
    with pytest.raises(KeyError, match="unknown pairwise loss"):
        diffusion_dpo_loss(*[torch.zeros(1)] * 4, link="nope")


def test_eps_reaches_the_robust_link_and_bad_link_params_are_config_errors(tmp_path):
    from scorealign.config import ConfigError, config_from_dict
    from scorealign.preference.rpo.config import DiffusionDPOConfig

    beta = 7.0
    plain = diffusion_dpo_loss(**E, link="robust", beta=beta).losses
    noisy = diffusion_dpo_loss(**E, link="robust", beta=beta, eps=0.2).losses
    h = torch.tensor([-z / beta for z in _inside(beta, 0.5)])
    torch.testing.assert_close(noisy, robust(h, beta=beta, eps=0.2))
    assert (noisy - plain).abs().max() > 1e-3
    base = {"task": "diffusion", "data": {"path": str(tmp_path)}}
    cfg = config_from_dict({**base, "loss": {"link": "robust", "params": {"eps": 0.1}}},
                           DiffusionDPOConfig)
    assert cfg.loss.params == {"eps": 0.1}
    with pytest.raises((ConfigError, ValueError), match="not parameters of link 'sigmoid'"):
        config_from_dict({**base, "loss": {"link": "sigmoid", "params": {"eps": 0.1}}},
                         DiffusionDPOConfig)
