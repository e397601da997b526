"""Bad input and unwritable output: exit 2 with one line naming the file or field; a failed
checkpoint write removes its temporary files and keeps the earlier checkpoints; ``--resume``
falls back to the newest intact checkpoint; nothing is written inside the installed package."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import scorealign
from scorealign.cli.app import app
from scorealign.run import checkpoint as C

runner = CliRunner()
CONTROL = ["control", "--config", "ct_pg", "--set", "train.steps=4", "--set", "n_paths=8",
           "--set", "horizon=0.5", "--set", "dt=0.1", "--set", "eval_every=2", "--set",
           "train.ckpt_every=1"]


def _state(v: float) -> dict:
    return {"model": {"w": torch.full((3,), v)}}


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_saving_keeps_earlier_checkpoints_and_cleans_up(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    C.save_checkpoint(root, 1, _state(1.0))
    monkeypatch.setattr(C, "save_file", _enospc)
    with pytest.raises(C.CheckpointWriteError, match="No space left on device"):
        C.save_checkpoint(root, 2, _state(2.0))
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000001"]
    states, _ = C.load_checkpoint(C.latest_checkpoint(root))
    assert torch.equal(states["model"]["w"], torch.full((3,), 1.0))


def test_full_disk_during_a_run_exits_2_with_one_line(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = C.save_file

    def flaky(*a, **k):
        calls["n"] += 1
        return real(*a, **k) if calls["n"] <= 2 else _enospc()  # 2 files per checkpoint

    monkeypatch.setattr(C, "save_file", flaky)
    out = tmp_path / "run"
    res = runner.invoke(app, [*CONTROL, "--out", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error")]  # (+ progress)
    assert len(lines) == 1 and "No space left on device" in lines[0]
    assert "step_000002" in lines[0] and "Traceback" not in res.output
    ck = out / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step_000001"]


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys):
    root = tmp_path / "checkpoints"
    for s in (1, 2, 3):
        C.save_checkpoint(root, s, _state(float(s)), keep=3)
    bad = root / "step_000003" / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:20])  # truncated by a crash of the storage
    assert C.latest_checkpoint(root) == root / "step_000002"
    assert str(bad) in capsys.readouterr().err
    (root / "step_000002" / "state.json").write_text("{trunc")
    assert C.latest_checkpoint(root) == root / "step_000001"
    (root / "step_000001" / "state.json").unlink()
    with pytest.raises(C.CheckpointError, match="step_000003"):
        C.latest_checkpoint(root)


def test_cli_resume_from_a_corrupt_latest_says_so_and_continues(tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, [*CONTROL, "--out", str(out), "--set",
                               "train.steps=2"]).exit_code == 0
    latest = C.latest_checkpoint(out / "checkpoints")
    (latest / "state.json").write_text("{trunc")
    res = runner.invoke(app, ["control", "--resume", str(out)])
    assert res.exit_code == 0, res.output
    assert "falling back" in res.output and "step_000001" in res.output


def test_corrupt_final_model_is_named(tmp_path):
    from scorealign.config import dump_config, load_config
    from scorealign.nets import ModelConfig, build_model, save_pretrained
    from scorealign.train.pretrain import PretrainConfig

    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config("configs/pretrain/gaussians.yaml", PretrainConfig)
    (run / "config.yaml").write_text(dump_config(cfg))
    save_pretrained(build_model(ModelConfig(**{**cfg.model.__dict__})), run / "final")
    f = run / "final" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    for cmd in (["sample", str(run)], ["eval", str(run), "--n", "10"]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2 and f"{f}: cannot read" in res.output, res.output


def test_unusable_out_and_package_dir_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = runner.invoke(app, [*CONTROL, "--out", str(blocker / "run")])
    assert res.exit_code == 2 and str(blocker / "run") in res.output, res.output
    inside = Path(scorealign.__file__).parent / "runs_should_not_exist"
    res = runner.invoke(app, [*CONTROL, "--out", str(inside)])
    assert res.exit_code == 2 and "inside the installed package" in res.output
    assert not inside.exists()


def test_bad_loss_params_and_malformed_yaml_are_one_line_errors(tmp_path):
    res = runner.invoke(app, ["dpo", "--config", "configs/dpo/demo.yaml", "--set",
                              "loss.params.beta=abc", "--dry-run"])
    assert res.exit_code == 2
    assert "loss.params.beta: expected a number, got 'abc'" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1\n  lr: 2\n")
    for cmd in ("pretrain", "finetune", "control", "dpo"):
        res = runner.invoke(app, [cmd, "--config", str(bad), "--dry-run"])
        assert res.exit_code == 2, (cmd, res.output)
        assert f"{bad}:3: invalid YAML" in res.output and len(res.output.splitlines()) == 1


def test_sample_out_that_is_a_directory_exits_2(tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, [*CONTROL, "--out", str(out), "--set",
                               "train.steps=1"]).exit_code == 0
    res = runner.invoke(app, ["sample", str(out), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in res.output
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 1


def test_rpo_build_pairs_on_the_shipped_model_writes_nothing_in_the_package(tmp_path):
    pkg = Path(scorealign.__file__).parent
    before = sorted(p for p in pkg.rglob("*") if "__pycache__" not in p.parts)
    res = runner.invoke(app, ["rpo", "build-pairs", "--config", "configs/rpo/digits.yaml",
                              "--set", "prompts.n=2", "--set", "generation.steps=2", "--out",
                              str(tmp_path / "pairs")])
    assert res.exit_code == 0, res.output
    assert sorted(p for p in pkg.rglob("*") if "__pycache__" not in p.parts) == before
