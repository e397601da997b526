"""One range rule for every command (issue 26): a budget, count or interval given with --set (or
in a YAML file) below its range is a ConfigError naming the field, for every schema that has it."""

from __future__ import annotations

import dataclasses

import pytest

from scorealign.config import (AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, ConfigError,
                               load_config)
from scorealign.control.train import ControlConfig
from scorealign.preference.config import DPOConfig
from scorealign.preference.rpo.config import BuildPairsConfig, DiffusionDPOConfig
from scorealign.rl.config import FinetuneConfig
from scorealign.train.config import PretrainConfig

SCHEMAS = (PretrainConfig, FinetuneConfig, DPOConfig, DiffusionDPOConfig, ControlConfig,
           BuildPairsConfig)


def _ranged_fields(schema: type, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted name, an out-of-range value) of every field of ``schema`` the rule covers."""
    out = []
    for f in dataclasses.fields(schema):
        dotted = f"{prefix}{f.name}"
        default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else f.default)
        if dataclasses.is_dataclass(default):
            out += _ranged_fields(type(default), dotted + ".")
        elif f.name in AT_LEAST_ONE:
            out.append((dotted, 0))
        elif f.name in NON_NEGATIVE:
            out.append((dotted, -1))
        elif f.name in POSITIVE:
            out.append((dotted, -1))
        elif f.name in UNIT_INTERVAL:
            out.append((dotted, 1.5))
    return out


CASES = [(schema, name, bad) for schema in SCHEMAS for name, bad in _ranged_fields(schema)]


def test_every_command_has_ranged_fields():
    covered = {schema for schema, _, _ in CASES}
    assert covered == set(SCHEMAS)
    assert ("train.epochs", 0) in [(n, b) for s, n, b in CASES if s is FinetuneConfig]
    assert ("train.steps", 0) in [(n, b) for s, n, b in CASES if s is DPOConfig]


@pytest.mark.parametrize("schema,name,bad", CASES,
                         ids=[f"{s.__name__}:{n}" for s, n, _ in CASES])
def test_out_of_range_value_is_refused_naming_the_field(schema, name, bad):
    with pytest.raises(ConfigError) as e:
        load_config(None, schema, [f"{name}={bad}"])
    assert f"{name}: must be" in str(e.value) and "(--set)" in str(e.value)


@pytest.mark.parametrize("schema,name,bad", CASES[:8],
                         ids=[f"{s.__name__}:{n}" for s, n, _ in CASES[:8]])
def test_in_range_value_is_accepted(schema, name, bad):
    good = 2 if bad == 0 else 0
    if name.rsplit(".", 1)[-1] in POSITIVE:
        good = 1e-3
    try:
        load_config(None, schema, [f"{name}={good}"])
    except ConfigError as e:  # another field's own check may refuse the combination
        assert f"{name}: must be" not in str(e)


def test_a_typo_in_set_is_blamed_on_set_not_on_a_line_of_the_file(tmp_path):
    """issue 26: ``--set train.stepz=3`` used to name the YAML line of ``train:``."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  steps: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg, PretrainConfig, ["train.stepz=3"])
    assert str(e.value).startswith(f"{cfg} (--set): train.stepz: unknown key")
