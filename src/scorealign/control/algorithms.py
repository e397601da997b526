"""Policy updates: CT policy gradient, CT-TRPO, CT-PPO and the discrete-time PG/PPO baselines.

Continuous time [Zhao+23 CTPO, arXiv:2305.18901]. With the soft advantage A = q^π − γ log π and
the occupation measure d^π of the current policy π, the local approximation of V^{π'} is

    L^π(π') = V^π + ∫ d^π(dy) E_{a∼π'}[q^π(y, a) − γ log π'(a|y)]
            = V^π + ∫ d^π(dy) { E_{a∼π}[ρ A] − γ KL(π'‖π)(y) },   ρ = π'(a|y)/π(a|y),

(the second line is an identity we use because it keeps the entropy term analytic). It agrees
with V^{π'} to first order at π' = π, so ∇_θ L at θ' = θ is the CT policy gradient
∇V^{π_θ} = ∫ d^{π_θ}(dy) ∫ ∇ log π_θ (q − γ log π_θ) π_θ da. CT-TRPO maximizes L subject to
a KL trust region averaged under d^π; CT-PPO replaces ρA by the clipped min(ρA, clip(ρ)A)
(``ct_ppo``) or subtracts an adaptive C·E_{d^π}√KL penalty (``ct_ppo_penalty``).

Notes:
    Only the abstract of [Zhao+23 CTPO] was retrievable here (arXiv 2305.18901, NeurIPS 2023), so
    the theorem and equation numbers could not be checked and are not cited; the formulas are
    cited by name (performance-difference formula, local approximation, policy gradient) and
    were re-derived from the Feynman–Kac equation. They are verified in closed form on LQ
    (tests/control/test_control_lq.py: the performance-difference identity holds to 1e-10,
    the local approximation is second order) and the gradient estimator against finite
    differences (tests/control/test_control_gradient.py). The paper's CT-PPO may use an adaptive
    √KL penalty rather than clipping (a third-party reimplementation, sebale16/ct-rl
    ``algorithms/cppo.py``, does): ``ct_ppo`` clips the ratio in the local approximation,
    ``ct_ppo_penalty`` is the adaptive-penalty form.

Every update has the signature ``fn(policy, optimizer, batch, generator, **hparams) -> metrics``
and is registered in :data:`ALGOS` with ``properties`` ``{"continuous_time"}`` or
``{"discrete_time"}`` (which batch builder the trainer uses).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorealign.control.estimators import PolicyBatch
from scorealign.control.policy import GaussianPolicy, gaussian_kl
from scorealign.registry import Registry
from scorealign.ct import clipped_surrogate

ALGOS = Registry("control algorithm")
_CT, _DT = frozenset({"continuous_time"}), frozenset({"discrete_time"})
_PAPER = "Zhao+23 CTPO, arXiv:2305.18901"


def ct_local_approximation(logp: Tensor, logp_old: Tensor, adv: Tensor, kl: Tensor,
                           weight: Tensor, gamma: float, clip: float | None = None) -> Tensor:
    """L^π(π') − V^π = Σ_rows w [ρA − γ KL(π'‖π)]  (clipped: min(ρA, clip(ρ, 1±ε)A)).

    [Zhao+23 CTPO, local approximation; PPO clipping as in Schulman+17 Eq. 7]. ``weight``
    integrates against d^π (Σ w ≈ 1/β) so the result is in value units. Shapes [R]; scalar out.
    """
    surr = clipped_surrogate(torch.exp(logp - logp_old), adv, clip)  # shared: rl/ct.py
    return (weight * (surr - gamma * kl)).sum()


def _policy_terms(policy: GaussianPolicy, b: PolicyBatch) -> tuple[Tensor, Tensor]:
    return policy.log_prob(b.x, b.a), policy.kl_from(b.x, b.mean_old, b.log_std_old)


def _mean_kl(policy: GaussianPolicy, b: PolicyBatch) -> Tensor:
    """E_{y∼d̄^π} KL(π‖π')(y) under the normalized weights (the trust-region quantity)."""
    kl = gaussian_kl(b.mean_old, b.log_std_old.expand_as(b.mean_old), policy.mean(b.x),
                     policy.log_std.expand_as(b.mean_old))
    return (b.weight * kl).sum() / b.weight.sum()


def _kl_value(policy: GaussianPolicy, b: PolicyBatch) -> float:
    with torch.no_grad():
        return float(_mean_kl(policy, b))


@ALGOS.register("ct_pg", paper=_PAPER, equation="CT policy gradient (∇V = ∫d^π∫∇logπ(q−γlogπ)π)",
                properties=_CT)
def ct_pg(policy: GaussianPolicy, optimizer, batch: PolicyBatch, generator: torch.Generator,
          *, steps: int = 1) -> dict[str, float]:
    """CT policy gradient ascent: ``steps`` optimizer steps on −L^π(π_θ) (gradient = ∇V at θ)."""
    for _ in range(steps):
        logp, kl = _policy_terms(policy, batch)
        obj = ct_local_approximation(logp, batch.logp_old, batch.adv, kl, batch.weight, batch.gamma)
        optimizer.zero_grad()
        (-obj).backward()
        optimizer.step()
    return {"loss/surrogate": float(obj.detach()), "policy/kl": _kl_value(policy, batch)}


@ALGOS.register("ct_ppo", paper=_PAPER, equation="CT-PPO: clipped local approximation",
                properties=_CT)
def ct_ppo(policy: GaussianPolicy, optimizer, batch: PolicyBatch, generator: torch.Generator,
           *, clip: float = 0.2, epochs: int = 10) -> dict[str, float]:
    """CT-PPO: ``epochs`` full-batch steps on −[Σ w min(ρA, clip(ρ)A) − γ Σ w KL(π'‖π)]."""
    for _ in range(epochs):
        logp, kl = _policy_terms(policy, batch)
        obj = ct_local_approximation(logp, batch.logp_old, batch.adv, kl, batch.weight,
                                     batch.gamma, clip)
        optimizer.zero_grad()
        (-obj).backward()
        optimizer.step()
    with torch.no_grad():
        ratio = torch.exp(policy.log_prob(batch.x, batch.a) - batch.logp_old)
        clipfrac = float(((ratio - 1).abs() > clip).to(ratio.dtype).mean())
    return {"loss/surrogate": float(obj.detach()), "policy/kl": _kl_value(policy, batch),
            "policy/clipfrac": clipfrac}


KL_DIRECTIONS = ("new_old", "old_new")
SQRT_ORDERS = ("mean_of_sqrt", "sqrt_of_mean")


def state_kl(policy: GaussianPolicy, b: PolicyBatch, direction: str = "new_old") -> Tensor:
    """Per-row KL between the new policy π' = π_θ and the old π at X_n, [R].

    ``new_old``: KL(π'‖π) (the entropy term of the local approximation); ``old_new``: KL(π‖π')
    (the direction of the TRPO trust region, :func:`_mean_kl`).
    """
    if direction == "new_old":
        return policy.kl_from(b.x, b.mean_old, b.log_std_old)
    if direction == "old_new":
        return gaussian_kl(b.mean_old, b.log_std_old.expand_as(b.mean_old), policy.mean(b.x),
                           policy.log_std.expand_as(b.mean_old))
    raise ValueError(f"kl_direction must be one of {KL_DIRECTIONS}, got {direction!r}")


def sqrt_kl_penalty(kl: Tensor, weight: Tensor, order: str = "mean_of_sqrt",
                    eps: float = 1e-12) -> Tensor:
    """The √KL term of the penalized local approximation, in value units (scalar).

    ``mean_of_sqrt``: Σ_n w_n √KL_n = ∫ d^π(dy) √KL(y);  ``sqrt_of_mean``: (Σ w) · √(Σ w̄_n KL_n)
    = (1/β)·√(E_{βd^π} KL), w̄ = w/Σw. The two agree when KL is the same at every state, and
    mean_of_sqrt ≤ sqrt_of_mean always (Jensen). The floor ``eps`` keeps √ differentiable at 0.
    """
    kl = kl.clamp_min(0.0)
    if order == "mean_of_sqrt":
        return (weight * torch.sqrt(kl + eps)).sum()
    if order == "sqrt_of_mean":
        total = weight.sum()
        return total * torch.sqrt((weight * kl).sum() / total + eps)
    raise ValueError(f"sqrt_order must be one of {SQRT_ORDERS}, got {order!r}")


@ALGOS.register("ct_ppo_penalty", paper=_PAPER + "; penalty form as read by sebale16/ct-rl",
                equation="CT-PPO: max L^π(π') − C E_{d^π}√KL(π'‖π), C adapted to a target δ",
                properties=_CT | {"stateful"})
def ct_ppo_penalty(policy: GaussianPolicy, optimizer, batch: PolicyBatch,
                   generator: torch.Generator, *, state: dict, target_sqrt_kl: float = 0.1,
                   coef_init: float = 1.0, coef_factor: float = 1.5, tolerance: float = 0.1,
                   epochs: int = 10, kl_direction: str = "new_old",
                   sqrt_order: str = "mean_of_sqrt") -> dict[str, float]:
    """CT-PPO with an adaptive √KL penalty on the local approximation.

    ``epochs`` full-batch steps on −[Σ w (ρA − γ KL(π'‖π)) − C·P], with the penalty P of
    :func:`sqrt_kl_penalty`: by default (``kl_direction="new_old"``,
    ``sqrt_order="mean_of_sqrt"``) P = Σ w √KL(π'‖π) = ∫ d^π(dy) √KL(π'‖π)(y), the KL of the
    *new* policy from the old one, square root taken *per state* and then averaged under d^π.
    The alternatives: ``kl_direction="old_new"`` uses KL(π‖π'), ``sqrt_order="sqrt_of_mean"``
    uses (1/β)√(E_{βd^π} KL). [Zhao+23 CTPO: the performance difference is bounded below by L
    minus a √KL term; which direction and order the paper's bound has could not be read here
    (only the abstract was retrievable). The third-party sebale16/ct-rl ``algorithms/cppo.py``
    *writes* E_x √KL(π'‖π) (our default) in its docstring but *computes* √(mean(log π_old −
    log π_new)), a sample estimate of √E KL(π‖π'): ``kl_direction="old_new",
    sqrt_order="sqrt_of_mean"`` here.] After the epochs, D = the normalized statistic
    (P with w̄ = w/Σw) is compared with δ = ``target_sqrt_kl``: C is multiplied by
    ``coef_factor`` when D > (1 + tol)δ and divided by it when D < (1 − tol)δ.

    ``state`` is the trainer's per-run dict (checkpointed): it carries C between iterations.
    """
    if kl_direction not in KL_DIRECTIONS:
        raise ValueError(f"kl_direction must be one of {KL_DIRECTIONS}, got {kl_direction!r}")
    if sqrt_order not in SQRT_ORDERS:
        raise ValueError(f"sqrt_order must be one of {SQRT_ORDERS}, got {sqrt_order!r}")
    coef = float(state.get("kl_coef", coef_init))
    norm = batch.weight / batch.weight.sum()
    for _ in range(epochs):
        logp, kl = _policy_terms(policy, batch)
        obj = ct_local_approximation(logp, batch.logp_old, batch.adv, kl, batch.weight,
                                     batch.gamma)
        penalty = sqrt_kl_penalty(state_kl(policy, batch, kl_direction), batch.weight,
                                  sqrt_order)
        optimizer.zero_grad()
        (coef * penalty - obj).backward()
        optimizer.step()
    with torch.no_grad():
        d = float(sqrt_kl_penalty(state_kl(policy, batch, kl_direction), norm, sqrt_order, 0.0))
    if d > (1 + tolerance) * target_sqrt_kl:
        state["kl_coef"] = coef * coef_factor
    elif d < (1 - tolerance) * target_sqrt_kl:
        state["kl_coef"] = coef / coef_factor
    else:
        state["kl_coef"] = coef
    return {"loss/surrogate": float(obj.detach()), "policy/kl": _kl_value(policy, batch),
            "policy/sqrt_kl": d, "penalty/coef": coef}


def conjugate_gradient(Avp, b: Tensor, iters: int = 10, tol: float = 1e-12) -> Tensor:
    """Solve A x = b for symmetric positive-definite A given only x ↦ A x.

    [Nocedal & Wright, Alg. 5.2]
    """
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = r @ r
        if rr_new < tol:
            break
        p, rr = r + (rr_new / rr) * p, rr_new
    return x


def _flat(ts) -> Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def _set_flat(policy: GaussianPolicy, flat: Tensor) -> None:
    i = 0
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(flat[i:i + p.numel()].view_as(p))
            i += p.numel()


@ALGOS.register("ct_trpo", paper=_PAPER, equation="CT-TRPO: max L^π(π') s.t. E_{d^π}KL ≤ δ",
                properties=_CT)
def ct_trpo(policy: GaussianPolicy, optimizer, batch: PolicyBatch, generator: torch.Generator,
            *, max_kl: float = 0.01, cg_iters: int = 10, damping: float = 1e-3,
            backtracks: int = 10) -> dict[str, float]:
    """CT-TRPO: natural-gradient step on L^π of KL size δ, then backtracking line search.

    Step s = √(2δ / gᵀF⁻¹g) F⁻¹g with F the Hessian of the d^π-averaged KL [Schulman+15 TRPO,
    App. C]; accept the largest 2^{−j}s that improves L and keeps the mean KL ≤ δ.
    """
    params = list(policy.parameters())

    def surrogate() -> Tensor:
        logp, kl = _policy_terms(policy, batch)
        return ct_local_approximation(logp, batch.logp_old, batch.adv, kl, batch.weight,
                                      batch.gamma)

    obj0 = surrogate()
    g = _flat(torch.autograd.grad(obj0, params))
    obj0 = float(obj0.detach())
    grad_kl = _flat(torch.autograd.grad(_mean_kl(policy, batch), params, create_graph=True))

    def fvp(v: Tensor) -> Tensor:
        return _flat(torch.autograd.grad(grad_kl @ v, params, retain_graph=True)) + damping * v

    step = conjugate_gradient(fvp, g, cg_iters)
    full = step * torch.sqrt(2 * max_kl / (step @ fvp(step)).clamp_min(1e-300))
    theta0 = _flat(params).detach()
    for j in range(backtracks):
        _set_flat(policy, theta0 + 0.5**j * full)
        with torch.no_grad():
            obj, kl = float(surrogate()), float(_mean_kl(policy, batch))
        if obj > obj0 and kl <= max_kl:  # L^π(π') − L^π(π) > 0 inside the trust region
            return {"loss/surrogate": obj, "trpo/improvement": obj - obj0, "policy/kl": kl,
                    "trpo/backtracks": j}
    _set_flat(policy, theta0)
    return {"loss/surrogate": obj0, "trpo/improvement": 0.0, "policy/kl": 0.0,
            "trpo/backtracks": backtracks}


@ALGOS.register("dt_pg", paper="Williams 92 REINFORCE; Schulman+16 GAE",
                equation="∇J = E Σ_n ∇log π(a_n|x_n) Â_n", properties=_DT)
def dt_pg(policy: GaussianPolicy, optimizer, batch: PolicyBatch, generator: torch.Generator,
          *, steps: int = 1) -> dict[str, float]:
    """Discrete-time PG: ``steps`` optimizer steps on −mean_rows log π(a|x) Â (Â normalized)."""
    for _ in range(steps):
        loss = -(batch.weight * policy.log_prob(batch.x, batch.a) * batch.adv).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"loss/surrogate": -float(loss.detach()), "policy/kl": _kl_value(policy, batch)}


@ALGOS.register("dt_ppo", paper="Schulman+17 PPO, arXiv:1707.06347", equation="Eq. 7 (clip)",
                properties=_DT)
def dt_ppo(policy: GaussianPolicy, optimizer, batch: PolicyBatch, generator: torch.Generator,
           *, clip: float = 0.2, epochs: int = 10, minibatches: int = 4) -> dict[str, float]:
    """Discrete-time PPO-clip over per-step ratios, ``epochs`` × ``minibatches`` shuffled steps."""
    R = batch.x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(R, generator=generator)
        for idx in perm.chunk(minibatches):
            ratio = torch.exp(policy.log_prob(batch.x[idx], batch.a[idx]) - batch.logp_old[idx])
            adv = batch.adv[idx]
            surr = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
            loss = -surr.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        ratio = torch.exp(policy.log_prob(batch.x, batch.a) - batch.logp_old)
        clipfrac = float(((ratio - 1).abs() > clip).to(ratio.dtype).mean())
    return {"loss/surrogate": -float(loss.detach()), "policy/kl": _kl_value(policy, batch),
            "policy/clipfrac": clipfrac}
