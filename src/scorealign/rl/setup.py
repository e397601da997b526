"""The fine-tuning problem: trainable model, frozen reference, SDE, prompts, text → cond, decoding.

``build_setup(cfg)`` loads the base model named by ``cfg.base`` (a digits base through
``train.bases.load_base``: a pretraining run, a model directory or a shipped checkpoint; a tiny
SD / SD3 / FLUX pipeline; or a real SD / SD3 / FLUX pipeline from ``base.path``), adds LoRA
adapters when ``cfg.lora.rank > 0`` and returns a
:class:`Setup`. Only parameters with ``requires_grad`` are trained and checkpointed.

The frozen KL reference (:func:`frozen_reference`) under LoRA is the trained network itself with
its adapters switched off (:class:`AdaptersOff`, as peft's ``disable_adapter()``: each LoRA layer
returns ``base_layer(x)``), so the base weights are held once; it computes what a copy of the base
taken before the adapters were added computes, bit for bit (tests/rl/test_lora_reference.py).
A full fine-tune (``lora.rank: 0``) changes the base weights, so its reference is a frozen copy.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from scorealign.policy.policy import Policy
from scorealign.rl.config import FinetuneConfig
from scorealign.sde.base import SDE
from scorealign.sde.flow import FlowSDE
from scorealign.train.bases import load_digits_base


@dataclass
class Setup:
    """A base model ready for RL fine-tuning."""

    model: nn.Module
    ref: nn.Module
    sde: SDE
    kind: str
    shape: tuple[int, ...]
    encode: Callable[[list[str]], Any]
    decode: Callable[[Tensor], Tensor]
    prompts: list[str]
    # moves what ``encode``/``decode`` run on (text encoders, VAE, cached embeddings) to the
    # trainer's device; the trainable model and the reference are placed by the trainer itself
    place: Callable[[torch.device], None] | None = None
    # base.type testbed: the problem (scorealign.testbed.Problem), the reward set that replaces
    # the config's reward section, how sample figures are drawn (x [B, D], path) and how many
    # rows per prompt a figure shows
    problem: Any = None
    rewards: Any = None
    save_figure: Callable[[Tensor, Any], None] | None = None
    figure_rows: int = 0

    def trainable_state(self, model: nn.Module | None = None) -> dict[str, Tensor]:
        """Trainable weights by name (the full model, or only LoRA adapters)."""
        m = self.model if model is None else model
        return {k: p.detach().clone() for k, p in m.named_parameters() if p.requires_grad}

    def load_trainable(self, state: dict[str, Tensor]) -> None:
        """Load :meth:`trainable_state` back (strict on the trainable names)."""
        params = dict(self.model.named_parameters())
        want = {k for k, p in params.items() if p.requires_grad}
        if set(state) != want:
            raise ValueError(f"checkpoint has {len(state)} trainable tensors, model {len(want)}; "
                             f"missing {sorted(want - set(state))[:3]}, "
                             f"unexpected {sorted(set(state) - want)[:3]}")
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v)

    def save_samples(self, x: Tensor, path: Any, nrow: int) -> None:
        """Save decoded samples ``x`` as a figure: an image grid, or the setup's own figure."""
        if self.save_figure is not None:
            self.save_figure(x, path)
            return
        from scorealign.report.figures import save_image_grid
        save_image_grid(x, path, nrow=nrow)

    def policy(self, cfg: FinetuneConfig, model: Any = None) -> Policy:
        """The policy of ``cfg.policy`` around ``model`` (default: the trainable model)."""
        return Policy(self.model if model is None else model, self.sde, cfg.policy,
                      kind=self.kind, shape=self.shape, encode=self.encode)


@contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its peft adapters switched off, in eval mode, for the ``with`` block.

    Each peft tuner layer (``BaseTunerLayer``) of ``model`` gets its ``_disable_adapters`` flag
    set, so its forward is ``base_layer(x)`` (peft ``tuners/lora/layer.py``, ``Linear.forward``),
    as under peft's ``disable_adapter()`` context; unlike peft's ``enable_adapters`` this leaves the
    adapters' ``requires_grad`` untouched (the optimizer's parameters, possibly inside a graph that
    is not yet backpropagated). Modules in train mode are put in eval mode (the reference never
    uses dropout), and, with autograd on, diffusers' gradient checkpointing is switched off: a
    checkpointed block is recomputed in the backward pass, after this block has switched the
    adapters back on. A ``torch.compile``d network (``SDParts(compile=...)``: ``model.compiled``) is
    bypassed for the block: the reference runs eagerly rather than relying on dynamo's guards to
    notice the switched flags. Every flag is restored on exit.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    modules = list(model.modules())
    layers = [m for m in modules if isinstance(m, BaseTunerLayer)]
    if any(getattr(m, "merged", False) for m in layers):
        raise ValueError("the LoRA adapters are merged into the base weights: the base model "
                         "cannot be recovered by switching them off")
    saved = [(m, m._disable_adapters) for m in layers]
    training = [(m, m.training) for m in modules if m.training]
    ckpt = [m for m in modules if getattr(m, "gradient_checkpointing", False) is True] \
        if torch.is_grad_enabled() else []
    compiled = getattr(model, "compiled", None)
    try:
        if compiled is not None:
            object.__setattr__(model, "compiled", None)
        for m in layers:
            m._disable_adapters = True
        for m, _ in training:
            m.training = False
        for m in ckpt:
            m.gradient_checkpointing = False
        yield model
    finally:
        if compiled is not None:
            object.__setattr__(model, "compiled", compiled)
        for m, flag in saved:
            m._disable_adapters = flag
        for m, _ in training:
            m.training = True
        for m in ckpt:
            m.gradient_checkpointing = True


