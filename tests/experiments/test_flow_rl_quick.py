"""experiments/flow_rl --quick end to end (cached cells, the selection record, paired seeds,
the claims with Holm, the table), and the tuning logic on cached synthetic cells."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from experiment_modules import load


def _run():
    return load("flow_rl_run", "flow_rl/run.py", rerun=True)


def _fake(root: Path, cell, reward: float, gold: float) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / cell.name()).write_text(json.dumps(
        {"evals": [{"eval/reward": 0.18, "eval/gold": 0.99},
                   {"eval/reward": reward, "eval/gold": gold}]}))


def test_tuning_widens_an_edge_pick_and_respects_the_gold_floor(tmp_path):
    run = _run()
    mode = run.FULL
    split = run.sel.split(10, 1, draws_reported=1_000_000, draws_tuning=2_000_000)
    s, d = split.tuning_seeds[0], split.tuning_draws
    # LOOP: reward grows with lr, but 1e-3 breaks the gold floor → 3e-4 is an interior pick
    for lr, r, g in ((1e-4, 0.25, 0.95), (3e-4, 0.30, 0.90), (1e-3, 0.40, 0.50)):
        _fake(tmp_path, run.Cell("LOOP", None, lr, s, d), r, g)
    t = run.tune_method("LOOP", tmp_path, mode, split, floor=0.79)
    assert t["lr"].pick == 3e-4 and not t["lr"].edge
    # without the floor the pick is the high edge: the grid asks for 3e-3 next
    with pytest.raises(run.Missing) as e:
        run.tune_method("LOOP", tmp_path, mode, split, floor=0.0)
    (new,) = e.value.cells  # geometric: 1e-3 × (1e-3 / 3e-4)
    assert new.lr == pytest.approx(1e-3 * 1e-3 / 3e-4, rel=1e-5) and new.draws == d
    _fake(tmp_path, new, 0.35, 0.4)
    t = run.tune_method("LOOP", tmp_path, mode, split, floor=0.0)
    assert t["lr"].pick == 1e-3 and not t["lr"].edge and t["lr"].widened == 1
    # Score as Action: lr tuned per λ, then λ; the best λ is interior
    for lam, best in ((0.02, 0.20), (0.05, 0.26), (0.1, 0.22)):
        for lr, r in ((1e-4, best - 0.02), (3e-4, best), (1e-3, best - 0.05)):
            _fake(tmp_path, run.Cell(run.SAA, lam, lr, s, d), r, 0.95)
    t = run.tune_method(run.SAA, tmp_path, mode, split, floor=0.79)
    assert t["lam"].pick == 0.05 and not t["lam"].edge and t["lr"].pick == 3e-4
    cells = run.reported_cells({run.SAA: t}, split)[run.SAA]
    assert [c.seed for c in cells] == list(range(10))
    assert {(c.lam, c.lr, c.draws) for c in cells} == {(0.05, 3e-4, split.reported_draws)}


def test_lambda_grid_widens_past_an_edge_pick(tmp_path):
    """Score as Action's λ pick at the top of {0.02, 0.05, 0.1} asks for λ = 0.2 (geometric,
    ×2), whose lr grid is then tuned (cells named one round at a time); a better λ = 0.2 then
    sits at the new edge and asks for 0.4; a worse 0.4 leaves 0.2 interior."""
    run = _run()
    mode = run.FULL
    split = run.sel.split(10, 1, draws_reported=1_000_000, draws_tuning=2_000_000)
    s, d = split.tuning_seeds[0], split.tuning_draws

    def fill(lam, best):
        for lr, r in ((1e-4, best - 0.02), (3e-4, best), (1e-3, best - 0.05)):
            _fake(tmp_path, run.Cell(run.SAA, lam, lr, s, d), r, 0.95)

    for lam, best in ((0.02, 0.20), (0.05, 0.22), (0.1, 0.24)):
        fill(lam, best)
    with pytest.raises(run.Missing) as e:
        run.tune_method(run.SAA, tmp_path, mode, split, floor=0.79)
    assert e.value.cells and all(c.lam == 0.2 and c.lr in mode.grid and c.draws == d
                                 for c in e.value.cells)
    fill(0.2, 0.26)
    with pytest.raises(run.Missing) as e:
        run.tune_method(run.SAA, tmp_path, mode, split, floor=0.79)
    assert {c.lam for c in e.value.cells} == {0.4}
    fill(0.4, 0.21)
    t = run.tune_method(run.SAA, tmp_path, mode, split, floor=0.79)
    assert t["lam"].pick == 0.2 and not t["lam"].edge and t["lam"].widened == 2
    assert t["lr"].pick == 3e-4 and set(t["lr_by_lam"]) == {0.02, 0.05, 0.1, 0.2, 0.4}
    # a λ whose every lr breaks the gold floor has no pick and cannot win
    for lr in mode.grid:
        _fake(tmp_path, run.Cell(run.SAA_LATE, 0.02, lr, s, d), 0.5, 0.1)
    for lam, best in ((0.05, 0.22), (0.1, 0.20)):
        for lr, r in ((1e-4, best - 0.02), (3e-4, best), (1e-3, best - 0.05)):
            _fake(tmp_path, run.Cell(run.SAA_LATE, lam, lr, s, d), r, 0.95)
    t = run.tune_method(run.SAA_LATE, tmp_path, mode, split, floor=0.79)
    assert t["lam"].pick == 0.05 and not t["lam"].edge


def test_large_lambda_is_tuned_on_the_mean_of_two_tuning_seeds(tmp_path):
    """In full mode the λ ≥ 0.2 cells of the Score as Action arms need both tuning seeds and
    are scored by their mean; λ < 0.2 and the arms without λ use the first tuning seed only.
    A λ that wins on the first seed but loses on the mean is not picked."""
    run = _run()
    mode = run.FULL
    split = run.sel.split(10, mode.tuning_seeds, draws_reported=1_000_000,
                          draws_tuning=2_000_000)
    s0, s1 = split.tuning_seeds
    d = split.tuning_draws
    init = run.initial_tuning_cells(mode, split, ["LOOP", run.SAA])
    assert {c.seed for c in init} == {s0}  # λ ≤ 0.1 and the lr-only arms: one seed
    assert run.tuning_seeds_for(run.SAA_LATE, 0.2, mode, split) == (s0, s1)
    assert run.tuning_seeds_for(run.SAA, 0.1, mode, split) == (s0,)
    assert run.tuning_seeds_for("LOOP", None, mode, split) == (s0,)
    for lam, best in ((0.02, 0.20), (0.05, 0.22), (0.1, 0.24)):
        for lr, r in ((1e-4, best - 0.02), (3e-4, best), (1e-3, best - 0.05)):
            _fake(tmp_path, run.Cell(run.SAA, lam, lr, s0, d), r, 0.95)
    with pytest.raises(run.Missing) as e:
        run.tune_method(run.SAA, tmp_path, mode, split, floor=0.79)
    assert {(c.lam, c.seed) for c in e.value.cells} == {(0.2, s0), (0.2, s1)}
    # λ = 0.2: 0.30 and 0.20 on the two seeds (mean 0.25 > 0.24): the new top edge
    for lr, r in ((1e-4, 0.22), (3e-4, 0.30), (1e-3, 0.15)):
        _fake(tmp_path, run.Cell(run.SAA, 0.2, lr, s0, d), r, 0.95)
        _fake(tmp_path, run.Cell(run.SAA, 0.2, lr, s1, d), r - 0.10, 0.95)
    with pytest.raises(run.Missing) as e:
        run.tune_method(run.SAA, tmp_path, mode, split, floor=0.79)
    assert {(c.lam, c.seed) for c in e.value.cells} == {(0.4, s0), (0.4, s1)}
    # λ = 0.4: better on the first seed (0.35), collapsed on the second (0.05): mean 0.20
    for lr in mode.grid:
        _fake(tmp_path, run.Cell(run.SAA, 0.4, lr, s0, d), 0.35 if lr == 3e-4 else 0.1,
                   0.95)
        _fake(tmp_path, run.Cell(run.SAA, 0.4, lr, s1, d), 0.05, 0.95)
    t = run.tune_method(run.SAA, tmp_path, mode, split, floor=0.79)
    assert t["lam"].pick == 0.2 and not t["lam"].edge and t["lr"].pick == 3e-4
    sc = t["lam"].scores
    assert sc[0.2]["reward"] == pytest.approx(0.25) and sc[0.4]["reward"] == pytest.approx(0.20)
    assert [x["seed"] for x in sc[0.4]["per_seed"]] == [s0, s1]
    assert [x["reward"] for x in sc[0.4]["per_seed"]] == pytest.approx([0.35, 0.05])
    assert len(sc[0.1]["per_seed"]) == 1


@pytest.mark.slow
def test_flow_rl_quick(tmp_path):
    run = _run()
    assert run.main(["--quick", "--results", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "quick" / "results.json").read_text())
    mode = run.QUICK
    assert res["status"] == "complete"
    rec = res["selection"]
    assert set(rec["chosen"]) == set(mode.methods) and rec["correction"].startswith("Holm")
    for ch in rec["chosen"].values():  # one-step grids, no widening: every pick is an edge
        assert ch["pick"] in ch["grid"] and ch["edge"] is True
    assert rec["any_edge"] is True
    assert not set(rec["split"]["tuning_seeds"]) & set(rec["split"]["reported_seeds"])
    assert set(res["lr_by_lam"][run.SAA]) == {f"{x:g}" for x in mode.lams}
    cells = sorted((tmp_path / "cells" / "quick").glob("*.json"))
    data = [json.loads(c.read_text()) for c in cells]
    tuning = [c for c in data if c["seed"] in rec["split"]["tuning_seeds"]]
    assert len(tuning) == len(mode.grid) * (1 + len(mode.lams))
    assert all(c["draws"] == rec["split"]["tuning_draws"] for c in tuning)
    reported = [c for c in data if c["seed"] in rec["split"]["reported_seeds"]]
    assert len(reported) == mode.seeds * len(mode.methods)
    for c in reported:
        assert c["draws"] == rec["split"]["reported_draws"]
        assert [e["epoch"] for e in c["evals"]] == [0, 1]
        assert c["evals"][1]["queries"] == mode.p * mode.k  # P·K rollouts of one epoch
        ep = c["epochs"][0]
        assert ep["cost/model_evals_grad"] > 0 and ep["mem/peak_gb"] > 0
        assert c["mem_peak_gb"] >= c["rss_start_gb"] > 0
        # on-policy: one minibatch per epoch, so nothing is clipped and no later minibatch
        assert ep["clip/frac_mb0"] == 0.0 and "clip/frac_later" not in ep
    # paired design: the reported seeds of every arm start from the same base evaluation
    # (Score as Action's flow has t_max < 1, so its epoch-0 row differs slightly)
    for seed in rec["split"]["reported_seeds"]:
        r0 = {c["method"]: c["evals"][0]["eval/reward"] for c in reported if c["seed"] == seed}
        assert r0["Flow-GRPO"] == pytest.approx(r0[run.SAA], abs=5e-3)
    an = res["analysis"]
    assert set(an["claims"]) == set(an["holm"])
    assert f"{run.SAA} − Flow-GRPO: eval reward" in an["claims"]
    for name, h in an["holm"].items():
        p = an["claims"][name]["paired"]["p"]
        assert math.isnan(p) or h["p_holm"] >= p  # Holm never lowers a p-value
    table = (tmp_path / "quick" / "table.md").read_text()
    assert "Holm" in table and "(edge)" in table and "peak memory GB" in table
    assert (tmp_path / "quick" / "per_seed.csv").read_text().splitlines()[1].startswith(
        "Flow-GRPO,")
    assert (tmp_path / "quick" / "figures" / "reward_vs_cpu.png").is_file()
    mtimes = [c.stat().st_mtime_ns for c in cells]
    assert run.main(["--quick", "--results", str(tmp_path), "--no-new-cells"]) == 0
    assert run.main(["--quick", "--results", str(tmp_path)]) == 0
    assert [c.stat().st_mtime_ns for c in cells] == mtimes  # cached: nothing recomputed
