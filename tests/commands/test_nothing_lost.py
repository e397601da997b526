"""Nothing a user has is lost or misrecorded (issue 26): output paths, resume records, failed
starts and Ctrl-C.

Every case runs the real CLI on a tiny label-conditional digits UNet (8×8, one epoch of 2 prompts
× 2 samples, 3 sampler steps), so the module takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from scorealign.cli.app import app

runner = CliRunner()

REWARDS = '''
def good(samples, prompts, meta):
    return samples.flatten(1).mean(1).float()

def ctrl_c_at_epoch_1(samples, prompts, meta):
    if meta["epoch"] >= 1:
        raise KeyboardInterrupt
    return samples.flatten(1).mean(1).float()

def ctrl_c_at_once(samples, prompts, meta):
    raise KeyboardInterrupt

def nan_at_once(samples, prompts, meta):
    return samples.flatten(1).mean(1).float() / 0.0 * 0.0
'''


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny label-conditional digits model and a module of rewards beside it."""
    from scorealign.nets import ModelConfig, build_model, save_pretrained
    root = tmp_path_factory.mktemp("nothing_lost")
    cfg = ModelConfig(type="unet", cond="label", sample_size=8, block_out_channels=(16, 32))
    save_pretrained(build_model(cfg, seed=0), root / "base")
    (root / "nothing_lost_rewards.py").write_text(REWARDS)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        yield root


def sets(base: Path, reward: str = "good", epochs: int = 1, **more) -> list[str]:
    """The tiny finetune's ``--set`` arguments."""
    kv = {"base.path": base / "base", "reward.optimized": f"nothing_lost_rewards:{reward}",
          "reward.gold": "null", "policy.steps": 3, "prompts.per_epoch": 2, "prompts.k": 2,
          "train.minibatch_size": 4, "train.sample_batch_size": 4, "train.epochs": epochs,
          "train.ckpt_every": 1, "device": "cpu", **more}
    return [a for k, v in kv.items() for a in ("--set", f"{k}={v}")]


