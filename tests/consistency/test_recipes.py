"""iCT and ECT as options of the CD/CT loop: each piece against its closed form.

* pseudo-Huber d = sqrt(‖Δ‖² + c²) − c: ‖Δ‖²/(2c) as c → ∞ (Taylor remainder ≤ ‖Δ‖⁴/(8c³)),
  ‖Δ‖ as c → 0 (d ∈ [‖Δ‖ − c, ‖Δ‖]), the norm itself at c = 0;
* iCT's curriculum at the paper's settings (s₀ = 10, s₁ = 1280, K = 400k: K' = 50k);
* iCT's lognormal pair probabilities = normal-CDF differences of ln σ, σ = s/m, summing to 1;
* ECT's mapping: r = 0 exactly where σ ≤ ln 7 at stage 0, Δt halves per stage;
* each recipe's per-sample loss on a Gaussian with the exact teacher against a hand-written
  closed form (x̂_0 of a Gaussian is linear in x; DDIM step, λ and d written out).
"""

import math

import pytest
import torch

from scorealign.sde import GaussianMixture, build_sde
from scorealign.sde.consistency import consistency_coefs, consistency_fn
from scorealign.train.consistency import (ConsistencyConfig, discretization, distance,
                                          ect_times, ema_and_scales, pair_probs, recipe_loss)
from scorealign.train.consistency_recipes import (ect_sigma_r, ect_stage, ict_num_scales,
                                                  lognormal_pair_probs)

F64 = torch.float64


