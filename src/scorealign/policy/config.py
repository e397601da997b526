"""``PolicyConfig``: the settings of a :class:`~scorealign.policy.policy.Policy`, taken whole.

The ``policy:`` section of a finetune config. It lives beside the policy it configures (floor
``policy``), so the policy and everything above it share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from scorealign.config import FieldError


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class PolicyConfig:
    """Sampler of the policy (rollouts and log-probs)."""

    sampler: str = field(default="ddim", metadata=_h(
        "ddim | ddpm | euler_maruyama | heun_sde (| euler_ode | heun_ode with exploration > 0)"))
    steps: int = field(default=20, metadata=_h("solver steps S"))
    eta: float | None = field(default=1.0, metadata=_h("sampler η (null: its default)"))
    grid: str = field(default="auto", metadata=_h(
        "time grid: auto = the base's own (a pipeline's scheduler grid, set_timesteps(steps): "
        "what the pipeline samples on; uniform for digits/testbed bases) | scheduler | uniform "
        "| quadratic | karras | logsnr | sd3_shift"))
    timesteps: list[float] | None = field(default=None, metadata=_h(
        "SD-style pipelines: explicit diffusers timesteps (steps values, decreasing), as "
        "pipe(timesteps=...); the scheduler's final alpha ends the grid; null: the scheduler's"))
    sigmas: list[float] | None = field(default=None, metadata=_h(
        "SD3/FLUX pipelines: explicit pre-shift sigmas (steps values, decreasing, in (0, 1]), "
        "as pipe(sigmas=...); the scheduler shifts them and appends 0; null: the pipeline's"))
    log_prob_units: Literal["authors", "exact"] = field(default="authors", metadata=_h(
        "authors: each sampler's step log-prob as its authors' code computes it (flow_cps: "
        "-sum (x' - mean)^2, yifan123/flow_grpo sd3_sde_with_logprob.py 'cps'; every other "
        "sampler: the exact Gaussian); exact: the exact Gaussian log-density for every sampler "
        "(docs/conventions.md, Units)"))
    guidance: float = field(default=2.0, metadata=_h("classifier-free guidance scale"))
    exploration: float = field(default=0.0, metadata=_h(
        "λ > 0: Score-as-Action exploration, ε-space action noise std (any solver)"))
    clip_sample: float | None = field(default=None, metadata=_h(
        "clamp x0_hat to +-clip_sample in every step (diffusers' clip_sample; ddim/ddpm in pixel "
        "space); log-probs stay exact, the clipped pixels' x0 gets no gradient; null: off"))
    action_steps: str = field(default="auto", metadata=_h(
        "which steps are actions (trained, clipped, KL'd): auto | auto:TAU | all | fraction:F "
        "(DDPO) | window:W (MixGRPO random) | slide:W[:EVERY[:STRIDE]] (MixGRPO progressive: "
        "the window advances STRIDE steps every EVERY epochs) | branch:1|2 (Flow-GRPO-Fast) | "
        "steps:I,J (policy/actions.py)"))
    init_same_noise: bool = field(default=False, metadata=_h(
        "the K rollouts of a prompt group start from one x_T (DanceGRPO/MixGRPO "
        "--init_same_noise); groups and epochs differ"))

    def __post_init__(self) -> None:
        from scorealign.policy.actions import parse_action_steps
        from scorealign.samplers.grids import GRIDS
        from scorealign.samplers.steps import SAMPLERS
        for name, reg in (("sampler", SAMPLERS), ("grid", GRIDS)):
            value = getattr(self, name)
            # a registered name (or grid auto), checked before anything is built
            if value not in reg and not (name == "grid" and value == "auto"):
                extra = ["auto"] if name == "grid" else []
                raise FieldError(name, f"unknown {reg.kind} {value!r}; choose one of "
                                       f"{extra + sorted(reg)}")
        try:
            parse_action_steps(self.action_steps)
        except ValueError as e:
            raise FieldError("action_steps", str(e)) from None
        self._check_lists()

    def _check_lists(self) -> None:
        """``timesteps`` / ``sigmas``: one of them, ``steps`` values, strictly decreasing, in
        range, with ``grid: auto`` (the list is the grid)."""
        given = [n for n in ("timesteps", "sigmas") if getattr(self, n) is not None]
        if len(given) == 2:
            raise FieldError("sigmas", "give timesteps (SD-style) or sigmas (flow), not both")
        if not given:
            return
        name = given[0]
        vals = getattr(self, name)
        if not isinstance(vals, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            raise FieldError(name, f"must be a list of numbers, got {vals!r}")
        if len(vals) != self.steps:
            raise FieldError(name, f"has {len(vals)} values; policy.steps is {self.steps} "
                                   f"(one value per step)")
        if any(b >= a for a, b in zip(vals, vals[1:])):
            raise FieldError(name, f"must be strictly decreasing, got {list(vals)}")
        if name == "sigmas" and not all(0 < v <= 1 for v in vals):
            raise FieldError(name, f"sigmas lie in (0, 1], got {list(vals)}")
        if name == "timesteps" and min(vals) < 0:
            raise FieldError(name, f"timesteps are >= 0, got {list(vals)}")
        if self.grid != "auto":
            raise FieldError(name, f"is the grid itself: leave policy.grid at auto (got "
                                   f"{self.grid!r})")


__all__ = ["PolicyConfig"]
