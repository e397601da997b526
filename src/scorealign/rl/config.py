"""``scorealign finetune`` configuration: frozen dataclasses loaded strictly from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from scorealign.config import BaseConfig as SharedBase
from scorealign.config import FieldError, Tracker, tracker_field
from scorealign.config import LoraConfig as SharedLora
from scorealign.config import OptimConfig as SharedOptim
from scorealign.policy.config import PolicyConfig  # noqa: F401 (the policy section; re-export)
from scorealign.rl.losses import DEFAULT_ADVANTAGE, RL_LOSSES


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class BaseConfig(SharedBase):
    """The pretrained model that is fine-tuned (and kept frozen as the KL reference):
    :class:`scorealign.config.BaseConfig` and what a pipeline base needs."""

    type: Literal["digits", "sd_tiny", "sd", "sd3_tiny", "flux_tiny", "sd3", "flux",
                  "testbed"] = \
        field(default="digits", metadata=_h(
            "digits: a scorealign digits model (VP or flow); sd_tiny: the tiny SD pipeline "
            "(policy/sd.py); sd: a real Stable-Diffusion-1.x-style pipeline (UNet, e.g. SD 1.5) "
            "at base.path; sd3_tiny / flux_tiny: tiny flow-transformer pipelines "
            "(policy/flow_pipelines.py); sd3 / flux: a real pipeline at base.path; testbed: a "
            "closed-form problem (scorealign.testbed): the exact base score plus a zero-"
            "initialized control network, rewarded by the problem's reward"))
    path: str = field(default="pretrained:digits8", metadata=_h(
        "digits: a pretraining run directory, or 'pretrained:digits8' / "
        "'pretrained:digits8-flow' (shipped models); sd / sd3 / flux: a pipeline directory or "
        "hub id"))
    seed: int = field(default=0, metadata=_h("*_tiny: initialization seed of the pipeline"))
    latent_size: int = field(default=8, metadata=_h(
        "sd3 / flux / *_tiny: latent height = width of the flow pipeline's samples"))
    size: Literal["tiny", "compute", "compute_hd32", "sd15"] = field(default="tiny", metadata=_h(
        "sd_tiny: pipeline size (policy/sd.py SIZES): tiny 8x8 latents, compute 32x32 latents "
        "with UNet channels 64-128 (head dim 8; compute_hd32: head dim 32), sd15 SD 1.5's "
        "UNet (GPU)"))
    dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata=_h(
        "SD-style pipelines (sd_tiny, sd, sd3_tiny, flux_tiny, sd3, flux): dtype of the "
        "denoiser, VAE and text-encoder weights (sd / sd3 / flux are loaded in it); latents, "
        "log-probs, ratios "
        "and KL stay fp32 and LoRA adapters fp32"))
    gradient_checkpointing: bool = field(default=False, metadata=_h(
        "sd_tiny / sd: recompute UNet block activations in backward (less memory, more compute)"))
    cache_prompts: bool = field(default=True, metadata=_h(
        "sd_tiny / sd: encode each distinct prompt once per run (embeddings cached)"))
    compile: bool = field(default=False, metadata=_h(
        "sd_tiny / sd: torch.compile the UNet (weights, optimizer and checkpoints unchanged)"))
    problem: str = field(default="quadratic", metadata=_h(
        "testbed: the preset problem (testbed.PROBLEMS: linear | quadratic | multimodal)"))
    dim: int = field(default=2, metadata=_h("testbed: the dimension d (2, 8 or 32)"))
    beta: float = field(default=1.0, metadata=_h(
        "testbed: β of the target p*_β ∝ p₀ e^{r/β} the metrics compare with (the multimodal "
        "reward is defined at this β)"))
    sde: Literal["vp", "flow"] = field(default="vp", metadata=_h(
        "testbed: vp (ε-prediction, VPSDE) or flow (velocity, rectified flow)"))
    control_hidden: int = field(default=64, metadata=_h(
        "testbed: width of the control network (nets.mlp.TimeMLP, depth 2)"))

    def __post_init__(self) -> None:
        if self.type == "testbed":
            if self.dim not in (2, 8, 32):
                raise FieldError("dim", f"testbed dimensions are 2, 8, 32; got {self.dim}")
            if not self.beta > 0:
                raise FieldError("beta", f"must be > 0; got {self.beta}")
            if self.control_hidden < 1:
                raise FieldError("control_hidden", f"must be >= 1; got {self.control_hidden}")


@dataclass(frozen=True)
class RewardConfig:
    """Optimized reward and the held-out gold reward (names, mappings or import paths)."""

    optimized: Any = field(default="aesthetic_proxy", metadata=_h(
        "registered name, {name: ..., **kwargs}, or 'package.module:function'"))
    gold: Any = field(default=None, metadata=_h("held-out reward logged beside it, or null"))
    clamp: list[float] | None = field(default_factory=lambda: [-1.0, 1.0], metadata=_h(
        "[lo, hi]: samples are clamped to the data range before every reward and gold reward "
        "(what a saved image shows); null: rewards see the raw tensor"))
    background: bool = field(default=False, metadata=_h(
        "score each rollout chunk in a background thread while the next chunk samples"))

    def __post_init__(self) -> None:
        if self.clamp is not None and (len(self.clamp) != 2 or
                                       not float(self.clamp[0]) < float(self.clamp[1])):
            raise FieldError("clamp", f"must be [lo, hi] with lo < hi, or null; got {self.clamp}")


@dataclass(frozen=True)
class PromptConfig:
    """Prompts of each epoch: P drawn from the list, K rollouts each (B = P·K)."""

    prompts: list[str] = field(default_factory=list, metadata=_h(
        "prompt list (empty: the base model's defaults, e.g. the ten digit prompts)"))
    per_epoch: int = field(default=8, metadata=_h("P, prompts per epoch"))
    k: int = field(default=4, metadata=_h("K, rollouts per prompt"))


@dataclass(frozen=True)
class ValueConfig:
    """DPOK's learned value baseline V_φ(x_t, t, c) (``rl/value.py``), for advantage=value."""

    hidden: int = field(default=128, metadata=_h("width of the value MLP's hidden layers"))
    lr: float = field(default=1e-3, metadata=_h("Adam learning rate of the value network"))
    steps_per_epoch: int = field(default=20, metadata=_h(
        "full-batch regression steps on the epoch's (row, step) states, after the advantages"))
    design: Literal["learned", "x0"] = field(default="learned", metadata=_h(
        "learned: V_phi(x_t, t, c) regressed on r (DPOK); x0: V = r(x0_hat(x_t, t)) + c_phi, "
        "the reward of the denoised prediction plus a learned correction (Score as Action's "
        "value design; costs S extra reward queries per row, counted in queries/reward)"))

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise FieldError("hidden", f"must be >= 1, got {self.hidden}")
        if not self.lr > 0:
            raise FieldError("lr", f"must be > 0, got {self.lr}")
        if self.steps_per_epoch < 1:
            raise FieldError("steps_per_epoch", f"must be >= 1, got {self.steps_per_epoch}")


