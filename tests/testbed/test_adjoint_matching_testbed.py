"""Adjoint matching on the Gaussian-mixture testbed (issue 23, Done-when 2): the memoryless run
reaches the tilt p₀e^{r/β}/Z, the same run with a non-memoryless sampler misses it.

Problem: ``configs/finetune/testbed_adjoint_matching.yaml`` — the exact velocity of the 2-D
8-Gaussian ring (rectified flow, ``base.sde: flow``) plus a zero-initialized control MLP,
r(x) = −½‖x − c‖², β = λ = 2; rollouts by the trainer (``rl.trainer.Finetuner``), the lean adjoint
of the exact base, the registered loss. Judged by ``commands.kind_finetune.testbed_evaluate``
(n = 1000 samples; energy distance to 1000 exact draws of p*_β) against the sampler's own floor:
the same sampler driven by the exact ∇log p*_t, at 8 seeds (its mean + 3 sd; measured
0.0046 ± 0.0043 at 12 seeds, the 20-step ddpm's discretization plus finite-n noise).

Non-memoryless: the same config with DDIM η = 0.2 (``policy.sampler=ddim``, ``policy.eta=0.2``,
``algo.loss_kwargs.memoryless=false``: the update kind otherwise refuses it). Its path-KL optimum is
not the tilt [Domingo-Enrich+25, arXiv:2409.08861, "memoryless noise schedule": the initial value
function bias]: X_0 depends on X_T, whose law the control cannot change, so the fine-tuned law stays
near the base law. Measured numbers: docs/methods/adjoint_matching.md ("Testbed").
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scorealign.config import FieldError, load_config
from scorealign.rl.config import FinetuneConfig

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "finetune" / \
    "testbed_adjoint_matching.yaml"
FAST = ["device=cpu", "train.log_kl=false", "train.ckpt_every=100000"]
NON_MEMORYLESS = ["policy.sampler=ddim", "policy.eta=0.2",
                  "algo.loss_kwargs={lam: 2.0, times: 20, memoryless: false}"]


def _cfg(*sets: str) -> FinetuneConfig:
    return load_config(CONFIG, FinetuneConfig, [*FAST, *sets])


def _train_and_judge(*sets: str) -> dict[str, float]:
    from scorealign.commands.kind_finetune import testbed_evaluate
    from scorealign.rl.trainer import Finetuner

    cfg = _cfg(*sets)
    ft = Finetuner(cfg, None)
    ft.fit()
    return testbed_evaluate(cfg, ft.setup, ft.acc.unwrap_model(ft.model), n=1000)


def _floor_spread(cfg: FinetuneConfig, seeds: int = 8) -> tuple[float, float]:
    """Mean and sd of the sampler's floor (exact ∇log p*_t, n = 1000) over ``seeds`` seeds."""
    from scorealign.rl.setup import build_setup
    from scorealign.testbed import floor

    setup = build_setup(cfg)
    p = cfg.policy
    vals = torch.tensor([floor(setup.problem.target, setup.sde, torch.Generator().manual_seed(s),
                               n=1000, sampler=p.sampler, steps=p.steps, kind=setup.kind,
                               eta=p.eta, grid=p.grid) for s in range(seeds)])
    return float(vals.mean()), float(vals.std())


def test_config_is_the_tilt_at_beta():
    """λ of the loss is the problem's β (the tilt the testbed judges against)."""
    cfg = _cfg()
    assert cfg.algo.loss == "adjoint_matching"
    assert cfg.algo.loss_kwargs["lam"] == cfg.base.beta
    assert cfg.policy.sampler == "ddpm" and cfg.base.sde == "flow"


def test_non_memoryless_sampler_refused_unless_asked():
    from scorealign.rl.trainer import Finetuner

    with pytest.raises(FieldError, match="memoryless"):
        Finetuner(_cfg("policy.sampler=ddim", "policy.eta=0.2"), None)
    Finetuner(_cfg(*NON_MEMORYLESS), None)  # the ablation builds


@pytest.mark.slow
def test_memoryless_reaches_tilt_non_memoryless_misses():
    """About 60 s of CPU: two 120-epoch runs (27 s each) and 8 floors."""
    mem = _train_and_judge()
    floor_mean, floor_sd = _floor_spread(_cfg())
    base = mem["base/testbed/distance"]
    print("memoryless", mem["testbed/distance"], "floor", floor_mean, floor_sd, "base", base)
    assert base > 0.5  # the tilt moves the law far (measured 0.81)
    assert mem["testbed/distance"] < floor_mean + 3 * floor_sd, (mem, floor_mean, floor_sd)
    nm = _train_and_judge(*NON_MEMORYLESS)
    print("ddim eta=0.2", nm["testbed/distance"], "its floor", nm["testbed/distance_floor"])
    # the bias: far from the tilt although its own sampler reaches p*_β with the exact score
    assert nm["testbed/distance_floor"] < floor_mean + 3 * floor_sd
    assert nm["testbed/distance"] > 0.5 * nm["base/testbed/distance"]
    assert nm["testbed/distance"] > 20 * mem["testbed/distance"]


def test_model_evaluations_per_update_are_counted():
    """One epoch, one optimizer step: forward calls of θ and of the frozen base, counted in rows
    by hooks (the numbers docs/methods/adjoint_matching.md reports), against the cost formula
    ``cost/model_evals_grad`` = B (K + S).

    θ: S rollout steps without gradient, K trained steps with a parameter graph;
    base: S steps with a graph w.r.t. the state only (the lean adjoint's VJPs), none without.
    """
    from scorealign.rl.trainer import Finetuner

    B, S, K = 8, 6, 3
    cfg = _cfg(f"policy.steps={S}", "prompts.per_epoch=2", "prompts.k=4",
               f"train.minibatch_size={B}", f"train.sample_batch_size={B}",
               f"algo.loss_kwargs={{lam: 2.0, times: {K}}}")
    ft = Finetuner(cfg, None)
    calls = {("theta", True): 0, ("theta", False): 0, ("base", True): 0, ("base", False): 0}

    def hook(name):
        def fn(module, args, out):
            calls[name, torch.is_grad_enabled()] += args[0].shape[0]
        return fn
    ft.setup.model.register_forward_hook(hook("theta"))
    ft.setup.ref.register_forward_hook(hook("base"))
    m = ft.train_epoch()
    assert calls == {("theta", False): B * S, ("theta", True): B * K,
                     ("base", True): B * S, ("base", False): 0}, calls
    assert m["cost/model_evals_grad"] == B * (K + S)
