"""DDPO epoch time: scorealign's trainer vs TRL 0.23's ``DDPOTrainer`` (the last TRL with DDPO).

Both fine-tune the same random SD-shaped pipeline (``policy/sd.py``, seed 0, saved to disk and
loaded by both) with LoRA r = 4, α = 4 on to_q/to_k/to_v/to_out.0, DDIM η = 1, CFG 5 (also in
training), one inner epoch, per-prompt statistics, PPO clipping, the JPEG-compressibility reward.
Settings (same samples, steps, CFG, LoRA and optimizer steps on both sides):

* ``tiny``: 8×8×4 latents, UNet channels 32–64 (overhead-bound), 16 samples (2 × 8), 10 steps,
  train batch 8.
* ``compute``: 32×32×4 latents, UNet channels 64–128 (the network dominates), 4 samples
  (1 × 4, one prompt), 10 steps, train batch 4 (sized so 5 rounds fit on a shared CPU).
* ``sd15`` (GPU, ``benchmarks/gpu``): SD 1.5's UNet, 64×64×4 latents, bf16, 8 samples, 10
  steps, train batch 8 (TRL: 4 micro-batches of 2).

scorealign runs as four arms (``ARMS``): its two update modes at equal work (``train.mode``
lean, the default, and fast; ``policy.action_steps=all`` so it trains all 10 steps as TRL does),
lean with ``train.rollout_backward=false`` (TRL's recompute even when the update is on-policy:
what lean was before the rollout backward) and its default config (lean, ``action_steps: auto``:
9 of 10 steps trained). The modes schedule
the same update differently (gradient-equality tests in tests/rl/test_speed_levers.py and
tests/rl/test_update_modes.py); ``--arms`` runs a subset. scorealign's side is set up as
``rl/setup.py`` sets up a LoRA run: the KL reference is the trained UNet with its adapters off
(``frozen_reference``), not a copy.

Method: each round runs TRL and every arm in a fresh process (load, one untimed warm-up epoch,
one timed epoch), so each peak RSS is one run's; the order is reversed every other round (or,
``--arms-at-once``, the round's processes run concurrently, under the same load), so slow phases
of a shared machine hit both sides; ``--parallel`` rounds at a time. Epoch time is the worker's
CPU time (``process_time``, all threads) on CPU, where other jobs share the cores, and
synchronized wall time on a GPU; memory is the process's peak RSS on CPU and the peak CUDA memory
allocated in the timed epoch on a GPU. Reported per setting and arm: ``ratio_ours_over_trl`` =
median(arm)/median(TRL) of time and ``mem_ratio_ours_over_trl`` of memory side by side (< 1:
scorealign faster / smaller), the per-round ratios with their spread, the machine's load average
at the start and end of every round, and every raw measurement.
TRL 0.23 runs from ``.cache/trl-0.23`` (``pip install --no-deps --target``) on this
interpreter, so both sides use the same torch, diffusers, peft and accelerate.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ddpo_vs_trl/bench.py [--setting tiny compute]
        [--rounds 5] [--parallel N] [--arms-at-once] [--arms lean fast]
    .venv/bin/python benchmarks/ddpo_vs_trl/bench.py --quick   # smoke run of the set-up
    .venv/bin/python benchmarks/ddpo_vs_trl/bench.py --table   # results.md from the JSON files

Writes ``results_<setting>.json`` beside this file (cached: a setting with a results file is
skipped unless ``--force``; ``partial_<setting>.json`` after every round, read back on a
restart) and ``results.json`` (all settings); ``--table`` writes ``results.md``, the table the
docs cite (time and memory ratios side by side, one row per setting and arm).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TRL_DIR = ROOT / ".cache" / "trl-0.23"
PROMPTS = ["a cat", "a dog", "a red car", "a tree"]
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
# Equal work on both sides: the same samples, train batch, micro-batch (TRL's train_batch_size =
# scorealign's minibatch_size / grad_accum), steps, CFG and LoRA rank. scorealign runs in each of
# its two update modes (``train.mode``, same gradient: tests/rl/test_speed_levers.py): ``lean``
# (the default, TRL's schedule: rollout without graphs, per-step backward with recompute) and
# ``fast`` (keeps graphs: tiny takes two optimizer steps per epoch, so it folds a micro-batch's
# steps into one forward/backward; compute and sd15 take one on-policy step per epoch, so they
# reuse the rollout's graphs). ``policy.action_steps=all``: scorealign trains all 10 steps, as
# TRL does (its default ``auto`` would train 9).
SETTINGS = {
    "tiny": dict(size="tiny", steps=10, cfg=5.0, batch=8, num_batches=2, train_batch=8, micro=8,
                 prompts_per_epoch=4),
    "compute": dict(size="compute", steps=10, cfg=5.0, batch=4, num_batches=1, train_batch=4,
                    micro=4, prompts_per_epoch=1),
    "compute_hd32": dict(size="compute_hd32", steps=10, cfg=5.0, batch=4, num_batches=1,
                         train_batch=4, micro=4, prompts_per_epoch=1),
    "sd15": dict(size="sd15", steps=10, cfg=5.0, batch=8, num_batches=1, train_batch=8, micro=2,
                 prompts_per_epoch=2),
}
MODES = ("lean", "fast")
EQUAL_WORK = ["policy.action_steps=all"]
# scorealign's arms: the two modes at equal work, and the default config (lean, action_steps
# auto: the last, deterministic step untrained, 9 of 10 trained: less work than TRL's)
ARMS = {"lean": ["train.mode=lean", *EQUAL_WORK], "fast": ["train.mode=fast", *EQUAL_WORK],
        "lean_auto_steps": ["train.mode=lean"],
        # TRL's schedule to the letter: the training forward recomputes every trained step's
        # log-prob even when the update is on-policy (lean's train.rollout_backward off)
        "lean_recompute": ["train.mode=lean", "train.rollout_backward=false", *EQUAL_WORK]}


def jpeg_kb(images) -> list[float]:
    """JPEG size (kB, quality 95) of images in [0, 1] ``[B, 3, H, W]``."""
    from PIL import Image
    out = []
    for im in images:
        arr = (im.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=95)
        out.append(buf.tell() / 1000.0)
    return out


def aesthetic(images) -> list[float]:
    """``aesthetic_proxy`` (``rewards/image.py``: std(u) − |mean(u) − 0.5|) of images in [0, 1]:
    the same numbers scorealign's registry reward gives the same images in [−1, 1]."""
    u = images.detach().float().clamp(0, 1).flatten(1)
    return (u.std(1, unbiased=False) - (u.mean(1) - 0.5).abs()).tolist()


