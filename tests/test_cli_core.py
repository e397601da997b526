"""The core commands through the CLI: bad configs fail with the field and file named;
``--dry-run``/``--help-config``; a tiny pretrain, then ``sample``, ``eval`` and ``report``."""

import json

import pytest
from typer.testing import CliRunner

from scorealign.cli.app import app

runner = CliRunner()


def _pretrain(*args):
    return runner.invoke(app, ["pretrain", *args])


def _write(tmp_path, text):
    (tmp_path / "bad.yaml").write_text(text)
    return tmp_path / "bad.yaml"


def test_unknown_key_names_file_line_and_field(tmp_path):
    p = _write(tmp_path, "data:\n  name: gaussians\ntrain:\n  stpes: 10\n")
    res = _pretrain("--config", str(p), "--out", str(tmp_path / "run"))
    assert res.exit_code == 2
    assert f"{p}:4: train.stpes: unknown key" in res.output
    assert not (tmp_path / "run").exists()


def test_wrong_type_names_field(tmp_path):
    p = _write(tmp_path, "train:\n  lr: fast\n")
    res = _pretrain("--config", str(p), "--out", str(tmp_path / "run"))
    assert res.exit_code == 2 and f"{p}:2: train.lr: expected float, got 'fast'" in res.output
    res = _pretrain("--config", "configs/pretrain/gaussians.yaml", "--set", "train.steps=many")
    assert res.exit_code == 2 and "train.steps: expected int, got 'many'" in res.output


def test_missing_file_is_named(tmp_path):
    res = _pretrain("--config", str(tmp_path / "nope.yaml"))
    assert res.exit_code == 2 and "nope.yaml: config file not found" in res.output


def test_invalid_values_name_the_field(tmp_path):
    res = _pretrain("--config", "configs/pretrain/gaussians.yaml", "--set", "sde.name=vpp",
                    "--out", str(tmp_path / "r"))
    assert res.exit_code == 2 and "sde" in res.output and "'vpp'" in res.output
    res = _pretrain("--config", "configs/pretrain/gaussians.yaml", "--set", "model.kind=noise")
    assert res.exit_code == 2 and "model.kind: expected one of" in res.output
    res = _pretrain("--config", "configs/pretrain/gaussians.yaml", "--set",
                    "sample.sampler=eulr", "--out", str(tmp_path / "s"))
    assert res.exit_code == 2 and "sample.sampler" in res.output and "'eulr'" in res.output


def test_dry_run_and_help_config(tmp_path):
    res = _pretrain("--config", "configs/pretrain/digits.yaml", "--set", "train.steps=7",
                    "--dry-run")
    assert res.exit_code == 0 and "steps: 7" in res.output
    res = _pretrain("--help-config")
    assert res.exit_code == 0 and "train.lr = 0.002" in res.output and "peak learning rate" in \
        res.output


