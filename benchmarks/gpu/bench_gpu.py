"""GPU readiness benchmark (bf16): RL epoch vs TRL 0.23, peak memory, sampler step overhead.

Parts (each recorded in ``results_cuda.json``; a part that fails records its error and the
others still run):

1. ``rl_epoch_sd15``: ``benchmarks/ddpo_vs_trl`` on its ``sd15`` setting — SD 1.5's UNet
   (random weights, 860M parameters, 64×64×4 latents) in bf16 with fp32 LoRA, 8 samples,
   10 DDIM steps, CFG 5, LoRA r 4; alternating epochs of TRL's ``DDPOTrainer`` and scorealign's
   trainer; medians, ratio, spread and peak GPU memory of each.
2. ``flow_transformer``: a small SD3-style MMDiT (``diffusers.SD3Transformer2DModel``, random)
   as a rectified-flow v-prediction policy in bf16: rollout (no grad) and log-prob recompute +
   backward through LoRA, times and peak memory. TRL has no flow trainer: no ratio.
3. ``sampler_overhead``: one sampler step with the network excluded (the prediction is given),
   scorealign's DDIM kernel (η = 1, with its log-density) vs ``DDIMScheduler.step``
   (η = 1) on SD latents, and scorealign's flow step (η = 0) vs
   ``FlowMatchEulerDiscreteScheduler.step``; median µs per step.

    bash benchmarks/gpu/run.sh [--cpu-smoke] [--out DIR]

``--cpu-smoke`` runs every part on CPU with tiny sizes and one round (checks the logic; the
numbers mean nothing) and writes ``results_cpu_smoke.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ddpo_vs_trl"))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn, device: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def ddpo_settings(smoke: bool, device: str, rounds: int) -> dict:
    """benchmarks/ddpo_vs_trl's tiny and compute settings on this device, fp32."""
    import bench

    out = {}
    for setting in (["tiny"] if smoke else ["tiny", "compute"]):
        out[setting] = bench.run_setting(setting, rounds, device, "float32",
                                         log=lambda m: print(m, flush=True))
    return out


def time_to_reward(smoke: bool, device: str) -> dict:
    """Time for scorealign's methods to reach TRL's 10-epoch reward (tiny setting, fp32,
    brightness reward; ``bench.time_to_reward``), cells cached beside this file."""
    import tempfile

    import bench

    if smoke:
        return bench.time_to_reward("tiny", "brightness", device, "float32", seeds=(0,),
                                    lrs=(3e-3,), methods=("loop_onpolicy",), trl_epochs=2,
                                    max_epochs=3, window=1, cache=Path(tempfile.mkdtemp()),
                                    log=lambda m: print(m, flush=True))
    return bench.time_to_reward("tiny", "brightness", device, "float32",
                                cache=HERE / "ttr_cells_cuda",
                                log=lambda m: print(m, flush=True))


def rl_epoch(smoke: bool, device: str, rounds: int) -> dict:
    import bench  # benchmarks/ddpo_vs_trl/bench.py

    setting = "tiny" if smoke else "sd15"
    return bench.run_setting(setting, rounds, device, "bfloat16",
                             log=lambda m: print(m, flush=True))


class FlowNet(torch.nn.Module):
    """``SD3Transformer2DModel`` as ``model(x, t, cond) -> v`` (v = ε − x_0, t = σ)."""

    kind = "v"

    def __init__(self, net, null_emb):
        super().__init__()
        self.net = net
        self.register_buffer("null_emb", null_emb)

    def forward(self, x, t, cond=None):
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        emb = self.null_emb.expand(x.shape[0], -1, -1)
        if cond is not None:
            emb = torch.where(cond.null_mask()[:, None, None], self.null_emb, cond.text_emb)
        dtype = self.net.pos_embed.proj.weight.dtype
        emb = emb.to(dtype)
        pooled = emb.mean(1)[:, :self.net.config.pooled_projection_dim]
        out = self.net(hidden_states=x.to(dtype), encoder_hidden_states=emb,
                       pooled_projections=pooled, timestep=t.float() * 1000).sample
        return out.to(x.dtype)