def one_line_error(res) -> str:
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.fixture(scope="module")
def finished(base):
    """A finished one-epoch finetune run."""
    out = base / "finished"
    res = runner.invoke(app, ["finetune", "--out", str(out), *sets(base)],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def user_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    return path


# -- 1. never delete or overwrite what the program did not create ---------------------------
def test_export_into_a_user_directory_is_refused_unless_overwrite(finished, tmp_path):
    target = user_dir(tmp_path / "mine")
    res = runner.invoke(app, ["export", str(finished), "--to", str(target)])
    assert res.exit_code == 2
    assert "is not an export of scorealign" in one_line_error(res) and "--overwrite" in res.output
    assert (target / "notes.txt").read_text() == "mine"
    res = runner.invoke(app, ["export", str(finished), "--to", str(target), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (target / "model.safetensors").is_file() and not (target / "notes.txt").exists()
    res = runner.invoke(app, ["export", str(finished), "--to", str(target)])  # now its own
    assert res.exit_code == 0, res.output
    assert not list(tmp_path.glob(".mine.*"))


def test_export_onto_a_user_file_is_refused_and_the_file_kept(finished, tmp_path):
    target = tmp_path / "model.bin"
    target.write_text("mine")
    for extra in ([], ["--overwrite"]):
        res = runner.invoke(app, ["export", str(finished), "--to", str(target), *extra])
        assert res.exit_code == 2 and "is not a directory" in one_line_error(res)
        assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]  # no hidden .old copy


def test_export_to_a_new_or_empty_directory_and_again_to_run_final(finished, tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "new" / "dir", tmp_path / "empty"):
        res = runner.invoke(app, ["export", str(finished), "--to", str(target)])
        assert res.exit_code == 0, res.output
        assert (target / "model.safetensors").is_file()
    res = runner.invoke(app, ["export", str(finished)])  # RUN/final is the run's own
    assert res.exit_code == 0, res.output


def test_atomic_dir_never_replaces_a_user_file_or_directory(tmp_path):
    from scorealign.run.atomic import MARKER, atomic_dir
    mine = tmp_path / "f"
    mine.write_text("mine")
    users = user_dir(tmp_path / "d")
    for dest in (mine, users):
        with pytest.raises(FileExistsError, match=str(dest)):
            with atomic_dir(dest) as tmp:
                (tmp / "x").write_text("new")
    assert mine.read_text() == "mine" and (users / "notes.txt").read_text() == "mine"
    ours = tmp_path / "ours"
    with atomic_dir(ours) as tmp:
        (tmp / "x").write_text("1")
    assert (ours / MARKER).is_file()
    with atomic_dir(ours) as tmp:  # its own output is replaced
        (tmp / "x").write_text("2")
    assert (ours / "x").read_text() == "2"
    late = tmp_path / "late"
    with pytest.raises(FileExistsError):  # a user's directory that appeared during the write
        with atomic_dir(late) as tmp:
            user_dir(late)
    assert (late / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f", "late", "ours"]


@pytest.mark.parametrize("command", ["finetune", "pretrain", "control", "dpo"])
def test_training_out_on_a_user_directory_or_file_is_refused(command, base, tmp_path):
    args = {"dpo": ["--config", "dpo/demo"], "control": ["--config", "ct_ppo"]}.get(command, [])
    for target in (user_dir(tmp_path / "mine"), tmp_path / "file.txt"):
        if target.suffix:
            target.write_text("mine")
        res = runner.invoke(app, [command, *args, "--out", str(target)])
        assert res.exit_code == 2, res.output
        line = one_line_error(res)
        assert f"--out {target}" in line and "choose another --out" in line
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    assert (tmp_path / "file.txt").read_text() == "mine"


def test_build_pairs_out_on_a_user_directory_is_refused(tmp_path):
    mine = user_dir(tmp_path / "mine")
    for extra in ([], ["--overwrite"]):
        res = runner.invoke(app, ["rpo", "build-pairs", "--out", str(mine), *extra])
        assert res.exit_code == 2 and "is not a pair dataset" in one_line_error(res)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_finetune_out_on_another_commands_run_is_refused(finished, tmp_path):
    res = runner.invoke(app, ["pretrain", "--out", str(finished)])
    assert res.exit_code == 2 and "is not a pretrain run directory" in one_line_error(res)


def demo_args(base: Path, out: Path, epochs: int = 1) -> list[str]:
    return ["demo", "--out", str(out), *sets(base, epochs=epochs)]


def test_demo_keeps_user_dirs_and_finished_runs_and_continues_a_killed_one(base, tmp_path):
    mine = user_dir(tmp_path / "mine")
    res = runner.invoke(app, demo_args(base, mine))
    assert res.exit_code == 2 and "is not a demo run directory" in one_line_error(res)
    res = runner.invoke(app, demo_args(base, mine) + ["--overwrite"])
    assert res.exit_code == 2  # --overwrite redoes a finished demo, never a user's directory
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    out = tmp_path / "demo"  # Ctrl-C after the first checkpoint, then the same command again
    res = runner.invoke(app, ["demo", "--out", str(out),
                              *sets(base, reward="ctrl_c_at_epoch_1", epochs=2)])
    assert res.exit_code == 130, res.output
    assert res.output.strip().splitlines()[-1] == \
        f"interrupted; continue with: scorealign demo --out {out}"
    res = runner.invoke(app, demo_args(base, out, epochs=2))
    assert res.exit_code == 0, res.output
    assert "from epoch 1" in res.output and (out / "report.html").is_file()

    report = (out / "report.html").stat().st_mtime_ns
    (out / "my_notes.txt").write_text("mine")
    res = runner.invoke(app, demo_args(base, out, epochs=2))  # the same demo again: kept, exit 0
    assert res.exit_code == 0, res.output
    assert "holds a finished demo run (pass --overwrite to redo it)" in res.output
    assert (out / "report.html").stat().st_mtime_ns == report
    res = runner.invoke(app, demo_args(base, out, epochs=1))  # other settings: exit 2
    assert res.exit_code == 2 and "--overwrite" in one_line_error(res)
    assert (out / "report.html").stat().st_mtime_ns == report
    assert (out / "my_notes.txt").read_text() == "mine"
    res = runner.invoke(app, demo_args(base, out, epochs=1) + ["--overwrite"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 1


def test_demo_onto_a_user_file_is_refused_and_the_file_kept(base, tmp_path):
    mine = tmp_path / "demo.txt"
    mine.write_text("mine")
    for extra in ([], ["--overwrite"]):
        res = runner.invoke(app, demo_args(base, mine) + extra)
        assert res.exit_code == 2 and str(mine) in one_line_error(res)
        assert mine.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.txt"]


@pytest.mark.parametrize("command,field,value,says", [
    ("finetune", "train.epochs", "-1", "must be > 0"),
    ("finetune", "train.epochs", "0", "must be > 0"),
    ("finetune", "train.lr", "-1", "must be > 0"),
    ("finetune", "prompts.prompts", '["a handwritten 3", "a cat"]', "one digit 0-9"),
    ("demo", "prompts.prompts", '["a cat"]', "one digit 0-9"),
    ("dpo", "train.steps", "-5", "must be > 0"),
    ("dpo", "train.lr", ".nan", "finite"),
])
def test_bad_budgets_rates_and_prompts_fail_before_anything_is_written(base, tmp_path, command,
                                                                      field, value, says):
    """Negative budgets (issue 26: finetune epochs=-1 and dpo steps=-5 ran with exit 0) and a
    prompt the digits model cannot take ('a cat': was a reward failure after the run started)."""
    out = tmp_path / "a" / "run"
    args = {"dpo": ["--config", "dpo/demo"]}.get(command, sets(base))
    res = runner.invoke(app, [command, *args, "--set", f"{field}={value}", "--out", str(out)])
    assert res.exit_code == 2, res.output
    line = one_line_error(res)
    assert f"(--set): {field}: " in line and says in line, line
    assert not (tmp_path / "a").exists()


def test_diffusion_dpo_on_pairs_with_a_prompt_the_digits_model_cannot_take(tmp_path):
    """Diffusion-DPO's prompts come from its pair dataset: one that names no digit is refused
    with the dataset's file named (not the run's config.yaml) and the run directory removed."""
    import torch

    from scorealign.nets import ModelConfig, build_model, save_pretrained
    from scorealign.preference.rpo.dataset import PairWriter, quantize
    cfg_m = ModelConfig(type="unet_cond", cond="label", kind="eps", sample_size=8,
                        block_out_channels=(8, 16), norm_num_groups=8, attention_head_dim=8,
                        label_dim=16)
    save_pretrained(build_model(cfg_m, seed=0), tmp_path / "model")
    imgs = quantize(torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    with PairWriter(tmp_path / "pairs", info={}) as w:
        for i in range(6):
            w.add("a cat" if i == 4 else f"a handwritten {i}", imgs[2 * i], imgs[2 * i + 1],
                  "rpo", {})
    cfg = yaml.safe_load((Path(__file__).parents[2] / "configs/dpo/digits_rpo.yaml").read_text())
    cfg.update(device="cpu", eval={"enabled": False})
    cfg["data"]["path"], cfg["base"]["path"] = str(tmp_path / "pairs"), str(tmp_path / "model")
    cfg["train"].update(steps=2, batch_size=6, progress=False)
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    res = runner.invoke(app, ["dpo", "--config", str(tmp_path / "dpo.yaml"), "--out", str(out)])
    assert res.exit_code == 2, res.output
    last = res.output.strip().splitlines()[-1]
    assert f"{tmp_path / 'pairs' / 'pairs.jsonl'}: 'a cat' names no single digit" in last
    assert "one digit 0-9" in last and "config.yaml" not in last
    assert not out.exists()


# -- 2. the run directory is the record ----------------------------------------------------
def test_ctrl_c_says_how_to_continue_and_resume_overrides_are_recorded(base, tmp_path):
    from scorealign.commands.common import resolve_config
    from scorealign.rl.config import FinetuneConfig
    from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint
    out = tmp_path / "run"
    res = runner.invoke(app, ["finetune", "--out", str(out),
                              *sets(base, reward="ctrl_c_at_epoch_1", epochs=2)])
    assert res.exit_code == 130, res.output
    assert res.output.strip().splitlines()[-1] == \
        f"interrupted; continue with: scorealign finetune --resume {out}"  # after the bar
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))[1]["epoch"] == 1

    before = (out / "config.yaml").read_text()
    res = runner.invoke(app, ["finetune", "--resume", str(out), "--set", "train.epochs=zwei"])
    assert res.exit_code == 2 and "train.epochs" in one_line_error(res)
    assert (out / "config.yaml").read_text() == before and not (out / "overrides.jsonl").exists()

    res = runner.invoke(app, ["finetune", "--resume", str(out), "--set", "train.epochs=3",
                              "--set", "reward.optimized=nothing_lost_rewards:good"])
    assert res.exit_code == 0, res.output
    assert "from epoch 1" in res.output and "3/3" in res.output  # the bar counts to the new N
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))[1]["epoch"] == 3
    cfg = resolve_config(FinetuneConfig, resume=out)  # the strict loader reads it
    assert cfg.train.epochs == 3  # eval, report, export and --resume see the fix
    assert cfg.reward.optimized == "nothing_lost_rewards:good"
    lines = [json.loads(s) for s in (out / "overrides.jsonl").read_text().splitlines()]
    assert [x["changed"] for x in lines] == [{
        "reward.optimized": ["nothing_lost_rewards:ctrl_c_at_epoch_1", "nothing_lost_rewards:good"],
        "train.epochs": [2, 3]}]
    rows = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 3
    res = runner.invoke(app, ["finetune", "--resume", str(out)])  # nothing changed: no line
    assert len((out / "overrides.jsonl").read_text().splitlines()) == 1


# -- 3. failed starts, hints and Ctrl-C ----------------------------------------------------
def test_a_failed_start_leaves_nothing_and_no_resume_hint(base, tmp_path):
    out = tmp_path / "a" / "b" / "run"
    res = runner.invoke(app, ["finetune", "--out", str(out), *sets(base, reward="nan_at_once")])
    assert res.exit_code == 2, res.output
    assert "before its first checkpoint" in res.output
    assert "intact" not in res.output and "--resume" not in res.output
    assert not (tmp_path / "a").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["finetune", "--out", str(empty),
                              *sets(base, reward="nan_at_once")])
    assert res.exit_code == 2 and empty.is_dir() and not any(empty.iterdir())


def test_ctrl_c_before_the_first_checkpoint_keeps_nothing(base, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["finetune", "--out", str(out), *sets(base, reward="ctrl_c_at_once")])
    assert res.exit_code == 130, res.output
    assert "interrupted before the first checkpoint" in res.output and "--resume" not in res.output
    assert not out.exists()


def test_footprint_removes_only_what_the_run_created(tmp_path):
    from scorealign.commands.common import Footprint
    mine = user_dir(tmp_path / "mine")
    fp = Footprint(mine)
    (mine / "config.yaml").write_text("x")
    (mine / "checkpoints").mkdir()
    fp.remove()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    fp = Footprint(tmp_path / "x" / "y")
    (tmp_path / "x" / "y").mkdir(parents=True)
    fp.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
