"""The closed forms of the testbed (issue 22, "The math"): each against an independent oracle.

- tilted mixtures against importance-weighted Monte Carlo of p₀ (weights, mean, covariance,
  E[r], log Z), with a wrong β as the power check;
- linear and quadratic tilts of a single Gaussian against the textbook formulas;
- KL(p*‖p₀) = E[r]/β − log Z against a Monte Carlo of E_{p*}[log p* − log p₀];
- the frontier: monotone, KL → 0 as β → ∞, optimal against another tilt at the same KL.
"""

from __future__ import annotations

import math

import pytest
import torch

from scorealign.sde import GaussianMixture
from scorealign.testbed import (QuadraticReward, beta_at_kl, frontier, frontier_reward,
                                make_problem, reward_gap)
from scorealign.testbed.problems import Problem

F64 = torch.float64


def _importance_weighted(problem: Problem, n: int, seed: int):
    """Self-normalized IS of p* from n draws of p₀: weights ∝ e^{r/β}; returns a dict."""
    gen = torch.Generator().manual_seed(seed)
    x, k = problem.base.sample_with_components(n, gen, F64)
    r = problem.reward(x)
    logw = r / problem.beta
    w = torch.softmax(logw, 0)
    mean = w @ x
    xc = x - mean
    cov = (w[:, None] * xc).T @ xc
    comp = torch.zeros(problem.base.weights.shape[0], dtype=F64).index_add_(0, k, w)
    return {"mean": mean, "cov": cov, "comp": comp, "er": float(w @ r),
            "log_z": float(torch.logsumexp(logw, 0) - math.log(n)), "ess": float(1 / (w**2).sum())}


def _base_component_mass(problem: Problem):
    """π of p* summed per base component (the multi-modal tilt has K·J components, k-major)."""
    k = problem.base.weights.shape[0]
    return problem.target.weights.reshape(k, -1).sum(1)


@pytest.mark.parametrize("name,d", [("linear", 2), ("quadratic", 2), ("multimodal", 2),
                                    ("quadratic", 8), ("multimodal", 8)])
def test_tilt_matches_importance_weighted_monte_carlo(name, d):
    problem = make_problem(name, d, beta=1.0)
    mc = _importance_weighted(problem, 2**17, seed=0)
    assert mc["ess"] > 2000  # the oracle itself is accurate enough for the tolerances below
    tol = 4.0 / math.sqrt(mc["ess"])  # ≈ 4 standard errors of an O(1)-variance average
    exact = {"mean": problem.target.mean(), "cov": problem.target.cov(),
             "comp": _base_component_mass(problem), "er": problem.expected_reward(),
             "log_z": float(problem.log_z)}
    scale = 1.0 + abs(exact["er"])  # E[r] and log Z carry the reward's scale
    torch.testing.assert_close(exact["mean"], mc["mean"], atol=tol, rtol=0)
    torch.testing.assert_close(exact["cov"], mc["cov"], atol=2 * tol, rtol=0)
    torch.testing.assert_close(exact["comp"], mc["comp"], atol=tol, rtol=0)
    assert exact["er"] == pytest.approx(mc["er"], abs=scale * tol)
    assert exact["log_z"] == pytest.approx(mc["log_z"], abs=scale * tol)
    # power: the tilt at another β (or, for the multi-modal reward, of p₀ itself) is rejected
    wrong = problem.base if name == "multimodal" else problem.at(1.5).target
    assert (wrong.mean() - mc["mean"]).abs().max() > 3 * tol


