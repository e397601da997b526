"""Preference data: JSONL or Hugging Face ``datasets``, tokenization and padding-correct collation.

Paired records are ``{"prompt": str, "chosen": str, "rejected": str}`` (the HF/TRL convention);
unpaired records for KTO are ``{"prompt": str, "completion": str, "label": bool}``. Other keys are
ignored. A bad record raises :class:`DataError` naming ``file:line`` (JSONL) or ``name[row]`` (HF).

Collators return one concatenated batch of shape [2B, L] for ``logratio.concatenated_logps``:
chosen rows then rejected rows (paired), or matched rows then mismatched rows (KTO), with an
``index`` tensor of dataset positions (for cached reference log-probs).
"""

from __future__ import annotations

from scorealign.errors import ScorealignError

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import torch

Kind = Literal["paired", "unpaired"]


class DataError(ScorealignError, ValueError):
    """A record that cannot be used; the message names the file and line (or dataset row)."""


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: ``chosen`` (y_w) preferred to ``rejected`` (y_l) for ``prompt`` (x)."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class LabeledCompletion:
    """One unpaired completion with a binary desirability label (KTO)."""

    prompt: str
    completion: str
    label: bool


_FIELDS = {"paired": ("prompt", "chosen", "rejected"), "unpaired": ("prompt", "completion")}


def parse_record(rec: Any, kind: Kind, where: str) -> PreferencePair | LabeledCompletion:
    """Validate one record; ``where`` (e.g. ``data.jsonl:12``) prefixes any error."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for key in _FIELDS[kind]:
        if key not in rec:
            raise DataError(f"{where}: missing field {key!r} (a {kind} record needs "
                            f"{list(_FIELDS[kind]) + (['label'] if kind == 'unpaired' else [])})")
        if not isinstance(rec[key], str):
            raise DataError(f"{where}: field {key!r} must be a string, got {rec[key]!r}")
    if kind == "paired":
        if not rec["chosen"] or not rec["rejected"]:
            raise DataError(f"{where}: 'chosen' and 'rejected' must be non-empty")
        return PreferencePair(rec["prompt"], rec["chosen"], rec["rejected"])
    if not isinstance(rec.get("label"), bool):
        raise DataError(f"{where}: field 'label' must be true or false, got {rec.get('label')!r}")
    return LabeledCompletion(rec["prompt"], rec["completion"], rec["label"])


def read_jsonl(path: str | Path, kind: Kind = "paired") -> list:
    """Read a JSONL file of records; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            out.append(parse_record(rec, kind, f"{path}:{lineno}"))
    if not out:
        raise DataError(f"{path}: no records")
    return out


def write_jsonl(path: str | Path, examples: Iterable[PreferencePair | LabeledCompletion]) -> None:
    """Write examples as JSONL (the inverse of :func:`read_jsonl`)."""
    with open(path, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.__dict__) + "\n")


def from_hf(dataset: Any, kind: Kind = "paired", name: str = "dataset") -> list:
    """Examples from a ``datasets.Dataset`` (or any sequence of dict rows)."""
    return [parse_record(row, kind, f"{name}[{i}]") for i, row in enumerate(dataset)]


