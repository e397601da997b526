"""``RUN/final/``: a trained model in the format its ecosystem loads, from any run kind.

* digits models (pretrain, finetune with or without LoRA): the ``save_pretrained`` pair
  ``model.safetensors`` + ``model_config.json`` (``scorealign.nets.load_pretrained``); LoRA
  adapters are merged into the weights, so the pair is a plain model;
* SD-style pipelines: LoRA runs as diffusers LoRA weights (``pytorch_lora_weights.safetensors``
  with the adapter config as metadata), so ``pipe.load_lora_weights(RUN/final)`` on the base
  pipeline gives the trained UNet; full fine-tunes as a diffusers pipeline directory
  (``StableDiffusionPipeline.from_pretrained``);
* causal LMs (``dpo``): a transformers directory with the tokenizer
  (``AutoModelForCausalLM.from_pretrained``), or a peft adapter directory for LoRA runs
  (``PeftModel.from_pretrained`` / ``AutoPeftModelForCausalLM``);
* control policies: ``policy.safetensors`` with the run's ``config.yaml``.

Every export is written into a temporary sibling and moved into place with one rename, so a
failed export leaves the previous ``final/`` (or none), never a half-written one.
``export_run(RUN, to=DIR, checkpoint=...)`` rebuilds the model from a checkpoint and exports it
(``scorealign export``).
"""

from __future__ import annotations

from scorealign.errors import ScorealignError

import copy
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from torch import nn

RUN_KINDS = ("pretrain", "finetune", "dpo", "diffusion_dpo", "control")


class ExportError(ScorealignError, RuntimeError):
    """A run that cannot be exported; the message names the run or file."""


def run_kind(run_dir: str | Path) -> str:
    """Which command wrote ``run_dir``: one of :data:`RUN_KINDS`, read from its ``config.yaml``.

    Raises:
        FileNotFoundError: no config.yaml; ExportError: a config of no known command.
    """
    f = Path(run_dir) / "config.yaml"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: not a run directory (no config.yaml)")
    try:
        data = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as e:
        raise ExportError(f"{f}: invalid YAML: {_one_line(e)}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{f}: top level must be a mapping")
    keys = set(data)
    if data.get("task") == "diffusion":
        return "diffusion_dpo"
    if {"base", "algo", "reward"} <= keys:
        return "finetune"
    if {"data", "sde", "model"} <= keys:
        return "pretrain"
    if {"loss", "reference"} <= keys:
        return "dpo"
    if {"env", "algo"} <= keys:
        return "control"
    raise ExportError(f"{f}: not a config of any scorealign command (top-level keys "
                      f"{sorted(keys)})")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


