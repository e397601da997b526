"""Pairwise preference losses of the log-ratio margin h, and the LM objectives built on them.

Two layers, both pure functions of tensors:

* ``PAIRWISE`` links ``ℓ(h; β, …) -> [B]`` take the *unscaled* log-ratio margin

      h = Δ_w − Δ_l,   Δ = log π_θ(y|x) − log π_ref(y|x),

  whatever produced Δ: summed token log-probs of a causal LM (``logratio.py``) or, later, the
  denoising-error surrogate of a diffusion model (Diffusion-DPO). β is applied inside the link.
* ``OBJECTIVES`` map sequence log-probs of a batch of pairs (:class:`PairLogps`) to per-pair losses
  and implicit rewards (:class:`PrefLoss`): the DPO family (any ``PAIRWISE`` link), SimPO, ORPO;
  KTO (unpaired) has its own input. RainbowPO and Mallows objectives register from
  ``components.py`` and ``mallows.py``; ``objectives.resolve`` finds any of them by name.

Reductions: every function returns per-pair values ``[B]``; the batch mean is the trainer's. Token
reductions (sum vs length-normalized mean) are decided by the objective and named in its signature.
All inputs are expected in fp32.
"""

from __future__ import annotations

from scorealign.errors import ScorealignError

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from scorealign.registry import Registry

PAIRWISE = Registry("pairwise loss")
OBJECTIVES = Registry("preference objective")