@dataclass(frozen=True)
class AlgoConfig:
    """Which loss and advantage estimator (registries in rl/), with their hyper-parameters."""

    loss: str = field(default="loop", metadata=_h(f"one of {sorted(RL_LOSSES)}"))
    advantage: str | None = field(default=None, metadata=_h(
        "advantage estimator (null: the loss's default, rl.losses.DEFAULT_ADVANTAGE)"))
    loss_kwargs: dict[str, Any] = field(default_factory=dict, metadata=_h(
        "keyword hyper-parameters of the loss (clip, beta, reduce, ...)"))
    advantage_kwargs: dict[str, Any] = field(default_factory=dict, metadata=_h(
        "keyword hyper-parameters of the estimator (adv_clip, buffer_size, ...)"))
    backprop_steps: int = field(default=1, metadata=_h("reward_backprop: K of DRaFT-K"))
    ratio_units: Literal["per_dim", "sum"] = field(default="per_dim", metadata=_h(
        "units of the PPO ratio, clip and approx-KL: per_dim = log-probs divided by the sample "
        "dimension D (as ddpo-pytorch/flow_grpo average them), so clip 1e-4 means the same at "
        "8x8 and 64x64x4; sum = summed log-probs (clip must then scale with D)"))
    kl: Literal["exact", "eps_mse"] = field(default="exact", metadata=_h(
        "per-step KL term: exact = Gaussian KL of the sampled kernel/action in nats; eps_mse = "
        "DPOK's code, mean over dims of (eps_theta - eps_ref)^2 (guided), no per-step weights"))
    kl_units: Literal["authors", "exact"] = field(default="authors", metadata=_h(
        "Flow-GRPO family's KL term: authors = yifan123/flow_grpo's kl_loss, mean over dims of "
        "(mu - mu_ref)^2 / (2 std_dev_t^2) = c_k * KL_k / D (c_k = |dt_k| for flow_sde, whose "
        "std_dev_t is the SDE's sigma_t; 1 for flow_cps/dance_sde); exact = the exact per-step "
        "KL KL_k in nats (divided by D under ratio_units per_dim); other losses: exact"))
    value: ValueConfig | None = field(default=None, metadata=_h(
        "learned value baseline {hidden, lr, steps_per_epoch}; required by advantage=value"))

    def advantage_name(self) -> str | None:
        """The estimator to use (explicit, else the loss's default)."""
        return self.advantage if self.advantage is not None else DEFAULT_ADVANTAGE.get(self.loss)


