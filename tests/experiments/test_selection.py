"""experiments/_selection.py on synthetic data: the split, the gold floor, edge widening, Holm
against a hand-worked example, paired vs Welch intervals, the collapse rule, the record."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from experiment_modules import load


sel = load("_selection", "_selection.py", rerun=True)


def test_split_keeps_tuning_and_reported_disjoint():
    s = sel.split(20, 2)
    assert s.reported_seeds == tuple(range(20)) and s.tuning_seeds == (1000, 1001)
    assert not set(s.reported_seeds) & set(s.tuning_seeds)
    assert s.tuning_draws != s.reported_draws
    with pytest.raises(ValueError, match="overlap"):
        sel.split(20, 2, tuning_offset=10)
    with pytest.raises(ValueError, match="different seeds"):
        sel.split(3, 1, draws_reported=5, draws_tuning=5)


def test_gold_floor_excludes_the_best_reward_below_it():
    scores = {1e-3: {"reward": 0.5, "gold": 0.9}, 3e-3: {"reward": 0.8, "gold": 0.7},
              1e-2: {"reward": 0.9, "gold": 0.2}, 3e-2: {"reward": float("nan"), "gold": 1.0}}
    assert sel.select(scores) == 1e-2  # reward alone: the run that traded most gold
    assert sel.select(scores, gold_floor=0.5) == 3e-3
    assert sel.select(scores, gold_floor=0.8) == 1e-3
    assert sel.select(scores, gold_floor=2.0) is None  # nothing eligible
    # the frontier: 1e-2 (best reward), 3e-3, 1e-3 are not dominated; NaN is left out
    assert sel.pareto_frontier(scores) == [1e-2, 3e-3, 1e-3]
    scores[2e-3] = {"reward": 0.4, "gold": 0.6}  # dominated by 1e-3 and 3e-3
    assert 2e-3 not in sel.pareto_frontier(scores)
    assert "gold ≥ 0.5" in sel.selection_rule(0.5)


def test_edge_side_and_widen():
    assert sel.edge_side([1e-3, 3e-3, 1e-2], 1e-3) == "low"
    assert sel.edge_side([1e-3, 3e-3, 1e-2], 1e-2) == "high"
    assert sel.edge_side([1e-3, 3e-3, 1e-2], 3e-3) is None
    assert sel.widen([1e-3, 3e-3, 1e-2], "high") == pytest.approx([1e-3, 3e-3, 1e-2, 1e-2 / 0.3])
    assert sel.widen([1e-3, 3e-3, 1e-2], "low") == pytest.approx([1e-3 / 3, 1e-3, 3e-3, 1e-2])
    assert sel.widen([0.1, 0.2], "high", geometric=False) == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        sel.widen([0.0, 1.0], "low")


@pytest.mark.parametrize("optimum, side", [(0.03, "high"), (2e-5, "low")])
def test_tune_grid_widens_until_the_pick_is_interior(optimum, side):
    """Score concave in log lr with its peak outside the first grid: the driver walks outward,
    one geometric step at a time, and stops with the grid value nearest the peak interior."""
    calls = []

    def score(lr):
        calls.append(lr)
        return {"reward": -(math.log(lr) - math.log(optimum)) ** 2}

    t = sel.tune_grid([1e-4, 3e-4, 1e-3], score, max_widen=10)
    assert not t.edge and t.reason == "interior"
    assert sel.edge_side(t.grid, t.pick) is None
    assert t.pick == min(t.grid, key=lambda v: abs(math.log(v) - math.log(optimum)))
    assert len(calls) == len(set(calls)) == len(t.grid)  # each value scored once
    assert t.widened == len(t.grid) - 3
    assert (t.grid[-1] > 1e-3) if side == "high" else (t.grid[0] < 1e-4)
    # the cap: one widening is not enough for either peak, so the pick stays at an edge
    capped = sel.tune_grid([1e-4, 3e-4, 1e-3], score, max_widen=1)
    assert capped.edge and capped.widened == 1 and "cap" in capped.reason
    assert sel.edge_side(capped.grid, capped.pick) == side
    # a limit stops the widening too (and says so)
    lim = sel.tune_grid([1e-4, 3e-4, 1e-3], score, limits=(1e-4, 1e-3))
    assert lim.edge and lim.widened == 0 and "limit" in lim.reason


def test_tune_grid_respects_the_gold_floor():
    """Reward grows with lr but gold falls: with a floor the pick is the largest lr whose gold
    passes; that pick is interior on the first grid, so nothing widens."""
    def score(lr):
        return {"reward": math.log(lr), "gold": -lr * 1000}

    t = sel.tune_grid([1e-4, 3e-4, 1e-3, 3e-3], score, gold_floor=-0.5)
    assert t.pick == 3e-4 and not t.edge and t.widened == 0
    free = sel.tune_grid([1e-4, 3e-4, 1e-3, 3e-3], score, max_widen=2)
    assert free.edge and free.pick == max(free.grid)  # reward alone runs off the grid
    none = sel.tune_grid([1e-4, 3e-4], score, gold_floor=10.0)
    assert none.pick is None and none.edge


def test_holm_against_a_hand_worked_example():
    """m = 4: sorted p = D .005, A .01, C .03, B .04 → ×4, ×3, ×2, ×1 = .02, .03, .06, .04;
    running max: .02, .03, .06, .06. At α = .05: D and A rejected, C and B not (B's own .04
    would pass Bonferroni-free but Holm stops at C)."""
    out = sel.holm({"A": 0.01, "B": 0.04, "C": 0.03, "D": 0.005})
    assert {k: round(v["p_holm"], 12) for k, v in out.items()} == \
        {"A": 0.03, "B": 0.06, "C": 0.06, "D": 0.02}
    assert [k for k, v in out.items() if v["reject"]] == ["D", "A"]
    nan = sel.holm({"x": 0.001, "y": float("nan")})  # NaN counts in m, never rejected
    assert nan["x"]["p_holm"] == pytest.approx(0.002) and not nan["y"]["reject"]
    assert sel.holm({"z": 0.6, "w": 0.7})["w"]["p_holm"] == 1.0  # capped at 1 after the max


def test_paired_interval_closed_form_and_welch_against_scipy():
    a, b = [3.0, 4.0, 5.0, 6.0, 7.0], [2.0, 2.0, 2.0, 2.0, 2.0]
    p = sel.paired_interval(a, b)  # d = 1..5: mean 3, sd √2.5, t_{.975,4} = 2.7764
    assert p["diff"] == 3.0 and p["n"] == 5
    assert p["half"] == pytest.approx(stats.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5))
    assert p["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, 12), rng.normal(0.3, 2, 9)
    w = sel.welch_interval(x, y)
    ref = stats.ttest_ind(x, y, equal_var=False)
    assert w["p"] == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)
    assert (w["lo"], w["hi"]) == pytest.approx((lo, hi))
    with pytest.raises(ValueError, match="equal lengths"):
        sel.paired_interval([1.0, 2.0], [1.0])


def test_paired_design_with_shared_seed_variance():
    """Both arms share a large per-seed effect (sd 10); arm A is better by 0.5 (noise sd 0.1).
    The paired interval removes the seed effect and excludes 0; Welch's, which ignores the
    pairing, is dominated by the seed variance and includes 0."""
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 10, 20)
    a = seed_effect + 0.5 + rng.normal(0, 0.1, 20)
    b = seed_effect + rng.normal(0, 0.1, 20)
    p, w = sel.paired_interval(a, b), sel.welch_interval(a, b)
    assert p["lo"] > 0 and abs(p["diff"] - 0.5) < 0.1
    assert w["lo"] < 0 < w["hi"]
    assert p["diff"] == pytest.approx(w["diff"])  # same point estimate, different intervals
    # non-finite pairs are dropped from both sides of the pairing
    a[3] = np.nan
    assert sel.paired_interval(a, b)["n"] == 19


def test_collapse_rate():
    base, margin = -4.0, 0.5
    finals = [-1.0, float("nan"), -4.4, -4.6, float("inf") * -1]
    # −1.0 fine; NaN collapsed; −4.4 within the margin; −4.6 below base − margin; −inf collapsed
    assert sel.collapse_rate(finals, base, margin) == pytest.approx(3 / 5)
    assert math.isnan(sel.collapse_rate([], base, margin))
    assert "base reward − 0.5" in sel.collapse_rule(0.5)


def test_record_is_json_and_flags_edges(tmp_path):
    inner = sel.Tuned(3e-3, [1e-3, 3e-3, 1e-2], {1e-3: {"reward": 0.1}, 3e-3: {"reward": 0.3},
                                                  1e-2: {"reward": 0.2}})
    edge = sel.Tuned(1e-2, [1e-3, 1e-2], {1e-3: {"reward": 0.1}, 1e-2: {"reward": 0.2}},
                     edge=True, widened=3, reason="cap")
    rec = sel.record({"A": inner}, selection=sel.selection_rule(None),
                     split_=sel.split(5, 1))
    assert rec["any_edge"] is False and rec["chosen"]["A"]["scores"]["0.003"]["reward"] == 0.3
    rec = sel.record({"A": inner, "B": edge}, selection="x", collapse=sel.collapse_rule(1.0))
    assert rec["any_edge"] is True and rec["chosen"]["B"]["edge"] is True
    assert rec["correction"].startswith("Holm") and "paired" in rec["interval"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rec))
    assert json.loads(path.read_text())["chosen"]["B"]["reason"] == "cap"


def test_claims_table_rows():
    """The markdown claims table: Holm beside the claims or inside each, the sign flag kept on
    differences only, per-claim digits, a missing Welch interval and a relabelled row."""
    paired = {"n": 10, "diff": 0.01234, "half": 0.005, "p": 0.01234}
    welch = {"diff": 0.01234, "half": 0.0071}
    h = sel.holm({"a": 0.01234, "b": 0.5})
    claims = {"a": {"paired": paired, "welch": welch, "key": "fd"},
              "b": {"paired": {**paired, "diff": -2.0, "p": 0.5}, "welch": None, "key": "acc"}}
    lines = sel.claims_table(claims, h, "+.3f")
    assert lines[:2] == list(sel.CLAIMS_HEADER) and len(lines) == 4
    assert lines[2] == "| a | 10 | +0.012 ± 0.005 | 0.0123 | 0.0247 | +0.012 ± 0.007 | yes |"
    assert lines[3] == "| b | 10 | -2.000 ± 0.005 | 0.5 | 0.5 | — | no |"
    inside = {k: {**c, "holm": h[k]} for k, c in claims.items()}
    lines = sel.claims_table(inside, digits=lambda c: ".1f" if c["key"] == "fd" else ".4g",
                             half=".2g", label=lambda name, c: name.upper())
    assert lines[2] == "| A | 10 | 0.0 ± 0.005 | 0.0123 | 0.0247 | 0.0 ± 0.0071 | yes |"
    assert lines[3] == "| B | 10 | -2 ± 0.005 | 0.5 | 0.5 | — | no |"
