"""Modern consistency-training recipes as pure functions of the step: iCT and ECT.

**Improved consistency training** (iCT) [Song & Dhariwal 23, arXiv:2310.14189]. The authors
released no code; the reference used here is the diffusers port
``examples/research_projects/consistency_training/train_cm_ct_unconditional.py`` (huggingface/
diffusers @58eb52c, cited as ``diffusers-ict:LINE``):

* the exponential discretization curriculum [§3.4, Eq. 8; diffusers-ict:91-101]
  N(k) = min(s₀ 2^⌊k/K'⌋, s₁) + 1,  K' = ⌊K / (log₂⌊s₁/s₀⌋ + 1)⌋,  s₀ = 10, s₁ = 1280;
* lognormal noise sampling over the discretization [§3.5, Eq. 10; diffusers-ict:129-137]
  p(σ_i) ∝ erf((ln σ_{i+1} − P_mean)/(√2 P_std)) − erf((ln σ_i − P_mean)/(√2 P_std)),
  P_mean = −1.1, P_std = 2.0;
* the weighting λ(σ_i) = 1/(σ_{i+1} − σ_i) [§3.1; diffusers-ict:140-144];
* no EMA target, θ⁻ = stopgrad(θ) [§3.2] (``target_ema_mode: none``) and the pseudo-Huber
  distance [§3.3] (``distance`` in ``train/consistency.py``).

**Easy consistency tuning** (ECT) [Geng+24, "Consistency Models Made Easy", arXiv:2406.14548;
locuslab/ect @4311059, cited as ``ect:FILE:LINE``]: initialize from the pretrained diffusion
model (``run_ecm.sh --transfer``; ``consistency.init_from``), draw a continuous σ_t ~
lognormal(P_mean, P_std) and the partner σ_r by the mapping function [§3, Eq. 9 / "mapping
function"; ect:training/loss.py:45-50]

    σ_r = max(0, σ_t (1 − q^{−(stage+1)} n(σ_t))),   n(σ) = 1 + k sigmoid(−b σ),

with q = 2, k = 8, b = 1 (ect:ct_train.py:71-73), so Δt = σ_t − σ_r halves at each stage; the
stage is ⌊k_step / (K / stages)⌋ (ect:training/ct_training_loop.py:241, 383-386; ``run_ecm.sh``:
25.6 Mimg in ticks of 12.8 kimg, doubling every 250 ticks: 8 stages). The loss is
‖Δ‖ (pseudo-Huber with c = 0, ect:training/loss.py:85-89) weighted by 1/(σ_t − σ_r)
(ect:training/loss.py:92); where σ_r = 0 the target is the data itself (loss.py:75-77).

**σ on the project's SDEs.** Both papers work in EDM's VE variable σ. Any linear SDE
x_t = m(t) x_0 + s(t) ε is that VE SDE for y = x_t/m(t) with σ = s(t)/m(t) (``SDE.nsr``); on VP
(m = sqrt(ᾱ), s = sqrt(1 − ᾱ)) that is σ = sqrt(1 − ᾱ)/sqrt(ᾱ). A σ maps back to the time
t = nsr⁻¹(σ) (``SDE.t_from_nsr``), so the lognormal, the curriculum grid and the weighting are
all computed in σ and the pairs are evaluated at the corresponding project times. The VP range is
σ ∈ [σ(t_min), σ(T)] ≈ [0.01, 152] (EDM: [0.002, 80]); σ below σ(t_min) is the boundary: the
target there is x_{t_min} = f(x_{t_min}, t_min), the consistency function's exact fixed point.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ict_num_scales(step: int, total: int, s0: int = 10, s1: int = 1280) -> int:
    """N(k) = min(s₀ 2^⌊k/K'⌋, s₁) + 1, K' = ⌊K/(log₂⌊s₁/s₀⌋ + 1)⌋  [iCT Eq. 8].

    diffusers-ict:91-101. The number of grid points (N − 1 pairs) at step k of K.
    """
    k_prime = max(math.floor(total / (math.log2(math.floor(s1 / s0)) + 1)), 1)
    return min(s0 * 2 ** math.floor(step / k_prime), s1) + 1


def lognormal_pair_probs(sigmas: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """Probabilities [N−1] of the pairs (σ_{i+1}, σ_i) of an increasing σ grid [iCT Eq. 10].

    p(i) ∝ erf((ln σ_{i+1} − P_mean)/(√2 P_std)) − erf((ln σ_i − P_mean)/(√2 P_std)), i.e. the
    lognormal's mass on (σ_i, σ_{i+1}], normalized over the grid (diffusers-ict:129-137).
    """
    s = sigmas.to(torch.float64)
    if not bool((s[1:] > s[:-1]).all()) or float(s[0]) <= 0:
        raise ValueError("lognormal_pair_probs needs a positive, increasing σ grid")
    e = torch.special.erf((s.log() - p_mean) / (math.sqrt(2.0) * p_std))
    w = e[1:] - e[:-1]
    return w / w.sum()


def inv_dsigma(sigma_hi: Tensor, sigma_lo: Tensor) -> Tensor:
    """λ = 1/(σ_hi − σ_lo)  [iCT §3.1, diffusers-ict:140-144; ECT ect:training/loss.py:92]."""
    return 1.0 / (sigma_hi.to(torch.float64) - sigma_lo.to(torch.float64))


def ect_stage(step: int, total: int, stages: int = 8) -> int:
    """The Δt stage ⌊k / (K / stages)⌋ at step k of K (ect:training/ct_training_loop.py:241)."""
    return min(int(step * stages // total), stages - 1)


def ect_sigma_r(sigma_t: Tensor, stage: int, q: float = 2.0, k: float = 8.0, b: float = 1.0
                ) -> Tensor:
    """σ_r = max(0, σ_t (1 − q^{−(stage+1)} (1 + k sigmoid(−b σ_t))))  [ECT mapping function].

    ect:training/loss.py:45-50 (``t_to_r_sigmoid``); float64.
    """
    t = sigma_t.to(torch.float64)
    ratio = 1.0 - q ** -(stage + 1) * (1.0 + k * torch.sigmoid(-b * t))
    return (t * ratio).clamp_min(0.0)


def lognormal_sigma(u: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """σ = exp(P_mean + P_std u) for standard-normal draws u (ect:training/loss.py:54-55)."""
    return (p_mean + p_std * u.to(torch.float64)).exp()
