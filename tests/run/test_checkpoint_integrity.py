"""Pruning by integrity (issue 26): the newest intact checkpoint is never deleted and a damaged
one is moved aside, named, instead of being kept as if it could be resumed."""

from __future__ import annotations

import torch

from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def _save(root, step, keep=2):
    return save_checkpoint(root, step, {"model": {"w": torch.full((3,), float(step))}},
                           extra={"step": step}, keep=keep)


def _damage(path):
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:20])  # a torn write: the header is cut


def test_prune_after_fallback_keeps_the_intact_checkpoint(tmp_path, capsys):
    root = tmp_path / "checkpoints"
    for s in (4, 5, 6):
        _save(root, s)
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000005", "step_000006"]
    _damage(root / "step_000006")
    resumed = latest_checkpoint(root)            # --resume falls back to step 5
    assert resumed.name == "step_000005"
    _save(root, 6)                               # the resumed run redoes step 6 ...
    _save(root, 7)                               # ... and goes on; keep=2
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert "step_000007" in names and "step_000006" in names
    assert latest_checkpoint(root).name == "step_000007"
    assert float(load_checkpoint(root / "step_000006")[0]["model"]["w"][0]) == 6.0


def test_damaged_checkpoint_is_moved_aside_not_counted(tmp_path, capsys):
    root = tmp_path / "checkpoints"
    for s in (5, 6):
        _save(root, s)
    _damage(root / "step_000006")
    assert latest_checkpoint(root).name == "step_000005"
    _save(root, 7)                               # resumed from 5, trained on to 7
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert names == ["damaged_step_000006", "step_000005", "step_000007"]
    assert "damaged_step_000006" in capsys.readouterr().err
    _save(root, 8)
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert names == ["damaged_step_000006", "step_000007", "step_000008"]


def test_keep_one_keeps_the_new_intact_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    _save(root, 1, keep=1)
    _damage(root / "step_000001")
    _save(root, 2, keep=1)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["damaged_step_000001",
                                                                     "step_000002"]
