r"""Closed-form exponential tilts of a Gaussian mixture: p*_β ∝ p₀ e^{r/β} is again a mixture.

Two Gaussian identities carry everything (float64 throughout):

1. *Gaussian times a quadratic exponential* (completing the square; [Petersen & Pedersen,
   The Matrix Cookbook (2012), §8.1.8 and §8.1.6]): with Λ = Σ⁻¹ + P and η = Σ⁻¹μ + h,

       N(x; μ, Σ) e^{−½xᵀPx + hᵀx} = Z · N(x; Λ⁻¹η, Λ⁻¹),
       log Z = ½ ηᵀΛ⁻¹η − ½ μᵀΣ⁻¹μ − ½ log det Σ − ½ log det Λ,

   valid whenever Λ is positive definite (P may be singular or indefinite).
2. *Product of two Gaussians* ([Matrix Cookbook, Eq. 371]):

       N(x; μ, Σ) N(x; c, S) = N(μ; c, Σ + S) · N(x; C(Σ⁻¹μ + S⁻¹c), C),  C = (Σ⁻¹ + S⁻¹)⁻¹.

So for p₀ = Σ_k w_k N(μ_k, Σ_k) and a tilt factor that is a quadratic exponential (linear and
quadratic rewards, every β) or a Gaussian mixture Σ_j a_j N(c_j, S_j) (the multi-modal reward at
its own β), p*_β = Σ π_k N(μ'_k, Σ'_k) with π_k ∝ w_k Z_k, and the normalizer
Z_β = E_{p₀}[e^{r/β}] = Σ_k w_k Z_k is exact too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scorealign.sde.mixture import GaussianMixture

_F64 = torch.float64


@dataclass(frozen=True, eq=False)
class Tilt:
    """A tilted mixture and its normalizer.

    Attributes:
        target: p*_β = p₀ e^{r/β} / Z_β as a :class:`GaussianMixture`.
        log_z: log Z_β = log E_{p₀}[e^{r(x)/β}] (float64 scalar tensor), exact.
    """

    target: GaussianMixture
    log_z: Tensor


def quadratic_exp_tilt(base: GaussianMixture, P: Tensor, h: Tensor, c0: float = 0.0) -> Tilt:
    r"""Tilt ``base`` by e^{−½xᵀPx + hᵀx + c₀} (identity 1 above, per component).

    Λ_k = Σ_k⁻¹ + P,  μ'_k = Λ_k⁻¹(Σ_k⁻¹μ_k + h),  Σ'_k = Λ_k⁻¹,  π_k ∝ w_k Z_k   [Cookbook §8.1.6]

    Args:
        base: p₀ with K components in R^D.
        P: [D, D] symmetric (r/β = −½xᵀPx + hᵀx + c₀ gives P = Q/β for r = −½xᵀQx + …).
        h: [D].
        c0: the constant of the exponent (enters log Z only).

    Returns:
        :class:`Tilt`. Raises ValueError where some Λ_k is not positive definite (e^{r/β} is not
        integrable against that component).
    """
    P = torch.as_tensor(P, dtype=_F64)
    h = torch.as_tensor(h, dtype=_F64)
    P = 0.5 * (P + P.T)
    prec = torch.linalg.inv(base.covs)  # Σ_k⁻¹ [K, D, D]
    lam = prec + P
    chol, info = torch.linalg.cholesky_ex(lam)
    if bool((info != 0).any()):
        raise ValueError("the tilt e^{r/β} is not integrable against p₀: Σ_k⁻¹ + P is not "
                         "positive definite for some component (β too small for this reward?)")
    eta = (prec @ base.means[..., None])[..., 0] + h  # η_k [K, D]
    mu = torch.cholesky_solve(eta[..., None], chol)[..., 0]  # μ'_k = Λ_k⁻¹ η_k
    cov = torch.cholesky_inverse(chol)
    logdet_lam = 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logdet_sig = torch.linalg.slogdet(base.covs)[1]
    mu0_prec_mu0 = (base.means * (prec @ base.means[..., None])[..., 0]).sum(-1)
    log_zk = 0.5 * (eta * mu).sum(-1) - 0.5 * mu0_prec_mu0 - 0.5 * logdet_sig \
        - 0.5 * logdet_lam + c0
    return _normalize(base.weights.log() + log_zk, mu, 0.5 * (cov + cov.transpose(-1, -2)))


def gaussian_log_pdf(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """log N(x; mean, cov) with broadcasting over leading dimensions (float64)."""
    chol = torch.linalg.cholesky(cov)
    diff = (x - mean)[..., None]
    z = torch.linalg.solve_triangular(chol, diff, upper=False)[..., 0]
    logdet = 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * ((z**2).sum(-1) + logdet + x.shape[-1] * math.log(2 * math.pi))


def mixture_product_tilt(base: GaussianMixture, factor: GaussianMixture,
                         factor_scale: float = 1.0) -> Tilt:
    r"""Tilt ``base`` by the (unnormalized) mixture density ``factor_scale`` · Σ_j a_j N(c_j, S_j).

    N(μ_k, Σ_k) N(c_j, S_j) = N(μ_k; c_j, Σ_k + S_j) N(C_kj(Σ_k⁻¹μ_k + S_j⁻¹c_j), C_kj),
    C_kj = (Σ_k⁻¹ + S_j⁻¹)⁻¹, so p* has the K·J components (k, j) (index k·J + j) with weights
    ∝ w_k a_j N(μ_k; c_j, Σ_k + S_j)   [Cookbook Eq. 371].

    Args:
        base: p₀, K components.
        factor: the tilt factor's mixture (weights a_j are the *normalized* ``factor.weights``).
        factor_scale: e^{r/β} = factor_scale · Σ_j a_j N(x; c_j, S_j); enters log Z only.

    Returns:
        :class:`Tilt` with K·J components.
    """
    k, j = base.weights.shape[0], factor.weights.shape[0]
    sig = base.covs[:, None].expand(k, j, -1, -1)
    s = factor.covs[None].expand(k, j, -1, -1)
    mu = base.means[:, None].expand(k, j, -1)
    c = factor.means[None].expand(k, j, -1)
    prec_sig, prec_s = torch.linalg.inv(sig), torch.linalg.inv(s)
    cov = torch.linalg.inv(prec_sig + prec_s)
    mean = (cov @ ((prec_sig @ mu[..., None]) + (prec_s @ c[..., None])))[..., 0]
    log_w = base.weights.log()[:, None] + factor.weights.log()[None] \
        + gaussian_log_pdf(mu, c, sig + s) + math.log(factor_scale)
    d = base.dim
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    return _normalize(log_w.reshape(-1), mean.reshape(-1, d), cov.reshape(-1, d, d))


def _normalize(log_w: Tensor, means: Tensor, covs: Tensor) -> Tilt:
    """Tilt from unnormalized log-weights log(w_k Z_k): log Z = logsumexp, π = softmax."""
    log_z = torch.logsumexp(log_w, 0)
    return Tilt(GaussianMixture((log_w - log_z).exp(), means, covs), log_z)
