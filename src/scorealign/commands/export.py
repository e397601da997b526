"""``export_run(RUN, to=None, checkpoint=None)``: a run's model, rebuilt from a checkpoint (default
the newest), in its ecosystem's format (``RUN/final`` by default).

digits models: the ``save_pretrained`` pair (LoRA merged); SD-style pipelines: diffusers LoRA
weights or a pipeline directory; causal LMs: a transformers / peft directory with the tokenizer;
control policies: ``policy.safetensors`` with the run's ``config.yaml``. The run's kind is looked
up once and its record's ``export`` writes the directory (atomically: one rename).
"""

from __future__ import annotations

from pathlib import Path

from scorealign.commands.kinds import record_of


def export_run(run_dir: str | Path, to: str | Path | None = None,
               checkpoint: str | Path | None = None) -> Path:
    """Rebuild a run's model from a checkpoint (default: the newest) and export it to ``to``
    (default ``RUN/final``); returns the directory written.

    Raises:
        RunNotFoundError, ConfigError, CheckpointError: an unusable run; ExportError: no
        checkpoint, or a kind without an export format; OSError: ``to`` is not writable.
    """
    run_dir = Path(run_dir)
    dest = Path(to) if to is not None else run_dir / "final"
    return record_of(run_dir).export(run_dir, dest, checkpoint)


__all__ = ["export_run"]
