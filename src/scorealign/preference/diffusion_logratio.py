"""Log-ratio source no. 2: the denoising-error surrogate of a diffusion model (Diffusion-DPO).

A diffusion model has no tractable log π(x_0 | c); Diffusion-DPO [Wallace+23, arXiv:2311.12908,
§4] bounds the sequence-level DPO objective with the ELBO and, by Jensen, moves the expectation over
the time step outside the log-sigmoid. At one shared (t, ε) for a pair the surrogate of the
implicit log-ratio of an image x_0 is

    log π_θ(x_0|c) − log π_ref(x_0|c)  ≈  −T ω(λ_t) (‖ε − ε_θ(x_t, t, c)‖² − ‖ε − ε_ref(x_t, t, c)‖²)

with x_t = m(t) x_0 + s(t) ε and λ_t the log-SNR, so that the pair margin handed to the shared
links of ``losses.PAIRWISE`` is h = Δ_w − Δ_l and the sigmoid link reproduces

    L(θ) = −E log σ(−β T ω(λ_t) [(‖ε − ε_θ(x_t^w)‖² − ‖ε − ε_ref(x_t^w)‖²)
                                  − (‖ε − ε_θ(x_t^l)‖² − ‖ε − ε_ref(x_t^l)‖²)])
                                                       [Wallace+23, Eq. 14 (arXiv v1)]

The constant T ω(λ_t) is ``scale``; the authors' released code takes ω constant, errors as the mean
over pixels and T ω = ½ (``inside = −½ β (model_diff − ref_diff)``), which is ``scale=0.5,
reduce="mean"`` here. A time-dependent ω(λ_t) is the DSM weighting of ``sde.dsm.WEIGHTINGS``:
``eps`` (the default) measures the error in ε space for a model of any parameterization.

Everything here is a pure function of tensors or of a ``model(x, t, cond)``; β is applied by
the link, never here. The pair shares t and ε (the paper's expectation is over one draw of each
for both images; the released code repeats the same noise and timestep for x^w and x^l).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from scorealign.preference.losses import PAIRWISE
from scorealign.sde.base import SDE
from scorealign.sde.dsm import dsm_loss

# β of Diffusion-DPO: ``--beta_dpo`` defaults to 5000 and both launchers pass 5000
# (SalesforceAIResearch/DiffusionDPO ``train.py``, ``launchers/sd15.sh``, ``launchers/sdxl.sh``).
DIFFUSION_DPO_BETA = 5000.0


@dataclass(frozen=True)
class DiffusionPairLoss:
    """Per-pair Diffusion-DPO output, shape [B] each.

    ``losses``: the link of the margin; ``logratio_w``/``logratio_l``: the implicit log-ratio
    surrogates Δ (detached); ``reward_w``/``reward_l``: β Δ, the implicit rewards (detached).
    """

    losses: Tensor
    logratio_w: Tensor
    logratio_l: Tensor
    reward_w: Tensor
    reward_l: Tensor

    def metrics(self) -> dict[str, Tensor]:
        """Batch means for ``metrics.jsonl`` (same names as the LM trainer's)."""
        margin = self.reward_w - self.reward_l
        return {"rewards/chosen": self.reward_w.mean(), "rewards/rejected": self.reward_l.mean(),
                "rewards/accuracy": (margin > 0).float().mean(),
                "rewards/margin": margin.mean()}


def implicit_logratio(err_policy: Tensor, err_ref: Tensor, scale: float | Tensor = 1.0) -> Tensor:
    r"""Surrogate of log π_θ(x_0|c) − log π_ref(x_0|c) from denoising errors at one (t, ε).

    Δ = −T ω(λ_t) (‖ε − ε_θ(x_t,t)‖² − ‖ε − ε_ref(x_t,t)‖²)   [Wallace+23, Eq. 14, per image]

    A policy that denoises x_0 better than the reference (smaller error) raises its implicit
    likelihood: Δ > 0 exactly when ``err_policy < err_ref`` (for ``scale > 0``).

    Args:
        err_policy: ‖ε − ε_θ‖² per image, shape [B].
        err_ref: ‖ε − ε_ref‖² per image at the same (x_t, t), shape [B].
        scale: T ω(λ_t) > 0, a float or a per-image tensor [B].
    Returns:
        Δ, shape [B], fp32 (or the inputs' wider dtype).
    """
    return -scale * (err_policy - err_ref)


def diffusion_dpo_loss(err_policy_w: Tensor, err_ref_w: Tensor, err_policy_l: Tensor,
                       err_ref_l: Tensor, *, link: str = "sigmoid",
                       beta: float = DIFFUSION_DPO_BETA,
                       scale: float | Tensor = 0.5, **link_kw: float) -> DiffusionPairLoss:
    r"""Diffusion-DPO with any ``PAIRWISE`` link of the denoising-error margin.

    h = Δ_w − Δ_l,  Δ = −T ω(λ_t)(err_θ − err_ref);  L = ℓ_link(h; β)
    sigmoid: L = −log σ(−β T ω(λ_t)[(err_θ^w − err_ref^w) − (err_θ^l − err_ref^l)])
    [Wallace+23, Eq. 14]; hinge and IPO are the SLiC / IPO links of the same margin.

    Args:
        err_policy_w, err_ref_w: denoising errors of the chosen images, shape [B].
        err_policy_l, err_ref_l: same for the rejected images (same t, ε as the chosen).
        link: a ``losses.PAIRWISE`` name (sigmoid, hinge, ipo, cdpo, robust).
        beta: β of the link (5000: the authors' default and launchers).
        scale: T ω(λ_t) (0.5: the released implementation).
        **link_kw: extra parameters of the link (``eps`` for cdpo/robust).
    Returns:
        :class:`DiffusionPairLoss`; at policy = reference every Δ is 0 and the sigmoid loss is
        log 2.
    """
    d_w = implicit_logratio(err_policy_w, err_ref_w, scale)
    d_l = implicit_logratio(err_policy_l, err_ref_l, scale)
    losses = PAIRWISE.get(link).fn(d_w - d_l, beta=beta, **link_kw)
    return DiffusionPairLoss(losses, d_w.detach(), d_l.detach(), (beta * d_w).detach(),
                             (beta * d_l).detach())


def pair_denoising_errors(model: Callable[..., Tensor], sde: SDE, x_w: Tensor, x_l: Tensor,
                          t: Tensor, noise: Tensor, cond: Any = None, *, kind: str = "eps",
                          weighting: str = "eps", reduce: str = "mean",
                          cat_cond: Callable[[Any], Any] | None = None) -> tuple[Tensor, Tensor]:
    r"""Denoising errors of a pair at a shared (t, ε), in one batched forward of ``model``.

    err(x_0) = λ(t) ‖pred(x_t, t, c) − target‖²,  x_t = m(t) x_0 + s(t) ε   [Song+21, Eq. 7]

    computed by :func:`scorealign.sde.dsm.dsm_loss` on the concatenated batch [x_w; x_l] with
    [t; t] and [ε; ε]: the chosen and rejected images see the same time and noise.

    Args:
        model: ``model(x, t, cond) -> prediction`` of parameterization ``kind``.
        sde: the forward process.
        x_w, x_l: chosen and rejected images, shape [B, *D] each.
        t: shared times, shape [B] (float64 from ``dsm.sample_t``).
        noise: shared ε, shape [B, *D].
        cond: conditioning of the B pairs (the same prompt for both images).
        kind: the model's parameterization.
        weighting: a ``dsm.WEIGHTINGS`` name: the space of the squared error, ω(λ_t).
        reduce: "mean" (the released code) or "sum" over pixels.
        cat_cond: how to stack ``cond`` twice along the batch (default ``type(cond).cat``).
    Returns:
        (err_w, err_l), shape [B] each, fp32, differentiable w.r.t. the model.
    """
    if x_w.shape != x_l.shape or noise.shape != x_w.shape:
        raise ValueError(f"chosen {tuple(x_w.shape)}, rejected {tuple(x_l.shape)} and noise "
                         f"{tuple(noise.shape)} must have the same shape")
    if t.shape != (x_w.shape[0],):
        raise ValueError(f"t must have shape [{x_w.shape[0]}], got {tuple(t.shape)}")
    both_cond = None
    if cond is not None:
        both_cond = cat_cond([cond, cond]) if cat_cond else type(cond).cat([cond, cond])
    err = dsm_loss(model, sde, torch.cat([x_w, x_l]), torch.cat([t, t]),
                   torch.cat([noise, noise]), cond=both_cond, kind=kind, weighting=weighting,
                   reduce=reduce)
    return err.chunk(2)