def load_hf(path: str, split: str, kind: Kind = "paired") -> list:
    """Load a HF dataset: a ``save_to_disk`` directory, or a name/script via ``load_dataset``."""
    import datasets  # optional dependency, imported only for this source

    p = Path(path)
    if p.is_dir() and any((p / f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
        ds = datasets.load_from_disk(str(p))
        ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    else:
        ds = datasets.load_dataset(path, split=split)
    return from_hf(ds, kind, f"{path}:{split}")


def tokenize_example(tokenizer: Any, ex: PreferencePair | LabeledCompletion, *, max_length: int,
                     max_prompt_length: int) -> dict[str, list[int]]:
    """Token ids of prompt and completion(s); each completion ends with EOS.

    The prompt keeps its last ``max_prompt_length`` tokens; completions are cut so that prompt +
    completion fits ``max_length``. An empty prompt becomes [BOS] (or [EOS]) so that the first
    completion token has a context to be predicted from.
    """
    prompt = tokenizer(ex.prompt, add_special_tokens=True)["input_ids"][-max_prompt_length:]
    if not prompt:
        prompt = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                  else tokenizer.eos_token_id]
    room = max_length - len(prompt)
    if room < 1:
        raise DataError(f"max_length {max_length} leaves no room after a {len(prompt)}-token prompt")

    def completion(text: str) -> list[int]:
        return (tokenizer(text, add_special_tokens=False)["input_ids"]
                + [tokenizer.eos_token_id])[:room]

    if isinstance(ex, PreferencePair):
        return {"prompt": prompt, "chosen": completion(ex.chosen),
                "rejected": completion(ex.rejected)}
    return {"prompt": prompt, "completion": completion(ex.completion), "label": [int(ex.label)]}


def pad_rows(rows: list[list[int]], n_prompt: list[int], pad_id: int,
             side: Literal["left", "right"]) -> dict[str, torch.Tensor]:
    """Pad (prompt + completion) rows to one length; masks for attention and completion tokens."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    comp = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, n_p) in enumerate(zip(rows, n_prompt)):
        start = width - len(row) if side == "left" else 0
        ids[i, start:start + len(row)] = torch.tensor(row, dtype=torch.long)
        attn[i, start:start + len(row)] = 1
        comp[i, start + n_p:start + len(row)] = 1
    return {"input_ids": ids, "attention_mask": attn, "completion_mask": comp}


@dataclass(frozen=True)
class PairCollator:
    """Tokenized pairs → one [2B, L] batch: chosen rows, then rejected rows."""

    pad_id: int
    padding_side: Literal["left", "right"] = "right"

    def __call__(self, items: list[dict[str, list[int]]], index: list[int]) -> dict[str, torch.Tensor]:
        """Collate ``items`` (from :func:`tokenize_example`) at dataset positions ``index``."""
        rows = [it["prompt"] + it["chosen"] for it in items] + \
               [it["prompt"] + it["rejected"] for it in items]
        n_prompt = [len(it["prompt"]) for it in items] * 2
        out = pad_rows(rows, n_prompt, self.pad_id, self.padding_side)
        out["index"] = torch.tensor(index, dtype=torch.long)
        return out


@dataclass(frozen=True)
class UnpairedCollator:
    """Tokenized KTO examples → [2B, L]: (x_i, y_i) rows, then mismatched (x_i, y_{i+1}) rows.

    The mismatched completion of row i is the next row's, as in TRL's KTO KL dataset. A batch of
    one has no other row: its mismatched completion is that of the next dataset example
    (``pool[(index + 1) % len(pool)]``), never its own, which would make the KL estimate z₀
    the matched log-ratio itself.
    """

    pad_id: int
    padding_side: Literal["left", "right"] = "right"
    pool: list[dict[str, list[int]]] | None = None

    def __call__(self, items: list[dict[str, list[int]]], index: list[int]) -> dict[str, torch.Tensor]:
        """Collate ``items`` at dataset positions ``index``; adds a bool ``label`` [B]."""
        b = len(items)
        if b == 1:
            if not self.pool or len(self.pool) < 2:
                raise DataError("KTO needs at least two examples: a batch of one takes its "
                                "mismatched completion from the next dataset example")
            others = [self.pool[(index[0] + 1) % len(self.pool)]["completion"]]
        else:
            others = [items[(i + 1) % b]["completion"] for i in range(b)]
        rows = [it["prompt"] + it["completion"] for it in items] + \
               [items[i]["prompt"] + others[i] for i in range(b)]
        n_prompt = [len(it["prompt"]) for it in items] * 2
        out = pad_rows(rows, n_prompt, self.pad_id, self.padding_side)
        out["label"] = torch.tensor([it["label"][0] for it in items], dtype=torch.bool)
        out["index"] = torch.tensor(index, dtype=torch.long)
        return out
