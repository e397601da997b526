"""``rpo build-pairs``: sample the base model and write a preference dataset (RPO's critique →
edit → verify pairs, or reward-labelled pairs): ``pairs.jsonl``, PNGs and a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scorealign.commands.common import typed_errors
from scorealign.errors import UsageError


def default_pairs_out(method: str) -> Path:
    """``runs/pairs-<method>``: where the shipped Diffusion-DPO configs read the pairs
    (``configs/dpo/digits_rpo.yaml``: ``runs/pairs-rpo``; ``diffusion_reward.yaml``:
    ``runs/pairs-reward``), so ``rpo build-pairs`` then ``dpo`` chain without an ``--out``.
    A complete dataset there is kept (rerun with ``--overwrite`` to rebuild it)."""
    return Path("runs") / f"pairs-{method}"


def check_dataset_out(out: Path) -> None:
    """Raise UsageError unless ``out`` is new, empty, or a pair dataset (complete or a killed
    build's leftovers, which the writer replaces): a user's directory or file is never removed."""
    from scorealign.preference.rpo.dataset import MANIFEST_FILE, PAIRS_FILE
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (
            (out / PAIRS_FILE).is_file() or (out / MANIFEST_FILE).is_file()):
        raise UsageError(f"--out {out}: exists, is not empty and is not a pair dataset; choose "
                         f"another --out (nothing was written)")


def build_pairs(cfg: Any, out: str | Path | None = None, overwrite: bool = False
                ) -> tuple[Path, Any]:
    """Build the dataset of ``cfg`` (a BuildPairsConfig) at ``out`` (default
    :func:`default_pairs_out`: ``runs/pairs-<method>``); returns (dataset directory, build
    statistics).

    ``overwrite`` replaces a complete dataset at ``out``; an incomplete one is continued.

    Raises:
        UsageError: a complete dataset exists at ``out`` (without ``overwrite``), or ``out`` is
            a file or a directory that is not a pair dataset (even with ``overwrite``);
        ConfigError: a missing file the config names; DatasetError, StageError.
    """
    from scorealign.preference.rpo.build import build_pairs as build

    target = Path(out) if out is not None else default_pairs_out(cfg.method)
    check_dataset_out(target)
    from scorealign.preference.rpo.dataset import MANIFEST_FILE
    if (target / MANIFEST_FILE).is_file() and not overwrite:  # say so before sampling anything
        raise UsageError(f"--out {target}: already holds a complete pair dataset (`scorealign "
                         f"dpo` reads it from there); pass --overwrite to rebuild it or choose "
                         f"another --out")
    with typed_errors(values=False):
        return build(cfg, target, overwrite=overwrite)


__all__ = ["build_pairs", "default_pairs_out"]
