"""``rpo build-pairs``: sample the base model and write a preference dataset (RPO's critique →
edit → verify pairs, or reward-labelled pairs): ``pairs.jsonl``, PNGs and a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scorealign.commands.common import default_out, typed_errors


def build_pairs(cfg: Any, out: str | Path | None = None, overwrite: bool = False
                ) -> tuple[Path, Any]:
    """Build the dataset of ``cfg`` (a BuildPairsConfig) at ``out`` (default
    ``runs/pairs-<method>-<time>``); returns (dataset directory, build statistics).

    ``overwrite`` replaces a complete dataset at ``out``; an incomplete one is continued.

    Raises:
        UsageError: a complete dataset exists at ``out`` (without ``overwrite``);
        ConfigError: a missing file the config names; DatasetError, StageError.
    """
    from scorealign.preference.rpo.build import build_pairs as build

    target = out or default_out(f"pairs-{cfg.method}")
    with typed_errors(values=False):
        return build(cfg, target, overwrite=overwrite)


__all__ = ["build_pairs"]
