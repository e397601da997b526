"""experiments/mallows_bandit: the coupled Mallows sampler has the Mallows law, the worlds of one
seed share their random numbers (only φ differs), the φ arm uses the generating dispersion, the
stacked-β training equals separate runs, the claims (difference-in-differences against the
control world, Holm) on hand-made cells, and the --quick run end to end."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from experiment_modules import load


def _run():
    return load("mallows_bandit_run", "mallows_bandit/run.py")


def _kendall(perm: list[int]) -> int:
    return sum(1 for i, j in itertools.combinations(range(len(perm)), 2) if perm[i] > perm[j])


def test_mallows_from_uniforms_has_the_mallows_law():
    mb = _run()
    k, c, n = 3, 0.7, 40_000
    g = torch.Generator().manual_seed(0)
    u = torch.rand(n, k, generator=g, dtype=torch.float64).tolist()
    counts: dict[tuple, int] = {}
    for row in u:
        key = tuple(mb.mallows_from_uniforms(k, c, row))
        counts[key] = counts.get(key, 0) + 1
    perms = list(itertools.permutations(range(k)))
    w = {p: math.exp(-c * _kendall(list(p))) for p in perms}
    z = sum(w.values())
    for p in perms:  # 4 standard errors of a frequency at n = 40 000 is ≤ 0.01
        assert counts.get(p, 0) / n == pytest.approx(w[p] / z, abs=0.01), p
    # c = 0 is uniform; a large c returns the centre; u → 0 puts every item first (reversal)
    assert mb.mallows_from_uniforms(4, 50.0, [0.5] * 4) == [0, 1, 2, 3]
    assert mb.mallows_from_uniforms(4, 0.0, [0.0] * 4) == [3, 2, 1, 0]


def test_worlds_of_one_seed_differ_only_in_phi():
    mb = _run()
    worlds = {k: mb.make_world(k, 6, 5, 8, seed=3) for k in mb.WORLDS}
    h = worlds["homogeneous"]
    for kind, w in worlds.items():
        torch.testing.assert_close(w["reward"], h["reward"])  # same central rankings
        torch.testing.assert_close(w["x"], h["x"])
        pair = torch.stack([torch.minimum(w["w"], w["l"]), torch.maximum(w["w"], w["l"])])
        pair_h = torch.stack([torch.minimum(h["w"], h["l"]), torch.maximum(h["w"], h["l"])])
        torch.testing.assert_close(pair, pair_h)  # the same arms compared
    # the labels follow φ: with the concentrated prompts of two_group the central order wins more
    assert not torch.equal(worlds["graded"]["w"], h["w"])
    other = mb.make_world("homogeneous", 6, 5, 8, seed=4)
    assert not torch.equal(other["reward"], h["reward"])


def test_bandit_phi_arm_uses_the_generating_dispersion():
    mb = _run()
    world = mb.make_world("graded", 6, 4, 5, seed=0)
    c = mb.dispersions(world)
    torch.testing.assert_close(c["mallows_phi[true]"], -world["phi"].log())  # not rescaled
    assert math.isclose(float(c["mallows_theta[true]"].mean()), 1.0, rel_tol=1e-12)
    assert math.isclose(float(c["mallows_theta[entropy]"].mean()), 1.0, rel_tol=1e-9)
    homo = mb.dispersions(mb.make_world("homogeneous", 6, 4, 5, seed=0))
    torch.testing.assert_close(homo["mallows_theta[true]"], torch.ones(6, dtype=torch.float64))


def test_bandit_beta_stack_equals_separate_runs():
    mb = _run()
    world = mb.make_world("two_group", 4, 4, 6, seed=1)
    c = mb.dispersions(world)["mallows_phi[true]"]
    both = mb.train_policies(world, "mallows_phi[true]", [0.5, 2.0], c, 20, 0.5)
    one = mb.train_policies(world, "mallows_phi[true]", [2.0], c, 20, 0.5)
    torch.testing.assert_close(both[1], one[0])


def _flat(r: float) -> dict:
    """A cell whose frontier is flat at reward r over KL ∈ [0, 1]."""
    return {"points": [{"kl": 0.0, "reward": r, "reward_concentrated": r,
                        "reward_dispersed": r},
                       {"kl": 1.0, "reward": r, "reward_concentrated": r,
                        "reward_dispersed": r}], "cpu_s": 0.1}


def test_claims_are_differences_in_differences_against_the_control():
    mb = _run()
    rng = np.random.default_rng(0)
    n = 12
    base = {k: rng.normal(0.6, 0.02, n) for k in mb.WORLDS}  # DPO per world and seed
    gain = {"homogeneous": 0.003, "two_group": 0.003, "graded": 0.010}  # m − DPO, no noise
    per = {k: {"dpo": [_flat(v) for v in base[k]]} for k in mb.WORLDS}
    for k in mb.WORLDS:
        for m in mb.METHODS[1:]:
            per[k][m] = [_flat(v + gain[k] + 1e-4 * rng.normal()) for v in base[k]]
    an = mb.analyse(per, [0.25, 0.5], list(mb.WORLDS))
    m = "mallows_phi[true]"
    did_g = an["claims"][f"DiD {m}: (graded − DPO) − (homogeneous − DPO)"]["paired"]
    did_t = an["claims"][f"DiD {m}: (two_group − DPO) − (homogeneous − DPO)"]["paired"]
    delta_h = an["claims"][f"Δ {m} − DPO in homogeneous"]["paired"]
    assert did_g["diff"] == pytest.approx(0.007, abs=2e-4) and did_g["n"] == n
    assert did_t["diff"] == pytest.approx(0.0, abs=2e-4)
    assert delta_h["diff"] == pytest.approx(0.003, abs=2e-4)
    # the control's own "gain" is real (Δ supported) but the two-group DiD is not; graded's is
    assert an["holm"][f"Δ {m} − DPO in homogeneous"]["reject"]
    assert not an["holm"][f"DiD {m}: (two_group − DPO) − (homogeneous − DPO)"]["reject"]
    assert an["holm"][f"DiD {m}: (graded − DPO) − (homogeneous − DPO)"]["reject"]
    # 4 methods × (2 DiD + 3 Δ) claims, all in one Holm family
    assert len(an["claims"]) == len(an["holm"]) == 4 * 5
    # paired beats Welch here: the seed-to-seed spread of DPO cancels in the pairing
    w = an["claims"][f"Δ {m} − DPO in homogeneous"]["welch"]
    assert delta_h["half"] < w["half"]


@pytest.mark.slow
def test_mallows_bandit_quick_run(tmp_path):
    mb = _run()
    assert mb.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "summary.json").read_text())
    sel = res["selection"]
    split = sel["split"]
    assert not set(split["tuning_seeds"]) & set(split["reported_seeds"])
    assert len(sel["chosen"]) == len(mb.WORLDS) * len(mb.METHODS)
    n_tuning = 0
    for ch in sel["chosen"].values():
        assert ch["pick"] in ch["grid"] and isinstance(ch["edge"], bool)
        n_tuning += len(ch["grid"]) * len(split["tuning_seeds"])
    cells = list((tmp_path / "cells").glob("*.json"))
    reported = [c for c in cells if "-s1000-" not in c.name]
    assert len(reported) == len(mb.WORLDS) * len(mb.METHODS) * len(split["reported_seeds"])
    # in the control Mallows-θ(true) has c ≡ 1, so it is DPO: the same tuning scores, the same
    # pick, the same reported runs, a Δ of exactly 0
    ctrl = res["analysis"]["claims"]["Δ mallows_theta[true] − DPO in homogeneous"]["paired"]
    assert ctrl["diff"] == 0.0
    assert res["analysis"]["holm"].keys() == res["analysis"]["claims"].keys()
    assert all("cpu_s" in json.loads(c.read_text()) for c in cells)
    text = (tmp_path / "table.md").read_text()
    assert "supported at FWER 0.05" in text and ("(interior)" in text or "(edge)" in text)
    assert (tmp_path / "frontier.png").is_file()
