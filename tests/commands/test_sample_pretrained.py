"""``scorealign sample pretrained:<name>`` opens a shipped model (issue 27: the one-step
consistency model's grid from a fresh clone) and writes under ./samples/<name>, never inside the
installed package; an unknown name is one line listing the shipped ones."""

from __future__ import annotations

from typer.testing import CliRunner

from scorealign.cli.app import app
from scorealign.train.bases import PRETRAINED


def test_sample_a_shipped_model_writes_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in (PRETRAINED / "digits8-cd").rglob("*"))
    res = CliRunner().invoke(app, ["sample", "pretrained:digits8-cd", "--sampler", "consistency",
                                   "--steps", "1", "--n", "2"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "samples" / "digits8-cd" / "sample_classes_consistency_1_seed0.png"
    assert out.is_file() and out.stat().st_size > 0
    assert sorted(p.name for p in (PRETRAINED / "digits8-cd").rglob("*")) == before


def test_unknown_shipped_name_lists_the_shipped_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["sample", "pretrained:nope"])
    assert res.exit_code == 2
    assert "pretrained:nope" in res.output and "pretrained:digits8" in res.output
    assert not (tmp_path / "samples").exists()