# the reward of a run: TRL's reward_fn on [0, 1] images and scorealign's registry name; both
# score the same decoded images (TRL: ``postprocess`` clamp to [0, 1]; scorealign: the
# sample clamped to [−1, 1], u = (x + 1)/2)
REWARDS = {"jpeg": (lambda ims: [-x for x in jpeg_kb(ims)], "jpeg_compressibility"),
           "aesthetic": (aesthetic, "aesthetic_proxy"),
           # mean brightness − 1 = aesthetic_proxy with no contrast term and target 1
           "brightness": (lambda ims: (ims.detach().float().clamp(0, 1).flatten(1).mean(1) - 1
                                       ).tolist(),
                          "{name: aesthetic_proxy, contrast_weight: 0.0, target_brightness: 1.0}")}


def pipe_dir(size: str) -> Path:
    return ROOT / ".cache" / f"sd-{size}-seed0"


def ensure_pipeline(size: str) -> Path:
    d = pipe_dir(size)
    if not (d / "model_index.json").is_file():
        from scorealign.policy.sd import build_tiny_sd_pipeline
        build_tiny_sd_pipeline(0, size=size).save_pretrained(str(d))
    return d


def ensure_trl() -> Path:
    """TRL 0.23: installed already (e.g. from a wheel), else ``pip install --target``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        if version("trl").startswith("0.23."):
            return TRL_DIR
    except PackageNotFoundError:
        pass
    if not (TRL_DIR / "trl" / "__init__.py").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(TRL_DIR), "trl==0.23.0"], check=True)
    return TRL_DIR


# -- workers: build, warm up, then one epoch per "epoch" line on stdin -------------------------
def _pandas_for_trl() -> None:
    """TRL 0.23's ``trainer/utils.py`` imports pandas at module level; its DDPO path never uses
    it. On a machine without pandas (an offline GPU box given wheels only), register an empty
    module so the import succeeds; any use of it raises."""
    import importlib.util
    import types

    if importlib.util.find_spec("pandas") is None:
        class _Absent(types.ModuleType):
            def __getattr__(self, name):
                raise ImportError(f"pandas is not installed (pandas.{name} was used)")
        sys.modules["pandas"] = _Absent("pandas")


def trl_epoch_fn(s: dict, device: str, dtype: str, reward: str = "jpeg", seed: int = 0,
                 extra: list[str] | None = None):
    import torch
    _pandas_for_trl()
    from accelerate import PartialState
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    cpu = device == "cpu"
    PartialState(cpu=cpu)  # TRL's pipeline logs through accelerate before the trainer exists
    mp = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[dtype]
    cfg = DDPOConfig(num_epochs=10_000, sample_num_steps=s["steps"], sample_eta=1.0,
                     sample_guidance_scale=s["cfg"], sample_batch_size=s["batch"],
                     sample_num_batches_per_epoch=s["num_batches"],
                     train_batch_size=s["micro"],
                     train_gradient_accumulation_steps=s["train_batch"] // s["micro"],
                     train_num_inner_epochs=1, train_cfg=True, mixed_precision=mp,
                     log_with=None, per_prompt_stat_tracking=True,
                     per_prompt_stat_tracking_buffer_size=16,
                     per_prompt_stat_tracking_min_count=4, save_freq=10_000,
                     logdir=str(ROOT / ".cache" / "trl-ddpo-logs"),
                     accelerator_kwargs={"cpu": cpu}, seed=seed,
                     **{k: json.loads(v) for k, v in (e.split("=", 1) for e in extra or [])})
    pipe = DefaultDDPOStableDiffusionPipeline(str(pipe_dir(s["size"])), use_lora=True)
    g = torch.Generator().manual_seed(seed)
    score = REWARDS[reward][0]

    def prompt_fn():
        return PROMPTS[int(torch.randint(len(PROMPTS), (1,), generator=g))], {}

    state = {"epoch": 0, "step": 0, "rewards": []}

    def reward_fn(images, prompts, metadata):
        r = score(images)
        state["rewards"] += r
        return torch.tensor(r), {}

    trainer = DDPOTrainer(cfg, reward_fn, prompt_fn, pipe)

    def run() -> float:
        state["rewards"] = []
        state["step"] = trainer.step(state["epoch"], state["step"])
        state["epoch"] += 1
        return sum(state["rewards"]) / len(state["rewards"])  # the epoch's mean reward
    return run


def ours_epoch_fn(s: dict, device: str, dtype: str, reward: str = "jpeg", seed: int = 0,
                  extra: list[str] | None = None):
    from diffusers import StableDiffusionPipeline

    from scorealign.config import load_config
    from scorealign.policy.diffusers_sd import SDParts, add_lora
    from scorealign.rl.config import FinetuneConfig
    from scorealign.rl.setup import Setup, frozen_reference
    from scorealign.rl.trainer import Finetuner

    k = s["batch"] * s["num_batches"] // s["prompts_per_epoch"]
    sets = [f"policy.steps={s['steps']}", "policy.eta=1.0", f"policy.guidance={s['cfg']}",
            f"prompts.prompts={json.dumps(PROMPTS)}",
            f"prompts.per_epoch={s['prompts_per_epoch']}", f"prompts.k={k}",
            f"train.sample_batch_size={s['batch']}", f"train.minibatch_size={s['train_batch']}",
            f"train.grad_accum={s['train_batch'] // s['micro']}", "train.log_kl=false",
            "lora.rank=4", "lora.alpha=4.0", f"reward.optimized={REWARDS[reward][1]}",
            "reward.gold=null", "algo.loss=ppo_clip", "algo.advantage=per_prompt",
            "algo.advantage_kwargs={buffer_size: 16, min_count: 4}", f"device={device}",
            "train.epochs=10000", "base.type=sd_tiny", f"train.seed={seed}", *(extra or [])]
    cfg = load_config(None, FinetuneConfig, sets)
    pipe = StableDiffusionPipeline.from_pretrained(str(pipe_dir(s["size"])),
                                                   safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.to(device)
    parts = SDParts(pipe, dtype=dtype, cache_prompts=True)
    add_lora(pipe.unet, 4, 4.0, LORA_TARGETS)
    ref = frozen_reference(parts.model, lora=True)  # the adapters switched off, as rl/setup.py
    setup = Setup(parts.model, ref, parts.sde, "eps", parts.shape, parts.encode, parts.decode,
                  list(PROMPTS))
    setup.model.eval()
    ft = Finetuner(cfg, None, setup=setup)

    def run() -> float:
        m = ft.train_epoch()
        ft.epoch += 1
        return m["reward/mean"]
    return run


def serve(which: str, setting: str, device: str, dtype: str, reward: str = "jpeg",
          seed: int = 0, extra: list[str] | None = None, warmup: bool = True) -> None:
    import resource

    import torch

    s = SETTINGS[setting]
    run = (trl_epoch_fn if which == "trl" else ours_epoch_fn)(s, device, dtype, reward, seed,
                                                              extra)
    cuda = device.startswith("cuda")

    def timed() -> dict:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0, c0 = time.perf_counter(), time.process_time()
        reward = run()
        if cuda:
            torch.cuda.synchronize()
        wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        # on a GPU the wall time; on a (shared) CPU the process's CPU time, all threads: what
        # the epoch costs, whatever else the machine runs
        out = {"s": wall if cuda else cpu_s, "wall_s": wall, "cpu_s": cpu_s, "reward": reward}
        if cuda:
            out["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.empty_cache()  # the idle worker hands its cache to the other one
        else:
            out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out

    if warmup:
        timed()  # warm-up epoch
    print("RESULT " + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "epoch":
            break
        print("RESULT " + json.dumps(timed()), flush=True)


class Worker:
    """A worker process driven over stdin/stdout."""

    def __init__(self, which: str, setting: str, device: str, dtype: str, reward: str = "jpeg",
                 seed: int = 0, extra: list[str] | None = None, warmup: bool = True):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TRL_DIR),
                                              os.environ.get("PYTHONPATH", "")])}
        self.which = which
        self.p = subprocess.Popen([sys.executable, __file__, "--worker", which, "--setting",
                                   setting, "--device", device, "--dtype", dtype,
                                   "--reward", reward, "--seed", str(seed),
                                   "--extra", json.dumps(extra or []),
                                   *([] if warmup else ["--no-warmup"])], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.read()

    def read(self) -> dict:
        for line in self.p.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        raise RuntimeError(f"{self.which} worker exited with {self.p.wait()}")

    def epoch(self) -> dict:
        self.p.stdin.write("epoch\n")
        self.p.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.p.wait(timeout=120)


def quartiles(xs: list[float]) -> list[float]:
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return [q[0], q[2]]


def _spread(xs: list[float]) -> dict:
    return {"min": min(xs), "max": max(xs), "quartiles": quartiles(xs)}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summarize(setting: str, rounds_done: list[dict], rounds: int, device: str,
              dtype: str) -> dict:
    """Medians, time and memory ratios (each mode over TRL) and their spreads over rounds."""
    cuda = device.startswith("cuda")
    mem_key = "peak_mem_gb" if cuda else "peak_rss_mb"
    arms = [a for a in ARMS if rounds_done and all(a in r for r in rounds_done)]  # those run
    ok = {w: [r for r in rounds_done if "s" in r[w] and "s" in r["trl"]] for w in ("trl", *arms)}
    t = {w: [r[w]["s"] for r in ok[w]] for w in ("trl", *arms)}
    m = {w: [r[w][mem_key] for r in ok[w]] for w in ("trl", *arms)}
    med = {w: statistics.median(v) for w, v in t.items() if v}
    mem = {w: statistics.median(v) for w, v in m.items() if v}
    modes = {}
    for mode in arms:
        if not ok[mode]:  # every run of this arm failed: say why
            modes[mode] = {"error": [r[mode].get("error") for r in rounds_done]}
            continue
        tr = [r[mode]["s"] / r["trl"]["s"] for r in ok[mode]]
        mr = [r[mode][mem_key] / r["trl"][mem_key] for r in ok[mode]]
        modes[mode] = {"ratio_ours_over_trl": med[mode] / med["trl"],
                       "mem_ratio_ours_over_trl": mem[mode] / mem["trl"],
                       "per_round_ratio_ours_over_trl": tr, "spread": _spread(tr),
                       "per_round_mem_ratio_ours_over_trl": mr, "mem_spread": _spread(mr),
                       "overrides": ARMS[mode]}
    s = SETTINGS[setting]
    return {
        "setting": setting, "device": device, "dtype": dtype, "rounds": rounds,
        "rounds_done": len(rounds_done),
        "time": "wall (perf_counter, synchronized)" if cuda else
                "CPU time of the worker process (process_time, all threads)",
        "memory": "peak CUDA memory allocated in the timed epoch (GiB)" if cuda else
                  "peak RSS of the worker process (MB; a fresh process per round: model "
                  "loading, one warm-up epoch and the timed epoch)",
        "median_s": med, f"median_{mem_key}": mem, "modes": modes,
        "load_avg_per_round": [r["load"] for r in rounds_done],
        "rounds_raw": rounds_done,
        "config": {**s, "samples_per_epoch": s["batch"] * s["num_batches"], "lora_rank": 4,
                   "trl": "0.23.0", "threads": os.environ.get("OMP_NUM_THREADS"),
                   "cpu_count": os.cpu_count()},
    }


def one_epoch(which: str, setting: str, device: str, dtype: str,
              extra: list[str] | None = None) -> dict:
    """A fresh worker process: load, warm-up epoch, one timed epoch; its time and peak memory,
    or ``{"error": ...}`` when the worker dies (e.g. out of memory: fast mode on a large model)."""
    try:
        w = Worker(which, setting, device, dtype, extra=extra)
        try:
            return w.epoch()
        finally:
            w.close()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def _round(r: int, setting: str, device: str, dtype: str, arms_at_once: bool = False,
           which_arms: list[str] | None = None) -> dict:
    """Round ``r``: TRL and every scorealign arm, each in a fresh process, one after another
    (reversed every other round), or all at once (``arms_at_once``: the same machine load for
    every arm)."""
    from concurrent.futures import ThreadPoolExecutor

    arms = [("trl", "trl", [])] + [(a, "ours", extra) for a, extra in ARMS.items()
                                   if which_arms is None or a in which_arms]
    row = {"round": r, "load": {"start": _load()}, "arms_at_once": arms_at_once}
    order = arms if r % 2 == 0 else arms[::-1]
    if arms_at_once:
        with ThreadPoolExecutor(len(arms)) as pool:
            futures = {name: pool.submit(one_epoch, which, setting, device, dtype, extra)
                       for name, which, extra in order}
            row.update({name: f.result() for name, f in futures.items()})
    else:
        for name, which, extra in order:
            row[name] = one_epoch(which, setting, device, dtype, extra)
    row["load"]["end"] = _load()
    return row


def run_setting(setting: str, rounds: int, device: str = "cpu", dtype: str = "float32",
                log=print, partial: Path | None = None, parallel: int = 1,
                arms_at_once: bool = False, arms: list[str] | None = None) -> dict:
    """``rounds`` rounds of TRL and the scorealign arms on ``setting``, each run in a fresh
    process (so each peak RSS is one run's), the order reversed every other round so slow
    phases of a shared machine hit both sides; ``parallel`` rounds at a time (on CPU each
    epoch's time is its process's CPU time, which other processes change little); the results
    dict.

    With ``partial``, the rounds done so far are written there after each round and read back
    on a restart (a stopped run continues where it stopped). ``arms``: the scorealign arms
    to run (default: all of ``ARMS``).
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    ensure_trl()
    ensure_pipeline(SETTINGS[setting]["size"])
    done: list[dict] = []
    if partial is not None and partial.is_file():
        done = json.loads(partial.read_text()).get("rounds_raw", [])
    todo = [r for r in range(rounds) if r not in {d["round"] for d in done}]
    with ThreadPoolExecutor(max(parallel, 1)) as pool:
        futures = [pool.submit(_round, r, setting, device, dtype, arms_at_once, arms)
                   for r in todo]
        for f in as_completed(futures):
            row = f.result()
            done = sorted([*done, row], key=lambda d: d["round"])
            log(f"[{setting}] round {row['round']}: " + ", ".join(
                f"{w} {row[w].get('s', 'failed')} s "
                f"{row[w].get('peak_rss_mb', row[w].get('peak_mem_gb'))}"
                for w in ("trl", *ARMS) if w in row) + f" load {row['load']}")
            if partial is not None:
                partial.write_text(json.dumps(summarize(setting, done, rounds, device, dtype),
                                              indent=1))
    return summarize(setting, done, rounds, device, dtype)


# -- time to TRL's reward ---------------------------------------------------------------------
# scorealign methods of the study (overrides on top of the setting's): DDPO is TRL's algorithm
# on scorealign's trainer; LOOP [Gupta+25] takes the same 16 samples as 4 prompts × K = 4 with a
# leave-one-out baseline, either in TRL's schedule (two minibatches of 8) or on-policy (one
# minibatch of 16, one optimizer step, rollout graphs reused: train.reuse_rollout_graph).
TTR_METHODS = {  # (the study was run with tiny's fast schedule: folded steps)
    "ddpo": ["train.mode=fast"],
    "loop": ["train.mode=fast", "algo.loss=loop", "algo.advantage=leave_one_out",
             "algo.advantage_kwargs={}"],
    "loop_onpolicy": ["algo.loss=loop", "algo.advantage=leave_one_out",
                      "algo.advantage_kwargs={}", "train.minibatch_size=16", "train.grad_accum=1",
                      "train.fold_steps=false", "train.reuse_rollout_graph=true"],
    # ablation, not in the study: DDPO training every step, the last (σ ≈ 0.01) one included,
    # as TRL does
    "ddpo_all_steps": ["train.mode=fast", "policy.action_steps=all"],
}
TTR_STUDY = ("ddpo", "loop", "loop_onpolicy")
# lr grid of every arm; TRL 0.23's default train_learning_rate is 3e-4 (trl/trainer/ddpo_config.py)
TTR_LRS = [3e-4, 3e-3, 3e-2, 1e-1]


def _lr_override(which: str, lr: float) -> list[str]:
    return [f"train_learning_rate={lr}"] if which == "trl" else [f"train.lr={lr}"]


def ttr_cell(cache: Path, which: str, method: str, setting: str, reward: str, seed: int,
             lr: float, epochs: int, target: float | None = None, window: int = 3,
             device: str = "cpu", dtype: str = "float32", log=print) -> dict:
    """One run of the time-to-reward study, cached in ``cache``: ``epochs`` epochs, or, with
    ``target``, until the mean reward of the last ``window`` epochs reaches it (at most
    ``epochs``). No untimed warm-up epoch: every epoch trained is counted."""
    tag = "" if target is None else "_to_target"
    f = cache / f"{which}_{method}_{reward}_{setting}_lr{lr:g}_s{seed}_e{epochs}{tag}.json"
    if f.is_file():
        return json.loads(f.read_text())
    extra = TTR_METHODS[method] if which == "ours" else []
    w = Worker(which, setting, device, dtype, reward, seed, extra + _lr_override(which, lr),
               warmup=False)
    eps: list[dict] = []
    try:
        while len(eps) < epochs:
            eps.append(w.epoch())
            r = [e["reward"] for e in eps]
            if target is not None and len(r) >= window and sum(r[-window:]) / window >= target:
                break
    finally:
        w.close()
    r = [e["reward"] for e in eps]
    smooth = [sum(r[max(0, i + 1 - window):i + 1]) / min(window, i + 1) for i in range(len(r))]
    out = {"which": which, "method": method, "setting": setting, "reward": reward, "seed": seed,
           "lr": lr, "epochs": len(eps), "window": window, "target": target,
           "rewards": r, "smoothed": smooth, "epoch_s": [e["s"] for e in eps],
           "total_s": sum(e["s"] for e in eps),
           "reached": None if target is None else smooth[-1] >= target}
    cache.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(out, indent=1))
    log(f"[ttr] {which}/{method} lr {lr:g} seed {seed}: {len(eps)} epochs, "
        f"{out['total_s']:.1f} s, smoothed {smooth[-1]:.4f}"
        + ("" if target is None else f" (target {target:.4f}, reached {out['reached']})"))
    return out


