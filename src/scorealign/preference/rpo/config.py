"""Config schemas of ``scorealign rpo build-pairs`` and of ``scorealign dpo`` with ``task: diffusion``.

Frozen dataclasses read strictly by :mod:`scorealign.config` (unknown keys and wrong types are
errors naming ``file:line: field``); every field carries its ``help`` for ``--help-config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from scorealign.config import DEFAULT_BASE, OptimConfig, Tracker, help_field, tracker_field
from scorealign.config import BaseConfig as SharedBase
from scorealign.config import LoraConfig as SharedLora
from scorealign.preference.config import TrainSeed
from scorealign.train.task import SDEConfig

_f = help_field  # every field carries its --help-config text


@dataclass(frozen=True)
class BaseConfig(SharedBase):
    """The base diffusion model (:class:`scorealign.config.BaseConfig` and its forward SDE)."""

    sde: SDEConfig = _f(SDEConfig, "forward SDE when path is a model directory (a run "
                        "directory names its own)")


@dataclass(frozen=True)
class GenerationConfig:
    """How candidate images are drawn from a model."""

    steps: int = _f(25, "sampler steps")
    sampler: str = _f("ddim", "a samplers.SAMPLERS name")
    eta: float | None = _f(0.0, "sampler noise level (null: the sampler's default)")
    guidance: float = _f(2.0, "classifier-free guidance scale")
    batch_size: int = _f(250, "images per sampling batch")


@dataclass(frozen=True)
class PromptConfig:
    """Which prompts the candidates are drawn for (digits 0-9, balanced)."""

    n: int = _f(400, "number of prompts (RPO: one image each; reward: two images each)")
    digits: list[int] = _f(list(range(10)), "digits to prompt for, cycled")
    templates: Literal["canonical", "random"] = _f("canonical", "prompt wording: the canonical "
                                                   "template or a random one per prompt")

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"prompts.n must be >= 1, got {self.n}")
        if not self.digits or any(not 0 <= d <= 9 for d in self.digits):
            raise ValueError(f"prompts.digits must be a non-empty list of 0-9, got {self.digits}")


@dataclass(frozen=True)
class CriticConfig:
    """The digits critic (classifier + calibrated image statistics)."""

    classifier_seed: int = _f(0, "training seed of the project's digits classifier it uses")
    quantile: float = _f(0.97, "image statistics beyond this quantile of real digits are findings")
    min_label_prob: float = _f(0.5, "below this p(prompted digit) the digit is wrong")


@dataclass(frozen=True)
class EditConfig:
    """Instruction extraction and editing."""

    redraw_strength: float = _f(0.6, "SDEdit strength (fraction of T) for a wrong digit")
    repair_strength: float = _f(0.35, "SDEdit strength for a broken stroke")
    steps: int = _f(25, "SDEdit: reverse steps of a full trajectory")
    guidance: float = _f(3.0, "SDEdit: guidance scale under the target prompt")
    attempts: int = _f(2, "edits failing verification are retried up to this many times")


@dataclass(frozen=True)
class RewardPairsConfig:
    """The baseline's reward model."""

    name: str = _f("digit_alignment", "a rewards.REWARDS name (called with classifier_seed)")
    classifier_seed: int = _f(0, "training seed of the reward's digits classifier")


@dataclass(frozen=True)
class BuildPairsConfig:
    """``scorealign rpo build-pairs``: a preference dataset from base-model samples."""

    seed: int = _f(0, "seed of prompts, sampling and editing")
    method: Literal["rpo", "reward"] = _f("rpo", "rpo: critique/edit/verify pairs; reward: two "
                                          "samples, the higher reward wins")
    base: BaseConfig = _f(BaseConfig, "base model")
    prompts: PromptConfig = _f(PromptConfig, "prompts")
    generation: GenerationConfig = _f(GenerationConfig, "candidate sampling")
    critic: CriticConfig = _f(CriticConfig, "critic (rpo)")
    edit: EditConfig = _f(EditConfig, "instructions and editor (rpo)")
    reward: RewardPairsConfig = _f(RewardPairsConfig, "reward labelling (reward)")
    max_pairs: int | None = _f(None, "keep at most this many pairs (the first ones)")


# ------------------------------------------------------------------------------------------
# Diffusion-DPO training
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairDataConfig:
    """The preference dataset (written by ``scorealign rpo build-pairs``)."""

    path: str = _f("", "pair dataset directory (pairs.jsonl + images/ + manifest.json)")
    limit: int | None = _f(None, "use only the first N pairs")


