"""The Python API as a first-class door (issue 28 item 6): one function per command, listed by
``dir()``/``help()`` while ``import scorealign`` stays light; in-process reward callables, whose
run resumes from Python with the same callable (bit-identical to an uninterrupted run) and is
refused with one line by the CLI; samples clamped to the data range on the one sampling path of
``Loaded.sample`` and ``scorealign sample``; ``Loaded.sample`` on a control run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import scorealign
from scorealign.errors import UsageError
from scorealign.nets import ModelConfig, build_model, save_pretrained

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("pretrain", "finetune", "dpo", "control", "build_pairs", "resume", "load", "sample",
            "evaluate", "export", "report")
QUICK = ["policy.steps=3", "prompts.per_epoch=2", "prompts.k=2", "train.minibatch_size=4",
         "train.sample_batch_size=4", "device=cpu", "lora.rank=2", "train.lr=3e-2"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def test_every_command_is_listed_by_dir_and_help_and_import_stays_light():
    code = ("import json, sys, scorealign, pydoc; light = 'torch' not in sys.modules; "
            "names = dir(scorealign); doc = pydoc.render_doc(scorealign, renderer=pydoc.plaintext);"
            "print(json.dumps([light, names, doc]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                         check=True).stdout
    light, names, doc = json.loads(out)
    assert light  # dir() alone imports nothing heavy
    for name in COMMANDS:
        assert name in names, name
        assert name in scorealign.__all__, name
    for name in COMMANDS:  # help() shows each function with its signature
        if name != "control":
            assert f"{name}(" in doc, name
    assert "control (package)" in doc and "calling it runs the" in doc
    from scorealign.control import train  # importing the package keeps it callable
    assert callable(scorealign.control) and train.ControlConfig


def test_version_is_the_package_version():
    version = next(ln.split('"')[1] for ln in (ROOT / "pyproject.toml").read_text().splitlines()
                   if ln.startswith("version = "))
    assert scorealign.__version__ == version
    out = subprocess.run([sys.executable, "-m", "scorealign.cli", "--version"],
                         capture_output=True, text=True, env=ENV)
    assert out.returncode == 0 and out.stdout.strip() == f"scorealign {version}"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_pretrained(build_model(ModelConfig(
        type="unet_cond", cond="label", sample_size=8, block_out_channels=(8, 16),
        label_dim=16), seed=0), tmp_path_factory.mktemp("base") / "model")


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
            if "reward/mean" in x]


def test_in_process_reward_runs_records_itself_and_resumes_from_python_only(base, tmp_path):
    def bright(x, prompts, meta):  # a function of the calling script: no import path finds it
        return x.mean(dim=(1, 2, 3)) * 2.0

    sets = QUICK + [f"base.path={base}"]
    with pytest.warns(UserWarning, match=r"in-process callable.*scorealign.resume"):
        straight = scorealign.finetune("digits_loop", reward=bright, out=tmp_path / "straight",
                                       set=sets + ["train.epochs=2"])
    rec = yaml.safe_load((straight / "config.yaml").read_text())["reward"]["optimized"]
    assert rec["name"] == "in_process" and rec["key"] == key_of_bright()
    assert "scorealign.resume(RUN, reward=fn)" in rec["note"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = scorealign.finetune("digits_loop", reward=bright, out=tmp_path / "run",
                                  set=sets + ["train.epochs=1"])
    cli = subprocess.run([sys.executable, "-m", "scorealign.cli", "finetune", "--resume",
                          str(run), "--set", "train.epochs=2"], capture_output=True, text=True,
                         env=ENV, cwd=tmp_path)
    assert cli.returncode == 2, cli.stderr
    err = [ln for ln in cli.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "in-process" in err[0] and "scorealign.resume(RUN, reward=" in err[0]
    assert [r["step"] for r in _rows(run)] == [1]  # the refused resume trained nothing

    with pytest.raises(UsageError, match="keeps its reward"):
        scorealign.resume(straight, reward="aesthetic_proxy", set=["train.epochs=3"])
    assert scorealign.resume(run, reward=bright, set=["train.epochs=2"]) == run
    a, b = _rows(straight), _rows(run)
    assert [r["step"] for r in b] == [1, 2]
    assert a[-1]["reward/mean"] == b[-1]["reward/mean"]  # resumed = uninterrupted, bit for bit


def key_of_bright() -> str:
    return ("test_in_process_reward_runs_records_itself_and_resumes_from_python_only."
            "bright")


def test_samples_are_clamped_on_the_one_path_of_load_and_cli_sample(base, tmp_path, monkeypatch):
    import scorealign.commands.runs as runs

    sets = QUICK + [f"base.path={base}", "train.epochs=1", "reward.optimized=aesthetic_proxy"]
    run = scorealign.finetune("digits_loop", out=tmp_path / "run", set=sets)
    loaded = scorealign.load(run)
    raw = runs.dataclasses.replace(loaded.sampling, seed=0)
    labels = torch.full((6,), 7)
    cond = loaded.task.cond_for(labels, ["a handwritten 7"] * 6)
    x_raw = loaded.task.generate(loaded.model, cond, 6, raw)
    assert x_raw.abs().max() > 1.0  # the sampler's x̂₀ leaves the data range unclipped
    x = loaded.sample("a handwritten 7", n=6)
    assert x.min() >= -1.0 and x.max() <= 1.0
    torch.testing.assert_close(x, x_raw.clamp(-1.0, 1.0), rtol=0, atol=0)

    calls = []
    real = runs.generate_images
    monkeypatch.setattr(runs, "generate_images", lambda *a: calls.append(a[3]) or real(*a))
    scorealign.load(run).sample("a handwritten 3", n=2)
    scorealign.sample(run, "a handwritten 3", n=2, out=tmp_path / "s.png")
    scorealign.sample(run, n=1, out=tmp_path / "grid.png")
    assert calls == [2, 2, 10]  # Loaded.sample, sample --prompt, the per-class grid


def test_control_run_samples_from_python_as_from_the_cli(tmp_path):
    run = scorealign.control("ct_pg", out=tmp_path / "ctl", set=[
        "train.steps=2", "n_paths=8", "horizon=0.5", "dt=0.1", "eval_every=1"])
    loaded = scorealign.load(run)
    paths = loaded.sample(n=3, seed=1)
    steps = round(loaded.config.horizon / loaded.config.dt)
    assert paths.shape[:2] == (steps + 1, 3) and torch.isfinite(paths).all()
    torch.testing.assert_close(loaded.sample(n=3, seed=1), paths, rtol=0, atol=0)
    assert not torch.equal(loaded.sample(n=3, seed=2), paths)
    with pytest.raises(UsageError, match="no prompts"):
        loaded.sample("a prompt", n=3)
    assert scorealign.sample(run, n=3, out=tmp_path / "p.png").is_file()
    assert scorealign.resume(run, set=["train.steps=3"]) == run
    steps_logged = [json.loads(x).get("step") for x in
                    (run / "metrics.jsonl").read_text().splitlines()]
    assert max(s for s in steps_logged if s is not None) == 3
