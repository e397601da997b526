"""Sampler step overhead on CPU, one thread: scorealign's step kernels vs diffusers' schedulers.

Runs ``benchmarks/gpu/bench_gpu.py::sampler_overhead`` at full size (batch 8 of 4×64×64, 200
iterations, medians) on the CPU with ``torch.set_num_threads(1)`` and stores the result under
``--label`` in ``sampler_overhead_cpu.json`` (other labels are kept), with the commit measured.
Each label's ratios (ours / diffusers) come from one run, so they compare like with like.

    # "before": the code of an older commit, e.g. extracted with git archive into /tmp/before
    PYTHONPATH=/tmp/before/src python benchmarks/sampler_overhead_cpu.py --label before \
        --root /tmp/before --commit fc46991
    PYTHONPATH=$PWD/src python benchmarks/sampler_overhead_cpu.py --label after
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True, help="key of this run in the JSON (before/after)")
    ap.add_argument("--root", type=Path, default=HERE.parent,
                    help="repository whose benchmarks/gpu/bench_gpu.py is run")
    ap.add_argument("--commit", default=None, help="commit measured (default: HEAD of --root)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (checks the logic only)")
    ap.add_argument("--out", type=Path, default=HERE / "sampler_overhead_cpu.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, str(a.root / "benchmarks" / "gpu"))
    import bench_gpu
    import scorealign

    commit = a.commit or subprocess.run(["git", "-C", str(a.root), "rev-parse", "--short",
                                         "HEAD"], capture_output=True, text=True).stdout.strip()
    res = bench_gpu.sampler_overhead(a.smoke, "cpu")
    res.update(commit=commit, scorealign_path=str(Path(scorealign.__file__).parent),
               torch=torch.__version__, threads=torch.get_num_threads())
    out = json.loads(a.out.read_text()) if a.out.exists() else {}
    out[a.label] = res
    a.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