def time_to_reward(setting: str = "tiny", reward: str = "brightness", device: str = "cpu",
                   dtype: str = "float32", seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
                   tune_seed: int = 100, lrs: tuple[float, ...] = tuple(TTR_LRS),
                   methods: tuple[str, ...] = TTR_STUDY, trl_epochs: int = 10,
                   max_epochs: int = 30, window: int = 3, cache: Path | None = None,
                   log=print) -> dict:
    """Time for scorealign to reach TRL's reward after ``trl_epochs`` epochs.

    1. lr per method (TRL included) from ``lrs`` on ``tune_seed``: the highest mean reward over
       the last ``window`` of ``trl_epochs`` epochs.
    2. For each seed: TRL trains ``trl_epochs`` epochs at its lr; its target is the mean
       reward of its last ``window`` epochs, and its time the sum of its epoch times. Each
       scorealign method trains at its lr from the same seed until the mean of its last
       ``window`` epoch rewards reaches that target (at most ``max_epochs``).
    Epoch times as in the speed benchmark (CPU time of the worker on CPU, synchronized wall
    time on a GPU), model loading excluded, no warm-up epoch excluded. Reported per method: the
    seeds that reached, and the per-seed ratio of times (scorealign / TRL) with its median.
    """
    ensure_trl()
    ensure_pipeline(SETTINGS[setting]["size"])
    cache = cache or HERE / "ttr_cells"
    kw = dict(setting=setting, reward=reward, device=device, dtype=dtype, window=window, log=log)
    arms = [("trl", "ddpo")] + [("ours", m) for m in methods]
    tuning = {}
    for which, m in arms:
        runs = {lr: ttr_cell(cache, which, m, seed=tune_seed, lr=lr, epochs=trl_epochs, **kw)
                for lr in lrs}
        best = max(lrs, key=lambda lr: runs[lr]["smoothed"][-1])
        tuning[f"{which}/{m}"] = {"lr": best, "final_smoothed": {f"{lr:g}": runs[lr]["smoothed"]
                                                                 [-1] for lr in lrs}}
    lr_trl = tuning["trl/ddpo"]["lr"]
    per_seed = []
    for seed in seeds:
        trl = ttr_cell(cache, "trl", "ddpo", seed=seed, lr=lr_trl, epochs=trl_epochs, **kw)
        target = trl["smoothed"][-1]
        row = {"seed": seed, "target": target, "trl_s": trl["total_s"],
               "trl_gain": target - trl["smoothed"][window - 1], "ours": {}}
        for m in methods:
            o = ttr_cell(cache, "ours", m, seed=seed, lr=tuning[f"ours/{m}"]["lr"],
                         epochs=max_epochs, target=target, **kw)
            row["ours"][m] = {"reached": o["reached"], "epochs": o["epochs"], "s": o["total_s"],
                              "ratio": o["total_s"] / trl["total_s"] if o["reached"] else None}
        per_seed.append(row)
    summary = {}
    for m in methods:
        ratios = [r["ours"][m]["ratio"] for r in per_seed if r["ours"][m]["reached"]]
        summary[m] = {"reached": f"{len(ratios)}/{len(per_seed)}",
                      "median_time_ratio_ours_over_trl": statistics.median(ratios)
                      if ratios else None,
                      "time_ratios": ratios,
                      "epochs_to_target": [r["ours"][m]["epochs"] for r in per_seed]}
    ablation = {}
    if "ddpo" in methods:  # why a high lr works here and not in TRL: the final step
        lr = tuning["ours/ddpo"]["lr"]
        for m in ("ddpo", "ddpo_all_steps"):
            c = ttr_cell(cache, "ours", m, seed=tune_seed, lr=lr, epochs=trl_epochs, **kw)
            ablation[m] = {"lr": lr, "seed": tune_seed, "first_window": c["smoothed"][window - 1],
                           "final_smoothed": c["smoothed"][-1]}
    return {"setting": setting, "reward": reward, "device": device, "dtype": dtype,
            "ablation_action_steps": ablation, "trl_epochs": trl_epochs, "max_epochs": max_epochs, "window": window,
            "tune_seed": tune_seed, "lrs": list(lrs), "tuning": tuning, "methods":
            {m: TTR_METHODS[m] for m in methods}, "per_seed": per_seed, "summary": summary}


