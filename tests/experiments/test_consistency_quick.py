"""experiments/consistency/run.py --quick end to end: Part A's cells (teacher DDIM, Heun and
DPM-Solver++(2M), the CD student) with CPU time per sample, Part B's selection on tuning seeds
disjoint from the reported ones, the fixed evaluation set, the paired claims with Holm, and the
cache (a second run recomputes nothing)."""

from __future__ import annotations

import json

import pytest

from scorealign.train.bases import resolve_base_path

from experiment_modules import load


def _run():
    return load("consistency_run", "consistency/run.py", rerun=True)


def test_rl_arms_use_per_dim_clip_and_auto_action_steps():
    """Both Part B arms: DDPO's clip 1e-4 on per-dimension log-probs, the same KL weight, the
    auto action steps, and the budget the script sets."""
    import argparse
    run = _run()
    a = argparse.Namespace(epochs=3, per_epoch=2, k=4, cd="pretrained:digits8-cd")
    cfgs = {arm: run.rl_config(arm, a, 1e-4, 7) for arm in run.ARMS}
    for arm, cfg in cfgs.items():
        assert cfg.algo.loss == "loop" and cfg.algo.ratio_units == "per_dim"
        assert cfg.algo.loss_kwargs == {"clip": 1e-4, "beta": 1e-4}
        assert cfg.policy.action_steps == "auto" and cfg.reward.clamp == [-1.0, 1.0]
        assert (cfg.train.epochs, cfg.prompts.per_epoch, cfg.prompts.k) == (3, 2, 4)
        assert cfg.train.minibatch_size == 4 and cfg.train.seed == 7
    assert cfgs["cm_2step"].policy.sampler == "consistency" and cfgs["cm_2step"].policy.steps == 2
    assert cfgs["teacher_10step"].policy.steps == 10


@pytest.mark.slow
@pytest.mark.skipif(not (resolve_base_path("pretrained:digits8-cd") / "config.yaml").is_file(),
                    reason="digits8-cd is not shipped in this checkout")
def test_quick_run(tmp_path):
    run = _run()
    run.main(["--quick", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "quick" / "results" / "results.json").read_text())
    a = res["part_a"]["rows"]
    got = {(r["method"], r["nfe"]) for r in a}
    assert {("teacher/ddim", 1), ("teacher/ddim", 2), ("teacher/heun", 2), ("teacher/dpm2m", 1),
            ("teacher/dpm2m", 2), ("cd/consistency", 1), ("cd/consistency", 2)} <= got
    for r in a:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["fd"] > 0 and r["cpu_ms_per_sample"] > 0
    # one DPM-Solver++(2M) step is DDIM's step (the grids differ only inside (t_min, T))
    one = {r["method"]: r for r in a if r["nfe"] == 1}
    assert one["teacher/dpm2m"]["accuracy"] == one["teacher/ddim"]["accuracy"]

    b = res["part_b"]
    split = b["record"]["split"]
    assert not set(split["tuning_seeds"]) & set(split["reported_seeds"])
    assert split["tuning_draws"] != split["reported_draws"]
    for arm, cells in b["cells"].items():
        ch = b["record"]["chosen"][arm]
        assert ch["pick"] in ch["grid"] and len(cells) == 2
        assert {c["seed"] for c in cells} == set(split["reported_seeds"])
        # the fixed evaluation set: the base model's score is the same for every reported seed
        assert len({json.dumps(c["evals"][0]) for c in cells}) == 1
        for c in cells:
            assert c["lr"] == ch["pick"] and c["cpu_s"] > 0 and c["peak_gb"] > 0
            assert [e["epoch"] for e in c["evals"]] == [0, 1, 2]
            assert c["gain"] == pytest.approx(c["evals"][-1]["reward"] - c["evals"][0]["reward"])
    claims = b["claims"]
    assert set(claims) == {"train CPU s", "reward gain", "final gold"}
    for c in claims.values():
        assert c["n"] == 2 and c["p_holm"] >= c["p"]
    table = (tmp_path / "quick" / "results" / "table.md").read_text()
    assert "| reward gain: cm_2step − teacher_10step |" in table and "edge" in table

    cells = sorted((tmp_path / "quick").rglob("*.json"))
    cells = [c for c in cells if "results" not in c.parts]
    stamps = [c.stat().st_mtime_ns for c in cells]
    run.main(["--quick", "--out", str(tmp_path)])
    assert [c.stat().st_mtime_ns for c in cells] == stamps
