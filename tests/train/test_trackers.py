"""Trackers through accelerate: TensorBoard (offline) receives the same scalars as metrics.jsonl
and the sample grids; with the default ``tracker: none`` nothing but metrics.jsonl is written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scorealign.cli.app import app

SETS = ["data.name=gaussians", "model.type=mlp", "train.steps=6", "train.log_every=2",
        "train.ckpt_every=6", "sample.num_eval=50", "sample.steps=4", "device=cpu"]


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    args = ["pretrain", "--config", "configs/pretrain/gaussians.yaml", "--out", str(out)]
    for s in [*SETS, *extra]:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


def test_tensorboard_gets_the_scalars_of_metrics_jsonl_and_the_grids(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = _run(tmp_path, "tb", "tracker=tensorboard")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    logdir = next((out / "tracker").iterdir())
    ev = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0}).Reload()
    key = next(k for r in rows for k in r if k.startswith("loss"))
    want = [(r["step"], r[key]) for r in rows if key in r]
    got = [(e.step, e.value) for e in ev.Scalars(key)]
    assert [s for s, _ in got] == [s for s, _ in want]
    assert all(abs(a - b) <= 1e-5 * max(1, abs(b)) for (_, a), (_, b) in zip(got, want))
    assert any(t.startswith("samples/") for t in ev.Tags()["images"])


def test_no_tracker_by_default(tmp_path):
    out = _run(tmp_path, "none")
    assert not (out / "tracker").exists() and (out / "metrics.jsonl").stat().st_size > 0