# -- the committed table (results.md) ------------------------------------------------------------
# issue 24's goals for scorealign/TRL at equal work: the default (lean) path at memory <= 1.0x and
# time <= 0.95x; fast mode's time goal 0.75x (its memory is reported, no goal)
GOALS = {"lean": {"time": 0.95, "mem": 1.0}, "fast": {"time": 0.75, "mem": None},
         "lean_auto_steps": {"time": None, "mem": None},
         "lean_recompute": {"time": None, "mem": None}}
ARM_LABEL = {"lean": "lean (default mode), equal work", "fast": "fast, equal work",
             "lean_auto_steps": "default config: lean, 9 of 10 steps trained (less work)",
             "lean_recompute": "lean with train.rollout_backward off: TRL's recompute, equal "
                               "work"}
# results file -> suffix of its rows' keys. results_{tiny,compute}.json: sequential rounds (one
# process at a time, the order reversed every other round); *_at_once.json: the previous
# session's runs with every arm of a round at once (--arms-at-once) under load 25-51, kept beside
# them (the protocol changes the ratio: docs/finetune.md); results_compute_previous.json: the
# compute run of the session before (before the LoRA reference stopped being a copy and before
# sklearn was imported lazily), kept for its default-config arm, not rerun since;
# results_compute_s23.json: session 23's sequential compute run, before lean's on-policy epochs
# took their gradient in the rollout (train.rollout_backward): its lean arm ran TRL's recompute,
# today's lean_recompute arm. The tiny setting takes two optimizer steps per epoch, so its lean
# arm never had the rollout backward and results_tiny.json stands.
# arms whose meaning a file predates: (file, arm) -> label
FILE_ARM_LABEL = {("results_compute_s23.json", "lean"):
                  "lean of session 23, before the rollout backward: TRL's recompute, equal work"}
