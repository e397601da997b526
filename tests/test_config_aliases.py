"""Issue 21: one OptimConfig / LoraConfig / BaseConfig vocabulary, and the alias table that
keeps every shipped YAML and every run directory written before the renames loading."""

import typing
from pathlib import Path

import pytest
import yaml

from scorealign.config import (ALIASES, RENAMED, BaseConfig, ConfigError, LoraConfig, OptimConfig,
                               config_from_dict, dump_config, load_config)
from scorealign.control.train import ControlConfig
from scorealign.preference.config import DPOConfig
from scorealign.preference.rpo.config import BuildPairsConfig, DiffusionDPOConfig
from scorealign.rl.config import FinetuneConfig
from scorealign.train.pretrain import PretrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def schema_of(path: Path) -> type:
    kind = path.parent.name
    if kind == "dpo":
        return DiffusionDPOConfig if yaml.safe_load(path.read_text()).get("task") == "diffusion" \
            else DPOConfig
    return {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "control": ControlConfig,
            "rpo": BuildPairsConfig}[kind]


SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(SHIPPED) > 30


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads_and_round_trips(path):
    schema = schema_of(path)
    cfg = load_config(path, schema)
    again = config_from_dict(yaml.safe_load(dump_config(cfg)), schema)
    assert again == cfg


def test_the_shared_classes_are_used_by_every_command():
    pairs = [(PretrainConfig, "train", OptimConfig), (DPOConfig, "train", OptimConfig),
             (DiffusionDPOConfig, "train", OptimConfig), (FinetuneConfig, "train", OptimConfig),
             (DPOConfig, "model.lora", LoraConfig), (DiffusionDPOConfig, "lora", LoraConfig),
             (FinetuneConfig, "lora", LoraConfig), (DiffusionDPOConfig, "base", BaseConfig),
             (FinetuneConfig, "base", BaseConfig), (BuildPairsConfig, "base", BaseConfig)]
    for schema, dotted, shared in pairs:
        tp = schema
        for part in dotted.split("."):
            tp = typing.get_type_hints(tp)[part]
        assert issubclass(tp, shared), (schema, dotted)
    for tp in (OptimConfig, LoraConfig, BaseConfig):  # the ground floor holds them
        assert tp.__module__ == "scorealign.config"


OLD_DPO = """\
device: cpu
model: {source: tiny_gpt2, lora: {enabled: true, r: 4, alpha: 8.0}}
data: {source: demo}
train: {steps: 5, lr: 1.0e-3, schedule: linear, max_grad_norm: 0.5}
"""


def test_old_names_load_as_the_new_ones(tmp_path):
    f = tmp_path / "old.yaml"
    f.write_text(OLD_DPO)
    cfg = load_config(f, DPOConfig)
    assert cfg.train.decay == "linear" and cfg.train.grad_clip == 0.5
    assert cfg.model.lora.rank == 4 and cfg.model.lora.on
    # a run directory's config.yaml written before the rename (plain dict, as --resume reads it)
    old = yaml.safe_load(OLD_DPO)
    assert config_from_dict(old, DPOConfig) == cfg
    # the dump speaks the new names only
    text = dump_config(cfg)
    assert "max_grad_norm" not in text and "schedule" not in text and "grad_clip: 0.5" in text
    # --set with an old name too
    cfg = load_config(f, DPOConfig, ["train.max_grad_norm=0.25", "model.lora.r=2"])
    assert cfg.train.grad_clip == 0.25 and cfg.model.lora.rank == 2


def test_old_diffusion_run_config_loads(tmp_path):
    old = yaml.safe_load((CONFIGS / "dpo" / "diffusion_lora.yaml").read_text())
    old.setdefault("train", {})["max_grad_norm"] = 2.0
    cfg = config_from_dict(old, DiffusionDPOConfig)
    assert cfg.lora.rank == 4 and cfg.lora.on and cfg.train.grad_clip == 2.0


def test_old_and_new_name_together_is_an_error(tmp_path):
    f = tmp_path / "both.yaml"
    f.write_text("device: cpu\ndata: {source: demo}\ntrain: {grad_clip: 1.0, max_grad_norm: 0.5}\n")
    with pytest.raises(ConfigError, match=r"train.max_grad_norm: old name of train.grad_clip"):
        load_config(f, DPOConfig)


def test_one_table_accepts_issue_21_names_and_rejects_issue_11_names():
    assert RENAMED == {old: new for old, (new, ok) in ALIASES.items() if not ok}
    assert all(old.rpartition(".")[0] == new.rpartition(".")[0]
               for old, (new, ok) in ALIASES.items() if ok)
    with pytest.raises(ConfigError, match="renamed to train.seed"):
        load_config(None, DPOConfig, ["seed=3"])


def test_finetune_lora_switches_on_rank():
    assert not LoraConfig(enabled=None, rank=0).on and LoraConfig(enabled=None, rank=4).on
    with pytest.raises(ConfigError, match="lora.enabled"):
        load_config(None, FinetuneConfig, ["lora.enabled=false", "lora.rank=4"])
    with pytest.raises(ConfigError, match="lora.rank"):
        load_config(None, FinetuneConfig, ["lora.enabled=true", "lora.rank=0"])
    assert load_config(None, FinetuneConfig, ["lora.rank=4"]).lora.on
