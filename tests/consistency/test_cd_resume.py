"""kill -9 and resume of a CD run is bit-identical; the run exports like every pretraining run.

Same pattern as tests/train/test_resume.py: a real ``scorealign pretrain`` subprocess SIGKILLs
itself right after the checkpoint of step 10 (``SCOREALIGN_KILL_AFTER_CHECKPOINT``), is resumed
with ``--resume`` and compared tensor by tensor (model, EMA, target θ⁻) with an uninterrupted run.
The teacher is the exact score of the 8-Gaussians toy, so no teacher run is needed.
"""

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from scorealign.cli.app import app
from scorealign.config import load_config
from scorealign.nets import load_pretrained
from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint
from scorealign.commands.pretrain import train_and_export as pretrain
from scorealign.train.pretrain import PretrainConfig
from scorealign.run.rundir import RunDir

SETS = ["train.objective=cd", "consistency.teacher=exact", "consistency.solver=heun_ode",
        "consistency.scale_mode=progressive", "consistency.target_ema_mode=adaptive",
        "consistency.start_scales=4", "consistency.end_scales=12", "consistency.start_ema=0.9",
        "consistency.distance=pseudo_huber", "model.kind=v",
        "train.steps=12", "train.ckpt_every=5", "train.batch_size=64", "train.log_every=2",
        "model.hidden=32", "model.depth=2", "data.num_train=512", "sample.num_eval=64",
        "sample.sampler=consistency", "sample.steps=2", "sample.grid=karras",
        "train.warmup_steps=3", "device=cpu"]


@pytest.mark.slow
def test_cd_kill_and_resume_is_bit_identical(pretrain_killed_and_resumed):
    killed, ref = pretrain_killed_and_resumed("configs/pretrain/gaussians.yaml", SETS, 10)

    a, b = load_file(str(killed / "final" / "model.safetensors")), \
        load_file(str(ref / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, _ = load_checkpoint(latest_checkpoint(killed / "checkpoints"))
    sb, _ = load_checkpoint(latest_checkpoint(ref / "checkpoints"))
    for name in ("model", "ema", "target"):
        assert all(torch.equal(sa[name][k], sb[name][k]) for k in sa[name]), name
    ra, rb = RunDir(killed).read_metrics(), RunDir(ref).read_metrics()
    assert ra == rb and [r["step"] for r in ra] == list(range(2, 13, 2))
    # the growing schedule is logged: N(k) non-decreasing from s0 + ... to s1 + 1
    ns = [r["cm/num_scales"] for r in ra]
    assert ns == sorted(ns) and ns[-1] == 13
    # exported like every run: the save_pretrained pair under final/, loadable as a network
    assert (killed / "final" / "model_config.json").is_file()
    assert load_pretrained(killed / "final").kind == "v"
    assert (killed / "eval.json").is_file()


def test_bad_consistency_field_exits_2(tmp_path):
    res = CliRunner().invoke(app, ["pretrain", "--config", "configs/pretrain/gaussians.yaml",
                                   "--set", "consistency.solver=rk45", "--dry-run"])
    assert res.exit_code == 2 and "consistency.solver" in res.output, res.output


def test_ct_run_trains_without_teacher_and_exports(tmp_path):
    sets = [s for s in SETS if not s.startswith(("train.objective", "consistency.teacher",
                                                 "train.steps"))]
    cfg = load_config("configs/pretrain/gaussians.yaml", PretrainConfig,
                      sets + ["train.objective=ct", "train.steps=6",
                              "consistency.teacher=/nonexistent"])  # CT never reads it
    final = pretrain(cfg, RunDir.create(tmp_path / "ct", cfg))
    assert (final / "model.safetensors").is_file()
    logged = RunDir(tmp_path / "ct").read_metrics()
    assert all("loss/ct" in r and r["loss/ct"] >= 0 for r in logged)


ECT_SETS = [s for s in SETS if not s.startswith(("consistency.scale_mode",
                                                 "consistency.target_ema_mode"))] + [
    "consistency.pair_sampling=ect", "consistency.weighting=inv_dsigma",
    "consistency.target_ema_mode=none", "consistency.huber_c=0", "consistency.ect_stages=3"]


@pytest.mark.slow
def test_ect_kill_and_resume_is_bit_identical(pretrain_killed_and_resumed):
    """ECT's draws (normal u per pair) and its stage are functions of (seed, step) as well."""
    killed, ref = pretrain_killed_and_resumed("configs/pretrain/gaussians.yaml", ECT_SETS, 10)
    a, b = load_file(str(killed / "final" / "model.safetensors")), \
        load_file(str(ref / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = RunDir(killed).read_metrics(), RunDir(ref).read_metrics()
    assert ra == rb and all(r["cm/target_ema"] == 0.0 for r in ra)
