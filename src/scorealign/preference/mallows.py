"""MallowsPO: preference optimization with a prompt-dependent dispersion index φ(x).

Chen, Zhao, Lam, Yao, Tang, "MallowsPO: Fine-Tune Your LLM with Preference Dispersions"
(arXiv:2405.14953, ICLR 2025; v1 titled Mallows-DPO). Preferences follow a Mallows ranking model
whose dispersion φ(x) ∈ (0, 1) depends on the prompt; c(x) = −log φ(x) is the neg-log dispersion.

* Mallows-θ: the DPO logit is scaled by c(x):  ℓ = −log σ(β c(x) h).
* Mallows-φ: the Bradley–Terry sigmoid is replaced by the Mallows (Kendall-τ) pairwise
  probability P_φ of keeping two items' order, evaluated at the scaled margin β h.
* Dispersion estimate (entropy proxy): c(x) = −λ log H̄(x), H̄ the reference model's mean
  next-token entropy over both completions, normalized by log |V|.

Verification status (see docs/preference.md): the paper text was not reachable here beyond its
abstract. Mallows-θ and the entropy estimator follow the authors' implementation in the RainbowPO
codebase (github.com/hanyang1999/RainbowPO, ``trl/trainer/dpo_trainer.py``: ``mallows_dpo`` loss,
``get_batch_logps(calculate_entropy=True)``). The Mallows-φ link is derived here from the Mallows
φ-model under Kendall's τ (P(adjacent pair kept) = 1/(1+φ)); its continuous extension to real
margins and the odd-symmetric extension to negative margins are this library's choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from scorealign.preference.losses import OBJECTIVES, PAIRWISE, PairLogps, ParamError, PrefLoss

_PAPER = "Chen+24 (MallowsPO), arXiv:2405.14953"

# λ of c(x) = −λ log H̄(x): ``neg_log_dispersion_mean: float = 0.29`` in both authors' configs
# (haoxian-chen/MallowsPO ``mallowsPO_config.py``; hanyang1999/RainbowPO
# ``trl/trainer/dpo_config.py``). "auto" instead picks λ so that mean c(x) = 1 over the reference
# cache (:func:`auto_dispersion_scale`), which keeps β on the DPO scale for any vocabulary.
DISPERSION_SCALE = 0.29
AUTO = "auto"


def check_dispersion_scale(value: float | str) -> None:
    """ParamError unless ``value`` is a positive number or ``"auto"``."""
    if value == AUTO:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ParamError("dispersion_scale", f"must be a number > 0 or 'auto', got {value!r}")


def auto_dispersion_scale(ref_entropy: Tensor, eps: float = 1e-8) -> float:
    r"""λ such that the mean neg-log dispersion over the data is 1.

    λ = 1 / mean_i(−log H̄(x_i)), so that mean_i c(x_i) = mean_i(−λ log H̄(x_i)) = 1.

    Args:
        ref_entropy: H̄ of every pair of the dataset (the reference cache), shape [N].
        eps: floor on H̄, as in :func:`neg_log_dispersion`.
    Returns:
        λ > 0.
    Raises:
        ValueError when every H̄ is 1 (no dispersion signal: c ≡ 0 for any λ).
    """
    c1 = float(-torch.log(ref_entropy.double().clamp(min=eps)).mean())
    if not c1 > 0:
        raise ValueError("dispersion_scale 'auto': the reference entropy is maximal on every "
                         "pair, so c(x) = 0 for any scale; give a number")
    return 1.0 / c1


def _scale(value: float | str) -> float:
    if value == AUTO:
        raise ValueError("dispersion_scale 'auto' is resolved from the reference cache by the "
                         "trainer (objectives.Objective.bind); call with a number here")
    return float(value)


def neg_log_dispersion(ref_entropy: Tensor, *, scale: float = DISPERSION_SCALE,
                       eps: float = 1e-8) -> Tensor:
    r"""Entropy proxy for the neg-log dispersion c(x) = −log φ(x).

    c(x) = −λ log H̄(x),  H̄(x) = ½ Σ_{y∈{y_w,y_l}} (1/|y|) Σ_t H(π_ref(·|x, y_<t)) / log |V|
    [Chen+24 MallowsPO, dispersion estimator §3 (eq. number not verified); authors' code:
    RainbowPO ``dpo_trainer.py`` (``- dispersion_mean * log(reference_entropy)``)]

    Args:
        ref_entropy: H̄(x) ∈ (0, 1], shape [B] (see ``logratio.SeqLogps.entropy``).
        scale: λ (``neg_log_dispersion_mean`` in the authors' code, 0.29 there and here).
        eps: floor on H̄ before the log.
    Returns:
        c(x) ≥ 0, shape [B]; larger for prompts whose completions the reference finds predictable.
    """
    return -scale * torch.log(ref_entropy.clamp(min=eps))


@PAIRWISE.register("mallows_theta", paper=_PAPER, equation="Mallows-θ-DPO (dispersion-weighted "
                   "DPO; eq. number not verified)", special_cases=(({"c": 1.0}, "sigmoid"),),
                   properties=frozenset({"per_pair_params", "log2_at_zero"}))
def mallows_theta(h: Tensor, *, beta: float, c: Tensor | float, eps: float = 0.0) -> Tensor:
    r"""Mallows-θ link: DPO with the logit scaled by the neg-log dispersion.

    ℓ(h) = −(1 − ε) log σ(β c(x) h) − ε log σ(−β c(x) h),  c(x) = −log φ(x)
    [Chen+24 MallowsPO, Mallows-θ-DPO; the label smoothing ε as in the authors' ``mallows_dpo``
    loss, haoxian-chen/MallowsPO ``mallowsPO_trainer.py``]

    Args:
        h: log-ratio margin Δ_w − Δ_l, shape [B].
        beta: β.
        c: neg-log dispersion c(x) ≥ 0, shape [B] or a scalar. c ≡ 1 is DPO.
        eps: label smoothing ε ∈ [0, 0.5) (0: none, the authors' default).
    Returns:
        per-pair loss, shape [B].
    """
    z = beta * c * h
    if eps:
        return -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    return -F.logsigmoid(z)


def mallows_pairwise_prob(d: Tensor, c: Tensor | float) -> Tensor:
    r"""Probability that a Mallows(φ, Kendall τ) ranking keeps two items d ranks apart in order.

    P_φ(d) = G(d + 1) − G(d),  G(k) = k / (1 − φ^k),  φ = e^{−c}
    (Mallows 1957; at d = 1: P = 1/(1 + φ).) Evaluated at real d ≥ 0; G(0) = 1/c by continuity.

    Args:
        d: rank gap, d ≥ 0, any shape.
        c: neg-log dispersion −log φ > 0, broadcastable to d.
    Returns:
        P_φ(d) ∈ (0, 1), same shape and dtype as d; increasing in d, → 1 as d → ∞;
        P_φ(d) = ½ + c(2d + 1)/12 + O(c³) as c → 0 (φ → 1: a coin flip).
    """
    # G is O(1/c) while P is O(1): the difference cancels catastrophically in fp32 for small c
    # (c = 1e-6 loses 0.1 in P), so it is evaluated in float64 and cast back.
    d64 = d.to(torch.float64)
    c = (c.to(torch.float64) if isinstance(c, Tensor)
         else torch.tensor(c, dtype=torch.float64, device=d.device))

    def big_g(k: Tensor) -> Tensor:
        # k / (1 − e^{−ck}) = k / (−expm1(−ck)); its k → 0 limit is 1/c.
        safe = k.clamp(min=1e-6)
        return torch.where(k > 1e-6, safe / -torch.expm1(-c * safe), 1.0 / c + 0.5 * k)

    return (big_g(d64 + 1.0) - big_g(d64)).to(d.dtype)


@PAIRWISE.register("mallows_phi", paper=_PAPER, equation="Mallows-φ-DPO (link from the Mallows "
                   "φ-model; not verified against the paper text)",
                   properties=frozenset({"per_pair_params", "decreasing_in_h"}))
def mallows_phi(h: Tensor, *, beta: float, c: Tensor | float) -> Tensor:
    r"""Mallows-φ link: −log of the Mallows pairwise probability at the scaled margin.

    ℓ(h) = −log P_φ(β h) for h ≥ 0,  −log(1 − P_φ(−β h)) for h < 0,  φ = e^{−c(x)}
    [Chen+24 MallowsPO, Mallows-φ-DPO; see module notes on what is derived here]

    Args:
        h: log-ratio margin, shape [B].
        beta: β, converting log-ratio units into a rank gap.
        c: neg-log dispersion −log φ(x) > 0, shape [B] or a scalar.
    Returns:
        per-pair loss, shape [B].
    """
    d = beta * h
    p_pos = mallows_pairwise_prob(d.clamp(min=0.0), c)
    p_neg = 1.0 - mallows_pairwise_prob((-d).clamp(min=0.0), c)
    return -torch.log(torch.where(d >= 0, p_pos, p_neg).clamp(min=1e-12))


def _dispersion(lp: PairLogps, scale: float | str, who: str) -> Tensor:
    if lp.ref_entropy is None:
        raise ValueError(f"{who} needs the reference entropy (computed when the objective is "
                         "a Mallows one; reference.mode must not be 'none')")
    return neg_log_dispersion(lp.ref_entropy, scale=_scale(scale))


@OBJECTIVES.register("mallows_theta", paper=_PAPER, equation="Mallows-θ-DPO with the entropy "
                     "dispersion estimate")
def mallows_theta_objective(lp: PairLogps, *, beta: float = 0.1,
                            dispersion_scale: float | str = DISPERSION_SCALE,
                            eps: float = 0.0) -> PrefLoss:
    r"""Mallows-θ-DPO on sequence log-probs with c(x) estimated from the reference entropy.

    L = −log σ(β c(x) h),  c(x) = −λ log H̄(x)

    Args:
        lp: pair log-probs with reference log-probs and ``ref_entropy``.
        beta: β.
        dispersion_scale: λ of :func:`neg_log_dispersion` (0.29: the authors'
            ``neg_log_dispersion_mean``, haoxian-chen/MallowsPO ``mallowsPO_config.py``), or
            "auto" (resolved by the trainer: mean c = 1 over the reference cache).
        eps: label smoothing ε of the authors' ``mallows_dpo`` loss.
    Returns:
        PrefLoss; implicit rewards β Δ = β(log π − log π_ref), as TRL and the authors log them
        (c(x) is not in the reward, so reward accuracy is the sign of h).
    """
    ref_w, ref_l = lp.require_ref("mallows_theta")
    c = _dispersion(lp, dispersion_scale, "mallows_theta")
    delta_w, delta_l = lp.logp_w - ref_w, lp.logp_l - ref_l
    losses = mallows_theta(delta_w - delta_l, beta=beta, c=c, eps=eps)
    return PrefLoss(losses, (beta * delta_w).detach(), (beta * delta_l).detach())


@OBJECTIVES.register("mallows_phi", paper=_PAPER, equation="Mallows-φ-DPO with the entropy "
                     "dispersion estimate")
def mallows_phi_objective(lp: PairLogps, *, beta: float = 0.1,
                          dispersion_scale: float | str = DISPERSION_SCALE) -> PrefLoss:
    r"""Mallows-φ-DPO on sequence log-probs with φ(x) = exp(−c(x)) from the reference entropy.

    L = −log P_{φ(x)}(β h),  −log φ(x) = c(x) = −λ log H̄(x)

    Args:
        lp: pair log-probs with reference log-probs and ``ref_entropy``.
        beta: β.
        dispersion_scale: λ of :func:`neg_log_dispersion` (0.29 or "auto", as for Mallows-θ).
    Returns:
        PrefLoss; implicit rewards β Δ.
    """
    ref_w, ref_l = lp.require_ref("mallows_phi")
    c = _dispersion(lp, dispersion_scale, "mallows_phi")
    delta_w, delta_l = lp.logp_w - ref_w, lp.logp_l - ref_l
    losses = mallows_phi(delta_w - delta_l, beta=beta, c=c.clamp(min=1e-4))
    return PrefLoss(losses, (beta * delta_w).detach(), (beta * delta_l).detach())


def sample_mallows(k: int, c: float, generator: torch.Generator) -> Tensor:
    r"""Draw a ranking of items 0..k−1 from Mallows(φ = e^{−c}, Kendall τ) centred at the identity.

    Repeated insertion: item i (i = 0..k−1, in central order) is inserted at position j ∈ {0..i}
    with probability ∝ φ^{i−j}, which gives P(π) ∝ φ^{d_K(π, id)}.

    Args:
        k: number of items.
        c: neg-log dispersion −log φ ≥ 0 (c = 0: uniform; c → ∞: the centre).
        generator: explicit RNG.
    Returns:
        long tensor [k]: items from best (index 0) to worst.
    """
    order: list[int] = []
    for i in range(k):
        w = torch.exp(-c * torch.arange(i, -1, -1, dtype=torch.float64))  # φ^{i−j}, j = 0..i
        j = int(torch.multinomial(w, 1, generator=generator))
        order.insert(j, i)
    return torch.tensor(order, dtype=torch.long)