def flow_transformer(smoke: bool, device: str) -> dict:
    from diffusers import SD3Transformer2DModel
    from peft import LoraConfig

    from scorealign.nets.cond import Cond
    from scorealign.policy.policy import Policy
    from scorealign.sde import build_sde

    cfg = (dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
                num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                pooled_projection_dim=16, out_channels=4, pos_embed_max_size=16)
           if smoke else
           dict(sample_size=64, patch_size=2, in_channels=16, num_layers=12,
                attention_head_dim=64, num_attention_heads=12, joint_attention_dim=768,
                caption_projection_dim=768, pooled_projection_dim=768, out_channels=16,
                pos_embed_max_size=96))
    torch.manual_seed(0)
    net = SD3Transformer2DModel(**cfg).to(device, torch.bfloat16)
    net.requires_grad_(False)
    net.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"]))
    for p in net.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    n_params = sum(p.numel() for p in net.parameters())
    L, E = 16, cfg["joint_attention_dim"]
    table = torch.randn(4, L, E, generator=torch.Generator().manual_seed(1)).to(device)
    prompts = ["a cat", "a dog", "a red car", "a tree"]

    def encode(ps):
        return Cond(text_emb=table[[prompts.index(p) for p in ps]])

    model = FlowNet(net, torch.zeros(1, L, E, device=device))
    shape = (cfg["in_channels"], cfg["sample_size"], cfg["sample_size"])
    batch, steps = (2, 4) if smoke else (8, 10)
    pol = Policy(model, build_sde("flow"), kind="v", shape=shape, sampler="ddim", steps=steps,
                 eta=1.0, guidance=4.5, encode=encode)
    rows = [prompts[i % 4] for i in range(batch)]
    seeds = torch.arange(batch)
    state = {}

    def rollout():
        with torch.no_grad():
            state["traj"] = pol.rollout(rows, 1, seeds=seeds, device=device)

    def train():
        lp = pol.log_prob(state["traj"])
        torch.exp(lp - state["traj"].log_probs).mean().backward()

    rollout()
    train()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    n = 1 if smoke else 3
    t_roll, t_train = timeit(rollout, device, n), timeit(train, device, n)
    out = {"config": cfg, "params": n_params, "batch": batch, "steps": steps, "cfg": 4.5,
           "dtype": "bfloat16 (LoRA fp32)", "rollout_s": t_roll, "train_fwd_bwd_s": t_train,
           "median_rollout_s": statistics.median(t_roll),
           "median_train_s": statistics.median(t_train)}
    if device.startswith("cuda"):
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def sampler_overhead(smoke: bool, device: str) -> dict:
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    from scorealign.samplers.kernel import gaussian_log_prob
    from scorealign.samplers.steps import SAMPLERS
    from scorealign.sde import build_sde
    from scorealign.sde.discrete import DiscreteVP

    n = 20 if smoke else 200
    b, shape = (2, (4, 8, 8)) if smoke else (8, (4, 64, 64))
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(b, *shape, generator=g).to(device)
    pred = torch.randn(b, *shape, generator=g).to(device)
    z = torch.randn(b, *shape, generator=g).to(device)
    res = {"batch": b, "shape": list(shape), "iters": n}

    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(10)
    k = int(sched.timesteps[3])
    sde = DiscreteVP.from_scheduler(sched)
    # the times stay on the CPU, as the sampling loop and the policy pass them (ts[i].expand(B))
    t = sde.timestep_to_t(torch.full((b,), k))
    tn = sde.timestep_to_t(torch.full((b,), k - 100))
    ddim = SAMPLERS.get("ddim").fn

    def ours_ddim():
        st = ddim(x, pred, "eps", t, tn, sde, eta=1.0, noise=z)
        gaussian_log_prob(st.x_next, st.mean, st.std, std_value=st.std_value)

    def diffusers_ddim():
        sched.step(pred, k, x, eta=1.0, variance_noise=z)

    fsched = FlowMatchEulerDiscreteScheduler()
    fsched.set_timesteps(10)
    fk = fsched.timesteps[3]
    fsde = build_sde("flow")
    sig, sig_n = float(fsched.sigmas[3]), float(fsched.sigmas[4])
    ft, ftn = torch.full((b,), sig), torch.full((b,), sig_n)

    def ours_flow():
        ddim(x, pred, "v", ft, ftn, fsde, eta=0.0)

    def diffusers_flow():
        fsched._step_index = 3
        fsched.step(pred, fk, x)

    for name, fn in [("ours_ddim_eta1_with_logprob", ours_ddim),
                     ("diffusers_ddim_eta1", diffusers_ddim),
                     ("ours_flow_ddim_eta0", ours_flow), ("diffusers_flow_euler", diffusers_flow)]:
        fn()
        ts = timeit(fn, device, n)
        res[name + "_us"] = statistics.median(ts) * 1e6
    res["ratio_ddim_ours_over_diffusers"] = res["ours_ddim_eta1_with_logprob_us"] / \
        res["diffusers_ddim_eta1_us"]
    res["ratio_flow_ours_over_diffusers"] = res["ours_flow_ddim_eta0_us"] / \
        res["diffusers_flow_euler_us"]
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", nargs="+",
                    default=["sampler_overhead", "ddpo_settings", "rl_epoch_sd15",
                             "time_to_reward", "flow_transformer"])
    ap.add_argument("--out", type=Path, default=HERE)
    a = ap.parse_args(argv)
    device = "cpu" if a.cpu_smoke else "cuda"
    if not a.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; use --cpu-smoke to check the logic on CPU")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / ("results_cpu_smoke.json" if a.cpu_smoke else "results_cuda.json")
    res: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                 "torch": torch.__version__, "smoke": a.cpu_smoke}
    try:
        import diffusers
        res["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    parts = {"sampler_overhead": lambda: sampler_overhead(a.cpu_smoke, device),
             "flow_transformer": lambda: flow_transformer(a.cpu_smoke, device),
             "rl_epoch_sd15": lambda: rl_epoch(a.cpu_smoke, device,
                                               1 if a.cpu_smoke else a.rounds),
             "ddpo_settings": lambda: ddpo_settings(a.cpu_smoke, device,
                                                    1 if a.cpu_smoke else 5),
             "time_to_reward": lambda: time_to_reward(a.cpu_smoke, device)}
    for name in a.parts:
        t0 = time.perf_counter()
        try:
            res[name] = parts[name]()
        except Exception as e:  # noqa: BLE001 — record and go on with the other parts
            res[name] = {"error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc()[-3000:]}
        res[name]["wall_s"] = time.perf_counter() - t0
        path.write_text(json.dumps(res, indent=1, default=str))  # after every part
        print(f"{name}: {json.dumps(res[name], default=str)[:600]}", flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
