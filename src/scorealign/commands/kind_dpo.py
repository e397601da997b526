"""Run kind ``dpo`` (``scorealign dpo``): a causal LM trained on preference pairs; exported as a
transformers directory with its tokenizer, or a peft adapter directory for LoRA runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from scorealign.commands.kinds import EvalRequest, RunKind, SampleRequest, Sampled
from scorealign.commands.runs import out_file, prompt_tag, read_run_config, run_checkpoint, samples_dir
from scorealign.preference.config import DPOConfig


def load(run_dir: Path, device: str):
    """The model of ``final/`` (exported there from the newest checkpoint when missing)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scorealign.commands.load import Loaded

    cfg = read_run_config(run_dir, DPOConfig)
    final = run_dir / "final"
    if not (final / "config.json").is_file():
        export(run_dir, final)  # from the newest checkpoint
    tok = AutoTokenizer.from_pretrained(str(final), local_files_only=True)
    if (final / "adapter_config.json").is_file():
        from peft import PeftModel

        from scorealign.preference import setup as S
        base = S.build_policy(dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, lora=dataclasses.replace(cfg.model.lora, enabled=False))), tok, None)
        model = PeftModel.from_pretrained(base, str(final))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(final), local_files_only=True)
    return Loaded("dpo", cfg, model.eval(), tokenizer=tok)


@torch.no_grad()
def draw(loaded, prompts: list[str], n: int, seed: int, base: bool) -> list[str]:
    """``n`` sampled completions (16 new tokens) per prompt."""
    tok, out = loaded.tokenizer, []
    for p in [p for p in prompts for _ in range(n)]:
        ids = tok(p, return_tensors="pt").input_ids
        torch.manual_seed(seed + len(out))
        gen = loaded.model.generate(ids, max_new_tokens=16, do_sample=True,
                                    pad_token_id=tok.pad_token_id)
        out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    return out


def sample(loaded, req: SampleRequest) -> Sampled:
    """``prompt<TAB>completion`` lines in a text file."""
    prompts = list(req.prompts or ["a"])
    texts = draw(loaded, prompts, req.n, req.seed, False)
    path = out_file(req.out, samples_dir(loaded) /
                    f"sample_{prompt_tag(req.prompts)}_seed{req.seed}.txt")
    rows = [f"{p}\t{t}" for p, t in zip([p for p in prompts for _ in range(req.n)], texts)]
    path.write_text("\n".join(rows) + "\n")
    return Sampled(path, tuple(rows))


@torch.no_grad()
def evaluate(loaded, req: EvalRequest):
    """The demo's oracle win rate, else the fraction of data pairs whose chosen completion the
    policy rates above the rejected one."""
    from scorealign.preference import data as D
    from scorealign.preference import demo_task
    from scorealign.preference.logratio import concatenated_logps

    c = loaded.config
    if c.data.source == "demo":
        tok, weights, _ = demo_task.prepare(c.demo, c.model, loaded.run_dir, c.seed)
        return demo_task.WinRateEval(tok, c.model, weights, c.demo, c.seed)(loaded.model), None
    exs = D.read_jsonl(c.data.path, c.data.kind) if c.data.source == "jsonl" else \
        D.load_hf(c.data.path, c.data.split, c.data.kind)
    exs = exs[: c.data.limit] if c.data.limit else exs
    if c.data.kind != "paired":
        raise ValueError("evaluation of unpaired (KTO) data is not defined")
    items = [D.tokenize_example(loaded.tokenizer, ex, max_length=c.data.max_length,
                                max_prompt_length=c.data.max_prompt_length) for ex in exs]
    collate = D.PairCollator(loaded.tokenizer.pad_token_id, c.data.padding_side)
    wins, total = 0.0, 0
    for s in range(0, len(items), 32):
        idx = list(range(s, min(s + 32, len(items))))
        w, lo = concatenated_logps(loaded.model, collate([items[i] for i in idx], idx))
        wins += float((w.logp > lo.logp).float().sum())
        total += len(idx)
    return {"eval/pref_accuracy": wins / max(total, 1), "eval/pairs": float(total)}, None


def export(run_dir: Path, dest: Path, checkpoint=None) -> Path:
    """The checkpoint's model with the run's tokenizer (``formats.export_lm``)."""
    from scorealign.commands.formats import export_lm
    from scorealign.preference import setup as S

    cfg = read_run_config(run_dir, DPOConfig)
    st = S.build(cfg, run_dir)
    states, _ = run_checkpoint(run_dir, checkpoint)
    st.model.load_state_dict(states["model"])
    return export_lm(st.model, st.tokenizer, dest)


def detect(config: dict) -> bool:
    return {"loss", "reference"} <= set(config)


RECORD = RunKind("dpo", DPOConfig, load, sample, evaluate, export, detect=detect, draw=draw)
