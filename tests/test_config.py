"""Strict config loading: unknown keys, wrong types and missing files name the field and line."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from scorealign.config import ConfigError, config_from_dict, dump_config, load_config


@dataclass(frozen=True)
class Inner:
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    steps: int = 10
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    dims: tuple[int, ...] = (32, 64)
    path: str | None = None


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_loads_nested_values_and_overrides(tmp_path):
    p = _write(tmp_path, "name: run\ninner:\n  lr: 3e-4\n  steps: 5\ndims: [8, 16]\n")
    cfg = load_config(p, Outer, ["inner.mode=b", "inner.steps=7"])
    assert cfg == Outer(name="run", inner=Inner(lr=3e-4, steps=7, mode="b"), dims=(8, 16))
    # The dump reads back to the same config.
    assert config_from_dict(__import__("yaml").safe_load(dump_config(cfg)), Outer) == cfg


def test_unknown_key_names_file_line_and_field(tmp_path):
    p = _write(tmp_path, "name: run\ninner:\n  lr: 0.1\n  stpes: 5\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: inner\.stpes: unknown key"):
        load_config(p, Outer)


def test_wrong_type_names_field(tmp_path):
    p = _write(tmp_path, "inner:\n  steps: many\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:2: inner\.steps: expected int, got 'many'"):
        load_config(p, Outer)
    p = _write(tmp_path, "inner:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"inner\.lr: expected float"):
        load_config(p, Outer)
    with pytest.raises(ConfigError, match=r"inner\.mode: expected one of \['a', 'b'\]"):
        load_config(None, Outer, ["inner.mode=c"])
    with pytest.raises(ConfigError, match=r"\(--set\): inner\.steps: expected int"):
        load_config(None, Outer, ["inner.steps=1.5"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml", Outer)
    p = _write(tmp_path, "inner: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p, Outer)


def test_bool_is_not_an_int(tmp_path):
    p = _write(tmp_path, "inner:\n  steps: true\n")
    with pytest.raises(ConfigError, match="expected int, got True"):
        load_config(p, Outer)


def test_old_shared_names_are_rejected_with_the_new_name(tmp_path):
    import dataclasses

    from scorealign.config import ConfigError, load_config

    @dataclasses.dataclass(frozen=True)
    class Train:
        steps: int = 1
        seed: int = 0
        ckpt_every: int = 1
        keep_checkpoints: int = 2

    @dataclasses.dataclass(frozen=True)
    class Root:
        train: Train = dataclasses.field(default_factory=Train)
        device: str = "auto"

    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\n")
    with pytest.raises(ConfigError, match=rf"{f}:1: seed: renamed to train.seed"):
        load_config(f, Root)
    f.write_text("train:\n  steps: 2\n  save_every: 5\n")
    with pytest.raises(ConfigError, match=rf"{f}:3: train.save_every: renamed to train.ckpt_every"):
        load_config(f, Root)
    for old, new in (("train.keep=1", "train.keep_checkpoints"), ("train.device=cpu", "device"),
                     ("iterations=4", "train.steps")):
        with pytest.raises(ConfigError, match=rf"\(--set\): {old.split('=')[0]}: renamed to {new}"):
            load_config(None, Root, [old])
    assert load_config(None, Root, ["train.seed=4", "device=cpu"]).train.seed == 4
