r"""Alignment problems whose optimum is known: base mixture p₀, reward r, regularization β.

The KL-regularized objective max_q E_q[r] − β KL(q‖p₀) is solved by the Gibbs tilt
p*_β = p₀ e^{r/β} / Z_β [Donsker & Varadhan 75; Rafailov+23 (DPO), arXiv:2305.18290, Eq. 4], and
log p*_β/p₀ = r/β − log Z_β gives

    KL(p*_β ‖ p₀) = E_{p*}[r]/β − log Z_β,

exact whenever E_{p*}[r] is (linear and quadratic rewards, for any mixture p₀; the multi-modal
reward uses a fixed-seed Monte Carlo E_{p*}[r], see ``rewards``). Sweeping β traces the optimal
reward–KL frontier R*(κ) = max{E_q[r] : KL(q‖p₀) ≤ κ}: E_{p*}[r] and KL both fall as β grows
(d E[r]/d(1/β) = Var_{p*}(r) ≥ 0) and KL → 0 as β → ∞.

Optimal fine-tuned score. Under a memoryless schedule (VP run to full noise and sampled with the
η = 1 reverse SDE / DDPM; the memoryless SDE of a flow [Domingo-Enrich+24 (adjoint matching),
arXiv:2409.08861, Thm. 1]) the KL-regularized optimum of the path problem reweights the base
paths by e^{r(x₀)/β}, so its time marginals are the forward-noised p*_β and the optimal score is
∇log p*_t, exact for a mixture (``GaussianMixture.score`` of the tilted mixture), and the optimal
flow velocity is E[ε − x₀ | x_t] under p*_β (``GaussianMixture.pred_fn(sde, "v")``).
Memorylessness holds up to m(T) (VP default: e^{−5.03} ≈ 0.0066). For samplers that are not
memoryless (DDIM η < 1, a flow ODE plus exploration noise) the optimum of the path problem is not
p*_β in general; what one can still measure there is the terminal law's distance to p*_β and its
point against the frontier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import torch
from torch import Tensor

from scorealign.registry import Registry
from scorealign.rng import generator as seeded
from scorealign.sde.base import SDE
from scorealign.sde.mixture import GaussianMixture
from scorealign.testbed.rewards import MixtureLogReward, QuadraticReward, Reward

_F64 = torch.float64
PROBLEMS = Registry("testbed problem")
DIMS = (2, 8, 32)


@dataclass(frozen=True, eq=False)
class Problem:
    """(p₀, r, β) with its exact optimum p*_β (``target``) and normalizer log Z_β (``log_z``)."""

    base: GaussianMixture
    reward: Reward
    beta: float
    name: str = ""

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"β must be > 0; got {self.beta}")
        tilt = self.reward.tilt(self.base, self.beta)
        object.__setattr__(self, "target", tilt.target)
        object.__setattr__(self, "log_z", tilt.log_z)

    target: GaussianMixture = field(init=False, repr=False)  # p*_β, set in __post_init__
    log_z: Tensor = field(init=False, repr=False)  # log Z_β = log E_{p₀}[e^{r/β}]

    @property
    def dim(self) -> int:
        """D."""
        return self.base.dim

    def at(self, beta: float) -> "Problem":
        """The same base and reward at another β."""
        return Problem(self.base, self.reward, beta, self.name)

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
               ) -> Tensor:
        """n exact samples of p*_β, [n, D]."""
        return self.target.sample(n, generator, dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p*_β(x) [B] (≥ fp32; float64 for float64 x)."""
        return self.target.log_prob(x)

    @cached_property
    def _expected_reward(self) -> float:
        return self.reward.mean_under(self.target)

    def expected_reward(self) -> float:
        """E_{p*_β}[r]: exact, or fixed-seed Monte Carlo where ``reward.exact`` is False."""
        return self._expected_reward

    def base_reward(self) -> float:
        """E_{p₀}[r] (the frontier at KL = 0)."""
        return self.reward.mean_under(self.base)

    def kl(self) -> float:
        """KL(p*_β ‖ p₀) = E_{p*}[r]/β − log Z_β (exact where E_{p*}[r] is)."""
        return self.expected_reward() / self.beta - float(self.log_z)

    def optimal_score(self, x: Tensor, t: Tensor, sde: SDE) -> Tensor:
        """∇log p*_t(x), p*_t = p*_β forward-noised by ``sde``; [B, D], x.dtype."""
        return self.target.score(x, t, sde)

    def optimal_pred_fn(self, sde: SDE, kind: str = "score") -> Callable[[Tensor, Tensor], Tensor]:
        """The optimal fine-tuned model as ``pred_fn(x, t)`` of ``kind`` ("v": flow velocity)."""
        return self.target.pred_fn(sde, kind)

    def base_pred_fn(self, sde: SDE, kind: str = "score") -> Callable[[Tensor, Tensor], Tensor]:
        """The exact base model (∇log p₀_t, or its ``kind``) as ``pred_fn(x, t)``."""
        return self.base.pred_fn(sde, kind)


