"""DiffusionNFT's loss: the authors' formula, its β → 0 limit, the gradient at θ = θ_old, and a
2-D toy whose optimum is known in closed form (the positive policy v⁺ is the positive data's
velocity)."""

from __future__ import annotations

import pytest
import torch

from scorealign.rl import RL_LOSSES
from scorealign.rl.flow_methods import diffusion_nft, nft_weight

B, D = 6, 5


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    v_old = torch.randn(B, D, generator=g, dtype=torch.float64)
    u = torch.randn(B, D, generator=g, dtype=torch.float64)
    t = torch.rand(B, generator=g, dtype=torch.float64) * 0.9 + 0.05
    adv = torch.randn(B, generator=g, dtype=torch.float64) * 3
    return v_old, u, t, adv


def test_loss_is_the_authors_formula():
    v_old, u, t, adv = _data()
    v = v_old + 0.1 * torch.randn(B, D, generator=torch.Generator().manual_seed(5),
                                  dtype=torch.float64)
    v_ref = torch.zeros(B, D, dtype=torch.float64)
    beta, m = 0.3, 5.0
    out = diffusion_nft(v, v_old, u, t, adv, v_ref, beta=beta, kl_beta=1e-4)
    # NVlabs/DiffusionNFT train_nft_sd3.py, written out on x_t = x0 + t·u (so x0 = x_t − t·u)
    x0 = torch.randn(B, D, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    xt = x0 + t[:, None] * u
    r = ((adv.clamp(-m, m) / m) / 2 + 0.5).clamp(0, 1)
    pos = beta * v + (1 - beta) * v_old
    neg = (1 + beta) * v_old - beta * v
    x0p, x0n = xt - t[:, None] * pos, xt - t[:, None] * neg
    wp = (x0p - x0).abs().mean(1, keepdim=True).clip(min=1e-5)
    wn = (x0n - x0).abs().mean(1, keepdim=True).clip(min=1e-5)
    lp, ln = ((x0p - x0) ** 2 / wp).mean(1), ((x0n - x0) ** 2 / wn).mean(1)
    want = (m * (r * lp / beta + (1 - r) * ln / beta)).mean() + 1e-4 * (v ** 2).mean()
    torch.testing.assert_close(out.loss.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.metrics["nft/r_mean"].double(), r.mean(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("beta", [1.0, 0.1, 1e-3])
@pytest.mark.parametrize("adaptive", [False, True])
def test_gradient_at_the_old_policy_is_reward_weighted_flow_matching(beta, adaptive):
    v_old, u, t, adv = _data(1)
    v = v_old.clone().requires_grad_(True)
    diffusion_nft(v, v_old, u, t, adv, beta=beta, kl_beta=0.0, adaptive=adaptive).loss.backward()
    r, tt = nft_weight(adv).double(), t[:, None]
    err = tt * (v_old - u)
    w = err.abs().mean(1, keepdim=True) if adaptive else torch.ones(B, 1, dtype=torch.float64)
    # m (2r − 1)/w · ∇_v mean_d ‖t (v − u)‖², averaged over the batch
    want = 5.0 * (2 * r[:, None] - 1) / w * 2 * tt * err / D / B
    torch.testing.assert_close(v.grad, want, rtol=2e-4, atol=1e-7)


def test_small_beta_limit():
    """β·L → m·mean‖t(v_old − u)‖² and L − that/β → 2m·mean[(2r−1)⟨t²(v − v_old), v_old − u⟩]."""
    v_old, u, t, adv = _data(2)
    v = v_old + torch.randn(B, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    r, tt = nft_weight(adv).double(), t[:, None]
    base = 5.0 * ((tt * (v_old - u)) ** 2).mean(1).mean()
    lin = 2 * 5.0 * ((2 * r - 1) * (tt**2 * (v - v_old) * (v_old - u)).mean(1)).mean()
    gaps = []
    for beta in (1e-1, 1e-2, 1e-3):
        L = diffusion_nft(v, v_old, u, t, adv, beta=beta, kl_beta=0.0, adaptive=False).loss
        gaps.append(abs((L.double() - base / beta) - lin).item())
    # the remainder is β·m·mean‖tΔ‖²: linear in β (fp32 loss: compare the two larger β)
    assert gaps[1] < 0.15 * gaps[0]
    assert gaps[2] < 0.2


def test_two_d_toy_reaches_the_known_optimum_and_the_gradient_points_to_the_positives():
    """Constant velocity model v_θ = θ ∈ R²; half the samples rewarded (r = 1), half not (r = 0);
    v_old = mean of all targets. The NFT optimum is θ* = v_old + (ū⁺ − ū⁻)/(2β), i.e. the
    implicit positive policy v⁺ = β θ* + (1 − β) v_old equals ū⁺ and v⁻ equals ū⁻."""
    g = torch.Generator().manual_seed(0)
    u_pos = torch.randn(8, 2, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([2.0, 1.0])
    u_neg = torch.randn(8, 2, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([-1.0, 0.5])
    u = torch.cat([u_pos, u_neg])
    adv = torch.cat([torch.full((8,), 5.0), torch.full((8,), -5.0)]).double()
    t = torch.full((16,), 0.5, dtype=torch.float64)
    v_old = u.mean(0)
    beta = 0.5
    theta = v_old.clone().requires_grad_(True)

    def loss():
        return diffusion_nft(theta.expand(16, 2), v_old.expand(16, 2), u, t, adv, beta=beta,
                             kl_beta=0.0, adaptive=False).loss

    loss().backward()
    direction = u_pos.mean(0) - u_neg.mean(0)
    assert torch.dot(-theta.grad, direction) > 0.99 * theta.grad.norm() * direction.norm()
    opt = torch.optim.SGD([theta], lr=2.0)
    for _ in range(300):
        opt.zero_grad()
        loss().backward()
        opt.step()
    want = v_old + direction / (2 * beta)
    torch.testing.assert_close(theta.detach(), want, rtol=0, atol=1e-4)
    torch.testing.assert_close(beta * theta.detach() + (1 - beta) * v_old, u_pos.mean(0),
                               rtol=0, atol=1e-4)


def test_registry_entries():
    for name in ("flow_grpo", "flow_grpo_fast", "mixgrpo", "dance_grpo", "diffusion_nft"):
        assert name in RL_LOSSES
    assert "forward_process" in RL_LOSSES.get("diffusion_nft").properties
    with pytest.raises(ValueError, match="beta > 0"):
        diffusion_nft(*_data()[:3], _data()[2], _data()[3], beta=0.0)
