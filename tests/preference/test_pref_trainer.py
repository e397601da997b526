"""The preference trainer and ``scorealign dpo``: exact resume (clean stop and kill -9), the loss at
policy = reference for every pipeline, and CLI errors that name file:line."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from scorealign.config import load_config
from scorealign.preference.config import DPOConfig
from scorealign.preference.trainer import train
from scorealign.run.checkpoint import KILL_ENV, latest_checkpoint, load_checkpoint
from scorealign.run.rundir import RunDir

BASE = """\
device: cpu
model: {{source: tiny_gpt2, n_layer: 1, n_embd: 16, n_head: 2, n_positions: 32}}
data: {{source: jsonl, path: {path}, max_length: 16, max_prompt_length: 8}}
loss: {{name: sigmoid, params: {{beta: 0.5}}}}
reference: {{mode: precompute, batch_size: 8}}
train: {{steps: 6, batch_size: 4, grad_accum: 2, lr: 1.0e-2, schedule: linear, warmup_steps: 2,
        log_every: 1, ckpt_every: 2, keep_checkpoints: 10, seed: 3, progress: false}}
"""


@pytest.fixture
def cfg_file(tmp_path, pairs_file):
    path = tmp_path / "dpo.yaml"
    path.write_text(BASE.format(path=pairs_file))
    return path


def _run(cfg_file, out, sets=(), resume=False):
    cfg = load_config(cfg_file, DPOConfig, list(sets))
    run = RunDir.open(out) if resume else RunDir.create(out, cfg)
    return train(cfg, run, resume=resume), run


def _final(run):
    states, extra = load_checkpoint(latest_checkpoint(run.checkpoints))
    return states, extra["step"]


def test_stop_and_resume_is_bit_identical(cfg_file, tmp_path):
    _, full = _run(cfg_file, tmp_path / "full")
    _, part = _run(cfg_file, tmp_path / "part", ["train.stop_after_steps=3"])
    assert _final(part)[1] == 3
    _run(cfg_file, tmp_path / "part", resume=True)
    (a, step_a), (b, step_b) = _final(full), _final(part)
    assert step_a == step_b == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["optimizer"]["state"]:
        for name, v in a["optimizer"]["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][k][name]))
    strip = lambda rows: [{k: v for k, v in r.items()  # noqa: E731
                           if not k.startswith(("perf/s", "mem/"))} for r in rows]
    assert strip(full.read_metrics()) == strip(part.read_metrics())


@pytest.mark.parametrize("loss,params,mode,sets,at_init", [
    ("sigmoid", {"beta": 0.5}, "precompute", [], math.log(2)),
    ("mallows_theta", {"beta": 0.5}, "precompute", [], math.log(2)),
    ("rainbowpo", {"beta": 2.0, "length_normalization": True, "contextual_scaling": True,
                   "sft_coef": 0.0}, "model", [], math.log(2)),
    ("sigmoid", {"beta": 0.5}, "lora_disabled", ["model.lora.enabled=true"], math.log(2)),
    ("ipo", {"beta": 0.5}, "model", [], 0.25),               # (β·0 − ½)² (authors' form)
    ("kto", {"beta": 0.5, "lambda_d": 1.0, "lambda_u": 1.5}, "model",
     ["data.kind=unpaired"], None),                           # λ_y (1 − σ(0)) = λ_y / 2
])
def test_first_step_loss_at_policy_equal_reference(cfg_file, tmp_path, loss, params, mode, sets,
                                                   at_init):
    if loss == "kto":
        rows = [json.loads(x) for x in Path(load_config(cfg_file, DPOConfig, []).data.path)
                .read_text().splitlines()]
        unpaired = tmp_path / "kto.jsonl"
        unpaired.write_text("".join(
            json.dumps({"prompt": r["prompt"], "completion": r["chosen" if i % 3 else "rejected"],
                        "label": bool(i % 3)}) + "\n" for i, r in enumerate(rows)))
        sets = sets + [f"data.path={unpaired}"]
    sets = sets + [f"loss.name={loss}", f"loss.params={json.dumps(params)}",
                   f"reference.mode={mode}", "train.steps=2"]
    _, run = _run(cfg_file, tmp_path / "r", sets)
    first = run.read_metrics()[0]
    assert first["step"] == 1
    if at_init is None:  # KTO: the mean of λ_y/2 over the 8 examples of step 1
        assert 0.5 <= first["loss"] <= 0.75 and math.isclose(first["kl"], 0.0, abs_tol=1e-6)
    else:
        assert math.isclose(first["loss"], at_init, rel_tol=1e-5)
        assert math.isclose(first["rewards/margin"], 0.0, abs_tol=1e-6)
    last = run.read_metrics()[-1]
    assert last["step"] == 2 and math.isfinite(last["loss"])


def test_dpo_training_raises_implicit_reward_accuracy(cfg_file, tmp_path):
    _, run = _run(cfg_file, tmp_path / "acc", ["train.steps=30", "train.lr=3e-2"])
    rows = [r for r in run.read_metrics() if "loss" in r]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.1
    assert rows[-1]["rewards/accuracy"] > 0.8 and rows[-1]["rewards/margin"] > 0


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _cli(args):
    from scorealign.cli.app import app

    return CliRunner().invoke(app, ["dpo", *args])


def test_cli_dry_run_and_config_errors_name_file_line(cfg_file, tmp_path):
    res = _cli(["--config", str(cfg_file), "--dry-run"])
    assert res.exit_code == 0 and "beta: 0.5" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg_file.read_text().replace("loss: {name: sigmoid, params: {beta: 0.5}}",
                                                "loss: {name: sigmoid, params: {betta: 0.5}}"))
    res = _cli(["--config", str(bad), "--dry-run"])
    assert res.exit_code == 2 and f"{bad}:4: loss" in res.output and "betta" in res.output
    res = _cli(["--config", str(cfg_file), "--set", "train.lr=fast", "--dry-run"])
    assert res.exit_code == 2 and "train.lr: expected float" in res.output


def test_cli_bad_data_line_exits_2_naming_file_and_line(cfg_file, pairs_file, tmp_path):
    lines = pairs_file.read_text().splitlines()
    lines[4] = '{"prompt": "ab:", "chosen": "a"}'
    pairs_file.write_text("\n".join(lines) + "\n")
    res = _cli(["--config", str(cfg_file), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and f"{pairs_file}:5: missing field 'rejected'" in res.output


def test_cli_delegates_diffusion_configs(tmp_path, monkeypatch):
    calls = []
    import scorealign.cli.dpo as cli_dpo
    monkeypatch.setattr(cli_dpo, "diffusion_dpo_cmd", lambda *a: calls.append(a))
    cfg = tmp_path / "d.yaml"
    cfg.write_text("task: diffusion\nanything: [not, a, DPOConfig, field]\n")
    res = _cli(["--config", str(cfg), "--set", "a.b=1", "--out", str(tmp_path / "o"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert calls == [(cfg, ["a.b=1"], tmp_path / "o", None, True, False)]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: diffusion\n")
    assert _cli(["--resume", str(run)]).exit_code == 0
    assert calls[-1] == (None, [], None, run, False, False)


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical(cfg_file, tmp_path):
    # The killed run is a subprocess with this process's thread count, so that the uninterrupted
    # run and the resume can be done in-process (same kernels, same reduction order).
    # The subprocess is SIGKILLed by the checkpoint writer right after step 8's checkpoint
    # (SCOREALIGN_KILL_AFTER_CHECKPOINT), a real kill -9 at a deterministic point.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "CUDA_VISIBLE_DEVICES": "",
           KILL_ENV: "8"}
    exe = [sys.executable, "-m", "scorealign.cli", "dpo"]
    sets = ["train.steps=40", "train.ckpt_every=4", "train.keep_checkpoints=2"]
    killed = tmp_path / "killed"
    proc = subprocess.run([*exe, "--config", str(cfg_file), "--out", str(killed),
                           *[a for s in sets for a in ("--set", s)]],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert latest_checkpoint(killed / "checkpoints").name.endswith("_000008")
    _, full = _run(cfg_file, tmp_path / "full", sets)
    res = _cli(["--resume", str(killed)])  # in-process: same threads as the subprocess
    assert res.exit_code == 0, res.output
    a, b = _final(full), _final(RunDir(killed))
    assert a[1] == b[1] == 40
    for k in a[0]["model"]:
        assert torch.equal(a[0]["model"][k], b[0]["model"][k]), k


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs" / "dpo").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_lm_configs_load_strictly(path):
    from scorealign.cli.dpo import config_task

    if config_task(path, None) is not None:  # task: diffusion configs belong to Diffusion-DPO
        pytest.skip("delegated config")
    cfg = load_config(path, DPOConfig)
    assert cfg.loss.resolved().name == cfg.loss.name


def test_local_pretrained_model_and_tokenizer(cfg_file, tmp_path, tok):
    from scorealign.preference.tiny import tiny_gpt2

    model_dir = tmp_path / "pretrained"
    tiny_gpt2(len(tok), n_layer=1, n_embd=16, n_head=2, n_positions=32, seed=5).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    _, run = _run(cfg_file, tmp_path / "p", ["model.source=pretrained", f"model.path={model_dir}",
                                             "train.steps=2"])
    first = run.read_metrics()[0]
    assert math.isclose(first["loss"], math.log(2), rel_tol=1e-5)


@pytest.mark.slow
def test_two_processes_match_one_at_the_same_global_batch(cfg_file, tmp_path):
    # torchrun, 2 CPU processes (gloo) × 2 pairs vs 1 process × 4 pairs: the same pairs per step,
    # DDP-averaged gradients. Equal up to fp reduction order, which Adam's 1/√v amplifies a little.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    torchrun = Path(sys.executable).with_name("torchrun")
    two = tmp_path / "two"
    subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "scorealign.cli", "dpo",
                    "--config", str(cfg_file), "--out", str(two), "--set", "train.batch_size=2"],
                   env=env, check=True, capture_output=True, timeout=300)
    _, one = _run(cfg_file, tmp_path / "one", ["train.batch_size=4"])
    (a, sa), (b, sb) = _final(one), _final(RunDir(two))
    assert sa == sb == 6
    lr = load_config(cfg_file, DPOConfig).train.lr
    diff = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    rows_one, rows_two = one.read_metrics(), RunDir(two).read_metrics()
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two]  # only rank 0 logs
    assert math.isclose(rows_one[1]["loss"], rows_two[1]["loss"], rel_tol=1e-4)
    assert diff < 1e-2 * lr, diff  # ≪ one Adam step (each moves a weight by up to lr); wrong
    # sharding (both ranks on the same pairs) gives differences of order lr