@contextmanager
def _atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``dest``; on success it replaces ``dest`` with one rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = dest.with_name(f".{dest.name}.old{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


# -- digits and SD-style diffusion models ---------------------------------------------------------
def merged_copy(module: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of ``module`` with every peft LoRA adapter merged into its base weights
    (W ← W + (α/r)·B·A [Hu+21 LoRA, Eq. 4]), and its state dict without the adapters under the
    plain model's names; a module without adapters is copied unchanged."""
    from peft.tuners.lora import LoraLayer

    m = copy.deepcopy(module)
    with torch.no_grad():
        for sub in m.modules():
            if isinstance(sub, LoraLayer):
                sub.merge()
    state = {k.replace(".base_layer.", "."): v for k, v in m.state_dict().items()
             if "lora_" not in k}
    return m, state


def export_digits(model: nn.Module, dest: str | Path) -> Path:
    """A digits model (LoRA merged) as the ``save_pretrained`` pair in ``dest``."""
    from scorealign.nets import build_model, save_pretrained

    _, state = merged_copy(model)
    plain = build_model(model.config)
    plain.load_state_dict(state, strict=True)
    with _atomic_dir(dest) as tmp:
        save_pretrained(plain, tmp / "m")
        for f in (tmp / "m").iterdir():
            os.replace(f, tmp / f.name)
        (tmp / "m").rmdir()
    return Path(dest)


def export_sd(unet: nn.Module, base_pipe: Any, dest: str | Path, lora: bool) -> Path:
    """An SD-style run's trained ``unet``: diffusers LoRA weights (``lora``: only the adapters,
    for ``base_pipe.load_lora_weights``) or ``base_pipe`` with ``unet`` as a pipeline directory."""
    with _atomic_dir(dest) as tmp:
        if lora:
            from diffusers import StableDiffusionPipeline
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
            meta = unet.peft_config["default"].to_dict()
            meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}
            StableDiffusionPipeline.save_lora_weights(
                tmp, unet_lora_layers={k: v.detach().cpu().contiguous()
                                       for k, v in layers.items()},
                unet_lora_adapter_metadata=meta)
        else:
            base_pipe.unet = unet
            base_pipe.save_pretrained(tmp, safe_serialization=True)
    return Path(dest)


def export_setup(setup: Any, cfg: Any, dest: str | Path) -> Path:
    """Export a fine-tuning :class:`~scorealign.rl.setup.Setup` (trained weights loaded)."""
    if cfg.base.type == "digits":
        return export_digits(setup.model, dest)
    if cfg.base.type == "sd_tiny":  # the base pipeline is rebuilt from its seed
        from scorealign.policy.sd import build_tiny_sd_pipeline

        unet = setup.model.unet
        lora = cfg.lora.rank > 0
        return export_sd(unet if lora else copy.deepcopy(unet),
                         None if lora else build_tiny_sd_pipeline(cfg.base.seed), dest, lora)
    if cfg.base.type in ("sd3_tiny", "flux_tiny", "sd3", "flux"):
        from scorealign.policy import flow_pipelines as fp

        tr = setup.model.transformer
        lora = cfg.lora.rank > 0
        if lora:
            base = None
        elif cfg.base.type.endswith("_tiny"):  # the base pipeline is rebuilt from its seed
            build = fp.build_tiny_sd3_pipeline if cfg.base.type == "sd3_tiny" \
                else fp.build_tiny_flux_pipeline
            base = build(cfg.base.seed)
        else:
            base = fp.load_flow_pipeline(cfg.base.path, cfg.base.type)
        family = "sd3" if cfg.base.type.startswith("sd3") else "flux"
        return export_flow(tr if lora else copy.deepcopy(tr), family, base, dest, lora)
    raise ExportError(f"base.type {cfg.base.type!r}: no export format")


def export_flow(transformer: nn.Module, family: str, base_pipe: Any, dest: str | Path,
                lora: bool) -> Path:
    """A flow run's trained ``transformer``: diffusers LoRA weights (``lora``: the adapters, for
    ``StableDiffusion3Pipeline`` / ``FluxPipeline.load_lora_weights``) or ``base_pipe`` with the
    transformer as a pipeline directory (``from_pretrained``)."""
    with _atomic_dir(dest) as tmp:
        if lora:
            from diffusers import FluxPipeline, StableDiffusion3Pipeline
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(transformer))
            meta = transformer.peft_config["default"].to_dict()
            meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}
            pipe_cls = StableDiffusion3Pipeline if family == "sd3" else FluxPipeline
            pipe_cls.save_lora_weights(
                tmp, transformer_lora_layers={k: v.detach().cpu().contiguous()
                                              for k, v in layers.items()},
                transformer_lora_adapter_metadata=meta)
        else:
            base_pipe.transformer = transformer
            base_pipe.save_pretrained(tmp, safe_serialization=True)
    return Path(dest)


def export_finetuner(ft: Any, dest: str | Path | None = None) -> Path:
    """``RUN/final`` of a finished :class:`~scorealign.rl.trainer.Finetuner` (main process)."""
    dest = Path(dest) if dest is not None else ft.run.path / "final"
    return export_setup(ft.setup, ft.cfg, dest)


# -- causal LMs ------------------------------------------------------------------------------------
def export_lm(model: nn.Module, tokenizer: Any, dest: str | Path) -> Path:
    """A transformers model (or peft adapters) with its tokenizer, loadable by from_pretrained."""
    with _atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        cfg_file = tmp / "config.json"
        if not cfg_file.exists() and hasattr(model, "get_base_model"):  # peft: base config too
            model.get_base_model().config.save_pretrained(tmp)
    return Path(dest)


# -- from a run directory --------------------------------------------------------------------------
def _checkpoint(run_dir: Path, checkpoint: str | Path | None) -> tuple[dict, dict]:
    from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint

    if checkpoint is not None:
        ck = Path(checkpoint)
        ck = ck if ck.is_dir() else run_dir / "checkpoints" / str(checkpoint)
    else:
        ck = latest_checkpoint(run_dir / "checkpoints")
    if ck is None or not ck.is_dir():
        raise ExportError(f"{run_dir}: no checkpoint {checkpoint or ''} to export".replace(
            "  ", " "))
    return load_checkpoint(ck)