@dataclass(frozen=True)
class DiffusionLossConfig:
    """The Diffusion-DPO loss [Wallace+23, Eq. 14] with a shared pairwise link."""

    link: str = _f("sigmoid", "a preference.losses.PAIRWISE link: sigmoid | hinge | ipo | cdpo | "
                   "robust")
    # 5000: SalesforceAIResearch/DiffusionDPO train.py (--beta_dpo default), launchers/sd15.sh,
    # launchers/sdxl.sh.
    beta: float = _f(5000.0, "β of the link (5000: the authors' --beta_dpo)")
    scale: float = _f(0.5, "T·ω(λ_t): the factor of the denoising-error difference (0.5: the "
                      "authors' code)")
    weighting: str = _f("eps", "space of the squared error (sde.dsm.WEIGHTINGS): ω(λ_t)")
    reduce: Literal["mean", "sum"] = _f("mean", "error reduction over pixels")
    params: dict[str, Any] = _f({}, "extra link parameters (eps for cdpo/robust)")
    sft_weight: float = _f(0.0, "optional weight of the plain denoising loss on chosen images")


@dataclass(frozen=True)
class DiffusionReferenceConfig:
    """Where ε_ref comes from."""

    mode: Literal["frozen", "lora_disabled"] = _f("frozen", "frozen: a frozen copy of the base; "
                                                  "lora_disabled: the policy with its LoRA "
                                                  "adapters switched off (needs lora.enabled)")


@dataclass(frozen=True)
class LoraConfig(SharedLora):
    """LoRA adapters on the UNet's attention projections (:class:`scorealign.config.LoraConfig`
    with the diffusion defaults)."""

    rank: int = _f(4, "adapter rank r; old name r")
    alpha: float = _f(4.0, "scaling alpha")


@dataclass(frozen=True)
class DiffusionTrainConfig(OptimConfig):
    """Optimization (the shared :class:`OptimConfig`: lr, weight_decay, grad_clip), logging and
    checkpointing."""

    lr: float = _f(1e-5, "learning rate (AdamW)")
    steps: int = _f(200, "optimizer steps")
    batch_size: int = _f(32, "pairs per step")
    warmup_steps: int = _f(0, "linear warm-up steps")
    log_every: int = _f(10, "steps between metric lines")
    ckpt_every: int = _f(50, "steps between checkpoints (the last step is always saved)")
    keep_checkpoints: int = _f(2, "checkpoints kept")
    seed: int = _f(0, "run seed (data order, times, noise)")
    stop_after_steps: int | None = _f(None, "end this invocation after this global step; "
                                      "--resume continues")
    progress: bool = _f(True, "show a progress bar")


@dataclass(frozen=True)
class DiffusionEvalConfig:
    """Evaluation of the policy before and after training."""

    enabled: bool = _f(True, "evaluate at the start and the end")
    num_samples: int = _f(500, "samples (balanced over the digits)")
    judge_seed: int = _f(1, "training seed of the judging classifier (held out: not the critic's "
                         "or the reward's seed 0)")
    generation: GenerationConfig = _f(GenerationConfig, "sampling of the evaluation images")
    seed: int = _f(1234, "sampling seed")


@dataclass(frozen=True)
class DiffusionDPOConfig(TrainSeed):
    """``scorealign dpo`` with ``task: diffusion``: Diffusion-DPO on a pair dataset."""

    task: Literal["diffusion"] = _f("diffusion", "selects the diffusion trainer")
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "device")
    tracker: Tracker = tracker_field()
    base: BaseConfig = _f(BaseConfig, "base model = policy init and reference")
    data: PairDataConfig = _f(PairDataConfig, "pairs")
    loss: DiffusionLossConfig = _f(DiffusionLossConfig, "loss")
    reference: DiffusionReferenceConfig = _f(DiffusionReferenceConfig, "reference model")
    lora: LoraConfig = _f(LoraConfig, "LoRA")
    train: DiffusionTrainConfig = _f(DiffusionTrainConfig, "optimization")
    eval: DiffusionEvalConfig = _f(DiffusionEvalConfig, "evaluation")

    def __post_init__(self) -> None:
        from scorealign.preference.losses import PAIRWISE
        from scorealign.sde.dsm import WEIGHTINGS

        if not self.data.path:
            raise ValueError("data.path: give the pair dataset directory")
        for field_name, registry, name in (("loss.link", PAIRWISE, self.loss.link),
                                           ("loss.weighting", WEIGHTINGS, self.loss.weighting)):
            try:
                registry.get(name)
            except KeyError as e:
                raise ValueError(f"{field_name}: {e.args[0]}") from None
        import inspect

        link_kw = {n for n, p in inspect.signature(PAIRWISE.get(self.loss.link).fn)
                   .parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"beta"}
        bad = sorted(set(self.loss.params) - link_kw)
        if bad:  # e.g. eps with the sigmoid link would be silently ignored or a TypeError later
            raise ValueError(f"loss: params {bad} are not parameters of link {self.loss.link!r} "
                             f"(it takes {sorted(link_kw) or 'none'})")
        if self.reference.mode == "lora_disabled" and not self.lora.on:
            raise ValueError("reference.mode lora_disabled needs lora.enabled: true")
        if self.loss.beta <= 0 or self.loss.scale <= 0:
            raise ValueError("loss.beta and loss.scale must be > 0")
