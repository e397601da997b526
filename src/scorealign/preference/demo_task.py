"""Offline demo task: "use the prompt's letters", with a programmatic preference oracle.

A prompt is three distinct letters of ``a..h`` followed by ``:`` (e.g. ``bdg:``); a completion is
a short string of letters. The oracle scores a completion by +1 for each letter that occurs in the
prompt and −1 for each other character (an EOS-less, truncated completion scores −1 extra).

Pipeline (all seeded, no global RNG, cached in ``RUN/demo/`` so a resumed run reuses it):

1. SFT: a tiny GPT-2 learns from synthetic completions whose letters come from the prompt with
   probability ``prompt_bias`` (0.5: mediocre on purpose), lengths uniform in 3..8.
2. Preference data: ``candidates`` SFT samples per prompt, ranked by the oracle, paired
   (random / best-vs-worst / RSO rejection sampling), written as prompt/chosen/rejected JSONL.
3. Evaluation: oracle win rate of the policy's samples against the SFT model's samples on fixed
   held-out prompts (ties count ½), plus mean oracle reward of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from scorealign.run.progress import track  # issue 11: one progress library
from scorealign.preference.components import rso_pairs
from scorealign.preference.data import PreferencePair, read_jsonl, write_jsonl
from scorealign.preference.logratio import sequence_logps
from scorealign.preference.tiny import char_tokenizer, sample, tiny_gpt2
from scorealign.rng import generator
from scorealign.run.checkpoint import load_weights

LETTERS = "abcdefgh"
ALPHABET = LETTERS + ":"


def make_prompt(g: torch.Generator) -> str:
    """Three distinct letters and a colon, e.g. ``bdg:``."""
    idx = torch.randperm(len(LETTERS), generator=g)[:3].sort().values
    return "".join(LETTERS[i] for i in idx) + ":"


def oracle(prompt: str, completion: str, *, finished: bool = True) -> float:
    """+1 per completion letter found in the prompt, −1 per other character, −1 if unfinished."""
    allowed = set(prompt.rstrip(":"))
    return float(sum(1 if ch in allowed else -1 for ch in completion)) - (0.0 if finished else 1.0)


def sft_completion(prompt: str, g: torch.Generator, bias: float) -> str:
    """A synthetic SFT target: length U{3..8}, each letter from the prompt w.p. ``bias``."""
    inside = prompt.rstrip(":")
    outside = "".join(ch for ch in LETTERS if ch not in inside)
    n = int(torch.randint(3, 9, (1,), generator=g))
    out = []
    for _ in range(n):
        pool = inside if float(torch.rand((), generator=g)) < bias else outside
        out.append(pool[int(torch.randint(len(pool), (1,), generator=g))])
    return "".join(out)


def _batch_rows(tok: Any, prompts: list[str], completions: list[str]) -> dict[str, torch.Tensor]:
    from scorealign.preference.data import pad_rows

    rows, n_prompt = [], []
    for p, c in zip(prompts, completions):
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        rows.append(p_ids + tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        n_prompt.append(len(p_ids))
    return pad_rows(rows, n_prompt, tok.pad_token_id, "right")


def train_sft(model: torch.nn.Module, tok: Any, cfg: Any, seed: int) -> None:
    """Maximum likelihood on synthetic completions (mean token NLL), seeded batches."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr)
    model.train()
    for step in track(range(cfg.sft_steps), "dpo demo: SFT"):  # issue 11: progress
        g = generator(seed, "demo-sft", step)
        prompts = [make_prompt(g) for _ in range(cfg.sft_batch_size)]
        comps = [sft_completion(p, g, cfg.prompt_bias) for p in prompts]
        b = _batch_rows(tok, prompts, comps)
        s = sequence_logps(model, b["input_ids"], b["attention_mask"], b["completion_mask"])
        loss = -(s.logp.sum() / s.n_tokens.sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


def _decode(tok: Any, ids: list[int]) -> tuple[str, bool]:
    finished = bool(ids) and ids[-1] == tok.eos_token_id
    return tok.decode(ids[:-1] if finished else ids), finished


def sample_scored(model: torch.nn.Module, tok: Any, prompts: list[str], g: torch.Generator,
                  max_new_tokens: int) -> tuple[list[str], list[float]]:
    """Sample one completion per prompt; return texts and oracle scores."""
    p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    outs = sample(model, p_ids, max_new_tokens=max_new_tokens, eos_id=tok.eos_token_id,
                  pad_id=tok.pad_token_id, generator=g)
    texts, scores = [], []
    for p, ids in zip(prompts, outs):
        text, finished = _decode(tok, ids)
        texts.append(text)
        scores.append(oracle(p, text, finished=finished))
    return texts, scores


def build_pairs(model: torch.nn.Module, tok: Any, cfg: Any, seed: int) -> list[PreferencePair]:
    """Oracle-labelled pairs from ``cfg.candidates`` SFT samples per prompt."""
    g_prompt, g_sample = generator(seed, "demo-pair-prompts"), generator(seed, "demo-pair-samples")
    g_pair = generator(seed, "demo-pairing")
    prompts = [make_prompt(g_prompt) for _ in range(cfg.n_prompts)]
    cands = [sample_scored(model, tok, prompts, g_sample, cfg.max_new_tokens)
             for _ in range(cfg.candidates)]
    pairs = []
    for i, p in enumerate(prompts):
        texts = [c[0][i] for c in cands]
        r = torch.tensor([c[1][i] for c in cands])
        if cfg.pairing == "rso":
            idx = rso_pairs(r, beta=cfg.rso_beta, num_pairs=1, generator=g_pair)
        elif cfg.pairing == "best_worst":
            idx = [(int(r.argmax()), int(r.argmin()))] if r.max() > r.min() else []
        else:
            j, k = torch.randperm(len(texts), generator=g_pair)[:2].tolist()
            idx = [(j, k) if r[j] > r[k] else (k, j)] if r[j] != r[k] else []
        pairs += [PreferencePair(p, texts[a], texts[b]) for a, b in idx if texts[a] and texts[b]]
    return pairs


def prepare(cfg: Any, model_cfg: Any, run_path: Path, seed: int) -> tuple[Any, Path, Path]:
    """Build (or reuse from ``RUN/demo``) the tokenizer, SFT weights and the pairs JSONL."""
    from safetensors.torch import save_file

    out = Path(run_path) / "demo"
    out.mkdir(parents=True, exist_ok=True)
    tok = char_tokenizer(ALPHABET)
    weights, pairs_file = out / "sft.safetensors", out / "train.jsonl"
    model = build_model(tok, model_cfg)
    if weights.is_file():  # SFT depends on (seed, model, sft_*) only: reusable across pairings
        model.load_state_dict(load_weights(weights), strict=False)
    else:
        train_sft(model, tok, cfg, seed)
        tmp = weights.with_name(f".{weights.name}.tmp")
        save_file({k: v.detach().clone() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(weights)
    if not pairs_file.is_file():
        tmp = pairs_file.with_name(f".{pairs_file.name}.tmp")
        write_jsonl(tmp, build_pairs(model, tok, cfg, seed))
        tmp.replace(pairs_file)
    return tok, weights, pairs_file


def build_model(tok: Any, model_cfg: Any) -> torch.nn.Module:
    """The demo's tiny GPT-2 for this tokenizer."""
    return tiny_gpt2(len(tok), n_layer=model_cfg.n_layer, n_embd=model_cfg.n_embd,
                     n_head=model_cfg.n_head, n_positions=model_cfg.n_positions,
                     seed=model_cfg.init_seed, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)


class WinRateEval:
    """Oracle win rate of the policy against the SFT reference on fixed held-out prompts."""

    def __init__(self, tok: Any, model_cfg: Any, sft_weights: Path, cfg: Any, seed: int):
        self.tok, self.cfg, self.seed = tok, cfg, seed
        g = generator(seed, "demo-eval-prompts")
        self.prompts = [make_prompt(g) for _ in range(cfg.eval_prompts)]
        ref = build_model(tok, model_cfg)
        ref.load_state_dict(load_weights(sft_weights), strict=False)
        _, self.ref_scores = sample_scored(ref, tok, self.prompts, generator(seed, "demo-eval-ref"),
                                           cfg.max_new_tokens)

    def __call__(self, policy: torch.nn.Module) -> dict[str, float]:
        """Sample from ``policy`` (same seed every call) and compare with the SFT samples."""
        _, scores = sample_scored(policy, self.tok, self.prompts,
                                  generator(self.seed, "demo-eval-policy"), self.cfg.max_new_tokens)
        s, r = torch.tensor(scores), torch.tensor(self.ref_scores)
        win = ((s > r).float() + 0.5 * (s == r).float()).mean()
        return {"eval/win_rate": float(win), "eval/reward_mean": float(s.mean()),
                "eval/sft_reward_mean": float(r.mean())}


def load_pairs(pairs_file: Path) -> list[PreferencePair]:
    """The demo's preference pairs."""
    return read_jsonl(pairs_file, "paired")