def read_run_config(run_dir: str | Path, schema: type) -> Any:
    """The run's resolved config (``config.yaml``) as ``schema``; errors name the file."""
    from scorealign.config import ConfigError, config_from_dict

    f = Path(run_dir) / "config.yaml"
    try:
        data = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{f}: invalid YAML: {_one_line(e)}") from None
    return config_from_dict(data, schema, src=str(f))


def finetune_setup(run_dir: str | Path, checkpoint: str | Path | None = None,
                   trained: bool = True):
    """(config, Setup) of a finetune run with the trained (or, ``trained=False``, base) weights."""
    from scorealign.rl.config import FinetuneConfig
    from scorealign.rl.setup import build_setup

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, FinetuneConfig)
    setup = build_setup(cfg)
    if trained:
        states, _ = _checkpoint(run_dir, checkpoint)
        setup.load_trainable(states.get("ema") or states["model"])
    setup.model.eval()
    return cfg, setup


def export_run(run_dir: str | Path, to: str | Path | None = None,
               checkpoint: str | Path | None = None) -> Path:
    """Rebuild a run's model from a checkpoint (default: the newest) and export it to ``to``
    (default ``RUN/final``); returns the directory written."""
    run_dir = Path(run_dir)
    kind = run_kind(run_dir)
    dest = Path(to) if to is not None else run_dir / "final"
    if kind == "pretrain":
        from scorealign.train.evaluate import _read_config
        from scorealign.train.task import build_task

        cfg = _read_config(run_dir / "config.yaml")
        states, _ = _checkpoint(run_dir, checkpoint)
        task = build_task(cfg.data, cfg.sde, cfg.model)
        with _atomic_dir(dest) as tmp:
            task.export(states.get("ema") or states["model"], tmp / "m")
            for f in (tmp / "m").iterdir():
                os.replace(f, tmp / f.name)
            (tmp / "m").rmdir()
        return dest
    if kind == "finetune":
        cfg, setup = finetune_setup(run_dir, checkpoint)
        return export_setup(setup, cfg, dest)
    if kind == "dpo":
        from scorealign.preference import setup as S
        from scorealign.preference.config import DPOConfig

        cfg = read_run_config(run_dir, DPOConfig)
        st = S.build(cfg, run_dir)
        states, _ = _checkpoint(run_dir, checkpoint)
        st.model.load_state_dict(states["model"])
        return export_lm(st.model, st.tokenizer, dest)
    if kind == "control":
        states, _ = _checkpoint(run_dir, checkpoint)
        return export_control(states["policy"], run_dir / "config.yaml", dest)
    raise ExportError(f"{run_dir}: export of {kind} runs is not supported")


def export_control(policy_state: dict, config_file: Path, dest: str | Path) -> Path:
    """A control policy: ``policy.safetensors`` beside the run's ``config.yaml``."""
    from safetensors.torch import save_file

    with _atomic_dir(dest) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in policy_state.items()},
                  str(tmp / "policy.safetensors"))
        shutil.copyfile(config_file, tmp / "config.yaml")
    return Path(dest)


__all__ = ["RUN_KINDS", "ExportError", "run_kind", "merged_copy", "export_digits", "export_sd",
           "export_setup", "export_finetuner", "export_lm", "export_control", "export_run",
           "finetune_setup", "read_run_config", "finish_lm_run", "finish_control_run"]


# -- the one-line calls at the end of the training entry points -----------------------------------
def finish_lm_run(run: Any, model: nn.Module, tokenizer: Any, title: str | None = None) -> Path:
    """End of a ``dpo`` run: ``RUN/final`` (transformers dir or peft adapters) and report.html."""
    from scorealign.report.html import write_report

    export_lm(model, tokenizer, Path(run.path) / "final")
    return write_report(run.path, title=title or f"dpo: {Path(run.path).name}")


def finish_control_run(run: Any, policy: nn.Module, title: str | None = None) -> Path:
    """End of a ``control`` run: ``RUN/final/policy.safetensors`` and report.html."""
    from scorealign.report.html import write_report

    export_control(dict(policy.state_dict()), Path(run.path) / "config.yaml",
                   Path(run.path) / "final")
    return write_report(run.path, title=title or f"control: {Path(run.path).name}")
