"""Micro-benchmark of equal-work CPU levers for the SD UNet steps of a DDPO epoch.

One process per setting of ``bench.py`` (same saved pipeline, LoRA r = 4 on to_q/to_k/to_v/
to_out.0, CFG as one batched forward ``nets.cond.guided``) times, in CPU time of the process
(``process_time``, 1 thread), the two kinds of UNet work an epoch is made of:

* ``rollout``: S no-grad guided forwards at the sample batch (the lean rollout);
* ``update``: S guided forwards with autograd plus a backward each, at the micro-batch (the lean
  update: per-step backward with recompute, TRL's schedule).

Each lever changes only how the same math is executed (the same shapes, the same operations):

* ``baseline``: as scorealign and TRL run today (``torch.no_grad`` rollout);
* ``inference_mode``: the rollout under ``torch.inference_mode`` instead of ``no_grad``;
* ``channels_last``: the UNet's weights and the latent input in ``torch.channels_last`` (oneDNN
  convolutions without layout reorders);
* ``sdpa_math``: scaled-dot-product attention through the math backend (explicit softmax(QKᵀ)V)
  instead of the CPU flash kernel;
* ``mkldnn_off``: convolutions through ATen's native kernels (``torch.backends.mkldnn`` off)
  instead of oneDNN;
* the optimizer step (not a UNet lever) is timed apart: AdamW single-tensor vs ``foreach``.

Variants run interleaved (a, b, c, …, a, b, c, …) for ``--reps`` repetitions; the medians and the
ratio to ``baseline`` are reported. The largest elementwise difference of each lever's ε̂ and of
its LoRA gradients from the baseline's is reported too (same math, different kernels: round-off).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ddpo_vs_trl/levers.py [--setting tiny] [--reps 5]

Writes ``levers_<setting><tag>.json`` beside this file (``levers_compute_probe.json``: an earlier
version of this script, without ``mkldnn_off``, run with ``--steps 2 --reps 2 --tag _probe``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402

VARIANTS = ("baseline", "inference_mode", "channels_last", "sdpa_math", "mkldnn_off")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="tiny", choices=sorted(bench.SETTINGS))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tag", default="", help="suffix of the output file name")
    ap.add_argument("--steps", type=int, default=0,
                    help="UNet steps timed per repetition (default: the setting's S)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    a = ap.parse_args(argv)

    import torch
    from diffusers import StableDiffusionPipeline
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from scorealign.nets.cond import guided
    from scorealign.policy.diffusers_sd import SDParts, add_lora

    torch.set_num_threads(1)
    s = bench.SETTINGS[a.setting]
    d = bench.ensure_pipeline(s["size"])
    pipe = StableDiffusionPipeline.from_pretrained(str(d), safety_checker=None,
                                                   requires_safety_checker=False)
    parts = SDParts(pipe, cache_prompts=True)
    add_lora(pipe.unet, 4, 4.0, bench.LORA_TARGETS)
    model = parts.model
    g = torch.Generator().manual_seed(0)
    steps = a.steps or s["steps"]
    # DDIM's integer timesteps for S steps (981, 961, … at 50), as times t = (k + 1) T / N
    ts = torch.arange(steps - 1, -1, -1) * (1000 // steps) + 1
    t_of = [parts.sde.timestep_to_t(int(k)) for k in ts]

    def inputs(b):
        x = torch.randn(b, *parts.shape, generator=g)
        cond = parts.encode([bench.PROMPTS[i % len(bench.PROMPTS)] for i in range(b)])
        return x, cond

    xr, cr = inputs(s["batch"])
    xu, cu = inputs(s["micro"])
    w = torch.randn(s["micro"], *parts.shape, generator=g)
    lora = [p for p in pipe.unet.parameters() if p.requires_grad]
    # nonzero LoRA B (as after a few updates), so every adapter's path is exercised
    with torch.no_grad():
        for p in lora:
            p.add_(1e-3 * torch.randn(p.shape, generator=g))

    def fmt(x, cl):
        return x.contiguous(memory_format=torch.channels_last) if cl else x

    def set_layout(cl):
        pipe.unet.to(memory_format=torch.channels_last if cl else torch.contiguous_format)

    def ctx(v):
        if v == "sdpa_math":
            return sdpa_kernel([SDPBackend.MATH])
        if v == "mkldnn_off":
            return torch.backends.mkldnn.flags(enabled=False)
        return contextlib.nullcontext()


    def rollout(v):
        cl = v == "channels_last"
        grad_off = torch.inference_mode() if v == "inference_mode" else torch.no_grad()
        out = None
        with grad_off, ctx(v):
            for t in t_of:
                out = guided(model, fmt(xr, cl), torch.as_tensor(t).float(), cr, s["cfg"])
        return out

    def update(v):
        cl = v == "channels_last"
        for p in lora:
            p.grad = None
        with ctx(v):
            for t in t_of:
                e = guided(model, fmt(xu, cl), torch.as_tensor(t).float(), cu, s["cfg"])
                (e * w).sum().backward()
        return [p.grad.clone() for p in lora]

    res = {v: {"rollout": [], "update": []} for v in a.variants}
    ref_eps = ref_grad = None
    diffs = {}
    for rep in range(a.reps + 1):  # rep 0: warm-up
        for v in a.variants:
            set_layout(v == "channels_last")
            t0 = time.process_time()
            e = rollout(v)
            t1 = time.process_time()
            gr = update(v)
            t2 = time.process_time()
            if rep == 0:
                if v == "baseline":
                    ref_eps, ref_grad = e.float().clone(), gr
                else:
                    diffs[v] = {
                        "eps_max_abs_diff": (e.float() - ref_eps).abs().max().item(),
                        "eps_max_abs": ref_eps.abs().max().item(),
                        "grad_max_rel_diff": max(((a_ - b_).norm() / b_.norm()).item()
                                                 for a_, b_ in zip(gr, ref_grad))}
                continue
            res[v]["rollout"].append(t1 - t0)
            res[v]["update"].append(t2 - t1)
    set_layout(False)
    # the optimizer step alone: AdamW single-tensor (torch's default on CPU) vs foreach
    opt_t = {}
    for name, kw in (("adamw_default", {}), ("adamw_foreach", {"foreach": True})):
        opt = torch.optim.AdamW(lora, lr=1e-4, **kw)
        for p in lora:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
        t0 = time.process_time()
        for _ in range(20):
            opt.step()
        opt_t[name] = (time.process_time() - t0) / 20
    med = {v: {k: statistics.median(x) for k, x in r.items()} for v, r in res.items()}
    out = {"setting": a.setting, "reps": a.reps, "config": s, "steps_timed": steps,
           "time": "CPU time of the process (process_time, 1 thread), s per epoch's worth of "
                   "UNet work (S steps)",
           "median_s": med,
           "ratio_to_baseline": {v: {k: med[v][k] / med["baseline"][k] for k in med[v]}
                                 for v in med},
           "raw_s": res, "diff_to_baseline": diffs,
           "optimizer_step_s": opt_t,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (HERE / f"levers_{a.setting}{a.tag}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("median_s", "ratio_to_baseline", "diff_to_baseline",
                                          "optimizer_step_s")}, indent=1))


if __name__ == "__main__":
    main()
