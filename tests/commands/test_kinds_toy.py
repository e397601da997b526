"""Adding a run kind is one registry record and one command function: a toy kind (a run whose
"model" is one scaled Gaussian) gets load, sample, eval, export and report, from Python and from
the CLI commands, without touching any other module."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from scorealign.commands import kinds as K


@dataclass
class ToyConfig:
    """The toy command's config."""

    scale: float = 2.0
    seed: int = 0


# -- the one command module: writes a run directory of kind "toy" --------------------------------
def toy_command(cfg: ToyConfig, out: Path) -> Path:
    from scorealign.run.checkpoint import save_checkpoint
    from scorealign.run.rundir import RunDir

    run = RunDir.create(out, cfg, kind="toy")
    save_checkpoint(run.checkpoints, 1, {"model": {"scale": torch.tensor([cfg.scale])}},
                    extra={"step": 1})
    run.log(1, loss=0.5)
    return run.path


# -- the one record ---------------------------------------------------------------------------
def _load(run_dir: Path, device: str):
    from scorealign.commands.load import Loaded
    from scorealign.commands.runs import read_run_config, run_checkpoint

    cfg = read_run_config(run_dir, ToyConfig)
    return Loaded("toy", cfg, run_checkpoint(run_dir)[0]["model"]["scale"])


def _draw(loaded, prompts, n, seed, base):
    g = torch.Generator().manual_seed(seed)
    return loaded.model * torch.randn(len(prompts) * n, 2, generator=g)


def _sample(loaded, req):
    from scorealign.commands.runs import out_file

    x = _draw(loaded, req.prompts or ["x"], req.n, req.seed, False)
    path = out_file(req.out, loaded.run_dir / "samples" / f"toy_seed{req.seed}.txt")
    rows = tuple(f"{a:.4f} {b:.4f}" for a, b in x.tolist())
    path.write_text("\n".join(rows) + "\n")
    return K.Sampled(path, rows)


def _evaluate(loaded, req):
    x = _draw(loaded, ["x"], req.n or 1000, 0, False)
    return {"eval/std": float(x.std())}, None


def _export(run_dir, dest, checkpoint=None):
    from safetensors.torch import save_file

    from scorealign.commands.runs import run_checkpoint
    from scorealign.run.atomic import atomic_dir

    with atomic_dir(dest) as tmp:
        save_file(run_checkpoint(run_dir, checkpoint)[0]["model"], str(tmp / "toy.safetensors"))
    return dest


TOY = K.RunKind("toy", ToyConfig, _load, _sample, _evaluate, _export, draw=_draw)


@pytest.fixture
def toy_kind():
    K.register_kind(TOY)
    yield TOY
    K.unregister_kind("toy")


def test_a_toy_kind_gets_load_sample_eval_export_and_report(toy_kind, tmp_path):
    from scorealign.commands.evaluate import evaluate
    from scorealign.commands.export import export_run
    from scorealign.commands.load import load
    from scorealign.commands.report import report
    from scorealign.commands.sample import sample

    run = toy_command(ToyConfig(scale=3.0), tmp_path / "toy")
    assert json.loads((run / "run.json").read_text()) == {"kind": "toy"}
    assert K.kind_of(run) == "toy"
    loaded = load(run)
    assert loaded.kind == "toy" and loaded.config.scale == 3.0 and loaded.run_dir == run
    assert loaded.sample(["a", "b"], n=3, seed=1).shape == (6, 2)
    done = sample(run, n=4, seed=2)
    assert done.path.is_file() and len(done.lines) == 4
    ev = evaluate(run, n=4000)
    assert ev.metrics["eval/std"] == pytest.approx(3.0, rel=0.05)
    assert json.loads(ev.path.read_text())["eval/std"] == ev.metrics["eval/std"]
    out = export_run(run)
    assert out == run / "final" and (out / "toy.safetensors").is_file()
    assert report(run).is_file()


def test_the_cli_commands_serve_the_toy_kind(toy_kind, tmp_path):
    from scorealign.cli import evaluate, export, report, sample

    app = typer.Typer()
    for mod in (sample, evaluate, export, report):
        mod.register(app)
    run = toy_command(ToyConfig(), tmp_path / "toy")
    runner = CliRunner()
    for args in (["sample", run, "--n", "2"], ["eval", run, "--name", "e2"],
                 ["export", run, "--to", tmp_path / "exp"], ["report", run]):
        res = runner.invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, res.output
    assert (run / "e2.json").is_file() and (tmp_path / "exp" / "toy.safetensors").is_file()
    assert (run / "report.html").is_file()


def test_an_unknown_recorded_kind_is_a_typed_error(tmp_path):
    from scorealign.commands.load import load
    from scorealign.errors import ExportError, RunNotFoundError

    run = toy_command(ToyConfig(), tmp_path / "toy")  # "toy" is not registered here
    with pytest.raises(ExportError, match="unknown run kind 'toy'"):
        load(run)
    with pytest.raises(RunNotFoundError, match="no config.yaml"):
        load(tmp_path / "nowhere")
