"""Where an epoch's time goes, and the floor the "skip the training forward" lever can reach.

For one setting of ``bench.py`` (default ``compute``), each side runs a warm-up epoch and then
``--epochs`` timed epochs (CPU time of the process, 1 thread) split into phases:

* TRL 0.23: ``_generate_samples`` (no-grad rollout, S steps) and ``_train_batched_samples``
  (a forward with grad and a backward at each of the S steps);
* scorealign, one arm of ``bench.ARMS`` (``--arm``, default ``lean``: the default mode at equal
  work): ``Policy.rollout`` and ``Finetuner.update`` (``fast`` on-policy: one backward through
  the kept step graphs, no training forward).

From TRL's phases: F = rollout / S (one step's forward), F + B = train / S, so B = train / S − F
(one step's backward). scorealign skips the training forward and trains S − 1 steps
(``action_steps: auto``); with kernels as fast as TRL's its epoch cannot go below
floor = (S·F + (S − 1)·B) / (S·F + S·(F + B)) of TRL's, whatever else it removes. With
``--profile`` one more epoch of each side runs under ``torch.profiler``: the share of its CPU
time in the attention kernels (forward and backward), its top operators, and the operators whose
CPU time differs most between the two sides (``profile_diff``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ddpo_vs_trl/breakdown.py [--setting compute]
        [--arm lean] [--epochs 2] [--profile]

Writes ``breakdown_<setting>.json`` beside this file.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402

PHASES = {"trl": {"rollout": "_generate_samples", "train": "_train_batched_samples"},
          "ours": {"rollout": "rollout", "train": "update"}}


def _timed(cls, name: str, acc: dict, key: str) -> None:
    f = getattr(cls, name)

    @functools.wraps(f)
    def g(*a, **k):
        t = time.process_time()
        try:
            return f(*a, **k)
        finally:
            acc[key] = acc.get(key, 0.0) + time.process_time() - t
    setattr(cls, name, g)


def worker(which: str, setting: str, epochs: int, profile: bool, arm: str = "lean") -> dict:
    import torch

    torch.set_num_threads(1)
    acc: dict = {}
    s = bench.SETTINGS[setting]
    if which == "trl":
        bench._pandas_for_trl()
        sys.path.insert(0, str(bench.TRL_DIR))
        from trl import DDPOTrainer
        for k, n in PHASES["trl"].items():
            _timed(DDPOTrainer, n, acc, k)
        run = bench.trl_epoch_fn(s, "cpu", "float32")
    else:
        from scorealign.policy.policy import Policy
        from scorealign.rl.trainer import Finetuner
        _timed(Policy, "rollout", acc, "rollout")
        _timed(Finetuner, "update", acc, "train")
        run = bench.ours_epoch_fn(s, "cpu", "float32", extra=bench.ARMS[arm])
    run()  # warm-up
    out = []
    for _ in range(epochs):
        acc.clear()
        t = time.process_time()
        run()
        out.append({"epoch_s": time.process_time() - t, **acc})
    res = {"epochs": out, "median": {k: statistics.median(e[k] for e in out) for k in out[0]}}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof
        with prof(activities=[ProfilerActivity.CPU]) as p:
            run()
        ev = p.key_averages()
        total = sum(e.self_cpu_time_total for e in ev)
        attn = [e for e in ev if "scaled_dot_product" in e.key]
        res["profile"] = {
            "self_cpu_s": total / 1e6,
            "attention_share": sum(e.self_cpu_time_total for e in attn) / total,
            "attention_backward_share": sum(e.self_cpu_time_total for e in attn
                                            if "backward" in e.key) / total,
            "top": [{"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count}
                    for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[:12]],
            "ops": {e.key: [e.self_cpu_time_total / 1e6, e.count] for e in ev}}
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="compute", choices=sorted(bench.SETTINGS))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--worker", choices=["trl", "ours"])
    ap.add_argument("--arm", default="lean", choices=sorted(bench.ARMS),
                    help="scorealign's arm (bench.ARMS)")
    a = ap.parse_args(argv)
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a.setting, a.epochs, a.profile, a.arm)))
        return
    bench.ensure_trl()
    bench.ensure_pipeline(bench.SETTINGS[a.setting]["size"])
    env = {**bench.os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": f"{bench.ROOT / 'src'}:{bench.TRL_DIR}"}
    res = {}
    for which in ("trl", "ours"):
        cmd = [sys.executable, __file__, "--worker", which, "--setting", a.setting,
               "--epochs", str(a.epochs), "--arm", a.arm] + (["--profile"] if a.profile else [])
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        res[which] = json.loads(p.stdout.split("RESULT ", 1)[1])
    steps = bench.SETTINGS[a.setting]["steps"]
    # action_steps: auto takes the last step deterministically; the equal-work arms train all
    trained = steps if "policy.action_steps=all" in bench.ARMS[a.arm] else steps - 1
    t, o = res["trl"]["median"], res["ours"]["median"]
    f = t["rollout"] / steps
    b = t["train"] / steps - f
    res["per_step"] = {"F_forward_s": f, "B_backward_s": b, "B_over_F": b / f}
    res["floor_ours_over_trl"] = (steps * f + trained * b) / (steps * f + steps * (f + b))
    res["measured_ours_over_trl"] = o["epoch_s"] / t["epoch_s"]
    if a.profile:  # operators by CPU time, ours − TRL (s per epoch), largest differences first
        ops = {w: res[w]["profile"].pop("ops") for w in ("trl", "ours")}
        diff = {k: ops["ours"].get(k, [0.0, 0])[0] - ops["trl"].get(k, [0.0, 0])[0]
                for k in set(ops["trl"]) | set(ops["ours"])}
        res["profile_diff"] = [{"op": k, "ours_minus_trl_s": d,
                                "calls": [ops["ours"].get(k, [0, 0])[1],
                                          ops["trl"].get(k, [0, 0])[1]]}
                               for k, d in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:20]]
    res["setting"], res["arm"], res["config"] = a.setting, a.arm, bench.SETTINGS[a.setting]
    name = f"breakdown_{a.setting}" + ("" if a.arm == "lean" else f"_{a.arm}")
    (HERE / f"{name}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: res[k] for k in ("per_step", "floor_ours_over_trl",
                                          "measured_ours_over_trl")}, indent=1))


if __name__ == "__main__":
    main()
