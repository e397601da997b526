"""``PolicyConfig``: the settings of a :class:`~scorealign.policy.policy.Policy`, taken whole.

The ``policy:`` section of a finetune config. It lives beside the policy it configures (floor
``policy``), so the policy and everything above it share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    grid: str = field(default="uniform", metadata=_h("time grid"))
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
            if value not in reg:  # a registered name, checked before anything is built
                raise FieldError(name, f"unknown {reg.kind} {value!r}; choose one of "
                                       f"{sorted(reg)}")
        try:
            parse_action_steps(self.action_steps)
        except ValueError as e:
            raise FieldError("action_steps", str(e)) from None


__all__ = ["PolicyConfig"]
