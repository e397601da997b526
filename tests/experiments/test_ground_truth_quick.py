"""experiments/ground_truth --quick end to end: cached cells, the selection record, paired seeds,
the claims with Holm, the table and figures; and the analysis helpers on hand-made curves."""

from __future__ import annotations

import json
import math

import pytest

from experiment_modules import load


def _run():
    return load("ground_truth_run", "ground_truth/run.py", rerun=True)


def test_first_reach_interp_and_saturated_frontier():
    run = _run()
    assert run.first_reach([0, 10, 20], [-4.0, -2.0, 0.0], -1.0) == 15.0
    assert run.first_reach([0, 10], [-4.0, -3.0], -1.0) == math.inf
    assert run.interp([0.0, 1.0, 3.0], [0.0, 10.0, 20.0], 2.0) == 15.0
    assert math.isnan(run.interp([0.0, 1.0], [0.0, 1.0], 5.0))
    problem = run.make_problem("quadratic", 2, 0.5)
    # at κ* the frontier is p*_β itself; beyond the frontier's end it saturates, below 0 it is
    # the base's reward
    assert run.r_star(problem, problem.kl()) == pytest.approx(problem.expected_reward(), abs=1e-9)
    assert run.r_star(problem, 1e3) == run.r_star(problem, 1e4) >= problem.expected_reward()
    assert run.r_star(problem, -1.0) == pytest.approx(problem.base_reward())


@pytest.mark.slow
def test_ground_truth_quick(tmp_path):
    run = _run()
    assert run.main(["--quick", "--results", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "quick" / "results.json").read_text())
    mode = run.QUICK
    assert res["status"].startswith("complete")
    chosen = res["selection"]["chosen"]
    assert set(chosen) == set(mode.arms)
    for arm, ch in chosen.items():  # the pick is recorded with its grid, scores and edge flag
        assert ch["pick"] in ch["grid"] and isinstance(ch["edge"], bool)
        assert len(ch["scores"]) == len(ch["grid"]) >= len(mode.grid)
    assert res["selection"]["correction"].startswith("Holm")
    split = res["selection"]["split"]
    assert not set(split["tuning_seeds"]) & set(split["reported_seeds"])
    cells = sorted((tmp_path / "cells" / "quick").glob("*.json"))
    # claim (b): every Score as Action (solver, steps) but the SaA arm's own has its own lr
    # selection, recorded like an arm's
    chosen_b = res["selection"]["claim_b"]
    assert set(chosen_b) == {f"SaA-{sv}{st}" for sv in run.SAA_SOLVERS
                             for st in mode.saa_steps} - {f"SaA-DDIM{mode.steps}"}
    for ch in chosen_b.values():  # a pick, or a finished selection where no lr passes the rule
        assert len(ch["scores"]) == len(ch["grid"])
        assert ch["pick"] in ch["grid"] or (ch["pick"] is None and
                                            ch["reason"] == "no value passes the selection rule")
        if ch["pick"] is None:
            assert all(v["gold"] < res["base_gold_tuning"] for v in ch["scores"].values())
    tuning = [c for c in cells if "__seed1000" in c.name]
    assert len(tuning) == sum(len(ch["grid"]) for ch in [*chosen.values(), *chosen_b.values()])
    reported = [json.loads(c.read_text()) for c in cells if "__seed1000" not in c.name]
    for c in reported:  # each claim (b) configuration at its own pick and at the SaA arm's
        if c["solver"] is not None:
            assert c["lr"] in (chosen_b[f"SaA-{c['solver']}{c['steps']}"]["pick"],
                               chosen["SaA"]["pick"])
    # paired design: every arm on the same reported seeds and draws; the evaluation at epoch 0
    # (control exactly zero: the base itself) is identical across arms, with KL 0
    row0 = {(c["arm"], c["solver"], c["steps"], c["seed"]): c["rows"][0] for c in reported}
    for seed in split["reported_seeds"]:
        r0 = {k: v["reward"] for k, v in row0.items() if k[3] == seed}
        assert len(r0) == len(mode.arms) + 3 * len(mode.saa_steps) - 1
        assert len(set(r0.values())) == 1
    assert all(v["kl"] == 0.0 for v in row0.values())
    assert all(c["draws"] == split["reported_draws"] for c in reported)
    last = reported[0]["rows"][-1]
    assert last["queries"] == mode.epochs * mode.p * mode.k and last["grad_evals"] > 0
    claims, holm = res["analysis"]["claims"], res["analysis"]["holm"]
    assert set(claims) == set(holm) and any(k.startswith("(b") for k in claims)
    if all(ch["pick"] is not None for ch in chosen_b.values()):
        assert any(k.startswith("(b)") for k in claims)
    for name, h in holm.items():
        p = claims[name]["paired"]["p"]
        assert math.isnan(p) or h["p_holm"] >= p  # Holm never lowers a p-value
    table = (tmp_path / "quick" / "table.md").read_text()
    assert "Holm" in table and "(edge?)" in table and "Score as Action" in table
    assert (tmp_path / "quick" / "figures" / "frontier.png").stat().st_size > 1000
    assert (tmp_path / "quick" / "figures" / "reward_vs_queries.png").is_file()
    mtimes = [c.stat().st_mtime_ns for c in cells]
    assert run.main(["--quick", "--results", str(tmp_path), "--no-new-cells"]) == 0
    assert [c.stat().st_mtime_ns for c in cells] == mtimes  # cached: nothing recomputed
