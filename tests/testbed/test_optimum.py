"""The optimal fine-tuned score and the yardsticks (issue 22, "The math" and "What to build" 1).

- ∇log p*_t against autograd of an independent log-density of the noised tilted mixture, on VP,
  VE and flow; the flow velocity against the score identity v = (−t s − x)/(1 − t);
- a sampler driven by the exact optimal score reaches p*_β within its floor, which shrinks with
  the number of steps; the base score does not;
- the metric helpers fail where they should (a wrong law is far, a wrong score has error).
"""

from __future__ import annotations

import pytest
import torch

from scorealign.samplers import sample
from scorealign.sde import FlowSDE, VESDE, VPSDE
from scorealign.testbed import energy_distance, floor, make_problem, sample_distance, score_error
from scorealign.testbed.rewards import mixture_log_prob

F64 = torch.float64


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(), FlowSDE()], ids=["vp", "ve", "flow"])
@pytest.mark.parametrize("name", ["quadratic", "multimodal"])
def test_optimal_score_is_gradient_of_noised_target_log_density(sde, name):
    problem = make_problem(name, 2, beta=1.0)
    gen = torch.Generator().manual_seed(3)
    for t in (0.01, 0.3, 0.9):
        # the noised mixture N(m μ'_k, m² Σ'_k + s² I), its log-density by independent code
        p_t = problem.target.marginal(torch.tensor(t, dtype=F64), sde)
        x = (p_t.sample(64, gen, F64) + 0.3 * torch.randn(64, 2, generator=gen, dtype=F64))
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(mixture_log_prob(p_t, x).sum(), x)
        score = problem.optimal_score(x.detach(), torch.tensor(t, dtype=F64), sde)
        torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)
        if t == 0.01:  # power: near the data the base's score differs from the optimum's
            base = problem.base_pred_fn(sde)(x.detach(), torch.full((64,), t, dtype=F64))
            assert (base - grad).abs().max() > 0.1


def test_optimal_flow_velocity_matches_score_identity():
    """For x_t = (1 − t) x₀ + t ε: v = E[ε − x₀ | x_t] = (−t ∇log p_t − x)/(1 − t)."""
    problem, sde = make_problem("linear", 8, beta=0.5), FlowSDE()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(128, 8, generator=gen, dtype=F64) * 2
    for t in (0.05, 0.5, 0.95):
        tb = torch.full((128,), t, dtype=F64)
        v = problem.optimal_pred_fn(sde, "v")(x, tb)
        s = problem.optimal_score(x, tb, sde)
        torch.testing.assert_close(v, (-t * s - x) / (1 - t), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("sampler", ["ddpm", "euler_maruyama"])
def test_exact_optimal_score_sampler_reaches_target_within_floor(sampler):
    problem, sde, n = make_problem("quadratic", 2, beta=0.5), VPSDE(), 1000
    gen = torch.Generator().manual_seed(5)
    # the finite-n floor of the metric itself: two independent exact sample sets
    stat = abs(energy_distance(problem.sample(n, gen), problem.sample(n, gen)))
    fine = floor(problem.target, sde, gen, n=n, sampler=sampler, steps=100)
    coarse = floor(problem.target, sde, gen, n=n, sampler=sampler, steps=5)
    assert fine < 5 * stat + 2e-3  # at 100 steps only the finite-n noise is left
    assert coarse > fine + 0.02  # the floor measures discretization error: it shrinks with steps
    # the base model's sampler, same settings, is far from p*_β (and close to p₀)
    x_T = sde.prior_sample((n, 2), gen, F64)
    x0 = sample(problem.base_pred_fn(sde), "score", sde, x_T, sampler=sampler, steps=100,
                generator=gen).x0
    assert sample_distance(x0, problem.target, gen) > 20 * (fine + stat + 1e-3)
    assert sample_distance(x0, problem.base, gen) < 5 * stat + 2e-3


def test_metrics_separate_right_from_wrong():
    problem, sde = make_problem("multimodal", 8, beta=1.0), VPSDE()
    gen = torch.Generator().manual_seed(6)
    right, wrong = problem.sample(800, gen), problem.base.sample(800, gen, F64)
    for metric in ("energy", "sw2"):
        near = sample_distance(right, problem.target, gen, metric)
        far = sample_distance(wrong, problem.target, gen, metric)
        assert far > 10 * abs(near), metric
    with pytest.raises(ValueError, match="unknown metric"):
        sample_distance(right, problem.target, gen, "kl")
    # score error: zero for the optimum (in any parameterization), positive for the base
    kw = dict(n=128, n_t=8)
    for kind in ("score", "eps"):
        assert score_error(problem.optimal_pred_fn(sde, kind), kind, problem.target, sde, gen,
                           **kw) == pytest.approx(0.0, abs=1e-12)
    base_err = score_error(problem.base_pred_fn(sde), "score", problem.target, sde, gen, **kw)
    base_kl = score_error(problem.base_pred_fn(sde), "score", problem.target, sde, gen,
                          weight="g2", **kw)
    assert base_err > 1.0 and base_kl > 1.0
