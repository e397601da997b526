"""Property-based (hypothesis): every typed field of every command's config, given an invalid
value with --set, is refused with the field named — by the loader, and through the CLI with
exit 2 and nothing written at --out (issue 26 item 4). Examples are bounded for CI."""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal, get_args, get_origin

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from scorealign.config import AT_LEAST_ONE, ConfigError, load_config  # noqa: E402
from scorealign.control.train import ControlConfig  # noqa: E402
from scorealign.preference.config import DPOConfig  # noqa: E402
from scorealign.rl.config import FinetuneConfig  # noqa: E402
from scorealign.train.config import PretrainConfig  # noqa: E402

COMMANDS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "dpo": DPOConfig,
            "control": ControlConfig}
YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}


def _leaf_fields(schema: type, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted name, type) of every int / float / bool / Literal field (Optional or not)."""
    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        tp, dotted = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += _leaf_fields(tp, dotted + ".")
            continue
        args = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) in (
            typing.Union, __import__("types").UnionType) else [tp]
        if len(args) == 1 and (args[0] in (int, float, bool) or get_origin(args[0]) is Literal):
            out.append((dotted, args[0]))
    return out


def _invalid(tp) -> st.SearchStrategy[str]:
    """A --set value that ``tp`` must refuse: a word that is no number, bool or choice."""
    words = st.text("qxzjkw", min_size=2, max_size=6).filter(lambda w: w not in YAML_WORDS)
    if get_origin(tp) is Literal:
        return words.filter(lambda w: w not in [str(a) for a in get_args(tp)])
    return words


FIELDS = [(cmd, name, tp) for cmd, schema in COMMANDS.items()
          for name, tp in _leaf_fields(schema)]


def _case():
    return st.sampled_from(FIELDS).flatmap(
        lambda f: st.tuples(st.just(f), _invalid(f[2]) if f[1].rsplit(".", 1)[-1]
                            not in AT_LEAST_ONE or f[2] is bool
                            else st.one_of(_invalid(f[2]), st.integers(-5, 0).map(str))))


def test_every_command_has_typed_fields():
    assert {c for c, _, _ in FIELDS} == set(COMMANDS) and len(FIELDS) > 40


@settings(max_examples=150, deadline=None, derandomize=True)
@given(_case())
def test_loader_refuses_invalid_values_naming_the_field(case):
    (cmd, name, _), value = case
    with pytest.raises(ConfigError) as e:
        load_config(None, COMMANDS[cmd], [f"{name}={value}"])
    assert name in str(e.value)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_case())
def test_cli_exits_2_naming_the_field_and_writes_nothing(tmp_path, case):
    from typer.testing import CliRunner

    from scorealign.cli.app import app

    (cmd, name, _), value = case
    out = tmp_path / f"run-{abs(hash((name, value)))}"
    config = {"dpo": ["--config", "dpo/demo"]}.get(cmd, [])
    res = CliRunner().invoke(app, [cmd, *config, "--set", f"{name}={value}", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert name in res.output and "Traceback" not in res.output
    assert not out.exists()
