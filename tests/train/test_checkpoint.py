"""Atomic safetensors checkpoints: round trip, latest pointer, interrupted writes, bad files."""

import torch

from scorealign.run.checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint,
                                         save_checkpoint)
import pytest


def _states():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_model_and_optimizer(tmp_path):
    model, opt = _states()
    save_checkpoint(tmp_path, 3, {"model": model.state_dict(), "optimizer": opt.state_dict()},
                    extra={"step": 3, "note": "x"})
    path = latest_checkpoint(tmp_path)
    assert path.name == "step_000003"
    states, extra = load_checkpoint(path)
    assert extra == {"step": 3, "note": "x"}
    for k, v in model.state_dict().items():
        assert torch.equal(states["model"][k], v)
    m2, o2 = _states()
    o2.load_state_dict(states["optimizer"])
    s1, s2 = opt.state_dict(), o2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i in s1["state"]:
        for k in s1["state"][i]:
            assert torch.equal(torch.as_tensor(s1["state"][i][k]), torch.as_tensor(s2["state"][i][k]))


def test_keeps_newest_and_ignores_interrupted_writes(tmp_path):
    model, _ = _states()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"model": model.state_dict()}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000002", "step_000003"]
    # A writer killed before its rename leaves only a hidden temp dir: latest is unchanged.
    (tmp_path / ".tmp_step_000004_999").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_000003"


def test_corrupt_checkpoint_names_the_file(tmp_path):
    model, _ = _states()
    path = save_checkpoint(tmp_path, 1, {"model": model.state_dict()})
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(path)
    assert latest_checkpoint(tmp_path / "empty") is None