TABLE_FILES = {"results_tiny.json": "", "results_compute.json": "",
               "results_compute_s23.json": "-s23",
               "results_tiny_at_once.json": "-at-once",
               "results_compute_at_once.json": "-at-once",
               "results_compute_previous.json": "-previous"}


def table(here: Path = HERE) -> str:
    """``results.md``: one row per setting and arm of the results files in ``here`` (the row key
    ``<setting>-<arm>`` is what docs cite), time and memory ratios side by side."""
    head = ("| row | rounds done | time ratio (median) | time, per-round range | memory ratio "
            "(median) | memory, per-round range | median time s (ours; TRL) | median peak "
            "(ours; TRL) | goal time / memory | meets goal (time; memory) | load avg (min–max, "
            "1 min) | arms of a round | file |\n|" + "---|" * 13)
    rows = []
    for name, suffix in TABLE_FILES.items():
        f = here / name
        if not f.is_file():
            continue
        res = json.loads(f.read_text())
        mem_key = next(k for k in res if k.startswith("median_peak"))
        loads = [x for r in res["load_avg_per_round"] for x in (r["start"][0], r["end"][0])]
        protocol = "at once" if all(r.get("arms_at_once") for r in res["rounds_raw"]) else \
            "one after another, order reversed every other round"
        for arm, r in res["modes"].items():
            if "error" in r:
                continue
            g = GOALS[arm]

            def meets(v, goal):
                return "–" if goal is None else ("yes" if v <= goal else "no")
            sp, ms = r["spread"], r["mem_spread"]
            rows.append(
                f"| {res['setting']}-{arm}{suffix} "
                f"({FILE_ARM_LABEL.get((name, arm), ARM_LABEL[arm])}) | {res['rounds_done']} of "
                f"{res['rounds']} | {r['ratio_ours_over_trl']:.3f} | {sp['min']:.3f}–"
                f"{sp['max']:.3f} | {r['mem_ratio_ours_over_trl']:.3f} | {ms['min']:.3f}–"
                f"{ms['max']:.3f} | {res['median_s'][arm]:.2f}; {res['median_s']['trl']:.2f} | "
                f"{res[mem_key][arm]:.1f}; {res[mem_key]['trl']:.1f} MB | "
                f"{g['time'] or '–'} / {g['mem'] or '–'} | {meets(r['ratio_ours_over_trl'], g['time'])}"
                f"; {meets(r['mem_ratio_ours_over_trl'], g['mem'])} | {min(loads):.1f}–"
                f"{max(loads):.1f} | {protocol} | {name} |")
    note = ("Ratios are scorealign / TRL 0.23 (< 1: scorealign faster / smaller): median of the "
            "arm over median of TRL, and the range of the per-round (paired: same round, same "
            "machine load) ratios; a round runs its processes one after another (order reversed "
            "every other round) or all at once (--arms-at-once), as the column says. Time: CPU "
            "time of the timed epoch (1 thread); memory: peak RSS "
            "of the worker process (a fresh process per arm and round: loading, a warm-up epoch "
            "and the timed epoch). No hyper-parameter is chosen here (the settings are fixed in "
            "bench.py, equal work on both sides), so there is no selection rule, edge flag or "
            "multiplicity correction. Written by `bench.py --table` from the files named.")
    return "# DDPO epoch: scorealign vs TRL 0.23 (CPU)\n\n" + note + "\n\n" + head + "\n" + \
        "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=["trl", "ours"])
    ap.add_argument("--setting", nargs="+", default=["tiny", "compute"],
                    choices=sorted(SETTINGS))
    ap.add_argument("--rounds", type=int, default=5, help="alternating epochs per worker")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--force", action="store_true", help="rerun settings with a results file")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--reward", default="jpeg", choices=sorted(REWARDS))
    ap.add_argument("--time-to-reward", action="store_true",
                    help="the time-to-TRL-reward study (tiny setting, brightness reward) instead")
    ap.add_argument("--seed", type=int, default=0, help="run seed (worker)")
    ap.add_argument("--extra", default="[]", help="worker: JSON list of scorealign overrides")
    ap.add_argument("--no-warmup", action="store_true", help="worker: no untimed first epoch")
    ap.add_argument("--parallel", type=int, default=1, help="rounds run at a time")
    ap.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=None,
                    help="scorealign arms to run (default: all)")
    ap.add_argument("--arms-at-once", action="store_true",
                    help="run a round's TRL and scorealign processes concurrently")
    ap.add_argument("--table", action="store_true", help="write results.md from the results "
                    "files beside this script and stop")
    ap.add_argument("--quick", action="store_true", help="smoke run of the set-up (TRL 0.23 "
                    "into .cache, the pipeline, every worker): the tiny setting, one round, "
                    "into .cache/ddpo_vs_trl-quick/ (never the committed results)")
    a = ap.parse_args(argv)
    if a.quick:
        a.setting, a.rounds, a.force = ["tiny"], 1, True
        a.out = ROOT / ".cache" / "ddpo_vs_trl-quick"
    if a.table:
        (HERE / "results.md").write_text(table())
        return
    if a.worker:
        serve(a.worker, a.setting[0], a.device, a.dtype, a.reward, a.seed, json.loads(a.extra),
              not a.no_warmup)
        return
    a.out.mkdir(parents=True, exist_ok=True)
    if a.time_to_reward:
        res = time_to_reward(device=a.device, dtype=a.dtype, cache=a.out / "ttr_cells")
        (a.out / "results_time_to_reward.json").write_text(json.dumps(res, indent=1))
        for m, v in res["summary"].items():
            print(f"[ttr] {m}: reached {v['reached']}, median time ratio "
                  f"{v['median_time_ratio_ours_over_trl']}")
        return
    allres = {}
    for setting in a.setting:
        f = a.out / f"results_{setting}.json"
        if f.is_file() and not a.force:
            allres[setting] = json.loads(f.read_text())
            print(f"[{setting}] cached: {f}")
        else:
            partial = a.out / f"partial_{setting}.json"
            allres[setting] = run_setting(setting, a.rounds, a.device, a.dtype, partial=partial,
                                          parallel=a.parallel, arms_at_once=a.arms_at_once,
                                          arms=a.arms)
            f.write_text(json.dumps(allres[setting], indent=1))
            partial.unlink(missing_ok=True)  # the finished summary replaces it
        for mode, r in allres[setting]["modes"].items():
            if "error" in r:
                print(f"[{setting}] {mode}: failed: {r['error'][0]}", flush=True)
                continue
            print(f"[{setting}] {mode}: time scorealign/TRL = {r['ratio_ours_over_trl']:.3f} "
                  f"(rounds {r['spread']['min']:.3f}–{r['spread']['max']:.3f}), memory "
                  f"{r['mem_ratio_ours_over_trl']:.3f} (rounds {r['mem_spread']['min']:.3f}–"
                  f"{r['mem_spread']['max']:.3f})", flush=True)
    every = a.out / "results.json"  # all settings measured so far, these updated
    merged = json.loads(every.read_text()) if every.is_file() else {}
    every.write_text(json.dumps({**merged, **allres}, indent=1))


if __name__ == "__main__":
    main()
