"""The Python API never exits the interpreter: every function fed a bad config (a field of the
wrong type, an unknown key, a missing file), a bad argument or a path that is no run raises a
:class:`~scorealign.errors.ScorealignError` subclass whose message names the file and field
(issue 21: only ``scorealign.cli`` knows about exit codes)."""

from __future__ import annotations

import pytest

from scorealign import api
from scorealign.config import ConfigError
from scorealign.errors import RunNotFoundError, ScorealignError, UsageError

TRAIN = ("finetune", "pretrain", "dpo", "control", "build_pairs")


def _raises(kind: type, fn, *args, **kwargs) -> str:
    """Call ``fn``; it must raise ``kind`` (a ScorealignError), never SystemExit or typer.Exit
    (click's Exit, a RuntimeError). Returns the message."""
    try:
        fn(*args, **kwargs)
    except ScorealignError as e:
        assert isinstance(e, kind), repr(e)
        return str(e)
    except BaseException as e:  # noqa: BLE001 - SystemExit, typer.Exit, a built-in error
        pytest.fail(f"{fn.__name__} raised {e!r}, not a {kind.__name__}")
    pytest.fail(f"{fn.__name__} raised nothing")


BAD_TYPE = {"control": ("dt: fast\n", "1: dt: expected float, got 'fast'"),
            "build_pairs": ("seed: many\n", "1: seed: expected int, got 'many'")}


@pytest.mark.parametrize("name", TRAIN)
def test_wrong_field_type_names_file_line_and_field(tmp_path, name):
    bad = tmp_path / "bad.yaml"
    text, field = BAD_TYPE.get(name, ("train:\n  lr: fast\n",
                                      "2: train.lr: expected float, got 'fast'"))
    bad.write_text(text)
    msg = _raises(ConfigError, getattr(api, name), bad, out=tmp_path / "run")
    assert f"{bad}:{field}" in msg
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", TRAIN)
def test_unknown_key_names_file_line_and_field(tmp_path, name):
    bad = tmp_path / "bad.yaml"
    bad.write_text("not_a_field: 3\n")
    msg = _raises(ConfigError, getattr(api, name), bad, out=tmp_path / "run")
    assert f"{bad}:1: not_a_field: unknown key" in msg


@pytest.mark.parametrize("name", TRAIN)
def test_missing_config_file_is_named(tmp_path, name):
    msg = _raises(ConfigError, getattr(api, name), tmp_path / "nope.yaml")
    assert f"{tmp_path / 'nope.yaml'}: config file not found" in msg


@pytest.mark.parametrize("name", TRAIN)
def test_bad_set_override_names_the_field(tmp_path, name):
    config = {"finetune": "digits_loop", "pretrain": "gaussians", "dpo": "configs/dpo/demo.yaml",
              "control": "ct_pg", "build_pairs": "configs/rpo/digits.yaml"}[name]
    msg = _raises(ConfigError, getattr(api, name), config, out=tmp_path / "run",
                  set=["nope.deeper=1"])
    assert "nope" in msg and "unknown key" in msg


@pytest.mark.parametrize("name", ("finetune", "pretrain", "dpo", "control"))
def test_resume_of_a_directory_that_is_no_run(tmp_path, name):
    msg = _raises(RunNotFoundError, getattr(api, name), resume=tmp_path)
    assert f"{tmp_path / 'config.yaml'}: not a run directory" in msg


def test_out_holding_a_run_is_a_usage_error(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "step_000001").mkdir(parents=True)
    msg = _raises(UsageError, api.control, "ct_pg", out=out)
    assert "already holds a run with checkpoints" in msg and f"--resume {out}" in msg


def test_dpo_without_config_or_resume_is_a_usage_error():
    msg = _raises(UsageError, api.dpo)
    assert "give --config FILE" in msg


def test_a_reward_that_is_not_callable_is_a_reward_error(tmp_path):
    from scorealign.rewards import RewardError
    msg = _raises(RewardError, api.finetune, "digits_loop", reward=3, out=tmp_path / "run")
    assert "not callable" in msg and not (tmp_path / "run").exists()
    # a lambda is fine: an in-process reward (tests/api/test_api_door.py)
    assert api.reward_config(lambda x, p, m: x)["name"] == "in_process"


def test_load_of_a_directory_that_is_no_run(tmp_path):
    msg = _raises(RunNotFoundError, api.load, tmp_path)
    assert f"{tmp_path / 'config.yaml'}: not a run directory" in msg


def test_the_api_does_not_import_the_cli():
    import subprocess
    import sys
    code = ("import sys, scorealign.api; "
            "print(any(m.startswith(('scorealign.cli', 'typer')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
