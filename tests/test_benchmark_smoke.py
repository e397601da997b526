"""Every benchmark's set-up runs from a checkout (issue 28 item 5): the two CPU benchmarks without
a TRL environment, at their smallest sizes, into a scratch file (never the committed results).
The TRL comparisons' smoke variants (`dpo_vs_trl/run.sh --quick`, `ddpo_vs_trl/bench.py --quick`)
are README commands that CI runs; `benchmarks/gpu/run.sh` needs CUDA and is exercised through
`sampler_overhead_cpu.py`, which imports its `bench_gpu.sampler_overhead`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]


def test_rl_overhead_runs_and_writes_its_ratio(tmp_path):
    out = tmp_path / "results.json"
    _run([str(ROOT / "benchmarks" / "rl_overhead" / "bench.py"), "--repeats", "1",
          "--out", str(out)], tmp_path)
    res = json.loads(out.read_text())
    assert res["trainer_epoch_s"] > 0 and res["bare_epoch_s"] > 0
    assert math.isclose(res["ratio"], res["trainer_epoch_s"] / res["bare_epoch_s"])


def test_sampler_overhead_smoke_runs_and_records_portable_paths(tmp_path):
    out = tmp_path / "so.json"
    _run([str(ROOT / "benchmarks" / "sampler_overhead_cpu.py"), "--label", "smoke", "--smoke",
          "--repeats", "1", "--root", str(ROOT), "--out", str(out)], tmp_path)
    rec = json.loads(out.read_text())["smoke"]
    assert rec["median"] and all(v > 0 for v in rec["median"].values())
    assert not str(rec["scorealign_path"]).startswith("/")  # relative to the checkout