class ParamError(ScorealignError, ValueError):
    """An invalid objective parameter or combination; ``param`` names the offending parameter."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


def link_takes(link: str, param: str) -> bool:
    """Whether the ``PAIRWISE`` link ``link`` has the keyword parameter ``param`` (e.g. eps)."""
    import inspect

    return param in inspect.signature(PAIRWISE.get(link).fn).parameters


# ----------------------------------------------------------------------------------------------
# Links ℓ(h): pure functions of the log-ratio margin.
# ----------------------------------------------------------------------------------------------


@PAIRWISE.register("sigmoid", paper="Rafailov+23 (DPO), arXiv:2305.18290", equation="Eq. 7",
                   properties=frozenset({"log2_at_zero", "decreasing_in_h"}))
def dpo_sigmoid(h: Tensor, *, beta: float) -> Tensor:
    r"""DPO logistic (Bradley–Terry) loss.

    ℓ(h) = −log σ(β h)   [Rafailov+23 DPO, Eq. 7]

    Args:
        h: log-ratio margin Δ_w − Δ_l, shape [B].
        beta: KL-regularization strength β.
    Returns:
        per-pair loss, shape [B]; log 2 at h = 0 (policy = reference).
    """
    return -F.logsigmoid(beta * h)


@PAIRWISE.register("ipo", paper="Azar+23 (IPO), arXiv:2310.12036", equation="Eq. 17",
                   properties=frozenset({"zero_at_h_target"}))
def ipo(h: Tensor, *, beta: float) -> Tensor:
    r"""IPO square loss in the authors' scaled form: the scaled margin regressed onto ½.

    ℓ(h) = (β h − ½)² = β² (h − 1/(2β))²,  β = τ in the paper   [Azar+23 IPO, Eq. 17]

    One convention for the scale (docs/preference.md, "Conventions"): the loss is a function of the
    scaled margin β h, like every other link, as in the RainbowPO and MallowsPO authors' code
    (hanyang1999/RainbowPO ``trl/trainer/dpo_trainer.py``: ``(self.beta * logits - 1 / 2) ** 2``;
    haoxian-chen/MallowsPO ``mallowsPO_trainer.py``, same line). TRL's ``loss_type="ipo"`` and the
    paper's Eq. 17 are (h − 1/(2β))² = this / β².

    Args:
        h: log-ratio margin Δ_w − Δ_l on the *unscaled* log-ratios, shape [B].
        beta: regularization τ.
    Returns:
        per-pair loss, shape [B]; ¼ at h = 0, 0 at h = 1/(2β).

    Notes:
        The paper uses summed sequence log-probs. TRL length-normalizes IPO's log-probs by default;
        here that is a caller's choice (``rainbowpo(length_normalization=True, link="ipo")``).
    """
    return (beta * h - 0.5) ** 2


@PAIRWISE.register("hinge", paper="Zhao+23 (SLiC-HF), arXiv:2305.10425; Liu+23 (RSO), "
                   "arXiv:2309.06657", equation="SLiC-HF calibration loss (eq. number not verified)",
                   properties=frozenset({"zero_beyond_margin"}))
def hinge(h: Tensor, *, beta: float) -> Tensor:
    r"""SLiC / RSO hinge loss on the scaled margin.

    ℓ(h) = max(0, 1 − β h)   [Zhao+23 SLiC-HF; Liu+23 RSO hinge-norm]

    Args:
        h: log-ratio margin, shape [B].
        beta: scale β (the margin δ of SLiC is 1/β in log-ratio units).
    Returns:
        per-pair loss, shape [B].
    """
    return torch.relu(1.0 - beta * h)


@PAIRWISE.register("cdpo", paper="Mitchell 23 (cDPO note, 'A note on DPO with noisy preferences')",
                   equation="label-smoothed DPO (no numbered equation)",
                   special_cases=(({"eps": 0.0}, "sigmoid"),))
def cdpo(h: Tensor, *, beta: float, eps: float = 0.0) -> Tensor:
    r"""Conservative DPO: DPO with label smoothing ε (labels flipped with probability ε).

    ℓ(h) = (1 − ε)(−log σ(β h)) + ε(−log σ(−β h))

    Args:
        h: log-ratio margin, shape [B].
        beta: β.
        eps: label-flip probability ε ∈ [0, 0.5).
    Returns:
        per-pair loss, shape [B].
    """
    return -(1.0 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)


@PAIRWISE.register("robust", paper="Chowdhury+24 (rDPO), arXiv:2403.00409",
                   equation="unbiased noisy-label loss (eq. number not verified)",
                   special_cases=(({"eps": 0.0}, "sigmoid"),))
def robust(h: Tensor, *, beta: float, eps: float = 0.0) -> Tensor:
    r"""Robust DPO: the unbiased estimator of the clean-label DPO loss under flip rate ε.

    ℓ(h) = [(1 − ε)(−log σ(β h)) − ε(−log σ(−β h))] / (1 − 2ε)   [Chowdhury+24 rDPO]

    Args:
        h: log-ratio margin, shape [B].
        beta: β.
        eps: label-flip rate ε ∈ [0, 0.5).
    Returns:
        per-pair loss, shape [B] (can be negative for ε > 0, as in the paper).
    """
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"robust DPO needs 0 <= eps < 0.5, got {eps}")
    return ((1.0 - eps) * -F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1.0 - 2 * eps)


# ----------------------------------------------------------------------------------------------
# Objectives: sequence log-probs of pairs → per-pair losses and implicit rewards.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairLogps:
    """Sequence log-probs of a batch of preference pairs (fp32, shape [B] each).

    ``logp_*`` are *sums* over completion tokens of log π(y_t | x, y_<t); ``len_*`` the numbers of
    completion tokens. ``ref_*`` are None for reference-free objectives. ``ref_entropy`` is the
    reference's mean next-token entropy on the pair, normalized by log |V| (Mallows dispersion).
    """

    logp_w: Tensor
    logp_l: Tensor
    len_w: Tensor
    len_l: Tensor
    ref_logp_w: Tensor | None = None
    ref_logp_l: Tensor | None = None
    ref_entropy: Tensor | None = None

    def require_ref(self, who: str) -> tuple[Tensor, Tensor]:
        """(ref_logp_w, ref_logp_l), or a ValueError naming the objective that needs them."""
        if self.ref_logp_w is None or self.ref_logp_l is None:
            raise ValueError(f"{who} needs reference log-probs (reference.mode must not be 'none')")
        return self.ref_logp_w, self.ref_logp_l


@dataclass(frozen=True)
class PrefLoss:
    """Per-pair losses and the implicit rewards of chosen (w) and rejected (l), shape [B]."""

    losses: Tensor
    reward_w: Tensor
    reward_l: Tensor


def dpo_family(lp: PairLogps, *, link: str = "sigmoid", beta: float = 0.1, **link_kw: float) -> PrefLoss:
    r"""A DPO-family objective: a ``PAIRWISE`` link of the summed-token log-ratio margin.

    h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)];  L = ℓ_link(h; β)
    implicit reward r(x, y) = β (log π_θ(y|x) − log π_ref(y|x))   [Rafailov+23 DPO, Eq. 5, 7]

    Args:
        lp: pair log-probs with reference log-probs.
        link: a ``PAIRWISE`` name (sigmoid, ipo, hinge, cdpo, robust).
        beta: β.
        **link_kw: extra link parameters (``eps`` for cdpo/robust).
    Returns:
        PrefLoss with losses [B] and detached implicit rewards [B].
    """
    ref_w, ref_l = lp.require_ref(f"loss {link!r}")
    delta_w, delta_l = lp.logp_w - ref_w, lp.logp_l - ref_l
    losses = PAIRWISE.get(link).fn(delta_w - delta_l, beta=beta, **link_kw)
    return PrefLoss(losses, (beta * delta_w).detach(), (beta * delta_l).detach())


@OBJECTIVES.register("simpo", paper="Meng+24 (SimPO), arXiv:2405.14734", equation="Eq. 6")
def simpo(lp: PairLogps, *, beta: float = 2.0, gamma: float = 0.5) -> PrefLoss:
    r"""SimPO: reference-free, length-normalized logistic loss with a target margin γ.

    L = −log σ(β/|y_w| log π_θ(y_w|x) − β/|y_l| log π_θ(y_l|x) − γ)   [Meng+24 SimPO, Eq. 6]

    Args:
        lp: pair log-probs (reference not used).
        beta: β, scale of the length-normalized reward.
        gamma: target reward margin γ (in reward units, i.e. already multiplied by β).
    Returns:
        PrefLoss; implicit reward r = β/|y| log π_θ(y|x).
    """
    r_w = beta * lp.logp_w / lp.len_w
    r_l = beta * lp.logp_l / lp.len_l
    return PrefLoss(-F.logsigmoid(r_w - r_l - gamma), r_w.detach(), r_l.detach())


@OBJECTIVES.register("orpo", paper="Hong+24 (ORPO), arXiv:2403.07691", equation="Eq. 6-7")
def orpo(lp: PairLogps, *, lam: float = 0.1) -> PrefLoss:
    r"""ORPO: SFT on y_w plus a log-odds-ratio penalty, no reference model.

    L = −(1/|y_w|) log π_θ(y_w|x) − λ log σ(log odds(y_w) − log odds(y_l)),
    odds(y) = p/(1 − p),  p = exp((1/|y|) log π_θ(y|x))   [Hong+24 ORPO, Eq. 6-7]

    The odds-ratio term equals TRL's ``ORPOTrainer`` (``beta`` = λ) to fp32 rounding
    (benchmarks/dpo_vs_trl). TRL's SFT term differs by definition: one token mean over the prompt
    *and* chosen tokens of the whole batch; here it is each pair's mean over its completion
    tokens (the paper's Eq. 6), then the batch mean.

    Args:
        lp: pair log-probs (reference not used).
        lam: weight λ of the odds-ratio term.
    Returns:
        PrefLoss; implicit reward r = (1/|y|) log π_θ(y|x) (reported scaled by λ, as TRL does).
    """
    a_w, a_l = lp.logp_w / lp.len_w, lp.logp_l / lp.len_l
    # log odds = log p − log(1 − p), with p = exp(a) < 1; log1p(−exp(a)) is exact near a → 0⁻.
    log_odds = (a_w - a_l) - (torch.log1p(-torch.exp(a_w)) - torch.log1p(-torch.exp(a_l)))
    losses = -a_w - lam * F.logsigmoid(log_odds)
    return PrefLoss(losses, (lam * a_w).detach(), (lam * a_l).detach())


def kto(logp: Tensor, ref_logp: Tensor, desirable: Tensor, *, z0: Tensor, beta: float = 0.1,
        lambda_d: float = 1.0, lambda_u: float = 1.0) -> tuple[Tensor, Tensor]:
    r"""KTO (Kahneman–Tversky) loss for unpaired, binary-labelled completions.

    r = log π_θ(y|x) − log π_ref(y|x);  z₀ = max(0, KL̂(π_θ ‖ π_ref)) (no gradient)
    v = λ_D σ(β(r − z₀)) if y desirable, λ_U σ(β(z₀ − r)) otherwise;  L = λ_y − v
    [Ethayarajh+24 KTO, arXiv:2402.01306, §4 (eq. number not verified)]

    Args:
        logp: summed completion log-probs under the policy, shape [B].
        ref_logp: same under the reference, shape [B].
        desirable: bool labels, shape [B].
        z0: reference point, a detached scalar (see :func:`kto_reference_point`).
        beta: β.
        lambda_d: weight λ_D of desirable examples.
        lambda_u: weight λ_U of undesirable examples.
    Returns:
        (losses [B], implicit rewards β r [B] detached).
    """
    r = logp - ref_logp
    v = torch.where(desirable, lambda_d * torch.sigmoid(beta * (r - z0)),
                    lambda_u * torch.sigmoid(beta * (z0 - r)))
    lam = torch.where(desirable, torch.full_like(r, lambda_d), torch.full_like(r, lambda_u))
    return lam - v, (beta * r).detach()


def kto_reference_point(logp_mismatch: Tensor, ref_logp_mismatch: Tensor,
                        gather: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    r"""KTO's reference point z₀: the batch KL estimate on mismatched (x, y') pairs, clamped at 0.

    z₀ = max(0, mean_i [log π_θ(y'_i|x_i) − log π_ref(y'_i|x_i)]), detached, the mean taken over
    the *global* batch: with several processes every process's rows are gathered first, as TRL's
    ``KTOTrainer`` does (``self.accelerator.gather_for_metrics(kl).mean().clamp(min=0)``), so
    z₀ is the same on every process and equals the one-process value at the same global batch.
    [Ethayarajh+24 KTO, §4: biased but practical estimate]

    Args:
        logp_mismatch: policy log-probs of completions paired with another example's prompt, [B].
        ref_logp_mismatch: the same under the reference, [B].
        gather: concatenates a [B] tensor over processes (``accelerator.gather``); None: one
            process.
    Returns:
        scalar tensor z₀ ≥ 0 without gradient.
    """
    kl = (logp_mismatch - ref_logp_mismatch).detach()
    if gather is not None:
        kl = gather(kl)
    return kl.mean().clamp(min=0.0)


def pairwise_loss(name: str, chosen_logratio: Tensor, rejected_logratio: Tensor, *, beta: float,
                  **kw: Tensor | float) -> Tensor:
    r"""Per-pair loss of a ``PAIRWISE`` link from the two log-ratios: the entry point for any source.

    ℓ_name(h; β, …),  h = Δ_w − Δ_l,  Δ = log π_θ(y|x) − log π_ref(y|x)
    (LM: summed token log-probs; Diffusion-DPO: minus the weighted denoising-error difference).

    Args:
        name: a ``PAIRWISE`` link: sigmoid, ipo, hinge, cdpo, robust, mallows_theta, mallows_phi.
        chosen_logratio: Δ_w, shape [B].
        rejected_logratio: Δ_l, shape [B].
        beta: β (applied inside the link).
        **kw: the link's extra parameters: ``eps`` (cdpo, robust), ``c`` (Mallows, [B] or scalar).
    Returns:
        per-pair loss, shape [B] (log 2 at Δ_w = Δ_l for sigmoid and mallows_theta).
    """
    return PAIRWISE.get(name).fn(chosen_logratio - rejected_logratio, beta=beta, **kw)


def register_links_as_objectives() -> None:
    """Expose each parameter-free-or-scalar ``PAIRWISE`` link as a DPO-family objective."""
    for name, entry in PAIRWISE.items():
        if name in OBJECTIVES or entry.properties & {"per_pair_params"}:
            continue
        OBJECTIVES[name] = type(entry)(fn=_link_objective(name), paper=entry.paper,
                                       equation=entry.equation, special_cases=entry.special_cases,
                                       properties=entry.properties | {"dpo_family"})


def _link_objective(link: str):
    def objective(lp: PairLogps, *, beta: float = 0.1, **link_kw: float) -> PrefLoss:
        return dpo_family(lp, link=link, beta=beta, **link_kw)

    objective.__name__ = f"dpo_{link}"
    objective.__doc__ = f"DPO-family objective with the {link!r} link (see :func:`dpo_family`)."
    objective.link = link  # type: ignore[attr-defined]
    return objective
