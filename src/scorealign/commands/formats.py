"""Writers of a trained model in the format its ecosystem loads (used by the run-kind records).

* digits models: the ``save_pretrained`` pair ``model.safetensors`` + ``model_config.json``
  (``scorealign.nets.load_pretrained``); LoRA adapters are merged into the weights;
* SD-style pipelines: LoRA runs as diffusers LoRA weights (``pytorch_lora_weights.safetensors``
  with the adapter config as metadata), so ``pipe.load_lora_weights(DIR)`` on the base pipeline
  gives the trained denoiser; full fine-tunes as a diffusers pipeline directory;
* causal LMs: a transformers directory with the tokenizer, or a peft adapter directory;
* ``--with-base`` (:func:`export_pipeline_with_base`): the complete diffusers pipeline of the
  base with the trained denoiser, LoRA fused (W ← W + (α/r)·B·A) or kept as adapters beside it,
  loadable by ``DiffusionPipeline.from_pretrained(DIR)`` alone (:func:`save_pipeline`).

Each is written into a temporary sibling and moved into place with one rename
(:func:`scorealign.run.atomic.atomic_dir`), so a failed export leaves the previous directory (or
none), never a half-written one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorealign.run.atomic import atomic_dir, flatten_into


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


def merged_model(model: nn.Module) -> nn.Module:
    """A plain digits model (``build_model(model.config)``) with ``model``'s weights, LoRA
    merged."""
    from scorealign.nets import build_model

    _, state = merged_copy(model)
    plain = build_model(model.config)
    plain.load_state_dict(state, strict=True)
    return plain


def export_digits(model: nn.Module, dest: str | Path) -> Path:
    """A digits model (LoRA merged) as the ``save_pretrained`` pair in ``dest``."""
    from scorealign.nets import save_pretrained

    plain = merged_model(model)
    with atomic_dir(dest) as tmp:
        save_pretrained(plain, tmp / "m")
        flatten_into(tmp)
    return Path(dest)


def _lora_layers(module: nn.Module) -> tuple[dict, dict]:
    """(diffusers-named LoRA tensors, adapter config as JSON-able metadata) of a peft model."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(module))
    meta = module.peft_config["default"].to_dict()
    meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}
    return {k: v.detach().cpu().contiguous() for k, v in layers.items()}, meta


def export_sd(unet: nn.Module, base_pipe: Any, dest: str | Path, lora: bool) -> Path:
    """An SD-style run's trained ``unet``: diffusers LoRA weights (``lora``: only the adapters,
    for ``base_pipe.load_lora_weights``) or ``base_pipe`` with ``unet`` as a pipeline directory."""
    with atomic_dir(dest) as tmp:
        if lora:
            from diffusers import StableDiffusionPipeline

            layers, meta = _lora_layers(unet)
            StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers,
                                                      unet_lora_adapter_metadata=meta)
        else:
            base_pipe.unet = unet
            base_pipe.save_pretrained(tmp, safe_serialization=True)
    return Path(dest)


def export_flow(transformer: nn.Module, family: str, base_pipe: Any, dest: str | Path,
                lora: bool) -> Path:
    """A flow run's trained ``transformer``: diffusers LoRA weights (``lora``: the adapters, for
    ``StableDiffusion3Pipeline`` / ``FluxPipeline.load_lora_weights``) or ``base_pipe`` with the
    transformer as a pipeline directory (``from_pretrained``)."""
    with atomic_dir(dest) as tmp:
        if lora:
            from diffusers import FluxPipeline, StableDiffusion3Pipeline

            layers, meta = _lora_layers(transformer)
            pipe_cls = StableDiffusion3Pipeline if family == "sd3" else FluxPipeline
            pipe_cls.save_lora_weights(tmp, transformer_lora_layers=layers,
                                       transformer_lora_adapter_metadata=meta)
        else:
            base_pipe.transformer = transformer
            save_pipeline(base_pipe, tmp)
    return Path(dest)