class AdaptersOff(nn.Module):
    """The frozen base of a LoRA-adapted ``model`` without a copy: ``model`` called inside
    :func:`adapters_off` (TRL's reference under peft, ``model.disable_adapter()``).

    ``model`` is not registered as a submodule, so this module has no parameters of its own:
    ``.to()``, ``.requires_grad_(False)`` and ``.eval()`` leave the trained model alone (the
    trainer places and trains it), and nothing is stored twice.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        object.__setattr__(self, "base", model)  # not a submodule (see above)
        self.kind = getattr(model, "kind", None)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with adapters_off(self.base):
            return self.base(*args, **kwargs)


def frozen_reference(model: nn.Module, lora: bool) -> nn.Module:
    """The KL reference of ``model``: under LoRA (``lora``: call after the adapters are added)
    the model with its adapters off (:class:`AdaptersOff`), else a frozen copy of ``model`` as it
    is now (a full fine-tune changes its weights)."""
    if lora:
        return AdaptersOff(model)
    return copy.deepcopy(model).requires_grad_(False).eval()


def _digits(cfg: FinetuneConfig) -> Setup:
    from scorealign.data.digits import labels_from_prompts, prompt_for
    from scorealign.nets.cond import Cond

    task, model = load_digits_base(cfg.base.path)
    if task.model_cfg.cond == "text":
        encode = task.encoder.cond
    elif task.model_cfg.cond == "label":
        def encode(prompts: list[str]) -> Cond:
            return Cond(labels=labels_from_prompts(prompts))
    else:
        encode = None  # type: ignore[assignment]
    shape = tuple(task.train_x.shape[1:])
    sde = task.sde
    if isinstance(sde, FlowSDE) and model.kind in ("v", "x0") and cfg.policy.exploration == 0:
        # transition policies start at pure noise like the SD3/FLUX pipelines (flow_sde's σ_t
        # at t_max = 0.999 would be ≈ 22); ε-space score actions need t < 1 (x̂_0 = (x − tε)/(1−t))
        sde = FlowSDE(T=sde.T, t_min=sde.t_min, t_max=1.0)
    if cfg.lora.rank > 0:
        from scorealign.policy.diffusers_sd import add_lora
        model.requires_grad_(False)  # conditioner included: only the adapters train
        add_lora(model.unet, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules)
    ref = frozen_reference(model, cfg.lora.rank > 0)
    return Setup(model, ref, sde, model.kind, shape, encode, lambda x: x,
                 [prompt_for(d) for d in range(10)])


def _sd_unet(cfg: FinetuneConfig) -> Setup:
    """SD-style UNet pipelines: the tiny one (``sd_tiny``) or a real one from ``base.path``
    (``sd``, e.g. SD 1.5), both through :class:`~scorealign.policy.diffusers_sd.SDParts`."""
    from scorealign.policy.diffusers_sd import SDParts, add_lora

    b = cfg.base
    parts = SDParts(base_pipeline(cfg), dtype=b.dtype,
                    gradient_checkpointing=b.gradient_checkpointing,
                    cache_prompts=b.cache_prompts, compile=b.compile)
    if cfg.lora.rank > 0:
        add_lora(parts.pipe.unet, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules)
    ref = frozen_reference(parts.model, cfg.lora.rank > 0)
    prompts = ["a cat", "a dog", "a red car", "a tree"]
    return Setup(parts.model, ref, parts.sde, "eps", parts.shape, parts.encode, parts.decode,
                 prompts, place=parts.to)


def _flow_pipeline(cfg: FinetuneConfig) -> Setup:
    """SD3-style / FLUX-style flow-transformer pipelines (tiny, or loaded from base.path)."""
    from scorealign.policy.diffusers_sd import add_lora
    from scorealign.policy import flow_pipelines as fp

    pipe = base_pipeline(cfg)
    dtype = _dtype(cfg.base.dtype)  # real pipelines are loaded in it (base_pipeline)
    for m in [pipe.transformer, pipe.vae, *[getattr(pipe, n, None) for n in
                                            ("text_encoder", "text_encoder_2", "text_encoder_3")]]:
        if m is not None and m.dtype != dtype:  # the tiny ones are built in fp32
            m.to(dtype)
    parts = fp.FlowParts(pipe, latent_size=cfg.base.latent_size)
    if cfg.policy.exploration > 0:  # ε-space score actions need t < 1 (see _digits)
        parts.sde = FlowSDE()
    if cfg.lora.rank > 0:
        add_lora(pipe.transformer, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules)
    ref = frozen_reference(parts.model, cfg.lora.rank > 0)
    prompts = ["a cat", "a dog", "a red car", "a tree"]
    aux = parts._encoders() + [pipe.vae]

    def place(device: torch.device) -> None:
        for m in aux:
            m.to(device)
    return Setup(parts.model, ref, parts.sde, "v", parts.shape, parts.encode, parts.decode,
                 prompts, place=place)


def _testbed(cfg: FinetuneConfig) -> Setup:
    """A closed-form testbed problem: the exact base prediction plus a zero-initialized control
    (trainable), the exact base as the frozen reference, the problem's reward (gold: log p*_β),
    no conditioning (one dummy prompt), samples as points."""
    from scorealign.rewards.compose import RewardSet
    from scorealign.sde import FlowSDE, VPSDE
    from scorealign.testbed import make_problem
    from scorealign.testbed.finetune import (ControlledBase, ProblemReward, TargetLogDensity,
                                             plot_testbed)

    b = cfg.base
    if cfg.lora.rank > 0:
        raise ValueError("base.type testbed trains its control network whole: lora.rank must "
                         "be 0")
    problem = make_problem(b.problem, b.dim, b.beta)
    if b.sde == "vp":
        sde, kind = VPSDE(), "eps"
    else:  # transition policies start at pure noise (as _digits); score actions need t < 1
        sde, kind = (FlowSDE(t_max=1.0) if cfg.policy.exploration == 0 else FlowSDE()), "v"
    model = ControlledBase(problem, sde, kind, b.control_hidden, seed=b.seed)
    ref = ControlledBase(problem, sde, kind, None).requires_grad_(False).eval()

    def save_figure(x: Tensor, path: Any) -> None:
        plot_testbed(problem, {"samples": x}, {}, path)

    return Setup(model, ref, sde, kind, (problem.dim,), None, lambda x: x, ["testbed"],
                 problem=problem, rewards=RewardSet(ProblemReward(problem),
                                                    TargetLogDensity(problem), clamp=None),
                 save_figure=save_figure, figure_rows=256)


def base_pipeline(cfg: FinetuneConfig) -> Any:
    """The base diffusers pipeline of an SD-style ``cfg.base`` (the tiny SD / SD3 / FLUX ones
    rebuilt from ``base.seed``, or a real SD / SD3 / FLUX pipeline loaded from ``base.path`` in
    ``base.dtype``), as the run's own :class:`Setup` builds it."""
    from scorealign.policy import flow_pipelines as fp
    from scorealign.policy.sd import build_tiny_sd_pipeline

    b = cfg.base
    if b.type == "sd_tiny":
        return build_tiny_sd_pipeline(b.seed, size=b.size)
    if b.type == "sd":
        from scorealign.policy.diffusers_sd import load_sd_pipeline
        return load_sd_pipeline(b.path, b.dtype)
    if b.type == "sd3_tiny":
        return fp.build_tiny_sd3_pipeline(b.seed)
    if b.type == "flux_tiny":
        return fp.build_tiny_flux_pipeline(b.seed)
    if b.type in ("sd3", "flux"):  # loaded in base.dtype: no fp32 copy on the way
        return fp.load_flow_pipeline(b.path, b.type, _dtype(b.dtype))
    raise ValueError(f"base.type {b.type!r}: not a diffusers pipeline")


