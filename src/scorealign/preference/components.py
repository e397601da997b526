"""RainbowPO: seven orthogonal components of DPO variants, combinable into one objective.

Zhao, Winata, Das, Zhang, Yao, Tang, Sahu, "RainbowPO: A Unified Framework for Combining
Improvements in Preference Optimization" (arXiv:2410.04203, ICLR 2025). The components:

1. length normalization   log π(y|x) → (1/|y|) log π(y|x)            :func:`length_normalize`
2. link function          σ-logistic, square (IPO), hinge, …           ``losses.PAIRWISE``
3. margin / home advantage  a constant γ subtracted from the margin    :func:`reference_term`
4. reference policy (mixing) π_ref^α · π_γ^{1−α}: α·ref margin + (1−α)γ  :func:`reference_term`
5. contextual scaling     the Mallows neg-log dispersion c(x)          ``mallows.neg_log_dispersion``
6. rejection sampling optimization (RSO): pairs drawn from π* by rejection  :func:`rso_sample`
7. SFT loss               + λ_SFT · NLL(y_w)                           :func:`sft_term`

The paper's final recipe keeps length normalization, reference-policy mixing (with a margin) and
contextual scaling with the logistic link (authors' final runs: β = 10, α = 0.25–0.5, γ = 0.1–0.3,
loss ``mallows_dpo``). Verification status: the component list and the final recipe were checked
against the authors' code and run scripts (github.com/hanyang1999/RainbowPO:
``trl/trainer/dpo_trainer.py``, ``commands_training_ultrafeedback_RainbowPO_final_run.ipynb``); the
paper's equation numbers could not be read here and are not cited.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorealign.preference.losses import (OBJECTIVES, PAIRWISE, PairLogps, ParamError, PrefLoss,
                                          link_takes)
from scorealign.preference.mallows import (DISPERSION_SCALE, _scale, check_dispersion_scale,
                                           neg_log_dispersion)

# α of the reference mixture: ``mixing_alpha: float = 0.25`` (hanyang1999/RainbowPO
# ``trl/trainer/dpo_config.py``, with ``if_mixing_alpha: bool = True``).
MIXING_ALPHA = 0.25

_PAPER = "Zhao+24 (RainbowPO), arXiv:2410.04203"


def length_normalize(logp: Tensor, n_tokens: Tensor) -> Tensor:
    r"""Length normalization: the mean token log-prob.

    log π(y|x) → (1/|y|) log π(y|x)   [RainbowPO component 1; SimPO, Meng+24 Eq. 4]

    Args:
        logp: summed completion log-probs, shape [B].
        n_tokens: completion lengths |y| ≥ 1, shape [B].
    Returns:
        mean token log-probs, shape [B].
    """
    return logp / n_tokens


def reference_term(ref_margin: Tensor | None, *, mixing: bool, mixing_alpha: float,
                   margin: float) -> Tensor | float:
    r"""What is subtracted from the policy margin: the reference margin, mixed and/or shifted.

    no mixing:  ref_margin + γ                 (DPO with a home advantage γ)
    mixing:     α · ref_margin + (1 − α) · γ   (π_ref^α π_γ^{1−α}; α = 0: reference-free, SimPO)
    [RainbowPO components 3-4; authors' code: ``pi_logratios − α ref_logratios − (1 − α) γ``]

    Args:
        ref_margin: log π_ref(y_w|x) − log π_ref(y_l|x) (normalized like the policy's), [B] or None
            when the reference is not needed (mixing with α = 0).
        mixing: whether to mix the reference with the margin policy.
        mixing_alpha: α ∈ [0, 1].
        margin: γ in log-ratio units (the loss sees β γ).
    Returns:
        tensor [B], or the float γ(1−α) when no reference margin is needed.
    """
    alpha = mixing_alpha if mixing else 1.0
    gamma = (1.0 - mixing_alpha) * margin if mixing else margin
    if alpha == 0.0:
        return gamma
    if ref_margin is None:
        raise ValueError("this RainbowPO configuration needs reference log-probs "
                         "(only mixing with mixing_alpha = 0 is reference-free)")
    return alpha * ref_margin + gamma


def sft_term(a_w: Tensor, *, coef: float) -> Tensor:
    r"""SFT regularizer on the chosen completion.

    L_SFT = −λ_SFT log π_θ(y_w|x)  (mean token log-prob when length-normalized)
    [RainbowPO component 7; authors' code: ``losses += −sft_coef · policy_chosen_logps``]

    Args:
        a_w: chosen log-probs, as used by the objective (summed or length-normalized), [B].
        coef: λ_SFT ≥ 0.
    Returns:
        per-pair SFT loss, shape [B].
    """
    return -coef * a_w


def check_rainbowpo(*, link: str, mixing: bool, mixing_alpha: float, eps: float | None,
                    dispersion_scale: float | str, **_: object) -> None:
    """ParamError for a RainbowPO combination that would silently be something else."""
    if link not in PAIRWISE or "per_pair_params" in PAIRWISE.get(link).properties:
        scalar = sorted(k for k, e in PAIRWISE.items() if "per_pair_params" not in e.properties)
        raise ParamError("link", f"link {link!r} is not available here; choose one of {scalar} "
                         "(Mallows dispersion is the contextual_scaling component)")
    if not 0.0 <= mixing_alpha <= 1.0:
        raise ParamError("mixing_alpha", f"must be in [0, 1], got {mixing_alpha}")
    if mixing and mixing_alpha == 1.0:
        raise ParamError("mixing_alpha", "mixing with mixing_alpha = 1 is plain DPO and drops the "
                         "margin ((1 − α) γ = 0); use mixing_alpha < 1 (authors: 0.25) or "
                         "mixing: false with margin γ")
    if eps is not None and not link_takes(link, "eps"):
        raise ParamError("eps", f"link {link!r} takes no eps (cdpo and robust do)")
    if eps is not None and not 0.0 <= eps < 0.5:
        raise ParamError("eps", f"must be in [0, 0.5), got {eps}")
    check_dispersion_scale(dispersion_scale)


@OBJECTIVES.register("rainbowpo", paper=_PAPER, equation="combined objective of components 1-5, 7 "
                     "(eq. number not verified)",
                     special_cases=(({}, "sigmoid"),))
def rainbowpo(lp: PairLogps, *, beta: float = 0.1, link: str = "sigmoid",
              length_normalization: bool = False, mixing: bool = False,
              mixing_alpha: float = MIXING_ALPHA, margin: float = 0.0,
              contextual_scaling: bool = False, dispersion_scale: float | str = DISPERSION_SCALE,
              sft_coef: float = 0.0, eps: float | None = None) -> PrefLoss:
    r"""RainbowPO objective: DPO with each component switchable from the config.

    a = (1/|y|) log π (LN on) or log π;  h = (a_w − a_l) − [α (a^ref_w − a^ref_l) + (1−α) γ]
    h ← c(x) h (contextual scaling);  L = ℓ_link(h; β) + λ_SFT (−a_w)
    Every component off (no LN, no mixing, γ = 0, no scaling, λ_SFT = 0, sigmoid) is DPO; LN +
    mixing with α = 0 + margin γ is SimPO with γ_SimPO = β γ.   [Zhao+24 RainbowPO]

    Defaults of the switches are off (so ``{}`` is DPO); the values used when a switch is on are
    the authors' (hanyang1999/RainbowPO ``trl/trainer/dpo_config.py``): α = 0.25
    (``mixing_alpha``), λ = 0.29 (``neg_log_dispersion_mean``). The authors' final recipe is
    β = 10, LN, mixing α = 0.25, γ = 0.1 (``home_advantage``), contextual scaling, sigmoid.

    Args:
        lp: pair log-probs (reference needed unless mixing with α = 0; ``ref_entropy`` for scaling).
        beta: β.
        link: a ``PAIRWISE`` link taking (h, beta) and optionally eps.
        length_normalization: component 1.
        mixing: component 4 (reference policy mixing) on/off; α = 1 with mixing is an error.
        mixing_alpha: α of the mixture (0.25: authors' default).
        margin: component 3, γ in log-ratio units.
        contextual_scaling: component 5 (Mallows c(x) from the reference entropy).
        dispersion_scale: λ of the dispersion estimate (0.29, or "auto" resolved by the trainer).
        sft_coef: component 7, λ_SFT.
        eps: label-flip rate of the cdpo / robust links (an error for links without it).
    Returns:
        PrefLoss; implicit rewards β (a − a^ref) with the full reference, as the authors' code
        and TRL log them (reward accuracy = share of pairs with a_w − a_w^ref > a_l − a_l^ref);
        β a when no reference is needed (mixing with α = 0).
    """
    check_rainbowpo(link=link, mixing=mixing, mixing_alpha=mixing_alpha, eps=eps,
                    dispersion_scale=dispersion_scale)
    norm = (lambda x, n: length_normalize(x, n)) if length_normalization else (lambda x, n: x)
    a_w, a_l = norm(lp.logp_w, lp.len_w), norm(lp.logp_l, lp.len_l)
    alpha = mixing_alpha if mixing else 1.0
    ref_w = ref_l = ref_margin = None
    if alpha != 0.0 or (lp.ref_logp_w is not None and lp.ref_logp_l is not None):
        ref_w, ref_l = lp.require_ref("rainbowpo")
        ref_w, ref_l = norm(ref_w, lp.len_w), norm(ref_l, lp.len_l)
        ref_margin = ref_w - ref_l
    # Policy margin minus the (mixed) reference margin and home advantage.
    h = (a_w - a_l) - reference_term(ref_margin if alpha != 0.0 else None, mixing=mixing,
                                     mixing_alpha=mixing_alpha, margin=margin)
    if contextual_scaling:
        if lp.ref_entropy is None:
            raise ValueError("contextual_scaling needs the reference entropy")
        h = neg_log_dispersion(lp.ref_entropy, scale=_scale(dispersion_scale)) * h
    link_kw = {"eps": eps} if eps is not None else {}
    losses = PAIRWISE.get(link).fn(h, beta=beta, **link_kw)
    if sft_coef:
        losses = losses + sft_term(a_w, coef=sft_coef)
    r_w = a_w - ref_w if ref_w is not None else a_w
    r_l = a_l - ref_l if ref_l is not None else a_l
    return PrefLoss(losses, (beta * r_w).detach(), (beta * r_l).detach())


def rso_sample(rewards: Tensor, *, beta: float, num_samples: int,
               generator: torch.Generator) -> list[int]:
    r"""Statistical rejection sampling from π*(y|x) ∝ π_sft(y|x) exp(r(x, y)/β).

    Candidates y_i ~ π_sft with rewards r_i; each sweep accepts y_i with probability
    exp((r_i − r_max)/β), r_max over the remaining candidates, until ``num_samples`` are accepted.
    [Liu+23 RSO, arXiv:2309.06657, Algorithm 1; RainbowPO component 6]

    Args:
        rewards: rewards of the N candidates of one prompt, shape [N].
        beta: β of the target policy (small β: nearly greedy on reward).
        num_samples: how many to accept (at most N).
        generator: explicit RNG for the uniforms and the sweep order.
    Returns:
        indices of the accepted candidates, in acceptance order.
    """
    remaining = list(range(rewards.numel()))
    accepted: list[int] = []
    while len(accepted) < num_samples and remaining:
        r_max = max(float(rewards[i]) for i in remaining)
        order = torch.randperm(len(remaining), generator=generator).tolist()
        u = torch.rand(len(remaining), generator=generator, dtype=torch.float64)
        taken = []
        for pos, k in enumerate(order):
            i = remaining[k]
            if float(u[pos]) < math.exp((float(rewards[i]) - r_max) / beta):
                accepted.append(i)
                taken.append(i)
                if len(accepted) == num_samples:
                    break
        remaining = [i for i in remaining if i not in taken]
    return accepted


def rso_pairs(rewards: Tensor, *, beta: float, num_pairs: int,
              generator: torch.Generator) -> list[tuple[int, int]]:
    """Preference pairs (chosen, rejected) from RSO-accepted candidates, ranked by reward.

    Accepted samples are paired in acceptance order; a tie in reward gives no pair.

    Args:
        rewards: rewards of the N candidates of one prompt, shape [N].
        beta: β of :func:`rso_sample`.
        num_pairs: pairs wanted (2 × this many samples are drawn).
        generator: explicit RNG.
    Returns:
        list of (chosen index, rejected index).
    """
    acc = rso_sample(rewards, beta=beta, num_samples=2 * num_pairs, generator=generator)
    pairs = []
    for i, j in zip(acc[0::2], acc[1::2]):
        if float(rewards[i]) != float(rewards[j]):
            pairs.append((i, j) if rewards[i] > rewards[j] else (j, i))
    return pairs
