"""Config schema of ``scorealign dpo``: frozen dataclasses, every field with its help.

``loss: {name: rainbowpo, params: {beta: 10, length_normalization: true}}`` is validated against
the objective's keyword-only arguments when the config is built, so a typo is a config error
naming the YAML line. Cross-field rules (reference mode vs objective, data kind vs objective)
are checked in :class:`DPOConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from scorealign.config import FieldError, OptimConfig, Tracker, help_field, tracker_field
from scorealign.config import LoraConfig as SharedLora
from scorealign.preference import objectives
from scorealign.preference.losses import ParamError

_f = help_field  # every field carries its --help-config text


@dataclass(frozen=True)
class LoraConfig(SharedLora):
    """LoRA adapters via peft (:class:`scorealign.config.LoraConfig` with the LM's defaults);
    with reference.mode = lora_disabled the base is the reference."""

    target_modules: list[str] = _f(["c_attn"], "module names to adapt (GPT-2: c_attn, c_proj, c_fc)")


@dataclass(frozen=True)
class ModelConfig:
    """The policy: a tiny GPT-2 built from this config, or a local pretrained causal LM."""

    source: Literal["tiny_gpt2", "pretrained"] = _f("tiny_gpt2", "how to build the policy")
    path: str | None = _f(None, "pretrained: local model directory (tokenizer read from it too)")
    init: str | None = _f(None, "tiny_gpt2: safetensors state dict to start from (e.g. an SFT model)")
    n_layer: int = _f(2, "tiny_gpt2: transformer layers")
    n_embd: int = _f(64, "tiny_gpt2: width")
    n_head: int = _f(4, "tiny_gpt2: attention heads")
    n_positions: int = _f(64, "tiny_gpt2: maximum sequence length")
    init_seed: int = _f(0, "tiny_gpt2: seed of the random initialization")
    lora: LoraConfig = _f(LoraConfig, "LoRA adapters")


@dataclass(frozen=True)
class DataConfig:
    """Where the preference data comes from and how it is tokenized."""

    source: Literal["jsonl", "hf", "demo"] = _f("jsonl", "jsonl file, HF dataset, or the demo task")
    path: str | None = _f(None, "jsonl: file; hf: dataset name or save_to_disk directory")
    split: str = _f("train", "hf: split name")
    kind: Literal["paired", "unpaired"] = _f("paired", "prompt/chosen/rejected, or "
                                             "prompt/completion/label (KTO)")
    max_length: int = _f(64, "prompt + completion tokens (completions are cut)")
    max_prompt_length: int = _f(32, "prompt tokens kept (from the end)")
    padding_side: Literal["left", "right"] = _f("right", "padding side of collated batches")
    limit: int | None = _f(None, "use only the first N records")


@dataclass(frozen=True)
class LossConfig:
    """The preference objective by name and its parameters (see docs/preference.md)."""

    name: str = _f("sigmoid", f"objective: one of {objectives.names()}")
    params: dict[str, Any] = _f({}, "keyword parameters of the objective, e.g. {beta: 0.1}")

    def __post_init__(self) -> None:
        try:
            self.resolved()
        except ParamError as e:  # reported at loss.params.<param> (exit 2 through the CLI)
            raise FieldError(f"params.{e.param}", str(e).partition(": ")[2]) from None

    def resolved(self) -> objectives.Objective:
        """The objective with its parameters bound (raises ValueError on a bad name/param)."""
        return objectives.resolve(self.name, self.params)


@dataclass(frozen=True)
class ReferenceConfig:
    """Where π_ref log-probs come from."""

    mode: Literal["precompute", "model", "lora_disabled", "none"] = _f(
        "precompute", "precompute: one pass before training, cached in the run dir; model: a "
        "frozen copy run every step; lora_disabled: the policy with adapters off; none: "
        "reference-free objectives")
    init: str | None = _f(None, "safetensors weights of the reference (default: the initial policy)")
    batch_size: int = _f(32, "batch size of the precompute pass")


@dataclass(frozen=True)
class TrainConfig(OptimConfig):
    """Optimization (the shared :class:`OptimConfig`: lr, weight_decay, grad_clip), logging and
    checkpointing."""

    steps: int = _f(100, "optimizer steps")
    batch_size: int = _f(8, "pairs per micro-batch")
    grad_accum: int = _f(1, "micro-batches per optimizer step")
    decay: Literal["constant", "linear"] = _f("constant", "after warmup: constant or linear to 0 "
                                              "(old name schedule)")
    warmup_steps: int = _f(0, "linear warmup steps")
    log_every: int = _f(10, "steps between metric lines")
    eval_every: int = _f(0, "steps between evaluations (0: only at start and end)")
    ckpt_every: int = _f(50, "steps between checkpoints (the last step is always saved)")
    keep_checkpoints: int = _f(2, "checkpoints kept")
    seed: int = _f(0, "run seed (data order, sampling, evaluation)")
    stop_after_steps: int | None = _f(None, "end this invocation after this global step (the "
                                      "schedule still spans train.steps); resume continues it")
    mixed_precision: Literal["no", "bf16", "fp16"] = _f("no", "accelerate mixed precision; "
                                                       "log-probs are computed in fp32 regardless")
    progress: bool = _f(True, "show a progress bar")


@dataclass(frozen=True)
class DemoConfig:
    """The offline demo: SFT a tiny GPT-2, label its samples with a programmatic oracle."""

    sft_steps: int = _f(400, "SFT steps before preference data is drawn")
    sft_batch_size: int = _f(64, "SFT batch size")
    sft_lr: float = _f(3e-3, "SFT learning rate")
    prompt_bias: float = _f(0.5, "SFT data: probability that a completion letter is from the prompt")
    n_prompts: int = _f(1024, "prompts for preference pairs")
    candidates: int = _f(2, "SFT samples per prompt (2: one pair; more: see pairing)")
    pairing: Literal["random", "best_worst", "rso"] = _f("random", "how candidates become pairs")
    rso_beta: float = _f(0.5, "RSO: β of the target policy π* ∝ π_sft exp(r/β)")
    eval_prompts: int = _f(512, "prompts of the win-rate evaluation")
    max_new_tokens: int = _f(10, "sampling cap")


class TrainSeed:
    """Mixin of the ``dpo`` configs (LM and diffusion): ``seed`` is ``train.seed`` (issue 11: one
    name for every command)."""

    @property
    def seed(self) -> int:
        """``train.seed``."""
        return self.train.seed  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DPOConfig(TrainSeed):
    """``scorealign dpo``: offline preference optimization of a causal LM."""

    device: Literal["auto", "cpu"] = _f("auto", "auto: accelerate's choice; cpu: force CPU")
    tracker: Tracker = tracker_field()
    model: ModelConfig = _f(ModelConfig, "policy model")
    data: DataConfig = _f(DataConfig, "preference data")
    loss: LossConfig = _f(LossConfig, "objective")
    reference: ReferenceConfig = _f(ReferenceConfig, "reference log-probs")
    train: TrainConfig = _f(TrainConfig, "optimization")
    demo: DemoConfig = _f(DemoConfig, "demo task (data.source = demo)")

    def __post_init__(self) -> None:
        obj = self.loss.resolved()
        mode = self.reference.mode
        if obj.needs_reference and mode == "none":
            raise ValueError(f"loss {obj.name!r} needs reference log-probs; reference.mode is 'none'")
        if obj.unpaired != (self.data.kind == "unpaired"):
            raise ValueError(f"loss {obj.name!r} needs data.kind="
                             f"{'unpaired' if obj.unpaired else 'paired'}")
        if obj.unpaired and mode not in ("model", "lora_disabled"):
            raise ValueError("kto needs reference.mode model or lora_disabled (its KL term pairs "
                             "examples within a batch, which a precomputed cache cannot serve)")
        if mode == "lora_disabled" and not self.model.lora.on:
            raise ValueError("reference.mode lora_disabled needs model.lora.enabled: true")
        if self.data.source in ("jsonl", "hf") and not self.data.path:
            raise ValueError(f"data.source {self.data.source!r} needs data.path")
        if self.data.source == "demo" and self.model.source != "tiny_gpt2":
            raise ValueError("the demo task trains a tiny_gpt2 model")