def _pair(seed=0, shape=(64, 2, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


# -- pseudo-Huber ------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1e3, 1e4])
def test_pseudo_huber_is_scaled_l2_for_large_c(c):
    a, b = _pair()
    n2 = (a - b).double().flatten(1).pow(2).sum(1)
    d = distance(a, b, "pseudo_huber", c).double()
    remainder = n2**2 / (8 * c**3)                 # alternating series: |d − n2/2c| ≤ n2²/8c³
    assert bool(((d - n2 / (2 * c)).abs() <= remainder + 1e-5 * n2 / (2 * c)).all())
    # i.e. 2c/D · d is the project's l2 distance (mean squared error over D = 8 dimensions)
    assert torch.allclose(d * 2 * c / 8, distance(a, b, "l2").double(), rtol=1e-4)


@pytest.mark.parametrize("c", [1e-3, 1e-6])
def test_pseudo_huber_is_the_norm_for_small_c(c):
    a, b = _pair(1)
    norm = (a - b).double().flatten(1).norm(dim=1)
    d = distance(a, b, "pseudo_huber", c).double()
    assert bool((d >= norm - c - 1e-6 * norm).all() and (d <= norm + 1e-6 * norm).all())


def test_pseudo_huber_defaults_and_c_zero():
    a, b = _pair(2)
    d_norm = distance(a, b, "pseudo_huber", 0.0)
    assert torch.equal(d_norm, torch.linalg.vector_norm((a - b).flatten(1), dim=1))
    # iCT's c = 0.00054 sqrt(D), D = 8 here
    assert torch.equal(distance(a, b, "pseudo_huber"),
                       distance(a, b, "pseudo_huber", 0.00054 * math.sqrt(8)))
    x = a.clone().requires_grad_(True)           # ECT's c = 0 at Δ = 0 (the boundary): grad 0
    distance(x, a, "pseudo_huber", 0.0).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# -- iCT curriculum and lognormal pairs --------------------------------------------------------
PAPER_N = {0: 11, 49_999: 11, 50_000: 21, 100_000: 41, 150_000: 81, 200_000: 161,
           250_000: 321, 300_000: 641, 349_999: 641, 350_000: 1281, 399_999: 1281}


@pytest.mark.parametrize("k,n", sorted(PAPER_N.items()))
def test_ict_curriculum_at_the_paper_settings(k, n):
    """N(k) = min(10·2^⌊k/50000⌋, 1280) + 1 for K = 400k [iCT Eq. 8 and §4]."""
    assert ict_num_scales(k, 400_000, 10, 1280) == n
    cfg = ConsistencyConfig(scale_mode="exponential", start_scales=10, end_scales=1280,
                            target_ema_mode="none")
    assert ema_and_scales(k, 400_000, cfg) == (0.0, n)


def _phi(sig: float, p_mean=-1.1, p_std=2.0) -> float:
    return 0.5 * (1 + math.erf((math.log(sig) - p_mean) / (p_std * math.sqrt(2))))


@pytest.mark.parametrize("n_points", [11, 41, 161])
def test_lognormal_pair_probabilities_on_the_vp_grid(n_points):
    sde, cfg = build_sde("vp"), ConsistencyConfig(pair_sampling="lognormal")
    ts = discretization(sde, n_points, cfg)                 # decreasing times
    p = pair_probs(sde, ts, cfg)
    sig = [float(s) for s in sde.nsr(ts)]
    mass = [_phi(sig[n]) - _phi(sig[n + 1]) for n in range(n_points - 1)]
    total = _phi(sig[0]) - _phi(sig[-1])
    assert p.shape == (n_points - 1,) and abs(float(p.sum()) - 1) < 1e-12
    assert max(abs(float(p[n]) - mass[n] / total) for n in range(n_points - 1)) < 1e-12
    # the pair holding σ = e^{P_mean} (the lognormal's median) has more mass than the ends
    mid = next(n for n in range(n_points - 1) if sig[n + 1] <= math.exp(-1.1) < sig[n])
    assert p[mid] > p[0] and p[mid] > p[-1]


def test_lognormal_pair_probs_rejects_a_decreasing_grid():
    with pytest.raises(ValueError, match="increasing"):
        lognormal_pair_probs(torch.tensor([2.0, 1.0], dtype=F64))


# -- ECT mapping -----------------------------------------------------------------------------
def test_ect_mapping_and_stages():
    sig = torch.logspace(-2, 2, 401, dtype=F64)
    r0 = ect_sigma_r(sig, 0)                        # ½(1 + 8 sigmoid(−σ)) ≥ 1  ⟺  σ ≤ ln 7
    assert torch.equal(r0 == 0, sig <= math.log(7))
    for s in range(7):                              # Δt = σ − r halves per stage (q = 2)
        d1, d2 = sig - ect_sigma_r(sig, s), sig - ect_sigma_r(sig, s + 1)
        ok = ect_sigma_r(sig, s) > 0
        assert torch.allclose(d2[ok] / d1[ok], torch.full_like(d1[ok], 0.5), rtol=1e-12)
    # σ → ∞: n(σ) → 1 and Δt/σ → q^{−(stage+1)}
    assert abs(float(1 - ect_sigma_r(torch.tensor([60.0], dtype=F64), 3) / 60) - 2**-4) < 1e-12
    # 8 stages over run_ecm.sh's 200k iterations (25.6 Mimg / 128): one per 25k
    assert [ect_stage(k, 200_000) for k in (0, 24_999, 25_000, 199_999)] == [0, 0, 1, 7]


def test_ect_times_on_vp():
    sde, cfg = build_sde("vp"), ConsistencyConfig(pair_sampling="ect")
    u = torch.randn(4000, generator=torch.Generator().manual_seed(0), dtype=F64)
    t_hi, t_lo = ect_times(sde, u, 0, cfg)
    s_min, s_max = (float(v) for v in sde.nsr(torch.tensor([sde.t_min, sde.t_max], dtype=F64)))
    sig_t = (-1.1 + 2.0 * u).exp().clamp(1.01 * s_min, s_max)
    assert torch.allclose(sde.nsr(t_hi), sig_t, rtol=1e-9)
    sig_r = ect_sigma_r(sig_t, 0)
    boundary = sig_r <= s_min
    assert bool((t_lo[boundary] == sde.t_min).all()) and bool(boundary.any())
    assert torch.allclose(sde.nsr(t_lo[~boundary]), sig_r[~boundary], rtol=1e-9)
    assert bool((t_hi > t_lo).all())


# -- each recipe's loss against its closed form on a Gaussian with the exact teacher ----------
MU, V = torch.tensor([0.5, -0.3], dtype=F64), 0.16      # data N(μ, v I)

RECIPES = {
    "song_cd": dict(solver="ddim"),
    "ict_cd": dict(solver="ddim", distance="pseudo_huber", pair_sampling="lognormal",
                   weighting="inv_dsigma", target_ema_mode="none", scale_mode="exponential",
                   start_scales=10, end_scales=1280),
    "ict_ct": dict(distance="pseudo_huber", pair_sampling="lognormal", weighting="inv_dsigma",
                   target_ema_mode="none", scale_mode="exponential", start_scales=10,
                   end_scales=1280),
    "ect_ct": dict(pair_sampling="ect", weighting="inv_dsigma", target_ema_mode="none",
                   distance="pseudo_huber", huber_c=0.0),
    "ect_cd": dict(solver="ddim", pair_sampling="ect", weighting="inv_dsigma",
                   distance="pseudo_huber", huber_c=0.0),
}


def _x0_hat(x, t, sde):
    """E[x_0 | x_t] of N(μ, v I) on VP: μ + m v/(m² v + s²) (x − m μ)."""
    mg = sde.marginal(t)
    m, s = mg.mean_coef[:, None], mg.std[:, None]
    return MU + m * V / (m**2 * V + s**2) * (x - m * MU)


def _f_hand(x, t, sde):
    c_x, c_d = consistency_coefs(t, sde)
    return c_x[:, None] * x + c_d[:, None] * _x0_hat(x, t, sde)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_loss_matches_its_closed_form(name):
    sde = build_sde("vp")
    cfg = ConsistencyConfig(teacher="exact", **RECIPES[name])
    cd = name.endswith("_cd")
    mix = GaussianMixture.isotropic([1.0], [MU.tolist()], math.sqrt(V))
    g = torch.Generator().manual_seed(3)
    b, step, total = 256, 1234, 4000
    x0 = MU + math.sqrt(V) * torch.randn(b, 2, generator=g, dtype=F64)
    z = torch.randn(b, 2, generator=g, dtype=F64)
    _, n_scales = ema_and_scales(step, total, cfg)
    ts = discretization(sde, n_scales, cfg)
    if cfg.pair_sampling == "ect":
        draw = torch.randn(b, generator=g, dtype=F64)
        t_hi, t_lo = ect_times(sde, draw, ect_stage(step, total), cfg)
    else:
        p = pair_probs(sde, ts, cfg)
        draw = (torch.multinomial(p, b, replacement=True, generator=g) if p is not None
                else torch.randint(n_scales - 1, (b,), generator=g))
        t_hi, t_lo = ts[draw], ts[draw + 1]
    # the library: the exact x̂_0 as the "network" inside Song's scalings, the exact teacher
    net = mix.pred_fn(sde, "x0")
    f = lambda x, t: consistency_fn(net(x, t), "x0", x, t, sde)  # noqa: E731
    got = recipe_loss(f, f, sde, cfg, x0, z, draw, step, total, ts=ts,
                      teacher=net if cd else None, teacher_kind="x0")
    # by hand
    hi, lo = sde.marginal(t_hi), sde.marginal(t_lo)
    x_hi = hi.mean_coef[:, None] * x0 + hi.std[:, None] * z
    if cd:   # DDIM (η = 0) from t_hi to t_lo with the exact x̂_0
        xh = _x0_hat(x_hi, t_hi, sde)
        eps = (x_hi - hi.mean_coef[:, None] * xh) / hi.std[:, None]
        x_lo = lo.mean_coef[:, None] * xh + lo.std[:, None] * eps
    else:
        x_lo = lo.mean_coef[:, None] * x0 + lo.std[:, None] * z
    diff = _f_hand(x_hi, t_hi, sde) - _f_hand(x_lo, t_lo, sde)
    sq = diff.pow(2).sum(1)
    if cfg.distance == "l2":
        d = sq / 2
    elif cfg.huber_c == 0:
        d = sq.sqrt()
    else:
        c = 0.00054 * math.sqrt(2)
        d = (sq + c**2).sqrt() - c
    lam = (1 / (hi.std / hi.mean_coef - lo.std / lo.mean_coef)
           if cfg.weighting == "inv_dsigma" else torch.ones_like(d))
    want = lam * d
    assert got.shape == (b,) and bool(torch.isfinite(got).all()) and bool((want > 0).any())
    # fp32 distance of float64 inputs: agreement to fp32 precision
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-7 * float(want.abs().max())), \
        float(((got.double() - want).abs() / want.abs().clamp_min(1e-12)).max())


def test_no_ema_target_is_a_stopgrad_of_the_online_net():
    """θ⁻ = stopgrad(θ) [iCT §3.2]: with the student as its own target, the gradient of
    d = mean((θ x_hi − θ x_lo)²) is 2 mean((θ x_hi − θ x_lo) x_hi), not the full derivative."""
    sde = build_sde("vp")
    cfg = ConsistencyConfig(target_ema_mode="none")
    assert ema_and_scales(7, 100, cfg)[0] == 0.0
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    f = lambda x, t: theta * x  # noqa: E731
    g = torch.Generator().manual_seed(5)
    x0, z = torch.randn(32, 3, generator=g, dtype=F64), torch.randn(32, 3, generator=g, dtype=F64)
    ts = discretization(sde, 18, cfg)
    draw = torch.randint(17, (32,), generator=g)
    loss = recipe_loss(f, f, sde, cfg, x0, z, draw, 7, 100, ts=ts)
    loss.sum().backward()
    hi, lo = sde.marginal(ts[draw]), sde.marginal(ts[draw + 1])
    x_hi = hi.mean_coef[:, None] * x0 + hi.std[:, None] * z
    x_lo = lo.mean_coef[:, None] * x0 + lo.std[:, None] * z
    th = theta.detach()
    want = (2 * (th * x_hi - th * x_lo) * x_hi).mean(1).sum()
    assert float(theta.grad) == pytest.approx(float(want), rel=1e-5)
    full = (2 * (th * x_hi - th * x_lo) * (x_hi - x_lo)).mean(1).sum()
    assert abs(float(full) - float(want)) > 1e-3 * abs(float(want))
