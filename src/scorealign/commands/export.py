"""``export_run(RUN, to=None, checkpoint=None)``: a run's model, rebuilt from a checkpoint (default
the newest), in its ecosystem's format (``RUN/final`` by default).

digits models: the ``save_pretrained`` pair (LoRA merged); SD-style pipelines: diffusers LoRA
weights or a pipeline directory; causal LMs: a transformers / peft directory with the tokenizer;
control policies: ``policy.safetensors`` with the run's ``config.yaml``. The run's kind is looked
up once and its record's ``export`` writes the directory (atomically: one rename).

Nothing the user made is replaced: an existing file at ``to`` is an error, and so is a non-empty
directory that is not an export of scorealign (marked by ``.scorealign-export``, or ``RUN/final``)
unless ``overwrite``.
"""

from __future__ import annotations

from pathlib import Path

from scorealign.commands.kinds import record_of
from scorealign.errors import UsageError


def export_target(dest: Path, overwrite: bool = False) -> bool:
    """Check that ``dest`` may be written; returns whether it must be claimed (``overwrite`` of a
    directory that is not an export).

    Raises:
        UsageError: ``dest`` is a file, or a non-empty directory that is not an export of
            scorealign and ``overwrite`` is not given.
    """
    from scorealign.run.atomic import is_own_dir
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError(f"--to {dest}: exists and is not a directory; choose another --to")
    if not dest.exists() or is_own_dir(dest):
        return False
    if not overwrite:
        raise UsageError(f"--to {dest}: exists, is not empty and is not an export of scorealign; "
                         f"choose another --to or pass --overwrite to replace it")
    return True


def export_run(run_dir: str | Path, to: str | Path | None = None,
               checkpoint: str | Path | None = None, overwrite: bool = False) -> Path:
    """Rebuild a run's model from a checkpoint (default: the newest) and export it to ``to``
    (default ``RUN/final``); returns the directory written.

    ``overwrite``: replace ``to`` even when it is a directory that scorealign did not write.

    Raises:
        RunNotFoundError, ConfigError, CheckpointError: an unusable run; ExportError: no
        checkpoint, or a kind without an export format; UsageError: ``to`` is a file or a
        directory of the user's (see :func:`export_target`); OSError: ``to`` is not writable.
    """
    from scorealign.run.atomic import claim_dir
    run_dir = Path(run_dir)
    dest = Path(to) if to is not None else run_dir / "final"
    record = record_of(run_dir)
    marker = claim_dir(dest) if export_target(dest, overwrite) else None
    try:
        return record.export(run_dir, dest, checkpoint)
    except FileExistsError as e:  # appeared while exporting (atomic_dir checks again)
        raise UsageError(f"--to {e}") from None
    except BaseException:
        if marker is not None:
            marker.unlink(missing_ok=True)
        raise


__all__ = ["export_run"]