# -- named presets -------------------------------------------------------------------------
def base_mixture(d: int) -> GaussianMixture:
    """The preset p₀ in R^d, d ∈ {2, 8, 32}.

    d = 2: 8 equal components N(μ_k, 0.3² I) on a circle of radius 2. d ∈ {8, 32}: 4 components
    with means ±2 e₁, ±2 e₂, weights (0.4, 0.3, 0.2, 0.1) and full covariances R diag(σ²) Rᵀ
    (σ from 0.3 to 0.8 across axes, R a fixed random rotation per component, seed ("testbed", d)).
    """
    if d not in DIMS:
        raise ValueError(f"testbed dimensions are {DIMS}; got d={d}")
    if d == 2:
        return GaussianMixture.ring(8, 2.0, 0.3)
    gen = seeded("testbed", "base", d)
    means = torch.zeros(4, d, dtype=_F64)
    means[0, 0], means[1, 0], means[2, 1], means[3, 1] = 2.0, -2.0, 2.0, -2.0
    sig = torch.linspace(0.3, 0.8, d, dtype=_F64)
    rot = torch.linalg.qr(torch.randn(4, d, d, generator=gen, dtype=_F64))[0]
    covs = rot @ torch.diag_embed(sig**2).expand(4, -1, -1) @ rot.transpose(-1, -2)
    return GaussianMixture(torch.tensor([0.4, 0.3, 0.2, 0.1]), means, 0.5 * (covs + covs.mT))


def _axis(d: int, *coords: float) -> Tensor:
    v = torch.zeros(d, dtype=_F64)
    v[: len(coords)] = torch.tensor(coords, dtype=_F64)
    return v


_GIBBS = "Gibbs tilt p₀e^{r/β}/Z [Rafailov+23 (DPO), arXiv:2305.18290]"


@PROBLEMS.register("linear", paper=_GIBBS, equation="Eq. 4; testbed/tilt.py identity 1")
def linear_problem(d: int = 2, beta: float = 1.0) -> Problem:
    """r(x) = bᵀx, b = (1, 1, 0, …)/√2 (every β)."""
    b = _axis(d, 1.0, 1.0) / 2**0.5
    return Problem(base_mixture(d), QuadraticReward.linear(b), beta, "linear")


@PROBLEMS.register("quadratic", paper=_GIBBS, equation="Eq. 4; testbed/tilt.py identity 1")
def quadratic_problem(d: int = 2, beta: float = 1.0) -> Problem:
    """r(x) = −½‖x − c‖², c = (1.5, 1.5, 0, …) (every β)."""
    reward = QuadraticReward.quadratic(torch.eye(d, dtype=_F64), _axis(d, 1.5, 1.5))
    return Problem(base_mixture(d), reward, beta, "quadratic")


@PROBLEMS.register("multimodal", paper=_GIBBS, equation="Eq. 4; testbed/tilt.py identity 2")
def multimodal_problem(d: int = 2, beta: float = 1.0) -> Problem:
    """r(x) = β log(½N(x; c₁, 0.5² I) + ½N(x; c₂, 0.5² I)), c₁,₂ = (±1.5, 1.5, 0, …); only β₀."""
    bumps = GaussianMixture.isotropic([0.5, 0.5], [_axis(d, 1.5, 1.5).tolist(),
                                                   _axis(d, -1.5, 1.5).tolist()], 0.5)
    return Problem(base_mixture(d), MixtureLogReward(bumps, beta), beta, "multimodal")


def make_problem(name: str, d: int = 2, beta: float = 1.0) -> Problem:
    """The registered preset ``name`` in dimension d at β (KeyError lists the names)."""
    return PROBLEMS.get(name).fn(d=d, beta=beta)
