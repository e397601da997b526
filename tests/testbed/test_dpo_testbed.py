"""Diffusion-DPO on the testbed (issue 22): the log-ratio surrogate the ground-truth experiment
uses is the ELBO difference, so with Bradley–Terry labels on r/τ and β_DPO = β/τ its target is
p*_β ∝ p₀ e^{r/β}.

With the likelihood weighting g(t)²‖s − ∇log p(x_t|x₀)‖² summed over dimensions and scale T/2
[Song+21b, Thm. 1], E_{t,ε}[Δ(x₀)] = ELBO_θ(x₀) − ELBO_ref(x₀). For exact scores the ELBO is
the log-likelihood up to the t_min end and the prior (shared by both models), so for the exact
optimal model and the exact base, Δ(x) − Δ(x') → log p*/p₀(x) − log p*/p₀(x') = (r(x) − r(x'))/β:
DPO's implicit reward β_DPO·Δ is then r/τ up to a constant, its Bradley–Terry optimum.
"""

from __future__ import annotations

import torch

from scorealign.preference.diffusion_logratio import implicit_logratio, pair_denoising_errors
from scorealign.sde import VPSDE
from scorealign.testbed import make_problem

F64 = torch.float64


def _delta(problem, sde, x: torch.Tensor, n: int, seed: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo E_{t,ε}[Δ(x_i)] of the optimal model against the base and its standard
    error, [N] each (stratified log-uniform t, importance-weighted to U(t_min, T))."""
    opt = problem.optimal_pred_fn(sde, "eps")
    base = problem.base_pred_fn(sde, "eps")
    g = torch.Generator().manual_seed(seed)
    out, se = torch.zeros(x.shape[0], dtype=F64), torch.zeros(x.shape[0], dtype=F64)
    reps = 8  # independent stratified replicates: their spread gives the standard error
    for i in range(x.shape[0]):
        xi = x[i:i + 1].expand(n // reps, -1)
        est = torch.zeros(reps, dtype=F64)
        for j in range(reps):
            m = n // reps
            u = (torch.arange(m, dtype=F64) + torch.rand(m, generator=g, dtype=F64)) / m
            # log-uniform t over [t_min, T] (the likelihood weight ~ 1/t near 0), importance-
            # weighted back to U(t_min, T)
            lo = torch.tensor(sde.t_min, dtype=F64).log()
            hi = torch.tensor(sde.T, dtype=F64).log()
            t = (lo + (hi - lo) * u).exp()
            w = t * (hi - lo) / (sde.T - sde.t_min)
            eps = torch.randn(m, x.shape[1], generator=g, dtype=F64)
            kw = dict(kind="eps", weighting="likelihood", reduce="sum")
            e_opt, _ = pair_denoising_errors(lambda a, b, c: opt(a, b), sde, xi, xi, t, eps,
                                             **kw)
            e_ref, _ = pair_denoising_errors(lambda a, b, c: base(a, b), sde, xi, xi, t, eps,
                                             **kw)
            est[j] = (w * implicit_logratio(e_opt, e_ref, 0.5 * sde.T)).mean()
        out[i], se[i] = est.mean(), est.std() / reps ** 0.5
    return out, se


def test_elbo_surrogate_margin_is_reward_margin_over_beta():
    beta = 0.5
    problem = make_problem("quadratic", 2, beta)
    sde = VPSDE()
    g = torch.Generator().manual_seed(0)
    # points where both densities have mass: draws of p₀ and of p*_β
    x = torch.cat([problem.base.sample(3, g, F64), problem.sample(3, g, F64)])
    d, se = _delta(problem, sde, x, n=40000, seed=1)
    exact = problem.reward(x) / beta
    # compare margins against the first point (the constants log Z_β and the ELBO's prior cancel)
    got, want = d - d[0], exact - exact[0]
    assert (want - want.mean()).abs().max() > 2.0  # the points' margins differ (power)
    # Monte Carlo error (4 standard errors of the difference) plus 0.02 for what the ELBO leaves
    # out: [0, t_min = 1e-3] and the prior at T (m(T) ≈ 0.0066, shared up to that)
    tol = 4 * (se ** 2 + se[0] ** 2).sqrt() + 0.02
    assert bool(((got - want).abs()[1:] <= tol[1:]).all()), (got - want, tol)
    assert float(tol.max()) < 0.5  # the check has resolution: the margins span ±10
    wrong = (problem.reward(x) - problem.reward(x[:1])) / (2 * beta)  # p₀ e^{r/(2β)}'s margins
    assert bool(((got - wrong).abs()[1:] > tol[1:]).any())
    # the sign of every pairwise margin, i.e. DPO's Bradley–Terry preference direction, is right
    assert torch.equal(torch.sign(got[1:]), torch.sign(want[1:]))
