"""``load(RUN)``: open a run directory of any kind and return its trained model, ready to use.

The run's kind is looked up once (:func:`scorealign.commands.kinds.kind_of`) and its record's
``load`` builds the :class:`Loaded`; ``Loaded.sample`` calls the record's ``draw``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scorealign.commands.kinds import get_kind, kind_of
from scorealign.errors import RunNotFoundError, UsageError


@dataclass
class Loaded:
    """A trained run, ready to use.

    Attributes:
        kind: the command that wrote the run (``scorealign.commands.kinds.run_kinds()``).
        config: the run's resolved config (the command's dataclass).
        model: the trained model (digits: ``model(x, t, cond)``; SD-style finetune: the diffusers
            pipeline of the run's base with the trained LoRA or weights; dpo: a transformers
            ``PreTrainedModel`` or peft model; control: the policy module).
        task: digits runs: the :class:`~scorealign.train.task.Task` (SDE, conditioning, sampler).
        tokenizer: dpo runs: the tokenizer saved beside the model.
        sampling: digits runs: the ``SamplingConfig`` used by :meth:`sample`.
        base: the base model for runs that fine-tune one (finetune, Diffusion-DPO), else None.
        setup: finetune runs: the trainer's ``Setup`` (policy, rewards' decode) with the weights.
        run_dir: the run directory.
        denoiser: SD-style finetune runs: ``model``'s denoiser in the trainer's interface, which
            :meth:`sample` rolls out with the run's policy.
        samples_dir: where ``scorealign sample`` writes by default: ``RUN/samples``, or
            ``./samples/<name>`` for a shipped ``pretrained:<name>`` model (never inside the
            installed package).
    """

    kind: str
    config: Any
    model: Any
    task: Any = None
    tokenizer: Any = None
    sampling: Any = None
    base: Any = None
    setup: Any = None
    run_dir: Path | None = None
    denoiser: Any = None
    samples_dir: Path | None = None

    @torch.no_grad()
    def sample(self, prompts: list[str] | str | None = None, n: int = 4, seed: int = 0,
               base: bool = False) -> Any:
        """``n`` samples per prompt, the draws ``scorealign sample`` saves: images
        ``[len(prompts)·n, C, H, W]`` clamped to the data range [-1, 1] (diffusion runs;
        ``base=True``: from the base model), completions (dpo runs), or, without prompts,
        ``n`` simulated state paths ``[steps + 1, n, state_dim]`` (control runs)."""
        if prompts is None and self.kind != "control":
            raise UsageError(f"a {self.kind} run samples for prompts: sample(prompts, n)")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts or [])
        if base and self.base is None:
            raise UsageError(f"a {self.kind} run has no base model")
        draw = get_kind(self.kind).draw
        if draw is None:
            raise UsageError(f"{self.kind} runs have no prompts to sample from")
        return draw(self, prompts, n, seed, base)


def load(run_dir: str | Path, device: str = "cpu") -> Loaded:
    """Open ``run_dir`` (written by any scorealign command) and return its trained model.

    The model comes from ``RUN/final`` when present, else from the newest checkpoint.
    ``pretrained:<name>`` opens a shipped model (``scorealign configs`` lists the bases).
    Raises RunNotFoundError/ConfigError/CheckpointError/ExportError naming the file.
    """
    alias = str(run_dir)
    if alias.startswith("pretrained:"):  # a shipped model: its directory is a pretraining run
        from scorealign.train.bases import PRETRAINED, resolve_base_path
        try:
            run_dir = resolve_base_path(alias)
        except FileNotFoundError:
            names = sorted(p.name for p in PRETRAINED.iterdir() if p.is_dir())
            raise RunNotFoundError(f"{alias}: no shipped model of that name (shipped: "
                                   f"{', '.join('pretrained:' + n for n in names)})") from None
        samples = Path("samples") / alias.split(":", 1)[1]
    else:
        run_dir = Path(run_dir)
        samples = run_dir / "samples"
    out = get_kind(kind_of(run_dir)).load(run_dir, device)
    out.run_dir, out.samples_dir = run_dir, samples
    return out


__all__ = ["Loaded", "load"]
