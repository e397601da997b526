"""Sampler step overhead on CPU, one thread: scorealign's step kernels vs diffusers' schedulers.

Runs ``benchmarks/gpu/bench_gpu.py::sampler_overhead`` at full size (batch 8 of 4×64×64, 200
iterations, medians) on the CPU with ``torch.set_num_threads(1)`` and stores the result under
``--label`` in ``sampler_overhead_cpu.json`` (other labels are kept), with the commit measured.
Each run's ratios (ours / diffusers) come from the same process, so they compare like with like.
A label accumulates its runs (``--repeats`` per call; call it several times, alternating the
labels, so that both see the same machine load); ``median`` holds the per-key medians over runs.

    # "before": the code of an older commit, e.g. extracted with git archive into /tmp/before
    PYTHONPATH=/tmp/before/src python benchmarks/sampler_overhead_cpu.py --label before \
        --root /tmp/before --commit fc46991
    PYTHONPATH=$PWD/src python benchmarks/sampler_overhead_cpu.py --label after
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent



def _portable(path: Path) -> str:
    """``path`` relative to the repository (committed results hold no machine paths)."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return Path(path).name

def per_step_counts() -> dict:
    """Per sampler step (difference of an 8- and a 4-step ``sample(record=True)``, divided by
    4): calls of ``Tensor.to``/``torch.as_tensor`` naming a device (on CUDA, a host→device copy
    when the source is a CPU time tensor) and host reads (``bool``/``item``/``tolist``/
    ``nonzero``/boolean-mask indexing; a stream sync when the tensor is on the device)."""
    from diffusers import DDIMScheduler
    from torch.overrides import TorchFunctionMode

    from scorealign.samplers import sample
    from scorealign.sde import build_sde
    from scorealign.sde.discrete import DiscreteVP

    class Count(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.to_device, self.reads = 0, 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            if name in ("to", "as_tensor") and (kwargs.get("device") is not None or any(
                    isinstance(a, (torch.device, str)) for a in args[1:])):
                self.to_device += 1
            self.reads += name in ("__bool__", "item", "tolist", "__float__", "__int__",
                                   "nonzero")
            self.reads += name in ("__getitem__", "__setitem__") and len(args) > 1 and \
                isinstance(args[1], torch.Tensor) and args[1].dtype == torch.bool
            return func(*args, **kwargs)

    sch = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    out = {}
    for key, sde, kind, eta in [("ddim_eta1_discrete_vp_eps", DiscreteVP.from_scheduler(sch),
                                 "eps", 1.0), ("ddim_eta0_flow_v", build_sde("flow"), "v", 0.0)]:
        counts = []
        for steps in (4, 8):
            x, noise = torch.randn(2, 4, 8, 8), torch.randn(steps, 2, 4, 8, 8)
            run = lambda: sample(lambda x, t: 0.5 * x, kind, sde, x, sampler="ddim",  # noqa
                                 steps=steps, eta=eta, noise=noise, record=True)
            run()
            with Count() as c:
                run()
            counts.append(c)
        out[key] = {"to_device_per_step": (counts[1].to_device - counts[0].to_device) / 4,
                    "host_reads_per_step": (counts[1].reads - counts[0].reads) / 4}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True, help="key of this run in the JSON (before/after)")
    ap.add_argument("--root", type=Path, default=HERE.parent,
                    help="repository whose benchmarks/gpu/bench_gpu.py is run")
    ap.add_argument("--commit", default=None, help="commit measured (default: HEAD of --root)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (checks the logic only)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of sampler_overhead")
    ap.add_argument("--reset", action="store_true", help="drop this label's earlier runs")
    ap.add_argument("--out", type=Path, default=HERE / "sampler_overhead_cpu.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, str(a.root / "benchmarks" / "gpu"))
    import bench_gpu
    import scorealign

    commit = a.commit or subprocess.run(["git", "-C", str(a.root), "rev-parse", "--short",
                                         "HEAD"], capture_output=True, text=True).stdout.strip()
    runs = [bench_gpu.sampler_overhead(a.smoke, "cpu") for _ in range(a.repeats)]
    out = json.loads(a.out.read_text()) if a.out.exists() else {}
    prev = [] if a.reset else out.get(a.label, {}).get("runs", [])
    if prev and prev[0].get("commit") != commit:
        prev = []
    runs = prev + [{**r, "commit": commit} for r in runs]
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    out[a.label] = {"commit": commit, "scorealign_path": _portable(Path(scorealign.__file__).parent),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "median": {k: statistics.median(r[k] for r in runs) for k in keys},
                    "per_step_counts": per_step_counts(),
                    "runs": runs}
    a.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps(out[a.label]["median"], indent=1))


if __name__ == "__main__":
    main()