@pytest.mark.slow
def test_pretrain_sample_eval_report_on_a_toy(tmp_path):
    run = tmp_path / "toy"
    sets = ["train.steps=30", "train.ckpt_every=10", "train.batch_size=64", "model.hidden=32",
            "data.num_train=512", "sample.num_eval=256", "sample.steps=10", "device=cpu"]
    args = ["--config", "configs/pretrain/gaussians.yaml", "--out", str(run)]
    for s in sets:
        args += ["--set", s]
    res = _pretrain(*args)
    assert res.exit_code == 0, res.output
    for f in ("config.yaml", "metrics.jsonl", "eval.json", "report.html", "final/model.safetensors",
              "samples/final.png"):
        assert (run / f).is_file(), f
    assert "eval/sliced_w2" in json.loads((run / "eval.json").read_text())
    again = _pretrain(*args)  # an existing run is not overwritten
    assert again.exit_code == 2 and "--resume" in again.output

    res = runner.invoke(app, ["sample", str(run), "--sampler", "euler_maruyama", "--steps", "5"])
    assert res.exit_code == 0, res.output
    assert (run / "samples" / "sample_classes_euler_maruyama_5_seed0.png").is_file()
    res = runner.invoke(app, ["eval", str(run), "--sampler", "ddpm", "--steps", "5", "--n", "128",
                              "--name", "eval_ddpm"])
    assert res.exit_code == 0, res.output
    ev = json.loads((run / "eval_ddpm.json").read_text())
    assert ev["sampling"]["sampler"] == "ddpm" and ev["sampling"]["num_eval"] == 128
    res = runner.invoke(app, ["report", str(run)])
    assert res.exit_code == 0 and "eval_ddpm" in (run / "report.html").read_text()

    res = runner.invoke(app, ["eval", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "nowhere" in res.output


def test_configs_are_listed_and_found_by_name(tmp_path, monkeypatch):
    res = runner.invoke(app, ["configs"])
    assert res.exit_code == 0 and "finetune/digits_loop" in res.output
    assert "pretrain/gaussians" in res.output
    monkeypatch.chdir(tmp_path)  # away from the repository's configs/
    res = runner.invoke(app, ["finetune", "--config", "digits_loop", "--dry-run"])
    assert res.exit_code == 0 and "loss: loop" in res.output
    res = runner.invoke(app, ["pretrain", "--config", "digits", "--dry-run"])  # pretrain/digits
    assert res.exit_code == 0 and "name: digits" in res.output
    res = runner.invoke(app, ["pretrain", "--config", "configs/pretrain/gaussians.yaml",
                              "--dry-run"])
    assert res.exit_code == 0 and "gaussians" in res.output
    res = runner.invoke(app, ["finetune", "--config", "digits_lop", "--dry-run"])
    assert res.exit_code == 2 and "no shipped config of that name" in res.output


def _names(output: str) -> set[str]:
    """The names listed after ``registered names:`` (continuation lines folded)."""
    tail = output.split("registered names:", 1)[1]
    return {w.strip(",") for w in tail.replace(":", ": ").split() if w.strip(",")}


def test_help_config_lists_the_registries_names_and_a_new_one():
    from scorealign.registry import Registry
    from scorealign.rewards import REWARDS
    from scorealign.rl.advantages import ADVANTAGES
    from scorealign.rl.losses import RL_LOSSES
    from scorealign.samplers.steps import SAMPLERS

    res = runner.invoke(app, ["finetune", "--help-config"])
    assert res.exit_code == 0
    listed = _names(res.output)
    for reg in (REWARDS, RL_LOSSES, ADVANTAGES, SAMPLERS):
        assert isinstance(reg, Registry) and set(reg) <= listed, set(reg) - listed
    REWARDS.register("zz_test_reward", paper="-", equation="-")(lambda: None)
    try:  # read from the registry, not from a hand-kept list
        assert "zz_test_reward" in _names(runner.invoke(app, ["finetune", "--help-config"]).output)
    finally:
        del REWARDS["zz_test_reward"]
    from scorealign.control.algorithms import ALGOS
    assert set(ALGOS) <= _names(runner.invoke(app, ["control", "--help-config"]).output)


def test_configs_wraps_descriptions_at_word_boundaries():
    from scorealign.cli.configs import config_lines, description
    from scorealign.commands.common import shipped_configs

    res = runner.invoke(app, ["configs"])
    assert res.exit_code == 0
    for name, path in shipped_configs().items():
        text = description(path)
        lines = config_lines(name, text)
        assert all(len(x) <= 100 for x in lines), lines
        assert " ".join(x.strip() for x in lines).removeprefix(name).strip() == text
        assert "\n".join(lines) in res.output
    lines = config_lines("x", "word " * 40)
    assert len(lines) > 1 and all(ln.rstrip().endswith("word") for ln in lines)


def test_sample_help_documents_every_option():
    import typer.main

    cmd = typer.main.get_command(app).commands["sample"]
    for p in cmd.params:
        assert (getattr(p, "help", None) or "").strip(), p.name
    res = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "Classifier-free guidance" in res.output
