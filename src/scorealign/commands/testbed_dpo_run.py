r"""Diffusion-DPO on a closed-form testbed problem: ``scorealign dpo`` with ``base.type: testbed``.

The model is the testbed's fine-tuning base (:class:`scorealign.testbed.finetune.ControlledBase`:
the exact ε-prediction of p₀ plus a zero-initialized control network, built by
``rl.setup.build_setup`` exactly as ``scorealign finetune`` builds it); the reference is the exact
base. There are no images on disk: every ``pairs.draw_every`` optimizer steps (the first before
step 0) ``pairs.per_draw`` pairs of base samples are drawn (the base model's sampler of section
``policy``, or exact draws of p₀), rewarded by the problem's exact r (2 queries a pair) and
labelled by Bradley–Terry on r/τ (:func:`scorealign.testbed.pairs.draw_pairs`). Each step trains
on ``train.batch_size`` pairs drawn uniformly from all pairs so far with the library's
Diffusion-DPO step (:func:`scorealign.preference.diffusion_dpo.dpo_loss_step`: one shared (t, ε)
per pair, sigmoid link of the denoising-error margin [Wallace+23, arXiv:2311.12908, Eq. 14]).

The config check (``DiffusionDPOConfig._check_testbed``) fixes the margin to the ELBO difference
(likelihood weighting g(t)², summed over dimensions, scale T/2 [Song+21b, Thm. 1]) and
β_DPO = β/τ, so DPO's optimum p₀ e^{r/(τ β_DPO)} [Rafailov+23, Eq. 4] is the testbed's p*_β
(tests/testbed/test_dpo_testbed.py checks the ELBO margin against (r(x) − r(x'))/β).

Exact resume: the pairs of draw j are a function of (seed, j) and are redrawn on resume; each
step's batch comes from ``generator(seed, "testbed-dpo-batch", step)`` and its t, ε from
``dpo_loss_step``'s ``generator(seed, "diffusion-dpo", step)``; the checkpoint holds the control
network and the optimizer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from scorealign.preference.diffusion_dpo import dpo_loss_step, run_dpo_steps
from scorealign.preference.rpo.config import DiffusionDPOConfig
from scorealign.rng import derive_seed, generator
from scorealign.run.loop import LogWindow, adamw_resumed, lr_at, optimizer_step
from scorealign.run.rundir import RunDir
from scorealign.sde.base import SDE
from scorealign.testbed.pairs import Pairs, draw_pairs

_F64 = torch.float64


@dataclass(frozen=True)
class _Denoiser:
    """What :func:`dpo_loss_step` reads of a base: its SDE and prediction kind."""

    sde: SDE
    kind: str


def testbed_setup(cfg: DiffusionDPOConfig) -> tuple[Any, Any]:
    """(FinetuneConfig, ``rl.setup.Setup``) of the run's testbed problem: the same model,
    reference, problem and policy as ``scorealign finetune`` with this ``base`` and ``policy``
    builds (VP SDE, ε-prediction, no LoRA)."""
    from scorealign.rl.config import BaseConfig, FinetuneConfig
    from scorealign.rl.setup import build_setup

    b = cfg.base
    ft = FinetuneConfig(base=BaseConfig(type="testbed", problem=b.problem, dim=b.dim,
                                        beta=b.beta, sde="vp", control_hidden=b.control_hidden,
                                        seed=b.seed),
                        policy=cfg.policy, device=cfg.device)
    return ft, build_setup(ft)


def draws_before(step: int, every: int) -> int:
    """How many draws of pairs precede optimizer step ``step`` (draw j happens before step
    j·every; ``every`` 0: one draw, before step 0)."""
    if every == 0:
        return 1 if step > 0 else 0
    return -(-step // every)


def pair_sampler(cfg: DiffusionDPOConfig, ft_cfg: Any, setup: Any, draw: int,
                 device: torch.device | str = "cpu") -> Callable[[int], Tensor]:
    """``sample(m)`` → [m, D]: draw ``draw``'s base samples; ``pairs.source`` sampler: the
    base model's sampler (row seeds ``derive_seed(seed, "testbed-dpo-pairs", draw, i)``), exact:
    draws of p₀ from ``generator(seed, "testbed-dpo-pairs", draw)``."""
    if cfg.pairs.source == "exact":
        return lambda m: setup.problem.base.sample(
            m, generator(cfg.seed, "testbed-dpo-pairs", draw), _F64)
    pol = setup.policy(ft_cfg, setup.ref)

    def sample(m: int) -> Tensor:
        seeds = torch.tensor([derive_seed(cfg.seed, "testbed-dpo-pairs", draw, i)
                              for i in range(m)])
        with torch.no_grad():
            return pol.rollout(setup.prompts[:1], m, seeds=seeds, device=device).x0.cpu()
    return sample


def draw(cfg: DiffusionDPOConfig, ft_cfg: Any, setup: Any, j: int,
         device: torch.device | str = "cpu") -> Pairs:
    """The labelled pairs of draw ``j`` (labels from ``generator(seed, "testbed-dpo-labels",
    j)``)."""
    return draw_pairs(setup.problem, pair_sampler(cfg, ft_cfg, setup, j, device),
                      cfg.pairs.per_draw, cfg.pairs.tau,
                      generator(cfg.seed, "testbed-dpo-labels", j))


def train(cfg: DiffusionDPOConfig, run: RunDir | None, *, resume: bool = False,
          callback: Callable[[int, torch.nn.Module], None] | None = None) -> dict[str, Any]:
    """Run (or continue) Diffusion-DPO on the testbed into ``run``.

    Returns a summary: ``start_step``, ``end_step``, ``pairs`` (labelled so far), ``queries``
    (reward queries so far), ``last`` (the last logged row), ``policy`` (the trained model),
    ``setup`` and ``finetune_config`` (for ``testbed_evaluate`` / ``export_testbed``).
    ``callback(step, policy)`` runs after every optimizer step.
    """
    from accelerate import Accelerator

    if cfg.base.type != "testbed":
        raise ValueError(f"base.type {cfg.base.type!r}: this trainer runs base.type testbed")
    t = cfg.train
    acc = Accelerator(cpu=cfg.device == "cpu" or (cfg.device == "auto"
                                                  and not torch.cuda.is_available()))
    if acc.num_processes > 1:
        raise ValueError("base.type testbed runs on one process")
    device = acc.device
    ft_cfg, setup = testbed_setup(cfg)
    policy, ref = setup.model.to(device), setup.ref
    den = _Denoiser(setup.sde, setup.kind)
    model, opt, start = adamw_resumed(policy, t.lr, t.weight_decay, run, resume, acc)
    every = cfg.pairs.draw_every
    pool = [draw(cfg, ft_cfg, setup, j, device) for j in range(draws_before(start, every))]
    data: list[Pairs] = [Pairs.cat(pool)] if pool else []
    summary: dict[str, Any] = {"start_step": start}
    end = min(t.steps, t.stop_after_steps or t.steps)
    window = LogWindow()

    def lr(i: int) -> float:
        return lr_at(i, t.lr, t.steps, t.warmup_steps, ratio_first=True)

    def step(i: int) -> dict[str, Any]:
        if draws_before(i + 1, every) > len(pool):  # draw j = len(pool) precedes step i
            pool.append(draw(cfg, ft_cfg, setup, len(pool), device))
            data[:] = [Pairs.cat(pool)]
        d = data[0]
        idx = torch.randint(len(d), (t.batch_size,),
                            generator=generator(cfg.seed, "testbed-dpo-batch", i))
        x_w = d.chosen[idx].float().to(device)
        x_l = d.rejected[idx].float().to(device)
        loss, metrics = dpo_loss_step(cfg, den, model, contextlib.nullcontext, ref, x_w, x_l,
                                      None, i)
        if (gnorm := optimizer_step(acc, model, opt, loss, t.grad_clip)) is not None:
            metrics["grad_norm"] = gnorm
        metrics["pairs/count"] = float(len(d))
        metrics["pairs/reward_chosen"] = float(d.reward_w[idx].mean())
        metrics["pairs/reward_rejected"] = float(d.reward_l[idx].mean())
        window.add(metrics)
        return metrics

    def on_log(done: int, metrics: dict[str, Any]) -> dict[str, float]:
        row = window.close({**window.mean(), "perf/lr": lr(done - 1),
                            "queries/reward": 2.0 * cfg.pairs.per_draw * len(pool)})
        summary["last"] = {"step": done, **row}
        return row

    run_dpo_steps(run, acc, t, start, end, step, "diffusion-dpo (testbed)", lr, opt, on_log,
                  policy, callback)
    summary.update(end_step=end, pairs=sum(len(p) for p in pool),
                   queries=2 * sum(len(p) for p in pool), policy=policy.eval(), setup=setup,
                   finetune_config=ft_cfg)
    return summary


__all__ = ["draw", "draws_before", "pair_sampler", "testbed_setup", "train"]
