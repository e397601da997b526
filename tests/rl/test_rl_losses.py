"""RL losses: on-policy gradient identities, PPO-clip boundaries, continuous-time invariance."""

import math

import pytest
import torch

from scorealign.rl import losses as L


def _onpolicy(b=6, t=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logp = torch.randn(b, t, generator=g, dtype=dtype).requires_grad_()
    adv = torch.randn(b, generator=g, dtype=dtype)
    mask = (torch.rand(b, t, generator=g) > 0.3).to(dtype)
    mask[:, 0] = 1
    return logp, adv, mask


def _grad(out: L.LossOut, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(out.loss, x)[0]


@pytest.mark.parametrize("use_mask", [False, True])
def test_ppo_clip_gradient_equals_reinforce_on_policy(use_mask):
    logp, adv, mask = _onpolicy()
    mask = mask if use_mask else None
    g_ppo = _grad(L.ppo_clip(logp, logp.detach(), adv, mask, clip=0.1), logp)
    g_pg = _grad(L.reinforce(logp, adv, mask, reduce="mean"), logp)
    torch.testing.assert_close(g_ppo, g_pg, atol=1e-7, rtol=1e-6)
    # Same for the compositions built on it and for unbounded clipping.
    for out in (L.loop(logp, logp.detach(), adv, mask),
                L.grpo(logp, logp.detach(), adv, None, mask),
                L.ppo_clip(logp, logp.detach(), adv, mask, clip=math.inf)):
        torch.testing.assert_close(_grad(out, logp), g_pg, atol=1e-7, rtol=1e-6)


def test_dpok_gradient_is_alpha_reinforce_plus_beta_kl_gradient():
    logp, adv, _ = _onpolicy(seed=1)
    kl = (logp**2).detach().requires_grad_()
    out = L.dpok(logp, logp.detach(), adv, kl, alpha=2.0, beta=0.5)
    g_logp, g_kl = torch.autograd.grad(out.loss, (logp, kl))
    g_pg = _grad(L.reinforce(logp, adv, reduce="sum"), logp)
    torch.testing.assert_close(g_logp, 2.0 * g_pg)
    torch.testing.assert_close(g_kl, torch.full_like(kl, 0.5 / kl.shape[0]))


# (ρ, A, ε) → hand-computed per-step loss −min(ρA, clip(ρ)A) and its derivative in log ρ.
BOUNDARY = [
    (1.5, 2.0, 0.2, -2.4, 0.0),    # A>0, ρ>1+ε: clipped at (1+ε)A, no gradient
    (0.5, 2.0, 0.2, -1.0, -1.0),   # A>0, ρ<1−ε: unclipped ρA is the min, gradient −ρA
    (1.5, -2.0, 0.2, 3.0, 3.0),    # A<0, ρ>1+ε: unclipped, loss ρ|A|, gradient ρ|A|
    (0.5, -2.0, 0.2, 1.6, 0.0),    # A<0, ρ<1−ε: clipped at (1−ε)A, no gradient
    (1.1, 2.0, 0.2, -2.2, -2.2),   # inside the trust region: unclipped
    (1.1, -2.0, 0.2, 2.2, 2.2),
]


@pytest.mark.parametrize("rho,a,eps,loss,dloss", BOUNDARY)
def test_ppo_clip_values_at_and_beyond_the_boundary(rho, a, eps, loss, dloss):
    log_rho = torch.tensor([[math.log(rho)]], dtype=torch.float64, requires_grad=True)
    out = L.ppo_clip(log_rho, torch.zeros(1, 1, dtype=torch.float64),
                     torch.tensor([a], dtype=torch.float64), clip=eps)
    assert float(out.loss.detach()) == pytest.approx(loss, abs=1e-12)
    assert float(_grad(out, log_rho)) == pytest.approx(dloss, abs=1e-12)
    assert float(out.metrics["policy/clipfrac"]) == float(abs(rho - 1) > eps)


def test_ppo_clip_exactly_at_the_boundary_is_continuous():
    for a in (2.0, -2.0):
        for rho in (1.2, 0.8):
            lp = torch.tensor([[math.log(rho)]], dtype=torch.float64)
            out = L.ppo_clip(lp, torch.zeros(1, 1, dtype=torch.float64),
                             torch.tensor([a], dtype=torch.float64), clip=0.2)
            assert float(out.loss) == pytest.approx(-rho * a, abs=1e-12)


def test_ratio_metrics_on_known_ratios():
    log_rho = torch.log(torch.tensor([[1.0, 2.0], [0.5, 1.05]]))
    m = L.ratio_metrics(log_rho, None, clip=0.1)
    rho = log_rho.exp()
    assert float(m["policy/clipfrac"]) == pytest.approx(0.5)
    assert float(m["policy/ratio_max"]) == pytest.approx(2.0)
    assert float(m["policy/approx_kl_k3"]) == pytest.approx(float(((rho - 1) - log_rho).mean()))
    assert float(m["policy/approx_kl_k3"]) > 0


def test_reduce_steps_mean_and_sum_with_mask():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert float(L.reduce_steps(x, mask, "mean")) == pytest.approx((1.5 + 5.0) / 2)
    assert float(L.reduce_steps(x, mask, "sum")) == pytest.approx((3.0 + 15.0) / 2)
    assert float(L.reduce_steps(x)) == pytest.approx(3.5)
    with pytest.raises(ValueError, match="reduce"):
        L.reduce_steps(x, None, "median")  # type: ignore[arg-type]


def test_grpo_adds_beta_times_reduced_kl():
    logp, adv, mask = _onpolicy(seed=2)
    kl = torch.rand(logp.shape)
    base = L.ppo_clip(logp, logp.detach(), adv, mask)
    out = L.grpo(logp, logp.detach(), adv, kl, mask, beta=0.3)
    expected = base.loss + 0.3 * L.reduce_steps(kl, mask, "mean")
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(ValueError, match="kl"):
        L.grpo(logp, logp.detach(), adv, None, beta=0.3)


def _uniform_dt(n, horizon=1.0):
    return torch.full((n,), horizon / n, dtype=torch.float64)


@pytest.mark.parametrize("grid", ["uniform", "random"])
def test_score_as_action_td_rates_telescope_for_any_step_count(grid):
    # per-step values V(t_k) of a smooth function, terminal reward r: on-policy the CT-PPO
    # policy term is −(r − V_0) whatever the grid (a time integral of the q-rate), while the
    # summed-PPO form Σ_k (r − V_k) grows with the number of steps.
    g = torch.Generator().manual_seed(0)
    r, values, summed = torch.tensor([3.0, 2.5]), [], []
    for n in (3, 10, 50, 200):
        dt = _uniform_dt(n) if grid == "uniform" else \
            torch.rand(n, generator=g, dtype=torch.float64)
        dt = dt / dt.sum()
        t = 1.0 - torch.cat([torch.zeros(1, dtype=torch.float64), dt.cumsum(0)[:-1]])
        v = torch.stack([torch.sin(3 * t), t**2], 0).float()  # V(x_k, t_k) [2, n]
        logp = torch.zeros(2, n)
        out = L.score_as_action(logp, logp, r[:, None] - v, -dt, kl=torch.full((2, n), 0.1),
                                beta=0.5)  # sign of dt is dropped
        values.append(float(out.metrics["loss/policy"]))
        assert float(out.metrics["loss/kl"]) == pytest.approx(0.1 * n)  # Σ_k KL_k, no Δt
        summed.append(float(L.score_as_action(logp, logp, r[:, None] - v, dt,
                                              gae_lambda=1.0).loss))
    v0 = torch.tensor([math.sin(3.0), 1.0])
    assert values == pytest.approx([-float((r - v0).mean())] * 4, abs=1e-5)
    assert abs(summed[-1]) > 10 * abs(summed[0])


def test_score_as_action_rates_are_controls_td_rates_and_constant_baseline_is_summed_ppo():
    from scorealign.ct import advantage_rates, td_q_rate
    v = torch.tensor([[0.5, 0.7, 1.1]], dtype=torch.float64)
    r, dt = torch.tensor([2.0], dtype=torch.float64), torch.tensor([0.5, 0.3, 0.2],
                                                                   dtype=torch.float64)
    q = advantage_rates(v, r, dt)
    expect = td_q_rate(0.0, v, torch.tensor([[0.7, 1.1, 2.0]], dtype=torch.float64), dt)
    torch.testing.assert_close(q, expect)
    torch.testing.assert_close(advantage_rates(v, r, dt, lam=1.0) * dt, r - v)
    logp = torch.zeros(1, 3)
    out = L.score_as_action(logp, logp, torch.tensor([1.5]), dt.float())
    assert float(out.loss) == pytest.approx(-4.5)  # [B] advantage: Σ_k Δt_k (A/Δt_k) = 3A


def test_score_as_action_requires_kl_for_beta():
    logp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="kl"):
        L.score_as_action(logp, logp, torch.ones(2), _uniform_dt(3), beta=0.1)


def test_reward_backprop_gradient_and_metrics():
    r = torch.tensor([1.0, 3.0], requires_grad=True)
    out = L.reward_backprop(r)
    assert float(out.loss.detach()) == -2.0 and float(out.metrics["reward/mean"]) == 2.0
    torch.testing.assert_close(_grad(out, r), torch.tensor([-0.5, -0.5]))


def test_gradcheck_in_float64_away_from_kinks():
    g = torch.Generator().manual_seed(4)
    logp = (0.01 * torch.randn(3, 4, generator=g, dtype=torch.float64)).requires_grad_()
    old = torch.zeros(3, 4, dtype=torch.float64)
    adv = torch.randn(3, generator=g, dtype=torch.float64)
    dt = _uniform_dt(4)
    assert torch.autograd.gradcheck(lambda x: L.ppo_clip(x, old, adv, clip=0.5).loss, (logp,))
    assert torch.autograd.gradcheck(
        lambda x: L.score_as_action(x, old, adv, dt, clip=0.5).loss, (logp,))


def test_bad_shapes_are_errors():
    logp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="adv"):
        L.ppo_clip(logp, logp, torch.zeros(3))
    with pytest.raises(ValueError, match="logp_old"):
        L.ppo_clip(logp, torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="mask"):
        L.reinforce(logp, torch.zeros(2), torch.ones(3, 3))