def test_single_gaussian_tilts_match_textbook_formulas():
    d, beta = 3, 0.7
    gen = torch.Generator().manual_seed(1)
    L = torch.randn(d, d, generator=gen, dtype=F64)
    sig = L @ L.T + 0.5 * torch.eye(d, dtype=F64)
    mu = torch.randn(d, generator=gen, dtype=F64)
    base = GaussianMixture(torch.ones(1), mu[None], sig[None])
    # linear r = bᵀx: N(μ + Σb/β, Σ), log Z = bᵀμ/β + bᵀΣb/(2β²), KL = bᵀΣb/(2β²)
    b = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    lin = Problem(base, QuadraticReward.linear(b), beta)
    torch.testing.assert_close(lin.target.means[0], mu + sig @ b / beta, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lin.target.covs[0], sig, rtol=1e-10, atol=1e-10)
    assert float(lin.log_z) == pytest.approx(float(b @ mu / beta + b @ sig @ b / (2 * beta**2)),
                                             rel=1e-10)
    assert lin.kl() == pytest.approx(float(b @ sig @ b / (2 * beta**2)), rel=1e-9)
    # quadratic r = −½(x−c)ᵀA(x−c): Σ' = (Σ⁻¹ + A/β)⁻¹, μ' = Σ'(Σ⁻¹μ + Ac/β)
    A = torch.diag(torch.tensor([2.0, 0.0, 0.5], dtype=F64))  # singular A is allowed
    c = torch.tensor([0.3, 1.0, -1.0], dtype=F64)
    quad = Problem(base, QuadraticReward.quadratic(A, c), beta)
    sig_p = torch.linalg.inv(torch.linalg.inv(sig) + A / beta)
    mu_p = sig_p @ (torch.linalg.solve(sig, mu) + A @ c / beta)
    torch.testing.assert_close(quad.target.means[0], mu_p, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(quad.target.covs[0], sig_p, rtol=1e-10, atol=1e-10)
    er = -0.5 * (torch.trace(A @ sig_p) + (mu_p - c) @ A @ (mu_p - c))
    assert quad.expected_reward() == pytest.approx(float(er), rel=1e-10)
    # KL(N(μ', Σ') ‖ N(μ, Σ)), textbook: ½[tr(Σ⁻¹Σ') + δᵀΣ⁻¹δ − d + log det Σ/det Σ']
    dm = mu_p - mu
    kl = 0.5 * (torch.trace(torch.linalg.solve(sig, sig_p)) + dm @ torch.linalg.solve(sig, dm)
                - d + torch.logdet(sig) - torch.logdet(sig_p))
    assert quad.kl() == pytest.approx(float(kl), rel=1e-9)


@pytest.mark.parametrize("name,d", [("linear", 8), ("quadratic", 2), ("multimodal", 2)])
def test_kl_of_mixture_matches_monte_carlo_log_ratio(name, d):
    """KL(p*‖p₀) = E[r]/β − log Z against E_{p*}[log p*(x) − log p₀(x)] over exact draws."""
    problem = make_problem(name, d, beta=1.0)
    gen = torch.Generator().manual_seed(2)
    x = problem.sample(2**15, gen)
    log_ratio = problem.log_prob(x) - problem.base.log_prob(x)
    se = float(log_ratio.std()) / math.sqrt(x.shape[0])
    assert problem.kl() == pytest.approx(float(log_ratio.mean()), abs=4 * se + 1e-3)
    assert problem.kl() > 0.1  # a non-trivial tilt: the check has power


def test_frontier_is_monotone_vanishes_and_is_optimal():
    problem = make_problem("quadratic", 8, beta=1.0)
    f = frontier(problem, torch.logspace(-1.5, 4, 12).tolist())
    assert bool((f.kl.diff() > 0).all()) and bool((f.reward.diff() > 0).all())
    assert float(f.kl[0]) < 1e-6  # β = 10⁴
    # E_{p*}[r] − E_{p₀}[r] ≈ Var_{p₀}(r)/β to first order in 1/β (here Var ≈ 12, β = 10⁴)
    assert 0 < float(f.reward[0]) - problem.base_reward() < 3e-3
    # β(κ) inverts KL(β), and the frontier point has zero gap
    kappa = float(f.kl[6])
    assert beta_at_kl(problem, kappa) == pytest.approx(float(f.betas[6]), rel=1e-8)
    assert reward_gap(problem, kappa, float(f.reward[6])) == pytest.approx(0.0, abs=1e-9)
    # optimality: another tilt of p₀ (a linear reward) spends KL less well than the Gibbs tilt
    other = Problem(problem.base, QuadraticReward.linear(torch.ones(8, dtype=F64) * 0.3), 1.0)
    q_reward = problem.reward.mean_under(other.target)
    assert reward_gap(problem, other.kl(), q_reward) > 0.05
    assert frontier_reward(problem, 0.0) == pytest.approx(problem.base_reward())


def test_multimodal_tilt_only_at_its_beta_and_presets_validate():
    with pytest.raises(ValueError, match="only at its own"):
        make_problem("multimodal", 2, beta=1.0).at(0.5)
    with pytest.raises(KeyError, match="quadratic"):
        make_problem("cubic", 2)
    with pytest.raises(ValueError, match="dimensions"):
        make_problem("linear", 3)
    with pytest.raises(ValueError, match="not integrable"):  # a convex reward too strong for β
        Problem(make_problem("linear", 2).base,
                QuadraticReward.quadratic(-100 * torch.eye(2, dtype=F64), torch.zeros(2)), 1.0)