def _zero_t5(pipe: Any) -> tuple[nn.Module, Any]:
    """A T5 encoder whose output is exactly zero (final RMS-norm weight 0) and its byte-level
    tokenizer, of width ``joint_attention_dim``: an SD3 pipeline without T5 pads its prompt
    embeddings with zero T5 tokens, and with this encoder it computes the same zeros."""
    from transformers import T5Config, T5EncoderModel

    from scorealign.policy.sd import _seeded, build_clip_tokenizer

    tok = build_clip_tokenizer()
    width = int(pipe.transformer.config.joint_attention_dim)
    cfg = T5Config(vocab_size=len(tok), d_model=width, d_kv=8, d_ff=8, num_layers=1, num_heads=1,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=0)
    t5 = _seeded(0, lambda: T5EncoderModel(cfg))
    with torch.no_grad():
        t5.encoder.final_layer_norm.weight.zero_()
    return t5.to(pipe.transformer.dtype).eval(), tok


def save_pipeline(pipe: Any, dest: str | Path) -> Path:
    """``pipe.save_pretrained(dest)`` such that ``DiffusionPipeline.from_pretrained(dest)`` (and
    the pipeline class's own ``from_pretrained``) reloads it without extra arguments.

    ``StableDiffusion3Pipeline`` without T5 (``text_encoder_3=None``, as the tiny SD3 base and SD3
    directories saved without T5): ``text_encoder_3`` / ``tokenizer_3`` are required components
    of the class (not in ``_optional_components``), so the ``[null, null]`` entries that
    ``save_pretrained`` writes make ``from_pretrained`` refuse the directory unless the caller
    passes ``text_encoder_3=None, tokenizer_3=None``. The saved pipeline gets instead a T5 whose
    output is exactly zero (:func:`_zero_t5`): the reloaded pipeline's prompt embeddings are
    bit-identical to the T5-less pipeline's zero T5 tokens.
    """
    from diffusers import StableDiffusion3Pipeline

    if isinstance(pipe, StableDiffusion3Pipeline) and pipe.text_encoder_3 is None:
        t5, tok = _zero_t5(pipe)
        pipe.register_modules(text_encoder_3=t5, tokenizer_3=tok)
        try:
            pipe.save_pretrained(dest, safe_serialization=True)
        finally:
            pipe.register_modules(text_encoder_3=None, tokenizer_3=None)
    else:
        pipe.save_pretrained(dest, safe_serialization=True)
    return Path(dest)


LORA_FILE = "pytorch_lora_weights.safetensors"


def export_pipeline_with_base(denoiser: nn.Module, base_pipe: Any, dest: str | Path,
                              lora: bool, adapter: bool = False) -> Path:
    """``base_pipe`` with the trained ``denoiser`` (its ``unet`` or ``transformer``) as one
    diffusers pipeline directory.

    Args:
        denoiser: the trained UNet / transformer (with peft LoRA adapters when ``lora``).
        base_pipe: the run's base pipeline (replaced parts are modified in place).
        lora: the run trained LoRA adapters (else ``denoiser`` holds full weights).
        adapter: keep the adapters unfused: the base pipeline plus diffusers LoRA weights
            (``pytorch_lora_weights.safetensors``) in the same directory, for
            ``pipe.load_lora_weights(DIR)``; default: fused into the base weights.
    """
    attr = "unet" if getattr(base_pipe, "unet", None) is not None else "transformer"
    with atomic_dir(dest) as tmp:
        if lora and adapter:
            save_pipeline(base_pipe, tmp)
            layers, meta = _lora_layers(denoiser)
            kw = {f"{attr}_lora_layers": layers, f"{attr}_lora_adapter_metadata": meta}
            type(base_pipe).save_lora_weights(tmp, **kw)
        else:
            target = getattr(base_pipe, attr)
            if lora:
                _, state = merged_copy(denoiser)
                target.load_state_dict(state, strict=True)
            else:
                target.load_state_dict(denoiser.state_dict(), strict=True)
            save_pipeline(base_pipe, tmp)
    return Path(dest)


def export_lm(model: nn.Module, tokenizer: Any, dest: str | Path) -> Path:
    """A transformers model (or peft adapters) with its tokenizer, loadable by from_pretrained."""
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        cfg_file = tmp / "config.json"
        if not cfg_file.exists() and hasattr(model, "get_base_model"):  # peft: base config too
            model.get_base_model().config.save_pretrained(tmp)
    return Path(dest)


__all__ = ["merged_copy", "merged_model", "export_digits", "export_sd", "export_flow",
           "export_lm", "save_pipeline", "export_pipeline_with_base", "LORA_FILE"]
