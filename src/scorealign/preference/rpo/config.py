"""Config schemas of ``scorealign rpo build-pairs`` and of ``scorealign dpo`` with ``task: diffusion``.

Frozen dataclasses read strictly by :mod:`scorealign.config` (unknown keys and wrong types are
errors naming ``file:line: field``); every field carries its ``help`` for ``--help-config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from scorealign.config import (DEFAULT_BASE, FieldError, OptimConfig, Tracker, help_field,
                               tracker_field)
from scorealign.config import BaseConfig as SharedBase
from scorealign.config import LoraConfig as SharedLora
from scorealign.policy.config import PolicyConfig
from scorealign.preference.config import TrainSeed
from scorealign.train.task import SDEConfig

_f = help_field  # every field carries its --help-config text


@dataclass(frozen=True)
class BaseConfig(SharedBase):
    """The base diffusion model (:class:`scorealign.config.BaseConfig` and its forward SDE), or
    (``type: testbed``, ``scorealign dpo`` only) a closed-form testbed problem (issue 22)."""

    sde: SDEConfig = _f(SDEConfig, "forward SDE when path is a model directory (a run "
                        "directory names its own); testbed: vp without params")
    type: Literal["digits", "testbed"] = _f("digits", "digits: a digits model at base.path; "
                                            "testbed: a closed-form problem (scorealign.testbed):"
                                            " the exact base ε-prediction plus a zero-initialized "
                                            "control network, pairs drawn from the base and "
                                            "labelled by Bradley–Terry on its exact reward "
                                            "(section pairs)")
    problem: str = _f("quadratic", "testbed: the preset problem (testbed.PROBLEMS: linear | "
                      "quadratic | multimodal)")
    dim: int = _f(2, "testbed: the dimension d (2, 8 or 32)")
    beta: float = _f(1.0, "testbed: β of the target p*_β ∝ p₀ e^{r/β} (loss.beta must be "
                     "beta / pairs.tau)")
    control_hidden: int = _f(64, "testbed: width of the control network (nets.mlp.TimeMLP, "
                             "depth 2)")
    seed: int = _f(0, "testbed: initialization seed of the control network")

    def __post_init__(self) -> None:
        if self.type != "testbed":
            return
        from scorealign.testbed import DIMS, PROBLEMS

        if self.problem not in PROBLEMS:
            raise FieldError("problem", f"unknown testbed problem {self.problem!r}; choose one "
                             f"of {sorted(PROBLEMS)}")
        if self.dim not in DIMS:
            raise FieldError("dim", f"testbed dimensions are {', '.join(map(str, DIMS))}; got "
                             f"{self.dim}")
        if not self.beta > 0:
            raise FieldError("beta", f"must be > 0; got {self.beta}")
        if self.control_hidden < 1:
            raise FieldError("control_hidden", f"must be >= 1; got {self.control_hidden}")
        if self.sde.name != "vp" or self.sde.params:
            raise FieldError("sde", "base.type testbed runs Diffusion-DPO under the default VP "
                             f"SDE: give sde.name vp without params (got {self.sde.name!r}, "
                             f"params {self.sde.params})")


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
class TestbedPairsConfig:
    """``base.type: testbed``: pairs drawn from the base model during training and labelled by
    Bradley–Terry on the exact reward, P(x¹ ≻ x²) = σ((r(x¹) − r(x²))/τ)."""

    tau: float = _f(1.0, "τ, the temperature of the Bradley–Terry labels (DPO's optimum is "
                    "p₀ e^{r/(τ β_DPO)} [Rafailov+23, Eq. 4], so loss.beta must be "
                    "base.beta / tau)")
    per_draw: int = _f(16, "pairs per draw (2 reward queries each)")
    draw_every: int = _f(9, "optimizer steps between draws, the first before step 0; 0: one draw "
                         "only (a fixed offline dataset); every step trains on all pairs so far")
    source: Literal["sampler", "exact"] = _f("sampler", "sampler: the base model's sampler "
                                             "(section policy, no exploration); exact: exact "
                                             "draws of the base mixture p₀")

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise FieldError("tau", f"must be > 0; got {self.tau}")
        if self.per_draw < 1:
            raise FieldError("per_draw", f"must be >= 1; got {self.per_draw}")
        if self.draw_every < 0:
            raise FieldError("draw_every", f"must be >= 0; got {self.draw_every}")


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
    eval: DiffusionEvalConfig = _f(DiffusionEvalConfig, "evaluation (testbed: enabled, "
                                   "num_samples and seed; the samples come from section policy)")
    pairs: TestbedPairsConfig = _f(TestbedPairsConfig, "base.type testbed: online pairs")
    policy: PolicyConfig = _f(PolicyConfig, "base.type testbed: the sampler of the pairs and of "
                              "the evaluation (finetune's policy section; its per-step KL to the "
                              "base is the run's KL)")

    def __post_init__(self) -> None:
        from scorealign.preference.losses import PAIRWISE
        from scorealign.sde.dsm import WEIGHTINGS

        if self.base.type == "testbed":
            self._check_testbed()
        elif not self.data.path:
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

    def _check_testbed(self) -> None:
        """``base.type: testbed``: the settings under which Diffusion-DPO's optimum is p*_β.

        With Bradley–Terry labels on r/τ, DPO's optimum is p_ref e^{r/(τ β_DPO)} [Rafailov+23,
        Eq. 4], so β_DPO = β/τ makes it p*_β; the denoising-error margin is the ELBO difference
        (likelihood weighting g(t)², summed over dimensions, scale T/2 [Song+21b, Thm. 1]) and
        the link the sigmoid of Bradley–Terry. Raises FieldError naming the field otherwise.
        """
        b, lc = self.base, self.loss
        if self.data.path:
            raise FieldError("data.path", "base.type testbed draws its pairs from the base model "
                             f"(section pairs): leave data.path empty (got {self.data.path!r})")
        want = b.beta / self.pairs.tau
        if abs(lc.beta - want) > 1e-9 * want:
            raise FieldError("loss.beta", f"base.type testbed needs β_DPO = base.beta / "
                             f"pairs.tau = {want:g}, so that DPO's optimum p₀ e^{{r/(τ β_DPO)}} is "
                             f"p*_β [Rafailov+23, Eq. 4]; got {lc.beta:g}")
        for name, value, need in (("loss.link", lc.link, "sigmoid"),
                                  ("loss.weighting", lc.weighting, "likelihood"),
                                  ("loss.reduce", lc.reduce, "sum")):
            if value != need:
                raise FieldError(name, f"base.type testbed needs {need} (the Bradley–Terry "
                                 f"link of the ELBO margin [Wallace+23, Eq. 14; Song+21b, Thm. "
                                 f"1]); got {value!r}")
        from scorealign.sde import VPSDE
        half_t = 0.5 * VPSDE().T
        if abs(lc.scale - half_t) > 1e-12:
            raise FieldError("loss.scale", f"base.type testbed needs T/2 = {half_t:g} (the ELBO's "
                             f"factor [Song+21b, Thm. 1]); got {lc.scale:g}")
        if lc.sft_weight:
            raise FieldError("loss.sft_weight", "base.type testbed: must be 0 (an SFT term moves "
                             f"the optimum off p*_β); got {lc.sft_weight:g}")
        if self.lora.on:
            raise FieldError("lora.enabled", "base.type testbed trains its control network "
                             "whole: no LoRA")
        if self.reference.mode != "frozen":
            raise FieldError("reference.mode", "base.type testbed: the reference is the exact "
                             "base (frozen)")
        p = self.policy
        if p.guidance != 1.0:
            raise FieldError("policy.guidance", "base.type testbed has no conditioning: set "
                             f"1.0; got {p.guidance:g}")
        if p.exploration != 0.0:
            raise FieldError("policy.exploration", "base.type testbed: the VP sampler needs "
                             f"none (0.0); got {p.exploration:g}")
        if p.eta is not None and not p.eta > 0:
            raise FieldError("policy.eta", "base.type testbed: the run's KL is the sampler's "
                             "per-step KL, which needs a stochastic chain (eta > 0); got "
                             f"{p.eta:g}")
