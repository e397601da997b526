"""README chain `rpo build-pairs --config configs/rpo/X.yaml` → `dpo --config configs/dpo/Y.yaml`:
build-pairs' default --out is where the shipped Diffusion-DPO config reads the pairs, and a
missing dataset names the command that writes it, before any run directory exists."""

from pathlib import Path

import pytest

from scorealign.commands.common import resolve_config
from scorealign.commands.dpo import diffusion_dpo, require_pairs
from scorealign.commands.rpo import build_pairs, default_pairs_out
from scorealign.errors import ScorealignError, UsageError
from scorealign.preference.rpo.config import BuildPairsConfig, DiffusionDPOConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("pairs, dpo", [("digits", "digits_rpo"),
                                        ("digits_reward", "diffusion_reward")])
def test_default_out_is_where_the_dpo_config_reads(pairs, dpo):
    build = resolve_config(BuildPairsConfig, ROOT / f"configs/rpo/{pairs}.yaml", [])
    train = resolve_config(DiffusionDPOConfig, ROOT / f"configs/dpo/{dpo}.yaml", [])
    assert default_pairs_out(build.method) == Path(train.data.path)


def test_missing_pairs_name_the_command_and_leave_no_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config(DiffusionDPOConfig, ROOT / "configs/dpo/digits_rpo.yaml", [])
    with pytest.raises(ScorealignError, match=r"rpo build-pairs --config configs/rpo/digits\.yaml"):
        diffusion_dpo(cfg)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ScorealignError, match=r"--out elsewhere/p"):
        require_pairs("elsewhere/p")


def test_complete_dataset_is_kept_without_overwrite(tmp_path):
    from scorealign.preference.rpo.dataset import MANIFEST_FILE
    (tmp_path / MANIFEST_FILE).write_text("{}")
    cfg = resolve_config(BuildPairsConfig, ROOT / "configs/rpo/digits.yaml", [])
    with pytest.raises(UsageError, match="--overwrite"):
        build_pairs(cfg, tmp_path)
    assert (tmp_path / MANIFEST_FILE).read_text() == "{}"
