"""``export_run(RUN, to=None, checkpoint=None)``: a run's model, rebuilt from a checkpoint (default
the newest), in its ecosystem's format (``RUN/final`` by default).

digits models: the ``save_pretrained`` pair (LoRA merged); SD-style pipelines: diffusers LoRA
weights or a pipeline directory; causal LMs: a transformers / peft directory with the tokenizer;
control policies: ``policy.safetensors`` with the run's ``config.yaml``. The run's kind is looked
up once and its record's ``export`` writes the directory (atomically: one rename).

``with_base``: a complete diffusers pipeline that loads without scorealign (:data:`WITH_BASE`):
finetune runs of SD / SD3 / FLUX bases as the base pipeline with the trained denoiser (LoRA fused,
or with ``adapter`` kept as diffusers LoRA weights beside it), digits models (finetune,
pretrain, diffusion_dpo) as a diffusers UNet + scheduler + ``pipeline.py``
(``commands.digits_diffusers``).

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


def _with_base_writer(kind: str):
    """The ``--with-base`` writer ``(run_dir, dest, checkpoint, adapter)`` of run kind ``kind``."""
    from scorealign.errors import ExportError

    if kind == "finetune":
        from scorealign.commands.kind_finetune import export_with_base
        return export_with_base
    if kind == "pretrain":
        from scorealign.commands.kind_pretrain import export_with_base as digits
    elif kind == "diffusion_dpo":
        from scorealign.commands.kind_diffusion_dpo import export_with_base as digits
    else:
        raise ExportError(f"--with-base: runs of kind {kind!r} have no diffusers pipeline export "
                          f"(finetune, pretrain and diffusion_dpo runs do)")

    def write(run_dir: Path, dest: Path, checkpoint: str | Path | None, adapter: bool) -> Path:
        if adapter:
            raise UsageError(f"--adapter: a {kind} run's digits model is exported whole (LoRA "
                             f"merged); drop --adapter")
        return digits(run_dir, dest, checkpoint)
    return write


WITH_BASE = ("finetune", "pretrain", "diffusion_dpo")


def export_run(run_dir: str | Path, to: str | Path | None = None,
               checkpoint: str | Path | None = None, overwrite: bool = False,
               with_base: bool = False, adapter: bool = False) -> Path:
    """Rebuild a run's model from a checkpoint (default: the newest) and export it to ``to``
    (default ``RUN/final``); returns the directory written.

    ``overwrite``: replace ``to`` even when it is a directory that scorealign did not write.
    ``with_base``: write a complete diffusers pipeline (module docstring; runs of the kinds in
    :data:`WITH_BASE`); ``adapter``: with ``with_base``, LoRA adapters kept unfused.

    Raises:
        RunNotFoundError, ConfigError, CheckpointError: an unusable run; ExportError: no
        checkpoint, or a kind without an export format; UsageError: ``to`` is a file or a
        directory of the user's (see :func:`export_target`); OSError: ``to`` is not writable.
    """
    from scorealign.run.atomic import claim_dir
    run_dir = Path(run_dir)
    dest = Path(to) if to is not None else run_dir / "final"
    record = record_of(run_dir)
    if adapter and not with_base:
        raise UsageError("--adapter goes with --with-base (without it LoRA runs export their "
                         "adapters alone)")
    write = _with_base_writer(record.name) if with_base else None
    marker = claim_dir(dest) if export_target(dest, overwrite) else None
    try:
        if write is not None:
            return write(run_dir, dest, checkpoint, adapter)
        return record.export(run_dir, dest, checkpoint)
    except FileExistsError as e:  # appeared while exporting (atomic_dir checks again)
        raise UsageError(f"--to {e}") from None
    except BaseException:
        if marker is not None:
            marker.unlink(missing_ok=True)
        raise


__all__ = ["export_run", "WITH_BASE"]
