"""``train.rollout_backward``: per-sample adapter gradients recorded during the rollout give the
recomputing path's gradient with no training forward (nets/per_sample_grads.py,
``Finetuner._update_from_scores``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from scorealign.config import ConfigError, load_config
from scorealign.nets.per_sample_grads import PerSampleGradsUnsupported, PerSampleLinearGrads
from scorealign.rl.config import FinetuneConfig
from scorealign.rl.trainer import Finetuner, epoch_rows, scores_gradient
from scorealign.rl.updates import policy_loss

SD_SETS = ["base.type=sd_tiny", "policy.steps=3", "policy.guidance=5.0", "prompts.per_epoch=2",
           "prompts.k=2", "train.sample_batch_size=2", "train.minibatch_size=4", "lora.rank=4",
           "reward.optimized=jpeg_compressibility", "reward.gold=null", "algo.loss=ppo_clip",
           "algo.advantage=per_prompt", "algo.advantage_kwargs={buffer_size: 4, min_count: 2}",
           "train.log_kl=false", "device=cpu", "train.epochs=1", "policy.action_steps=all"]
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"


class Adapted(nn.Module):
    """A frozen linear map with a trainable low-rank pair beside it (LoRA's shape), on tokens,
    then a row-wise nonlinearity: no operation mixes rows."""

    def __init__(self, d: int = 6, r: int = 2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.base = nn.Linear(d, d)
        self.base.requires_grad_(False)
        self.a = nn.Linear(d, r, bias=False)
        self.b = nn.Linear(r, d)
        for p in (*self.a.parameters(), *self.b.parameters()):
            p.data = torch.randn(p.shape, generator=g)

    def forward(self, x):
        return torch.tanh(self.base(x) + self.b(self.a(x)))


def _guided_losses(net, x, c):
    """Per-sample losses of a guidance-style call: rows [x + c; x] in one batch, sample i's
    output mixes rows i and B + i."""
    both = net(torch.cat([x + c, x]))
    cond, uncond = both.chunk(2)
    out = uncond + 3.0 * (cond - uncond)
    return (out ** 2).sum((1, 2))


def test_per_sample_linear_grads_equal_one_backward_per_sample():
    net = Adapted().double()  # fp64: one backward and three agree to round-off of 1e-16
    g = torch.Generator().manual_seed(1)
    x, c = (torch.randn(3, 5, 6, generator=g, dtype=torch.float64) for _ in range(2))
    rec = PerSampleLinearGrads(net)
    assert {n for n, _ in rec.params} == {"a.weight", "b.weight", "b.bias"}
    with rec.recording(batch=3, slots=2):
        rec.at(1)
        _guided_losses(net, x, c).sum().backward()
    assert all(g[0].abs().max() == 0 for g in rec.store.values())
    per_sample = {p: g[1] for p, g in rec.store.items()}
    for i in range(3):
        net.zero_grad()
        _guided_losses(net, x[i:i + 1], c[i:i + 1]).sum().backward()
        for _, p in rec.params:
            assert per_sample[p].dtype == torch.float64
            torch.testing.assert_close(per_sample[p][i], p.grad, rtol=1e-10, atol=1e-12)
    assert all(per_sample[p].abs().max() > 0 for _, p in rec.params)


def test_per_sample_grads_refuse_what_they_cannot_split():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(PerSampleGradsUnsupported, match="0.weight"):
        PerSampleLinearGrads(net)
    net = Adapted()
    rec = PerSampleLinearGrads(net)
    with rec.recording(batch=2, slots=1), pytest.raises(PerSampleGradsUnsupported,
                                                        match="multiple"):
        rec.at(0)
        net(torch.randn(3, 6)).sum().backward()
    net.requires_grad_(False)
    with pytest.raises(PerSampleGradsUnsupported, match="no trainable"):
        PerSampleLinearGrads(net)


def _sd(*sets: str) -> FinetuneConfig:
    return load_config(None, FinetuneConfig, [*SD_SETS, *sets])


def _scores_vs_recompute(ft: Finetuner) -> None:
    """The rollout's recorded scores, weighted by ∂L/∂ log π, against the loss's gradient
    through a recomputation at the same weights (rows in two rollout chunks)."""
    assert ft.score_grads is not None
    prompts, ids, seeds = epoch_rows(ft.cfg, ft.setup.prompts, 0)
    _, traj, _ = ft.sample_and_score(prompts, ids, seeds)
    chunks = ft._scores
    assert traj.logp_graph is None and not traj.log_probs.requires_grad
    trained = sorted({k for _, steps in chunks for k, _ in steps})
    assert trained == traj.trained.any(0).nonzero().flatten().tolist() and len(trained) > 1
    adv = torch.randn(traj.batch_size, generator=torch.Generator().manual_seed(1))
    logp = traj.log_probs.clone().requires_grad_(True)
    (w,) = torch.autograd.grad(policy_loss(ft, traj, adv, logp=logp).loss, logp)
    recorded = scores_gradient(chunks, w)
    ft.opt.zero_grad(set_to_none=True)
    policy_loss(ft, traj, adv).loss.backward()
    params = [p for p in ft.model.parameters() if p.requires_grad]
    assert params and set(recorded) == set(params)
    # Same gradient by the chain rule, not the same arithmetic: the rollout's backward runs per
    # step on its sampling chunks, the recomputation in its own batching (fp32 round-off, the
    # log-probs ≈ −350 being sums over the latent); a wrong step, row or weight is off by O(1).
    for p in params:
        torch.testing.assert_close(recorded[p], p.grad, rtol=1e-4, atol=1e-6)
    assert any(p.grad.abs().max() > 0 for p in params)


def test_the_rollout_keeps_no_activation_alive():
    """After the rollout (its trajectory still held, as the trainer holds it) no layer input
    the per-sample hooks saw is alive: each step's graph and hook inputs are freed."""
    import gc
    import weakref
    ft = Finetuner(_sd(), None)
    rec, seen = ft.score_grads, []
    forward = rec._forward

    def spy(layer, inputs, out):
        if out.requires_grad:
            seen.append(weakref.ref(inputs[0]))
        return forward(layer, inputs, out)
    rec._forward = spy
    prompts, ids, seeds = epoch_rows(ft.cfg, ft.setup.prompts, 0)
    _, traj, _ = ft.sample_and_score(prompts, ids, seeds)
    gc.collect()
    assert seen and traj.batch_size == 4
    assert sum(r() is not None for r in seen) == 0


def test_sd_lora_lean_records_scores_by_default_and_they_give_the_gradient():
    cfg = _sd()
    assert cfg.levers().rollout_backward == "auto"
    _scores_vs_recompute(Finetuner(cfg, None))


def test_flow_authors_log_prob_scores_give_the_gradient():
    """Flow-GRPO's CPS sampler on the SD3-style tiny pipeline (β = 0) in the authors' log-prob
    units (−Σ (x' − μ)², policy.log_prob_units: authors)."""
    cfg = load_config(CONFIGS / "sd3_tiny_flow_grpo_lora.yaml", FinetuneConfig,
                      ["train.epochs=1", "policy.steps=3", "prompts.per_epoch=2", "prompts.k=2",
                       "train.minibatch_size=4", "train.sample_batch_size=2",
                       "base.latent_size=4", "train.log_kl=false", "device=cpu",
                       "algo.loss_kwargs={beta: 0.0}", "policy.action_steps=all",
                       "train.rollout_backward=true", "policy.sampler=flow_cps"])
    ft = Finetuner(cfg, None)
    assert ft.policy._authors_log_prob
    _scores_vs_recompute(ft)


def _epoch(*sets: str):
    ft = Finetuner(_sd("train.grad_clip=0", *sets), None)
    calls = {"grad": 0, "no_grad": 0}
    unet = ft.setup.model

    def count(*_):
        calls["grad" if torch.is_grad_enabled() else "no_grad"] += 1
    handle = unet.register_forward_hook(count)
    ft.train_epoch()
    handle.remove()
    moment = [ft.opt.state[p]["exp_avg"].clone() for p in ft.model.parameters()
              if p.requires_grad]
    return ft, moment, calls


def test_an_epoch_with_rollout_backward_takes_the_recompute_step_without_its_forward():
    """Adam's first moment after the step is (1 − β1)·gradient: the same with the scores
    recorded in the rollout as with TRL's recompute; the lever's epoch runs the model once per
    step and chunk (with autograd), the recompute's twice (rollout, then training forward)."""
    ft, scored, calls_on = _epoch("train.rollout_backward=true")
    ft_off, recomputed, calls_off = _epoch("train.rollout_backward=false")
    assert ft.score_grads is not None and ft_off.score_grads is None
    for a, b in zip(scored, recomputed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)
    assert any(a.abs().max() > 0 for a in scored)
    steps, chunks = 3, 2  # policy.steps, rows 4 / train.sample_batch_size 2
    assert calls_on["grad"] == steps * chunks
    assert calls_off["grad"] == steps  # one micro-batch of 4 rows per trained step
    assert calls_off["no_grad"] - calls_on["no_grad"] == steps * chunks  # the rollout's


def test_rollout_backward_config_resolution_and_errors():
    assert _sd("train.mode=fast").levers().rollout_backward is False
    assert _sd().levers(world=2).rollout_backward is False
    assert _sd("train.minibatch_size=2").levers().rollout_backward is False  # two steps/epoch
    assert _sd("train.step_chunk=0").levers().rollout_backward is False
    # a rollout chunk larger than a training micro-batch would hold a larger graph than lean's
    assert _sd("train.sample_batch_size=4", "train.grad_accum=2").levers().rollout_backward \
        is False
    assert _sd("train.sample_batch_size=4").levers().rollout_backward == "auto"
    for bad, says in (("lora.rank=0", "lora.rank"), ("train.inner_epochs=2", "inner_epochs"),
                      ("train.reuse_rollout_graph=true", "reuse_rollout_graph"),
                      ("base.gradient_checkpointing=true", "gradient_checkpointing")):
        with pytest.raises((ConfigError, ValueError)) as e:
            _sd("train.rollout_backward=true", bad)
        assert "train.rollout_backward" in str(e.value) and says in str(e.value)


@pytest.mark.slow
def test_kill_9_then_resume_with_rollout_backward_is_bit_identical(tmp_path, kill9_then_resume):
    """An SD LoRA run whose every epoch takes its gradient in the rollout, killed after
    epoch 2's checkpoint and resumed, ends on the uninterrupted run's weights bit for bit (both
    sides run the same computation on the same shapes)."""
    from typer.testing import CliRunner

    from scorealign.cli.app import app
    from scorealign.run.checkpoint import latest_checkpoint, load_checkpoint
    sets = ["policy.steps=3", "prompts.per_epoch=2", "prompts.k=2", "train.minibatch_size=4",
            "train.sample_batch_size=4", "train.epochs=3", "train.ckpt_every=1", "device=cpu",
            "reward.gold=null", "policy.action_steps=all", "train.rollout_backward=true"]
    args = ["--config", str(CONFIGS / "sd_tiny_ddpo_lora.yaml")] + \
        [a for s in sets for a in ("--set", s)]
    full = CliRunner().invoke(app, ["finetune", "--out", str(tmp_path / "full"), *args])
    assert full.exit_code == 0, full.output
    kill9_then_resume(tmp_path / "cut", args, epoch=2)  # tests/conftest.py
    a = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))[0]["model"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints"))[0]["model"]
    assert a.keys() == b.keys() and all("lora" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_rollout_backward_with_a_bf16_base_keeps_fp32_scores_and_trains():
    """base.dtype bfloat16 (the GPU recipes): the UNet in bf16, adapters and scores fp32. Each
    recorded score ∇ log π_ik equals the recomputed log-prob's gradient of that one entry; an
    epoch trains.

    Per entry, not the weighted sum: in bf16 the backward rounds the incoming gradient to 8
    mantissa bits layer by layer, so backpropagating Σ w_ik log π_ik (the recompute) and
    weighting unit backward passes (the scores) differ by bf16 round-off, measured 4 % relative
    on this net; entry by entry both run unit weights (measured ≤ 4e-7 relative)."""
    ft = Finetuner(_sd("base.dtype=bfloat16", "train.rollout_backward=true"), None)
    prompts, ids, seeds = epoch_rows(ft.cfg, ft.setup.prompts, 0)
    _, traj, _ = ft.sample_and_score(prompts, ids, seeds)
    params = [p for p in ft.model.parameters() if p.requires_grad]
    start, checked = 0, 0
    for n, steps in ft._scores:
        for k, scores in steps:
            for i in range(n):
                assert all(scores[p].dtype == torch.float32 for p in params)
                ft.opt.zero_grad(set_to_none=True)
                ft.policy.log_prob(traj)[start + i, k].backward()
                num = sum(((scores[p][i] - p.grad) ** 2).sum() for p in params)
                den = sum((p.grad ** 2).sum() for p in params)
                # a wrong row, step or weight is off by O(1); bf16 kernels on other shapes or
                # CPUs may round differently, which stays far below 1e-2
                assert den > 0 and (num / den).sqrt() < 1e-2
                checked += 1
        start += n
    assert checked == 12  # 2 chunks × 3 steps × 2 rows
    before = {k: v.clone() for k, v in ft.setup.trainable_state().items()}
    ft.train_epoch()
    after = ft.setup.trainable_state()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
