"""experiments/rpo_vs_reward_pairs at --quick size (in-process: the suite has the imports):
both arms from the same prompts, the same number of pairs, a curve of evaluations over training
steps per arm and seed, the lr chosen on tuning seeds and tuning draws (never reported) with the
FD floor and edge widening, the paired claims with Holm, the independent judge, a resumed run
recomputes nothing; an option of the RPO arm is tuned on its own and a cell at a stale lr is
rerun."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location(
        "rpo_vs_reward_pairs_run", ROOT / "experiments/rpo_vs_reward_pairs/run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_rpo_experiment_quick_curves(tmp_path, exp):
    argv = ["--quick", "--out", str(tmp_path), "--work", str(tmp_path / "w")]
    exp.main(argv)
    cells = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "cells").glob("*.json")}
    summary = json.loads((tmp_path / "results_quick.json").read_text())
    chosen = summary["selection"]["chosen"]
    tune = {n: c for n, c in cells.items() if "-tune-" in n}
    # base evaluation + every tuned lr × tuning seed × arm + 2 seeds × 2 arms (default only)
    n_tune = sum(len(chosen[a]["grid"]) for a in exp.ARMS) * len(exp.QUICK["tuning_seeds"])
    assert len(tune) == n_tune and len(cells) == 1 + n_tune + 2 * 2
    assert all(c["draws"] == "tuning" and c["seed"] in exp.QUICK["tuning_seeds"]
               for c in tune.values())
    base = cells["quick-g1-base"]
    assert base["tuning"]["eval/fd"] != base["eval/fd"]  # two different evaluation draws
    steps = list(range(1, exp.QUICK["steps"] + 1, exp.QUICK["eval_every"]))
    for seed in (0, 1):
        rpo = cells[f"quick-g1-default-s{seed}-rpo"]
        rw = cells[f"quick-g1-default-s{seed}-reward"]
        assert rpo["draws"] == rw["draws"] == "reported"
        assert rpo["build"]["pairs"] == rw["build"]["pairs"] >= 2  # same prompts, same count
        assert [p["step"] for p in rpo["points"]] == steps
        assert rpo["points"][-1]["eval/fd"] != base["eval/fd"]  # training moved the model
        assert 0 <= rpo["points"][-1]["indep/accuracy"] <= 1
        assert rpo["lr"] == chosen["rpo"]["pick"] and rw["lr"] == chosen["reward"]["pick"]
    prompts = [[json.loads(line)["prompt"] for line in
                (tmp_path / f"w/quick-g1/pairs_{arm}_s0_same/pairs.jsonl")
                .read_text().splitlines()] for arm in ("rpo", "reward")]
    assert prompts[0] == prompts[1]
    floor = -exp.FD_LIMIT * base["tuning"]["eval/fd"]
    for arm in exp.ARMS:  # the rule, recomputed from the tuning cells
        by_lr = {}
        for c in tune.values():
            if c["arm"] == arm:
                by_lr.setdefault(c["lr"], []).append(c)
        scores = {lr: exp.selection_score(cs) for lr, cs in by_lr.items()}
        assert chosen[arm]["pick"] == exp.sel.select(
            {float(k): scores[float(k)] for k in chosen[arm]["scores"]}, floor)
        grid = sorted(chosen[arm]["grid"])
        assert chosen[arm]["edge"] == (chosen[arm]["pick"] in (grid[0], grid[-1]))
    v = summary["variants"]["default"]
    assert v["compared_with"] == "default/reward" and v["seeds"] == [0, 1]
    assert len(v["claims"]) == len(exp.CLAIMS)
    for c in v["claims"].values():
        assert c["paired"]["n"] == 2 and c["paired"]["p"] <= c["holm"]["p_holm"] <= 1
    name = f"RPO − reward: independent-judge accuracy, step {exp.QUICK['steps']}"
    d = [cells[f"quick-g1-default-s{s}-rpo"]["points"][-1]["indep/accuracy"]
         - cells[f"quick-g1-default-s{s}-reward"]["points"][-1]["indep/accuracy"]
         for s in (0, 1)]
    assert v["claims"][name]["paired"]["diff"] == pytest.approx(sum(d) / 2)
    assert set(v["collapse"]) == {"rpo", "reward"}
    assert (tmp_path / "table_quick.md").is_file() and (tmp_path / "frontier_quick.png").is_file()
    # a second run finds every cell cached and only re-tabulates
    stamp = {n: (tmp_path / "cells" / f"{n}.json").stat().st_mtime_ns for n in cells}
    exp.main(argv)
    assert stamp == {n: (tmp_path / "cells" / f"{n}.json").stat().st_mtime_ns for n in cells}
    # an option of the RPO arm gets its own lr selection (same rule, its own tuning cells) and
    # its reported seeds run at that pick, against the default RPO arm of the same seeds
    exp.main(argv + ["--variants", "sft"])
    summary = json.loads((tmp_path / "results_quick.json").read_text())
    mine = summary["selection"]["chosen"]["rpo/sft"]
    opt_tune = [json.loads(p.read_text()) for p in (tmp_path / "cells").glob("quick-g1-tune-sft-*")]
    assert sorted(c["lr"] for c in opt_tune) == sorted(mine["grid"])
    assert all(c["variant"] == "sft" and c["draws"] == "tuning" for c in opt_tune)
    by_lr = {c["lr"]: exp.selection_score([c]) for c in opt_tune}
    first = sorted(exp.QUICK["lrs"])  # scored first (ties go to them), then the widened values
    order = first + [lr for lr in by_lr if lr not in first]
    assert mine["pick"] == exp.sel.select({lr: by_lr[lr] for lr in order}, floor)
    assert summary["variants"]["sft"]["lr"] == {"rpo": mine["pick"]}
    assert summary["variants"]["sft"]["compared_with"] == "default/rpo"
    # a reported cell cached at another lr is rerun at the pick, not tabulated
    path = tmp_path / "cells" / "quick-g1-sft-s0-rpo.json"
    stale = json.loads(path.read_text())
    assert stale["lr"] == mine["pick"]
    stale["lr"] = mine["pick"] * 7
    path.write_text(json.dumps(stale))
    with pytest.raises(SystemExit, match="not at the chosen lr"):
        exp.main(argv + ["--variants", "sft", "--summary-only"])
    exp.main(argv + ["--variants", "sft"])
    assert json.loads(path.read_text())["lr"] == mine["pick"]


def test_selection_score_and_independent_judge(exp):
    def c(acc, fd, indep):
        return {"points": [{"eval/accuracy": acc, "eval/fd": fd, "indep/accuracy": indep}]}

    s = exp.selection_score([c(0.9, 30.0, 0.8), c(0.7, 50.0, 0.6)])
    assert s == pytest.approx({"reward": 0.8, "gold": -40.0, "fd": 40.0, "indep": 0.7})
    # the FD floor of the rule: the most accurate lr breaks it, the next one is chosen
    scores = {1e-6: exp.selection_score([c(0.90, 30.0, 0.9)]),
              1e-5: exp.selection_score([c(0.95, 40.0, 0.9)]),
              1e-4: exp.selection_score([c(0.99, 80.0, 0.9)])}
    assert exp.sel.select(scores, gold_floor=-exp.FD_LIMIT * 30.0) == 1e-5
    judge = exp.independent_judge(8)
    assert judge.heldout_accuracy > 0.9  # trained on the test split, scored on the train split
    from scorealign.data.digits import load_digits

    train = load_digits("train", size=8)
    assert judge.accuracy(train.images[:200], train.labels[:200]) > 0.9
    assert judge.accuracy(train.images[:200], (train.labels[:200] + 1) % 10) < 0.1
