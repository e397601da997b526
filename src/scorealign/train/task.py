"""A Task binds data, forward SDE, network and conditioning; it draws training batches and samples.

Two families: ``digits`` (images with labels; conditioning by class label or by prompt text
through the MiniLM encoder) and the 2-D toys (``gaussians``, ``moons``, ``checkerboard``). The
same Task serves pretraining, sampling and evaluation, and is rebuilt from a run directory's
``final/`` export plus its config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from scorealign.config import FieldError
from scorealign.data import DATASETS, load_digits, prompt_for
from scorealign.data.digits import PROMPT_TEMPLATES
from scorealign.nets import Cond, ModelConfig, build_model, drop_cond, guided, save_pretrained
from scorealign.rng import generator
from scorealign.samplers import GRIDS, SAMPLERS, sample
from scorealign.sde import SDE, build_sde


@dataclass(frozen=True)
class DataConfig:
    """Training data."""

    name: str = field(default="digits", metadata={
        "help": "digits, or a 2-D toy: gaussians | moons | checkerboard"})
    image_size: int = field(default=8, metadata={"help": "digits side: 8 (native) or 16"})
    num_train: int = field(default=20000, metadata={"help": "2-D toys: training-set size"})
    split_seed: int = field(default=0, metadata={"help": "digits train/test split seed"})

    def __post_init__(self) -> None:
        if self.name != "digits" and self.name not in DATASETS:
            raise FieldError("name", f"unknown dataset {self.name!r}; choose digits or one of "
                                     f"{sorted(k for k in DATASETS if k != 'digits')}")
        if self.image_size not in (8, 16):
            raise FieldError("image_size", f"digits come at 8 or 16 pixels, got {self.image_size}")
        if self.num_train < 1:
            raise FieldError("num_train", f"must be >= 1, got {self.num_train}")


@dataclass(frozen=True)
class SDEConfig:
    """Forward process: a name in ``scorealign.sde.SDES`` and its keyword parameters."""

    name: str = field(default="vp", metadata={"help": "ve | vp | subvp | cou | csubvp | flow"})
    params: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "keyword arguments of the SDE class (e.g. beta_max: 20.0)"})

    def __post_init__(self) -> None:
        from scorealign.sde import SDES
        if self.name not in SDES:
            raise FieldError("name", f"unknown sde {self.name!r}; choose one of {sorted(SDES)}")
        try:
            build_sde(self.name, **self.params)
        except (TypeError, ValueError) as e:
            raise FieldError("params", str(e)) from None


@dataclass(frozen=True)
class SamplingConfig:
    """How samples are drawn for previews, ``sample`` and ``eval``."""

    sampler: str = field(default="ddim", metadata={
        "help": "ddim | ddpm | euler_maruyama | euler_ode | heun_ode | heun_sde"})
    steps: int = field(default=50, metadata={"help": "solver steps"})
    eta: float | None = field(default=None, metadata={
        "help": "noise level η (ddim: 0 deterministic, 1 ancestral); null: sampler default"})
    guidance: float = field(default=2.0, metadata={
        "help": "classifier-free guidance scale (1: none)"})
    corrector_steps: int = field(default=0, metadata={"help": "Langevin corrector steps"})
    grid: str = field(default="auto", metadata={
        "help": "time grid (samplers/grids.py); auto: the SDE's default (karras for cou)"})
    num_eval: int = field(default=500, metadata={"help": "samples drawn by eval"})
    seed: int = field(default=1234, metadata={"help": "sampling seed"})

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise FieldError("sampler", f"unknown sampler {self.sampler!r}; choose one of "
                                        f"{sorted(SAMPLERS)}")
        if self.grid != "auto" and self.grid not in GRIDS:
            raise FieldError("grid", f"unknown grid {self.grid!r}; choose auto or one of "
                                     f"{sorted(GRIDS)}")
        for name in ("steps", "num_eval"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.corrector_steps < 0:
            raise FieldError("corrector_steps", f"must be >= 0, got {self.corrector_steps}")
        props = SAMPLERS.get(self.sampler).properties
        if self.eta is not None and (self.eta < 0 or ("deterministic" in props and self.eta != 0)
                                     or (self.sampler == "ddpm" and self.eta != 1)):
            raise FieldError("eta", f"eta={self.eta} does not apply to sampler "
                                    f"{self.sampler!r} (ddpm: 1; deterministic samplers: 0; "
                                    f"others: >= 0; null: the sampler's default)")


class Task:
    """Data + SDE + model + conditioning for one pretraining problem."""

    def __init__(self, data: DataConfig, sde: SDE, model: nn.Module, model_cfg: ModelConfig):
        self.data_cfg, self.sde, self.model, self.model_cfg = data, sde, model, model_cfg
        self.kind = model_cfg.kind
        self.is_image = data.name == "digits"
        self._encoder = None
        if self.is_image:
            d = load_digits("train", size=data.image_size, seed=data.split_seed)
            self.train_x, self.train_y = d.images, d.labels
        else:
            g = generator(data.split_seed, "toy-data", data.name)
            self.train_x = DATASETS.get(data.name).fn().sample(data.num_train, g).float()
            self.train_y = torch.zeros(data.num_train, dtype=torch.int64)

    @property
    def num_train(self) -> int:
        """Training-set size."""
        return int(self.train_x.shape[0])

    @property
    def encoder(self):
        """The shared MiniLM text encoder (loaded on first use)."""
        if self._encoder is None:
            from scorealign.nets import get_text_encoder
            self._encoder = get_text_encoder("cpu")
        return self._encoder

    def cond_for(self, labels: Tensor, prompts: Sequence[str] | None = None) -> Cond | None:
        """Conditioning for ``labels`` (label models) or ``prompts`` (text models)."""
        if self.model_cfg.cond == "none":
            return None
        if self.model_cfg.cond == "label":
            return Cond(labels=labels)
        prompts = list(prompts) if prompts is not None else [prompt_for(int(y)) for y in labels]
        return self.encoder.cond(prompts)

    def training_cond(self, labels: Tensor, g: torch.Generator) -> Cond | None:
        """Conditioning of a training batch: random prompt templates, then CFG dropout."""
        prompts = None
        if self.model_cfg.cond == "text":
            tmpl = torch.randint(len(PROMPT_TEMPLATES), labels.shape, generator=g)
            prompts = [prompt_for(int(y), int(k)) for y, k in zip(labels, tmpl)]
        cond = self.cond_for(labels, prompts)
        return drop_cond(cond, self.model_cfg.cfg_dropout, g)

    @staticmethod
    def slice_cond(cond: Cond | None, idx: slice | Tensor) -> Cond | None:
        """Rows ``idx`` of ``cond`` (None stays None)."""
        return None if cond is None else cond.index(idx)

    @staticmethod
    def cond_to(cond: Cond | None, device: torch.device | str) -> Cond | None:
        """``cond`` on ``device`` (None stays None)."""
        return None if cond is None else cond.to(device)

    def pred_fn(self, model: nn.Module, cond: Cond | None, guidance: float):
        """``pred_fn(x, t)`` for the samplers: the (guided) model prediction under ``cond``."""
        if cond is None or guidance == 1.0:
            return lambda x, t: model(x, t, cond)
        return lambda x, t: guided(model, x, t, cond, guidance)

    @torch.no_grad()
    def generate(self, model: nn.Module, cond: Cond | None, n: int, cfg: SamplingConfig,
                 seed: int | None = None, device: str | torch.device = "cpu") -> Tensor:
        """Draw ``n`` samples (``cond`` has n rows or is None) with the sampler of ``cfg``."""
        model.eval()
        g = generator(cfg.seed if seed is None else seed, "generate")
        shape = (n, *self.train_x.shape[1:])
        x_T = self.sde.prior_sample(shape, g).to(device)
        cond = self.cond_to(cond, device)
        out = sample(self.pred_fn(model, cond, cfg.guidance), self.kind, self.sde, x_T,
                     sampler=cfg.sampler, steps=cfg.steps, eta=cfg.eta, grid=cfg.grid,
                     generator=g, corrector_steps=cfg.corrector_steps)
        return out.x0.float().cpu()

    def export(self, weights: dict[str, Tensor], path: str | Path) -> Path:
        """Write ``weights`` (e.g. the EMA) as a self-describing model directory."""
        model = build_model(self.model_cfg)
        model.load_state_dict({k: v.cpu() for k, v in weights.items()})
        return save_pretrained(model, path)


def check_task(data: DataConfig, model_cfg: ModelConfig) -> None:
    """Raise :class:`FieldError` (field dotted from the pretrain config) if data and model clash."""
    digits = data.name == "digits"
    if digits and model_cfg.type == "mlp":
        raise FieldError("model.type", "data.name=digits needs unet or unet_cond, not mlp")
    if not digits and model_cfg.type != "mlp":
        raise FieldError("model.type", f"2-D data {data.name!r} needs model.type mlp")
    if not digits and model_cfg.cond == "text":
        raise FieldError("model.cond", "2-D toys have no prompts: use cond none or label")
    if digits and model_cfg.sample_size != data.image_size:
        raise FieldError("model.sample_size", f"{model_cfg.sample_size} must equal "
                                              f"data.image_size ({data.image_size})")


#: Tasks whose model is prompted with a digit (``data.digits.label_from_prompt`` reads it, as the
#: label conditioning and the ``digit_alignment`` reward do).
DIGIT_PROMPTED = frozenset({"digits"})


def prompt_problem(task: str, prompts: Sequence[str]) -> str | None:
    """Why the ``task``'s model cannot take one of ``prompts``, or None.

    The digits model is prompted with a digit: every prompt must name exactly one digit 0-9
    (a numeral or a number word). Other tasks (text pipelines, the testbed) take any text.
    """
    if task not in DIGIT_PROMPTED:
        return None
    from scorealign.data.digits import PromptError, label_from_prompt
    for text in prompts:
        try:
            label_from_prompt(text)
        except PromptError:
            return (f"{text!r} names no single digit; the {task} model takes prompts that name "
                    f"one digit 0-9, e.g. {PROMPT_TEMPLATES[0].format(digit=7)!r}")
    return None


def check_prompts(task: str, field: str, prompts: Sequence[str]) -> None:
    """Raise :class:`FieldError` on ``field`` if a prompt is one the ``task``'s model cannot take
    (:func:`prompt_problem`). Called from config validation, so a bad prompt fails before a run
    directory is written."""
    if (problem := prompt_problem(task, prompts)) is not None:
        raise FieldError(field, problem)


def build_task(data: DataConfig, sde_cfg: SDEConfig, model_cfg: ModelConfig,
               device: str = "cpu", seed: int = 0) -> Task:
    """Build the Task for a pretraining config (fresh model initialized from ``seed``).

    Raises:
        FieldError: (a ValueError) when data and model do not fit together.
    """
    check_task(data, model_cfg)
    sde = build_sde(sde_cfg.name, **sde_cfg.params)
    return Task(data, sde, build_model(model_cfg, seed=seed).to(device), model_cfg)