@dataclass(frozen=True)
class OptimConfig(SharedOptim):
    """The outer loop and the optimizer (:class:`scorealign.config.OptimConfig`: lr,
    weight_decay, grad_clip; then the RL loop's own fields)."""

    lr: float = field(default=3e-4, metadata=_h("AdamW learning rate"))
    epochs: int = field(default=30, metadata=_h("rollout → update rounds"))
    inner_epochs: int = field(default=1, metadata=_h("passes over each epoch's samples"))
    minibatch_size: int = field(default=32, metadata=_h("rows per optimizer step (global)"))
    grad_accum: int = field(default=1, metadata=_h("micro-batches per minibatch"))
    sample_batch_size: int = field(default=32, metadata=_h("rows per rollout chunk"))
    shuffle: bool = field(default=True, metadata=_h("shuffle rows between minibatches"))
    ema_decay: float = field(default=0.0, metadata=_h("EMA of trainable weights (0: off)"))
    seed: int = field(default=0, metadata=_h("run seed: every random draw derives from it"))
    log_kl: bool = field(default=True, metadata=_h("log the KL to the base model each epoch"))
    ckpt_every: int = field(default=5, metadata=_h("checkpoint interval (epochs)"))
    keep_checkpoints: int = field(default=2, metadata=_h("newest checkpoints kept"))
    mode: Literal["lean", "fast"] = field(default="lean", metadata=_h(
        "how the update is scheduled (same gradient either way): lean = TRL DDPOTrainer's "
        "(trl/trainer/ddpo_trainer.py): rollout under no_grad, log-probs recomputed per trained "
        "step with one backward per step, micro-batches of minibatch_size/grad_accum rows, no "
        "rollout graph kept (least memory), except that on-policy LoRA epochs take their "
        "gradient in the rollout (see rollout_backward); fast = keep graphs: reuse the rollout's graphs when "
        "the update is on-policy (see reuse_rollout_graph), else all trained steps of a "
        "micro-batch folded into one forward and one backward (faster, memory grows with the "
        "steps). reuse_rollout_graph / step_chunk / fold_steps, when set, override the mode"))
    reuse_rollout_graph: bool | None = field(default=None, metadata=_h(
        "on-policy updates (inner_epochs 1, one minibatch per epoch, one process): keep the "
        "rollout's per-step graphs and backpropagate through them instead of recomputing the "
        "log-probs (same gradient, no training forward; memory: every trained step's graph of "
        "the whole batch); null: from train.mode (fast: when the update allows it)"))
    rollout_backward: bool | None = field(default=None, metadata=_h(
        "on-policy updates of a LoRA policy (inner_epochs 1, one minibatch per epoch, one "
        "process, a log-prob loss without a differentiable KL, exploration 0): backpropagate "
        "each trained step's log-prob during the rollout and keep per-sample adapter gradients "
        "(fp32, samples × trained steps × adapter size) instead of graphs, so the update needs "
        "no training forward (same gradient: nets/per_sample_grads.py; memory: one step's "
        "graph of a rollout chunk); null: on in lean mode when the update allows it, a rollout "
        "chunk (sample_batch_size) is no larger than a micro-batch (minibatch_size / "
        "grad_accum) and those gradients take no more bytes than the model's weights"))
    step_chunk: int | None = field(default=None, metadata=_h(
        "trained steps per backward pass (0: all steps of a micro-batch, one backward); k > 0 "
        "holds the graphs of k steps at a time (peak memory ~k/S of 0's; same gradient); "
        "null: from train.mode (lean 1, fast 0)"))
    fold_steps: bool | None = field(default=None, metadata=_h(
        "the model calls of a chunk's steps as one batch of B*steps rows (fewer, larger "
        "forwards: faster for small networks, same memory as the chunk); null: from "
        "train.mode (lean false, fast true)"))