def _dtype(name: str) -> torch.dtype:
    from scorealign.policy.diffusers_sd import _dtype as dtype_of
    return dtype_of(name)


def pipeline_model(cfg: FinetuneConfig, pipe: Any) -> nn.Module:
    """``pipe``'s denoiser in the trainer's interface ``model(x, t, cond)``, wrapped as the run's
    own :class:`Setup` wraps it (SD: ``SDParts`` in ``base.dtype``; SD3/FLUX: ``FlowParts`` at
    ``base.latent_size``), e.g. around a pipeline with the run's exported LoRA loaded."""
    if cfg.base.type in ("sd_tiny", "sd"):
        from scorealign.policy.diffusers_sd import SDParts
        return SDParts(pipe, dtype=cfg.base.dtype).model.eval()
    from scorealign.policy import flow_pipelines as fp
    return fp.FlowParts(pipe, latent_size=cfg.base.latent_size).model.eval()


def build_setup(cfg: FinetuneConfig) -> Setup:
    """The :class:`Setup` for ``cfg.base.type``."""
    setup = {"digits": _digits, "sd_tiny": _sd_unet, "sd": _sd_unet, "sd3_tiny": _flow_pipeline,
             "flux_tiny": _flow_pipeline, "sd3": _flow_pipeline,
             "flux": _flow_pipeline, "testbed": _testbed}[cfg.base.type](cfg)
    if cfg.prompts.prompts:
        setup.prompts = list(cfg.prompts.prompts)
    setup.model.eval()  # no dropout: log-probs must not depend on RNG state
    return setup
