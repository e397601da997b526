"""Property-based (hypothesis): every typed field of every command's config (pretrain, finetune,
dpo, dpo task=diffusion, rpo build-pairs, control, and demo's finetune config), given an invalid
value with --set, is refused with the field named — by the loader, and through the CLI with exit 2
and nothing written at --out (issue 26 item 4). Invalid values: a word that is no number, bool or
choice; nan / inf for a float; a value outside the shared range rule of config.py (counts and
sizes >= 1, rates > 0, clips >= 0, decays and probabilities in [0, 1]); a prompt that names no
digit for the digits model. Examples are bounded
for CI (``max_examples``, no deadline)."""

from __future__ import annotations

import dataclasses
import string
import typing
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from scorealign.config import (AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL,  # noqa: E402
                               ConfigError, load_config)
from scorealign.control.train import ControlConfig  # noqa: E402
from scorealign.data.digits import NUMBER_WORDS  # noqa: E402
from scorealign.preference.config import DPOConfig  # noqa: E402
from scorealign.preference.rpo.config import BuildPairsConfig, DiffusionDPOConfig  # noqa: E402
from scorealign.rl.config import FinetuneConfig  # noqa: E402
from scorealign.train.config import PretrainConfig  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# command: (schema, config file or None, the CLI words before --set)
COMMANDS = {
    "pretrain": (PretrainConfig, None, ["pretrain"]),
    "finetune": (FinetuneConfig, None, ["finetune"]),
    "demo": (FinetuneConfig, CONFIGS / "finetune" / "demo.yaml", ["demo"]),
    "dpo": (DPOConfig, None, ["dpo", "--config", str(CONFIGS / "dpo" / "demo.yaml")]),
    "dpo-diffusion": (DiffusionDPOConfig, CONFIGS / "dpo" / "digits_rpo.yaml",
                      ["dpo", "--config", str(CONFIGS / "dpo" / "digits_rpo.yaml")]),
    "rpo build-pairs": (BuildPairsConfig, None, ["rpo", "build-pairs"]),
    "control": (ControlConfig, None, ["control"]),
}
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


def _invalid(name: str, tp) -> st.SearchStrategy[str]:
    """A --set value that field ``name`` of type ``tp`` must refuse."""
    words = st.text("qxzjkw", min_size=2, max_size=6).filter(lambda w: w not in YAML_WORDS)
    if get_origin(tp) is Literal:
        return words.filter(lambda w: w not in [str(a) for a in get_args(tp)])
    if tp is bool:
        return words
    leaf = name.rsplit(".", 1)[-1]
    out = [words]
    if tp is float:  # one rule for every float: finite
        out.append(st.sampled_from([".nan", ".inf", "-.inf", "nan", "inf", "-inf"]))
    if leaf in AT_LEAST_ONE:
        out.append(st.integers(-5, 0).map(str))
    if leaf in NON_NEGATIVE:
        out.append(st.one_of(st.integers(-5, -1).map(str),
                             st.floats(-10.0, -1e-6).map(lambda v: f"{v!r}")))
    if leaf in POSITIVE:
        out.append(st.one_of(st.integers(-5, 0).map(str),
                             st.floats(-10.0, 0.0).map(lambda v: f"{v!r}")))
    if leaf in UNIT_INTERVAL:
        out.append(st.one_of(st.floats(-10.0, -1e-6), st.floats(1.000001, 10.0)).map(
            lambda v: f"{v!r}"))
    return st.one_of(*out)


FIELDS = [(cmd, name, tp) for cmd, (schema, _, _) in COMMANDS.items()
          for name, tp in _leaf_fields(schema)]


def _case():
    return st.sampled_from(FIELDS).flatmap(
        lambda f: st.tuples(st.just(f), _invalid(f[1], f[2])))


def _no_digit_prompt() -> st.SearchStrategy[str]:
    """Prompt text that names no digit: letters and spaces, no number word."""
    text = st.text(string.ascii_lowercase + " ", min_size=1, max_size=20)
    return text.filter(lambda s: not any(w in s for w in NUMBER_WORDS))


def test_every_command_has_typed_fields():
    assert {c for c, _, _ in FIELDS} == set(COMMANDS) and len(FIELDS) > 80
    names = {n.rsplit(".", 1)[-1] for _, n, _ in FIELDS}
    assert all(names & rule for rule in (AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_case())
def test_loader_refuses_invalid_values_naming_the_field(case):
    (cmd, name, _), value = case
    schema, config, _ = COMMANDS[cmd]
    with pytest.raises(ConfigError) as e:
        load_config(config, schema, [f"{name}={value}"])
    assert name in str(e.value) and "(--set)" in str(e.value)


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_case())
def test_cli_exits_2_naming_the_field_and_writes_nothing(tmp_path, case):
    from typer.testing import CliRunner

    from scorealign.cli.app import app

    (cmd, name, _), value = case
    out = tmp_path / f"run-{abs(hash((cmd, name, value)))}"
    res = CliRunner().invoke(app, [*COMMANDS[cmd][2], "--set", f"{name}={value}",
                                   "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert name in res.output and "Traceback" not in res.output
    assert not out.exists()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.lists(_no_digit_prompt(), min_size=1, max_size=3),
       st.sampled_from(["finetune", "demo"]))
def test_loader_refuses_prompts_the_digits_model_cannot_take(prompts, cmd):
    schema, config, _ = COMMANDS[cmd]
    good = ["a handwritten 3", "the digit seven"]
    value = "[" + ", ".join(repr(p) for p in good + prompts) + "]"
    with pytest.raises(ConfigError) as e:
        load_config(config, schema, [f"prompts.prompts={value}"])
    assert "prompts.prompts" in str(e.value) and "one digit 0-9" in str(e.value)