@dataclass(frozen=True)
class LoraConfig(SharedLora):
    """LoRA adapters through peft (:class:`scorealign.config.LoraConfig`; here ``enabled`` null
    and rank 0 by default: rank 0 trains every weight, rank > 0 trains adapters)."""

    enabled: bool | None = field(default=None, metadata=_h(
        "null: adapters exactly when rank > 0; true needs rank > 0; false needs rank 0"))
    rank: int = field(default=0, metadata=_h("adapter rank r (0: full fine-tuning)"))
    alpha: float = field(default=8.0, metadata=_h("LoRA α"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dropout != 0.0:
            raise FieldError("dropout", "finetune's adapters have no dropout (keep 0)")
        if self.enabled is False and self.rank > 0:  # the RL code switches on rank alone
            raise FieldError("enabled", f"false contradicts rank {self.rank} > 0 (rank 0 "
                                        f"trains every weight)")


class UpdateLevers(NamedTuple):
    """The resolved update schedule (:meth:`FinetuneConfig.levers`)."""

    reuse_rollout_graph: bool
    step_chunk: int
    fold_steps: bool
    # per-sample scores in the rollout (train.rollout_backward): True/False when set, else
    # "auto" where the config allows it (the trainer checks the model and the memory)
    rollout_backward: bool | str = False


@dataclass(frozen=True)
class FinetuneConfig:
    """``scorealign finetune``: base model, policy, reward, prompts, algorithm, optimization."""

    base: BaseConfig = field(default_factory=BaseConfig, metadata=_h("pretrained model"))
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata=_h("sampler"))
    reward: RewardConfig = field(default_factory=RewardConfig, metadata=_h("rewards"))
    prompts: PromptConfig = field(default_factory=PromptConfig, metadata=_h("prompts"))
    algo: AlgoConfig = field(default_factory=AlgoConfig, metadata=_h("algorithm"))
    train: OptimConfig = field(default_factory=OptimConfig, metadata=_h("optimization"))
    lora: LoraConfig = field(default_factory=LoraConfig, metadata=_h("LoRA (peft)"))
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=_h("device"))
    tracker: Tracker = tracker_field()  # issue 11

    def _reuse_graph_problem(self, b: int) -> str | None:
        """Why train.reuse_rollout_graph cannot run (it needs an on-policy update with a
        log-prob loss only), or None."""
        from scorealign.rl.losses import kl_required, split_signature
        t, loss = self.train, self.algo.loss
        if t.inner_epochs != 1 or t.minibatch_size != b:
            return (f"needs one optimizer step per rollout batch: train.inner_epochs=1 (got "
                    f"{t.inner_epochs}) and train.minibatch_size=prompts.per_epoch*k={b} (got "
                    f"{t.minibatch_size})")
        entry = RL_LOSSES.get(loss)
        hyper = {**split_signature(entry.fn)[1], **self.algo.loss_kwargs}
        grad_kl = float(hyper.get("beta", 0.0) or 0.0) > 0 or kl_required(entry)
        beyond = {"needs_differentiable_reward", "forward_process"} & entry.properties
        if beyond or grad_kl:
            return (f"loss {loss!r} needs model calls beyond the rollout's log-probs (reward "
                    f"backprop, a forward-process loss or a differentiable KL with beta > 0)")
        return None

    def _rollout_backward_problem(self, b: int, world: int = 1) -> str | None:
        """Why train.rollout_backward cannot run on this config, or None."""
        if world > 1:
            return "needs one process (the update's rows are other processes' rollouts)"
        if self.lora.rank <= 0:
            return (f"needs LoRA adapters (lora.rank > 0, got {self.lora.rank}): per-sample "
                    f"gradients of every weight would not fit")
        if self.policy.exploration > 0:
            return (f"needs policy.exploration 0 (got {self.policy.exploration}): an exploring "
                    f"policy's log-prob is its action's")
        if self.train.reuse_rollout_graph:
            return "train.reuse_rollout_graph already skips the training forward (keeps graphs)"
        if self.base.gradient_checkpointing:
            return ("base.gradient_checkpointing is on: the per-sample hooks would hold every "
                    "adapter input the checkpoints drop")
        return self._reuse_graph_problem(b)

    def levers(self, world: int = 1) -> "UpdateLevers":
        """The update schedule of ``train.mode`` with the explicitly set levers on top.

        lean (TRL's DDPOTrainer): no rollout graph, one backward per trained step. fast: the
        rollout's graphs when the update is on-policy on one process (and no recompute lever
        is set), else every trained step of a micro-batch in one folded forward/backward.
        """
        t = self.train
        b = self.prompts.per_epoch * self.prompts.k
        fast = t.mode == "fast"
        reuse = t.reuse_rollout_graph
        if reuse is None:
            reuse = (fast and world == 1 and t.step_chunk is None and t.fold_steps is None
                     and self._reuse_graph_problem(b) is None)
        chunk = t.step_chunk if t.step_chunk is not None else (0 if fast else 1)
        fold = t.fold_steps if t.fold_steps is not None else fast
        rb: bool | str = bool(t.rollout_backward)
        if t.rollout_backward is None:
            # auto: also no larger graph than a training micro-batch's (a rollout chunk of at
            # most minibatch_size / grad_accum rows), so lean's peak memory holds
            rb = "auto" if (not fast and not reuse and t.step_chunk is None
                            and t.fold_steps is None
                            and t.sample_batch_size <= t.minibatch_size // t.grad_accum
                            and self._rollout_backward_problem(b, world) is None) else False
        return UpdateLevers(bool(reuse), chunk, bool(fold), rb)

    def __post_init__(self) -> None:
        from scorealign.rl.advantages import ADVANTAGES
        for reg, field_, name in ((RL_LOSSES, "algo.loss", self.algo.loss),
                                  (ADVANTAGES, "algo.advantage", self.algo.advantage)):
            if name is not None and name not in reg:
                raise FieldError(field_, f"unknown {reg.kind} {name!r}; choose one of "
                                         f"{sorted(reg)}")
        from scorealign.train.task import check_prompts  # before the first rollout (issue 26)
        check_prompts(self.base.type, "prompts.prompts", self.prompts.prompts)
        t, p = self.train, self.prompts
        b = p.per_epoch * p.k
        if b % t.minibatch_size or t.minibatch_size % t.grad_accum:
            raise ValueError(f"prompts.per_epoch·k = {b} must be a multiple of "
                             f"train.minibatch_size ({t.minibatch_size}), itself a multiple of "
                             f"train.grad_accum ({t.grad_accum})")
        needs_k = self.algo.advantage_name() in ("leave_one_out", "group")
        if needs_k and p.k < 2:
            raise ValueError(f"advantage {self.algo.advantage_name()!r} needs prompts.k ≥ 2")
        adv = self.algo.advantage_name()
        needs_values = adv is not None and "needs_values" in ADVANTAGES.get(adv).properties
        if needs_values and self.algo.value is None:
            raise FieldError("algo.value", f"advantage {adv!r} needs the value network's config "
                             "algo.value: {hidden, lr, steps_per_epoch}")
        if not needs_values and self.algo.value is not None:
            raise FieldError("algo.value", f"only used by an estimator that needs values "
                             f"(algo.advantage=value); advantage is {adv!r}")
        if t.step_chunk is not None and t.step_chunk < 0:
            raise FieldError("train.step_chunk", f"must be >= 0, got {t.step_chunk}")
        if t.reuse_rollout_graph and (why := self._reuse_graph_problem(b)):
            raise FieldError("train.reuse_rollout_graph", why)
        if t.rollout_backward and (why := self._rollout_backward_problem(b)):
            raise FieldError("train.rollout_backward", why)
        if self.algo.loss == "reinforce" and (t.inner_epochs > 1 or t.minibatch_size < b):
            raise FieldError("algo.loss", f"reinforce has no importance ratio, so it cannot "
                             f"reuse samples: needs train.inner_epochs=1 (got {t.inner_epochs}) "
                             f"and train.minibatch_size=prompts.per_epoch*k={b} (got "
                             f"{t.minibatch_size}); use ppo_clip/loop/grpo for reuse")
        sde_policy = self.policy.sampler in ("ddim", "ddpm", "euler_maruyama", "heun_sde") and \
            self.policy.eta in (None, 1.0)
        if self.algo.loss == "score_as_action" and self.policy.exploration <= 0 and not sde_policy:
            raise ValueError("algo.loss=score_as_action needs policy.exploration > 0 (the "
                             "exploratory Gaussian policy over score actions) or the eta = 1 "
                             "reverse SDE as the policy (its KL is the Girsanov path KL)")
