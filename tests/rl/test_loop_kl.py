"""LOOP's KL term: the same code and units as GRPO's β (rl.losses.kl_penalty); β = 0 is LOOP
as published; the trainer computes the differentiable KL only when β > 0."""

import pytest
import torch

from scorealign.rl import losses as L
from scorealign.rl.updates import loss_needs_kl


def _inputs(seed=0, b=6, t=5):
    g = torch.Generator().manual_seed(seed)
    logp = torch.randn(b, t, generator=g).requires_grad_()
    old = (logp + 1e-3 * torch.randn(b, t, generator=g)).detach()
    adv = torch.randn(b, generator=g)
    kl = torch.rand(b, t, generator=g).requires_grad_()
    mask = (torch.rand(b, t, generator=g) > 0.3).float()
    mask[:, 0] = 1
    return logp, old, adv, kl, mask


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_loop_with_beta_equals_grpo_with_the_same_beta(reduce):
    logp, old, adv, kl, mask = _inputs()
    a = L.loop(logp, old, adv, mask, kl, clip=0.05, beta=0.3, reduce=reduce)
    b = L.grpo(logp, old, adv, kl, mask, clip=0.05, beta=0.3, reduce=reduce)
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
    for ga, gb in zip(torch.autograd.grad(a.loss, (logp, kl)),
                      torch.autograd.grad(b.loss, (logp, kl))):
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)
    assert set(a.metrics) == set(b.metrics) and "loss/kl" in a.metrics


def test_loop_kl_term_is_beta_times_the_masked_step_mean():
    logp, old, adv, kl, mask = _inputs(seed=1)
    plain = L.loop(logp, old, adv, mask)
    out = L.loop(logp, old, adv, mask, kl, beta=0.25)
    per_row = (kl * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(out.loss - plain.loss, 0.25 * per_row.mean())
    g_kl = torch.autograd.grad(out.loss, kl)[0]   # d/dKL_bt = β m_bt / (B |T_b|)
    torch.testing.assert_close(g_kl, 0.25 * mask / mask.sum(1, keepdim=True) / kl.shape[0])
    assert "loss/kl" not in plain.metrics
    torch.testing.assert_close(out.metrics["loss/kl"], per_row.mean().detach())


def test_loop_beta_zero_is_ppo_clip_and_positive_beta_needs_kl():
    logp, old, adv, kl, mask = _inputs(seed=2)
    ref = L.ppo_clip(logp, old, adv, mask, clip=1e-4)
    torch.testing.assert_close(L.loop(logp, old, adv, mask).loss, ref.loss, rtol=0, atol=0)
    with pytest.raises(ValueError, match="loop with beta > 0 needs the per-step KL"):
        L.loop(logp, old, adv, mask, beta=1e-4)
    entry = L.RL_LOSSES.get("loop")
    assert not loss_needs_kl(entry, {"clip": 1e-4})        # the published LOOP: no KL pass
    assert loss_needs_kl(entry, {"clip": 1e-4, "beta": 1e-4})
