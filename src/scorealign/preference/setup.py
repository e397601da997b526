"""Build what ``train`` needs from a config: tokenizer, policy, examples, reference, evaluator.

Kept apart from the loop so that ``trainer.train`` reads as the algorithm. Everything here is
deterministic given the config and the run directory (the demo caches its SFT model and data in
``RUN/demo``; precomputed reference log-probs go to ``RUN/ref_logps.safetensors``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from scorealign.preference import data as D
from scorealign.preference import reference as R
from scorealign.preference.tiny import char_tokenizer, disable_dropout, load_tokenizer, tiny_gpt2
from scorealign.rng import derive_seed
from scorealign.run.progress import progress_calls  # issue 11: one progress library
from scorealign.run.checkpoint import load_weights


@dataclass
class Setup:
    """Everything the training loop consumes."""

    tokenizer: Any
    model: torch.nn.Module
    items: list[dict[str, list[int]]]
    collate: Callable[[list[dict], list[int]], dict[str, torch.Tensor]]
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None


def load_examples(cfg: Any, run_path: Path) -> tuple[list, Any, Callable | None]:
    """(examples, tokenizer or None, evaluator or None) for ``cfg.data``."""
    d = cfg.data
    if d.source == "demo":
        from scorealign.preference import demo_task

        tok, weights, pairs = demo_task.prepare(cfg.demo, cfg.model, run_path, cfg.seed)
        ev = demo_task.WinRateEval(tok, cfg.model, weights, cfg.demo, cfg.seed)
        return demo_task.load_pairs(pairs), tok, (weights, ev)
    exs = D.read_jsonl(d.path, d.kind) if d.source == "jsonl" else D.load_hf(d.path, d.split, d.kind)
    return (exs[: d.limit] if d.limit else exs), None, None


def build_policy(cfg: Any, tok: Any, init: Path | None) -> torch.nn.Module:
    """Tiny GPT-2 from the config (optionally from weights) or a local pretrained model; LoRA."""
    m = cfg.model
    if m.source == "pretrained":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(m.path, local_files_only=True,
                                                     dtype=torch.float32)
    else:
        model = tiny_gpt2(len(tok), n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head,
                          n_positions=m.n_positions, seed=m.init_seed, pad_id=tok.pad_token_id,
                          eos_id=tok.eos_token_id)
        init = Path(m.init) if m.init else init
        if init is not None:
            model.load_state_dict(load_weights(init), strict=False)
    disable_dropout(model)
    if m.lora.on:
        from peft import LoraConfig, get_peft_model

        # LoRA A is drawn from torch's global generator: seed it from the run's seed, so the
        # run does not depend on what ran before it in the process (as policy/diffusers_sd.add_lora)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "lora"))
            model = get_peft_model(model, LoraConfig(r=m.lora.rank, lora_alpha=m.lora.alpha,
                                                     lora_dropout=m.lora.dropout,
                                                     target_modules=list(m.lora.target_modules),
                                                     fan_in_fan_out=True, task_type="CAUSAL_LM"))
    return model


def build(cfg: Any, run_path: Path) -> Setup:
    """Tokenizer, policy, tokenized items, collator and (demo) evaluator."""
    examples, tok, demo = load_examples(cfg, run_path)
    if tok is None:
        if cfg.model.source == "pretrained":
            tok = load_tokenizer(cfg.model.path)
        else:
            tok = char_tokenizer(_chars(examples))
    model = build_policy(cfg, tok, demo[0] if demo else None)
    d = cfg.data
    items = [D.tokenize_example(tok, ex, max_length=d.max_length,
                                max_prompt_length=d.max_prompt_length) for ex in examples]
    collate = (D.UnpairedCollator(tok.pad_token_id, d.padding_side, pool=items)
               if d.kind == "unpaired" else D.PairCollator(tok.pad_token_id, d.padding_side))
    return Setup(tok, model, items, collate, demo[1] if demo else None)


def _chars(examples: list) -> str:
    return "".join(sorted({ch for ex in examples for v in ex.__dict__.values()
                           if isinstance(v, str) for ch in v}))


def build_reference(cfg: Any, setup: Setup, run_path: Path, device: Any,
                    with_entropy: bool) -> R.Reference:
    """The reference provider for ``cfg.reference.mode`` (see ``reference.py``)."""
    mode = cfg.reference.mode
    if mode in ("none", "lora_disabled"):
        return R.Reference(mode, model=setup.model, with_entropy=with_entropy)
    ref_model = copy.deepcopy(setup.model)
    if cfg.reference.init:
        ref_model.load_state_dict(load_weights(cfg.reference.init), strict=False)
    ref_model.requires_grad_(False).eval().to(device)
    if mode == "model":
        return R.Reference(mode, model=ref_model, with_entropy=with_entropy)
    n, bs = len(setup.items), cfg.reference.batch_size

    def batches(start: int) -> dict[str, torch.Tensor]:
        idx = list(range(start, min(start + bs, n)))
        return setup.collate([setup.items[i] for i in idx], idx)

    cache = R.cached(Path(run_path) / "ref_logps.safetensors", n,
                     lambda: R.precompute(ref_model, n, progress_calls(  # issue 11: progress
                         batches, n, bs, "dpo: reference log-probs"), with_entropy=with_entropy,
                                          device=device))
    return R.Reference(mode, cache=cache, with_entropy=with_entropy)


def reference_entropies(setup: Setup, reference: R.Reference, device: Any,
                        batch_size: int = 64) -> torch.Tensor:
    """H̄ of every pair of the dataset under the reference (read from the cache when precomputed).

    The input of ``dispersion_scale: auto`` (``mallows.auto_dispersion_scale``).
    """
    from scorealign.preference.logratio import pair_entropy

    n, out = len(setup.items), []
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        batch = {k: v.to(device) for k, v in setup.collate([setup.items[i] for i in idx],
                                                            idx).items()}
        out.append(pair_entropy(*reference(batch)).detach().cpu())
    return torch.cat(out)
