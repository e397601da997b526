"""Action steps: which sampler steps are the policy's random choices (trained, clipped, KL'd).

A sampler of S steps is a policy whose *actions* are a subset of its steps. Steps outside the
action set are sampled deterministically and carry no log-probability:

* transition policies (``exploration = 0``): a non-action step is the sampler's η = 0 step (the
  PF-ODE step of the same solver: DDIM η = 0, Euler/Heun on the PF-ODE) when the sampler has an
  η, else its kernel mean (``ddpm``, and any registered step without η);
* score-action policies (``exploration = λ > 0``): a non-action step uses the model's own ε
  (no action noise); the sampler's own noise, if any, is environment noise as before.

``policy.action_steps`` is a string spec (``--set policy.action_steps=window:4``):

=================  ==========================================================================
``auto``           (default) every step except the final one and except near-deterministic
                   steps, whose kernel std is below ``τ · max_k σ_k`` (``auto:τ``, τ = 0.1).
                   The final step becomes a deterministic denoising step (η = 0 / mean).
``all``            every stochastic step (the behaviour before action steps existed).
``fraction:f``     DDPO's ``train.timestep_fraction``: the ``auto`` steps are all sampled
                   stochastically, each row trains a random ⌈f·n⌉ of them (per-row seed)
                   [kvablack/ddpo-pytorch ``config/base.py``: ``timestep_fraction = 1.0``].
``window:w``       MixGRPO's ``random`` strategy: a random contiguous window of w ``auto``
                   steps per epoch is stochastic and trained; every other step is ODE.
``slide:w[:e[:s]]`` MixGRPO's default ``progressive`` strategy: a window of w ``auto`` steps
                   that starts at the first one and advances by s steps every e epochs,
                   back to the start after the last position (:func:`slide_window_start`;
                   defaults e = 25, s = 1 from Tencent-Hunyuan/MixGRPO
                   ``scripts/finetune/finetune_flux_grpo_MixGRPO.sh``).
``branch:n``       Flow-GRPO-Fast: n ∈ {1, 2} random branching steps per epoch, rest ODE.
``steps:i,j,…``    an explicit set of grid indices.
=================  ==========================================================================

Random choices derive from ``(run seed, epoch)`` (window, branch) or the row seed, itself
derived from ``(run seed, epoch, row)`` (fraction), and the sliding window's position is a
function of the epoch alone (slide), so a resumed run draws the same sets.

Plug-in: the ``auto`` rule needs only the per-step kernel std σ_k, obtained by calling the
registered step function once per step on a zero state (:func:`kernel_stds`); any sampler that
returns a :class:`~scorealign.samplers.kernel.GaussianStep` (a flow SDE, a consistency re-noise
step) works unchanged, provided its std does not depend on the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scorealign.rng import generator
from scorealign.samplers.steps import SAMPLERS
from scorealign.sde.base import SDE

MODES = ("auto", "all", "fraction", "window", "slide", "branch", "steps")
AUTO_TAU = 0.1
# MixGRPO's sliding window: scripts/finetune/finetune_flux_grpo_MixGRPO.sh iters_per_group=25,
# prog_overlap_step=1 (with --prog_overlap and --roll_back), group_size=4 (the window size).
SLIDE_EVERY = 25
SLIDE_STRIDE = 1


@dataclass(frozen=True)
class ActionSpec:
    """A parsed ``policy.action_steps`` value."""

    mode: str
    value: float | None = None
    steps: tuple[int, ...] = ()
    every: int = SLIDE_EVERY
    stride: int = SLIDE_STRIDE

    @property
    def per_epoch_random(self) -> bool:
        """Whether the stochastic set itself is drawn each epoch (window, branch)."""
        return self.mode in ("window", "branch")

    @property
    def per_epoch(self) -> bool:
        """Whether the stochastic set depends on the epoch (window, slide, branch)."""
        return self.mode in ("window", "slide", "branch")


def parse_action_steps(spec: str) -> ActionSpec:
    """Parse ``auto``, ``auto:τ``, ``all``, ``fraction:f``, ``window:w``, ``slide:w[:e[:s]]``,
    ``branch:n``, ``steps:i,j``. Raises ValueError with the accepted forms on anything else."""
    forms = ("auto | auto:TAU | all | fraction:F | window:W | slide:W[:EVERY[:STRIDE]] | "
             "branch:1|2 | steps:I,J,...")
    if not isinstance(spec, str):
        raise ValueError(f"must be a string ({forms}), got {spec!r}")
    mode, _, arg = spec.partition(":")
    mode = mode.strip()
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use {forms}")
    try:
        if mode == "all":
            if arg:
                raise ValueError("'all' takes no argument")
            return ActionSpec("all")
        if mode == "auto":
            tau = float(arg) if arg else AUTO_TAU
            if not 0 <= tau < 1:
                raise ValueError(f"auto:τ needs 0 <= τ < 1, got {tau}")
            return ActionSpec("auto", tau)
        if mode == "fraction":
            f = float(arg)
            if not 0 < f <= 1:
                raise ValueError(f"fraction needs 0 < f <= 1, got {f}")
            return ActionSpec("fraction", f)
        if mode == "window":
            w = int(arg)
            if w < 1:
                raise ValueError(f"window needs w >= 1, got {w}")
            return ActionSpec("window", float(w))
        if mode == "slide":
            parts = arg.split(":")
            if not 1 <= len(parts) <= 3:
                raise ValueError("slide takes W[:EVERY[:STRIDE]]")
            w, every, stride = (int(x) for x in parts + [str(SLIDE_EVERY),
                                                          str(SLIDE_STRIDE)][len(parts) - 1:])
            if w < 1 or every < 1 or stride < 1:
                raise ValueError(f"slide needs W, EVERY, STRIDE >= 1, got {w}, {every}, "
                                 f"{stride}")
            return ActionSpec("slide", float(w), every=every, stride=stride)
        if mode == "branch":
            n = int(arg)
            if n not in (1, 2):
                raise ValueError(f"branch takes 1 or 2 steps, got {n}")
            return ActionSpec("branch", float(n))
        steps = tuple(sorted({int(s) for s in arg.split(",") if s.strip()}))
        if not steps or min(steps) < 0:
            raise ValueError(f"steps needs non-negative indices, got {arg!r}")
        return ActionSpec("steps", None, steps)
    except ValueError as e:
        raise ValueError(f"{spec!r}: {e}") from None


def kernel_stds(sampler: str, eta: float | None, sde: SDE, ts: Tensor, shape: tuple[int, ...],
                kind: str = "eps") -> Tensor:
    """σ_k of every step's Gaussian kernel on the grid ``ts`` (float64 ``[S]``, 0: deterministic).

    Calls the registered step on a zero state with a zero prediction; valid for the samplers
    whose std depends on (t_k, t_{k+1}) only (every sampler in ``SAMPLERS``).
    """
    fn = SAMPLERS.get(sampler).fn
    kw = {} if eta is None else {"eta": eta}
    x = torch.zeros((1, *shape), dtype=torch.float64)
    out = []
    for k in range(ts.shape[0] - 1):
        st = fn(x, torch.zeros_like(x), kind, ts[k:k + 1], ts[k + 1:k + 2], sde, noise=None,
                pred_fn=lambda a, t: torch.zeros_like(a), **kw)
        out.append(float(st.std.reshape(-1)[0]))
    return torch.tensor(out, dtype=torch.float64)


def auto_steps(stds: Tensor, tau: float, score_action: bool) -> Tensor:
    """The ``auto`` set ``[S]`` bool: not the final step, and σ_k ≥ τ · max σ (transition)."""
    s = stds.shape[0]
    keep = torch.ones(s, dtype=torch.bool)
    if not score_action:
        keep &= stds > 0
        keep &= stds >= tau * float(stds.max())
    if s > 1:
        keep[-1] = False
    return keep


def slide_window_start(epoch: int, n: int, every: int = SLIDE_EVERY,
                       stride: int = SLIDE_STRIDE) -> int:
    """Start (index into the n candidate steps) of MixGRPO's progressive window in ``epoch``.

    Closed form of Tencent-Hunyuan/MixGRPO ``fastvideo/utils/grpo_states.py``
    ``GRPOTrainingStates.update_iteration`` (``progressive``, ``prog_overlap``, ``roll_back``),
    called once per training iteration (an epoch here): the start advances by ``stride`` every
    ``every`` iterations and rolls back to 0 once it passes the last position. Differences: the
    authors' last position (start = max_timesteps) gives an empty window
    (``get_current_timesteps`` is ``range(start, min(start + w, max_timesteps))``); here the
    positions are 0, s, 2s, … ≤ n − 1, each with at least one step (the window is cut at the
    end as theirs is). A function of the epoch only: a resumed run is at the same position.
    """
    positions = max((n - 1) // stride + 1, 1)
    return ((epoch // every) % positions) * stride


def stochastic_steps(spec: ActionSpec, stds: Tensor, *, score_action: bool,
                     run_seed: int = 0, epoch: int = 0) -> Tensor:
    """The steps sampled stochastically (with log-probs) this epoch, ``[S]`` bool."""
    s = stds.shape[0]
    if spec.mode == "all":
        return torch.ones(s, dtype=torch.bool) if score_action else stds > 0
    if spec.mode == "steps":
        if max(spec.steps) >= s:
            raise ValueError(f"action step {max(spec.steps)} is outside the grid of {s} steps")
        m = torch.zeros(s, dtype=torch.bool)
        m[list(spec.steps)] = True
        if not score_action and bool((stds[m] == 0).any()):
            raise ValueError("an explicit action step has a deterministic kernel (std 0)")
        return m
    base = auto_steps(stds, AUTO_TAU if spec.mode != "auto" else float(spec.value),
                      score_action)
    if not spec.per_epoch:
        return base
    idx = base.nonzero().flatten()
    if spec.mode == "slide":
        start = slide_window_start(epoch, len(idx), spec.every, spec.stride)
        out = torch.zeros(s, dtype=torch.bool)
        out[idx[start:start + int(spec.value)]] = True
        return out
    g = generator(run_seed, "action-steps", epoch)
    out = torch.zeros(s, dtype=torch.bool)
    n = len(idx)
    if spec.mode == "window":
        w = min(int(spec.value), n)
        start = int(torch.randint(n - w + 1, (1,), generator=g))
        out[idx[start:start + w]] = True
    else:  # branch
        out[idx[torch.randperm(n, generator=g)[:min(int(spec.value), n)]]] = True
    return out


def trained_mask(spec: ActionSpec, stochastic: Tensor, row_seeds: Tensor) -> Tensor:
    """Steps trained per row ``[B, S]`` bool: the stochastic set, or DDPO's random fraction."""
    b, s = row_seeds.shape[0], stochastic.shape[0]
    m = stochastic[None, :].expand(b, s).clone()
    if spec.mode != "fraction":
        return m
    idx = stochastic.nonzero().flatten()
    k = math.ceil(float(spec.value) * len(idx))
    m[:] = False
    for i, seed in enumerate(row_seeds.tolist()):
        g = generator(int(seed), "timestep-fraction")
        m[i, idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    return m
