"""experiments/rainbowpo_ablation: the leave-one-out variants remove exactly one component of the
recipe (the no-LN variant keeps the logit shift), the claims and the collapse column on hand-made
cells, and the --quick run end to end (tuning seeds disjoint, edge flags, Holm)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiment_modules import load


def _run():
    return load("rainbowpo_ablation_run", "rainbowpo_ablation/run.py")


def test_leave_one_out_variants_drop_one_component():
    rb = _run()
    loss, full = rb.VARIANTS[rb.RECIPE]
    assert loss == "rainbowpo" and full["length_normalization"] and full["mixing"]
    assert full["contextual_scaling"] and full["dispersion_scale"] == "auto"
    no_cs = rb.VARIANTS["RainbowPO − CS"][1]
    assert no_cs == {k: v for k, v in full.items()
                     if k not in ("contextual_scaling", "dispersion_scale")}
    no_mix = rb.VARIANTS["RainbowPO − mixing"][1]
    assert no_mix == {k: v for k, v in full.items()
                      if k not in ("mixing", "mixing_alpha", "margin")}
    no_ln = rb.VARIANTS["RainbowPO − LN"][1]
    assert not no_ln.get("length_normalization", False)
    assert {k for k in full if full[k] != no_ln.get(k)} == {"length_normalization", "beta",
                                                             "margin"}
    # the margin's logit shift β(1 − α)γ is the recipe's
    shift = lambda p: p["beta"] * (1 - p["mixing_alpha"]) * p["margin"]  # noqa: E731
    assert shift(no_ln) == pytest.approx(shift(full))
    # every claim compares two variants that exist
    for _, a, b in rb.CLAIMS:
        assert a in rb.VARIANTS and b in rb.VARIANTS


def _cell(name: str, seed: int, win: float, reward: float, sft: float = -1.2) -> dict:
    return {"variant": name, "seed": seed, "end_win_rate": win, "end_reward_mean": reward,
            "end_sft_reward_mean": sft, "train_accuracy": 0.7, "cpu_s": 6.0, "peak_rss_mb": 500.0}


def test_claims_and_collapse_on_hand_made_cells():
    rb = _run()
    rng = np.random.default_rng(1)
    seeds = range(10)
    base = {s: 0.6 + 0.05 * rng.normal() for s in seeds}  # a seed effect shared by the variants
    effect = {nm: 0.0 for nm in rb.VARIANTS}
    effect["RainbowPO − LN"] = -0.05  # so LN's effect is +0.05
    per = {nm: {s: _cell(nm, s, base[s] + effect[nm] + 0.002 * rng.normal(), 0.0)
                for s in seeds} for nm in rb.VARIANTS}
    per["RainbowPO"][3] = _cell("RainbowPO", 3, per["RainbowPO"][3]["end_win_rate"], -2.5)
    per["RainbowPO"][4] = _cell("RainbowPO", 4, per["RainbowPO"][4]["end_win_rate"],
                                float("nan"))
    an = rb.analyse(per)
    assert an["rows"]["RainbowPO"]["collapse_rate"] == pytest.approx(0.2)  # −2.5 < −1.2 − 1; NaN
    assert an["rows"]["DPO"]["collapse_rate"] == 0.0
    ln = "length normalization: RainbowPO − (RainbowPO − LN)"
    assert an["claims"][ln]["paired"]["diff"] == pytest.approx(0.05, abs=0.003)
    assert an["holm"][ln]["reject"]
    assert not an["holm"]["RainbowPO − DPO"]["reject"]
    # the seed effect cancels in the pairing, not in Welch
    assert an["claims"][ln]["paired"]["half"] < an["claims"][ln]["welch"]["half"] / 5
    assert set(an["holm"]) == {c for c, _, _ in rb.CLAIMS}


@pytest.mark.slow
def test_rainbowpo_ablation_quick_run(tmp_path):
    rb = _run()
    assert rb.main(["--quick", "--out", str(tmp_path), "--work", str(tmp_path / "w")]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "complete"
    sel = res["selection"]
    assert not set(sel["split"]["tuning_seeds"]) & set(sel["split"]["reported_seeds"])
    assert set(sel["chosen"]) == set(rb.VARIANTS)
    for ch in sel["chosen"].values():
        assert ch["pick"] in ch["grid"] and isinstance(ch["edge"], bool)
        assert len(ch["scores"]) == len(ch["grid"]) >= 3
    rows = res["analysis"]["rows"]
    assert all(r["seeds"] == 2 and 0.0 <= r["collapse_rate"] <= 1.0 for r in rows.values())
    assert set(res["analysis"]["holm"]) == {c for c, _, _ in rb.CLAIMS}
    cells = [json.loads(p.read_text()) for p in (tmp_path / "cells").glob("*.json")]
    assert all(c["cpu_s"] >= 0 and c["peak_rss_mb"] > 0 for c in cells)
    auto = [c for c in cells if c["variant"] == "Mallows-θ (λ auto)"]
    assert auto and all(c["dispersion_scale"] > 0 for c in auto)
    # one SFT per seed: only the first cell of a seed (or a racing twin) trained it
    assert sum(c["sft_in_cell"] for c in cells) <= 2 * len({c["seed"] for c in cells})
    text = (tmp_path / "table.md").read_text()
    assert "collapse rate" in text and "supported at FWER 0.05" in text
