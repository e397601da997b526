"""Diffusion-DPO on a pair dataset: the digits trainer behind ``scorealign dpo`` (task: diffusion).

Each step draws a batch of pairs, one time t ~ U(t_min, T) and one noise ε per pair shared by the
chosen and the rejected image, computes the denoising errors of the policy and of the reference,
and minimizes the link of the implicit log-ratio margin [Wallace+23, arXiv:2311.12908, Eq. 14]
(``preference.diffusion_logratio``). The reference is the frozen base model or, with LoRA, the
policy with its adapters disabled.

Exact resume: the data order is ``preference.trainer.batch_indices`` (a function of seed and
step), t and ε come from ``generator(seed, "diffusion-dpo", step)``, and the checkpoint holds the
policy and optimizer state, so a run stopped at step k and resumed ends bit-identical (CPU, fp32)
to an uninterrupted one. The loop is :func:`scorealign.run.loop.run_steps` on accelerate: with
several processes each takes its share of the global batch (and of its t and ε), DDP averages
the gradients, and only the main process logs, evaluates and checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from typing import Any, Callable

import torch
from torch import Tensor, nn

from scorealign.preference.diffusion_logratio import diffusion_dpo_loss, pair_denoising_errors
from scorealign.preference.trainer import batch_indices
from scorealign.rng import derive_seed, generator
from scorealign.preference.rpo.base import Base, load_base
from scorealign.preference.rpo.config import DiffusionDPOConfig
from scorealign.preference.rpo.dataset import PAIRS_FILE, DatasetError, PairDataset, read_pairs
from scorealign.sde.dsm import sample_t
from scorealign.train.task import prompt_problem
from scorealign.run.loop import (Cadence, LogWindow, adamw_resumed, lr_at, mean_over_processes,
                                 optimizer_step, run_steps)
from scorealign.run.rundir import RunDir


def _inner_unet(model: nn.Module) -> nn.Module:
    unet = getattr(model, "unet", None)
    if unet is None or not hasattr(unet, "add_adapter"):
        raise ValueError("LoRA needs a model wrapping a diffusers UNet (model.unet)")
    return unet


def build_policy(cfg: DiffusionDPOConfig, base: Base
                 ) -> tuple[nn.Module, Callable[[], contextlib.AbstractContextManager], nn.Module]:
    """(policy, reference context, reference module) for the config's LoRA/reference modes.

    With ``reference.mode = frozen`` the reference is the base model itself (never trained: the
    policy is a deep copy); with ``lora_disabled`` it is the policy inside a context that turns
    its adapters off [the LoRA-free base, as peft's ``disable_adapter``].
    """
    policy = copy.deepcopy(base.model)
    if cfg.lora.on:
        from peft import LoraConfig

        unet = _inner_unet(policy)
        policy.requires_grad_(False)
        # LoRA A is drawn from torch's global generator: seed it from the run's seed, so the
        # run does not depend on what ran before it in the process (as policy/diffusers_sd.add_lora)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "lora"))
            unet.add_adapter(LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
                                        lora_dropout=cfg.lora.dropout,
                                        target_modules=list(cfg.lora.target_modules),
                                        init_lora_weights=True))
        for name, p in policy.named_parameters():
            p.requires_grad_("lora_" in name)
    else:
        policy.requires_grad_(True)
    policy.train()
    if cfg.reference.mode == "lora_disabled":
        unet = _inner_unet(policy)

        @contextlib.contextmanager
        def adapters_off():
            unet.disable_adapters()
            try:
                yield
            finally:
                unet.enable_adapters()

        return policy, adapters_off, policy
    base.model.requires_grad_(False).eval()
    return policy, contextlib.nullcontext, base.model


def pair_batch(data: PairDataset, idx: list[int], base: Base, device: torch.device
               ) -> tuple[Tensor, Tensor, Any]:
    """(chosen, rejected, cond) of the pairs ``idx`` on ``device``."""
    cond = base.cond([data.records[i]["prompt"] for i in idx]).to(device)
    return data.chosen[idx].to(device), data.rejected[idx].to(device), cond


def dpo_loss_step(cfg: DiffusionDPOConfig, base: Base, policy: nn.Module, ref_ctx, ref: nn.Module,
                  x_w: Tensor, x_l: Tensor, cond: Any, step: int, rank: int = 0,
                  world: int = 1) -> tuple[Tensor, dict]:
    """Loss and metrics of one Diffusion-DPO batch at ``step`` (shared t, ε per pair).

    With ``world`` processes the batch is process ``rank``'s share of a global batch of
    ``world·B`` pairs: t and ε are drawn for the global batch and this share is taken, so the
    processes together see what one process sees at the global batch.
    """
    lc = cfg.loss
    g = generator(cfg.seed, "diffusion-dpo", step)
    b = x_w.shape[0]
    mine = slice(rank * b, (rank + 1) * b)
    t = sample_t(b * world, g, base.sde)[mine].to(x_w.device)
    noise = torch.randn((b * world, *x_w.shape[1:]), generator=g,
                        dtype=x_w.dtype)[mine].to(x_w.device)
    kw = dict(kind=base.kind, weighting=lc.weighting, reduce=lc.reduce)
    err_pw, err_pl = pair_denoising_errors(policy, base.sde, x_w, x_l, t, noise, cond, **kw)
    with torch.no_grad(), ref_ctx():
        err_rw, err_rl = pair_denoising_errors(ref, base.sde, x_w, x_l, t, noise, cond, **kw)
    out = diffusion_dpo_loss(err_pw, err_rw, err_pl, err_rl, link=lc.link, beta=lc.beta,
                             scale=lc.scale, **lc.params)
    loss = out.losses.mean()
    if lc.sft_weight:
        loss = loss + lc.sft_weight * err_pw.mean()
    metrics = {"loss": loss.detach(), **out.metrics(),
               "errors/policy_chosen": err_pw.detach().mean(),
               "errors/policy_rejected": err_pl.detach().mean(),
               "errors/ref_chosen": err_rw.mean(), "errors/ref_rejected": err_rl.mean()}
    return loss, metrics


def _write_json(path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _evaluate(cfg: DiffusionDPOConfig, base: Base, policy: nn.Module, run: RunDir, step: int,
              tag: str) -> dict[str, float]:
    from scorealign.report.figures import save_image_grid
    from scorealign.preference.rpo.evaluate import evaluate_policy

    metrics, x = evaluate_policy(base, policy, cfg.eval)
    run.log(step, **metrics)
    _write_json(run.path / f"eval_{tag}.json", {**metrics, "step": step})
    k = min(len(x), 100)
    order = torch.arange(k).reshape(-1, 10).T.flatten() if k % 10 == 0 else torch.arange(k)
    save_image_grid(x[:k][order], run.samples / f"{tag}.png", nrow=max(1, k // 10))
    return metrics


def run_dpo_steps(run: RunDir, acc, t, start: int, end: int, step: Callable, label: str,
                  lr: Callable, opt: torch.optim.Optimizer, on_log: Callable, policy: nn.Module,
                  callback: Callable | None) -> None:
    """The step loop of a Diffusion-DPO trainer (:func:`scorealign.run.loop.run_steps`):
    steps ``start`` → ``end`` of ``t.steps`` with ``t``'s logging and checkpoint cadence, a
    progress bar of the loss and the preference accuracy, checkpoints of the policy's weights
    and the optimizer, ``callback(done, policy)`` after each step. Shared by :func:`train` and
    the testbed trainer (``commands/testbed_dpo_run.py``)."""
    run_steps(run=run, acc=acc,
              cadence=Cadence(t.steps, t.log_every, t.ckpt_every, t.keep_checkpoints),
              start=start, stop=end, step=step, label=label, lr=lr, optimizers=opt,
              on_log=on_log, progress=t.progress,
              after_step=(lambda done: callback(done, policy)) if callback else None,
              bar_field=lambda m: {"loss": float(m["loss"]),
                                   "acc": float(m["rewards/accuracy"])},
              states=lambda: {"model": {k: v.detach().clone()
                                        for k, v in policy.state_dict().items()},
                              "optimizer": opt.state_dict()})


def train(cfg: DiffusionDPOConfig, run: RunDir, *, resume: bool = False,
          base: Base | None = None, callback: Callable[[int, nn.Module], None] | None = None,
          export_final: bool = True) -> dict[str, Any]:
    """Run (or continue) Diffusion-DPO into ``run``; returns a summary (last metrics, evals).

    ``callback(step, policy)`` runs after every optimizer step (``step`` counts the steps done),
    e.g. to evaluate along training without reloading checkpoints. The trained ``policy`` is in
    the summary; the ``dpo`` command exports it (``export_final`` is ignored: trainers never
    export).
    """
    from accelerate import Accelerator

    t = cfg.train
    acc = Accelerator(cpu=cfg.device == "cpu" or (cfg.device == "auto"
                                                  and not torch.cuda.is_available()))
    device, rank, world = acc.device, acc.process_index, acc.num_processes
    base = base or load_base(cfg.base.path, cfg.base.sde)
    base.model.to(device)
    data = read_pairs(cfg.data.path, cfg.data.limit)
    if len(data) == 0:
        raise ValueError(f"{cfg.data.path}: the pair dataset is empty")
    if tuple(data.chosen.shape[1:]) != base.image_shape():
        raise ValueError(f"{cfg.data.path}: images {tuple(data.chosen.shape[1:])} do not match "
                         f"the base model's {base.image_shape()}")
    if (problem := prompt_problem("digits", data.prompts)) is not None:  # before the first step
        raise DatasetError(f"{data.path / PAIRS_FILE}: {problem}")
    policy, ref_ctx, ref = build_policy(cfg, base)
    model, opt, start = adamw_resumed(policy, t.lr, t.weight_decay, run, resume, acc)
    summary: dict[str, Any] = {"start_step": start, "pairs": len(data)}
    if start == 0 and cfg.eval.enabled and acc.is_main_process:
        summary["eval_start"] = _evaluate(cfg, base, policy, run, 0, "start")
    end = min(t.steps, t.stop_after_steps or t.steps)
    window = LogWindow()

    def lr(i: int) -> float:
        return lr_at(i, t.lr, t.steps, t.warmup_steps, ratio_first=True)

    def step(i: int) -> dict[str, Any]:
        idx = batch_indices(len(data), cfg.seed, i, 0, 1, t.batch_size * world)
        x_w, x_l, cond = pair_batch(data, idx[rank * t.batch_size:(rank + 1) * t.batch_size],
                                    base, device)
        loss, metrics = dpo_loss_step(cfg, base, model, ref_ctx, ref, x_w, x_l, cond, i,
                                      rank, world)
        if (gnorm := optimizer_step(acc, model, opt, loss, t.grad_clip)) is not None:
            metrics["grad_norm"] = gnorm
        window.add(metrics)
        return metrics

    def on_log(done: int, metrics: dict[str, Any]) -> dict[str, float]:
        mean = window.mean()
        mean = mean_over_processes(mean, acc) if world > 1 else mean
        row = window.close({**mean, "perf/lr": lr(done - 1)})
        summary["last"] = {"step": done, **row}
        return row

    run_dpo_steps(run, acc, t, start, end, step, "diffusion-dpo", lr, opt, on_log, policy,
                  callback)
    acc.wait_for_everyone()
    summary["end_step"] = end
    if end == t.steps and end > start and acc.is_main_process:
        if cfg.eval.enabled:
            summary["eval_end"] = _evaluate(cfg, base, policy, run, end, "end")
    summary["policy"] = policy
    return summary
