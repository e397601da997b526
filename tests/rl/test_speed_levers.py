"""Speed/memory levers of the RL update give the plain path's gradient: the on-policy reuse of
the rollout's graphs (``train.reuse_rollout_graph``), per-chunk backward (``train.step_chunk``)
and folded steps (``train.fold_steps``); every registered log-prob loss is step-separable (what
the per-chunk backward relies on); the device hook of a pipeline setup."""

from __future__ import annotations

import pytest
import torch

from scorealign.config import ConfigError
from scorealign.rl.losses import RL_LOSSES, split_signature
from scorealign.rl.trainer import Finetuner, epoch_rows
from scorealign.rl.updates import chunked_policy_loss, policy_loss
from scorealign.rl.update_kinds import update_kind_for

SD_SETS = ["base.type=sd_tiny", "policy.steps=3", "policy.guidance=5.0", "prompts.per_epoch=2",
           "prompts.k=2", "train.sample_batch_size=2", "train.minibatch_size=4", "lora.rank=4",
           "reward.optimized=jpeg_compressibility", "reward.gold=null", "algo.loss=ppo_clip",
           "algo.advantage=per_prompt", "algo.advantage_kwargs={buffer_size: 4, min_count: 2}",
           "train.log_kl=false", "device=cpu", "train.epochs=1"]
ON_POLICY = ["train.minibatch_size=8", "train.sample_batch_size=8", "algo.loss=loop"]


def _grads(ft: Finetuner) -> list[torch.Tensor]:
    return [p.grad.clone() for p in ft.model.parameters() if p.requires_grad]


def _batch(ft: Finetuner):
    prompts, ids, seeds = epoch_rows(ft.cfg, ft.setup.prompts, 0)
    _, traj, _ = ft.sample_and_score(prompts, ids, seeds)
    adv = torch.randn(traj.batch_size, generator=torch.Generator().manual_seed(1))
    return traj, adv


def _assert_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)
    assert any(x.abs().max() > 0 for x in a)


def _reuse_vs_recompute(ft: Finetuner) -> None:
    traj, adv = _batch(ft)
    assert traj.logp_graph is not None and traj.logp_graph.requires_grad
    assert not traj.log_probs.requires_grad and not traj.xs.requires_grad
    recomputed = ft.policy.log_prob(traj)
    # Not bit-exact by construction: the rollout evaluates the network one step at a time on
    # its sampling chunk, log_prob re-evaluates it in its own batching, so the fp32 kernels
    # (and their reduction order) may differ by CPU: on an AVX-512/AMX Xeon the SD log-probs
    # (≈ −351, a sum over the latent's 256 entries) differed by 1e-4. A per-entry fp32 error
    # of a few ulps (6e-8 relative) summed over the entries stays below 1e-5 relative; a wrong
    # log-prob (wrong step, time or weights) is off by O(1). Bit-exact comparisons stay where
    # both sides run the same computation (tests/samplers/test_fast_kernels.py, resume).
    torch.testing.assert_close(traj.logp_graph.detach(), recomputed.detach(), rtol=1e-5, atol=1e-5)
    ft.opt.zero_grad()
    policy_loss(ft, traj, adv, logp=traj.logp_graph).loss.backward()
    reused = _grads(ft)
    ft.opt.zero_grad()
    policy_loss(ft, traj, adv).loss.backward()
    _assert_close(reused, _grads(ft))


def test_reuse_graph_gradient_equals_recompute_digits(make_setup, make_config):
    cfg = make_config(*ON_POLICY, "train.reuse_rollout_graph=true", "policy.action_steps=all")
    _reuse_vs_recompute(Finetuner(cfg, None, setup=make_setup()))


def test_reuse_graph_gradient_equals_recompute_score_action(make_setup, make_config):
    cfg = make_config(*ON_POLICY, "train.reuse_rollout_graph=true", "policy.exploration=0.5",
                      "policy.sampler=euler_ode", "policy.eta=0.0")
    _reuse_vs_recompute(Finetuner(cfg, None, setup=make_setup()))


def test_reuse_graph_gradient_equals_recompute_sd():
    from scorealign.config import load_config
    from scorealign.rl.config import FinetuneConfig
    cfg = load_config(None, FinetuneConfig, [*SD_SETS, "train.minibatch_size=4",
                                             "train.reuse_rollout_graph=true"])
    _reuse_vs_recompute(Finetuner(cfg, None))


def test_reuse_graph_epoch_takes_the_recompute_paths_step(make_setup, make_config):
    """A whole trainer epoch: Adam's first moment after the step is (1 − β1)·gradient."""
    moments = []
    for flag in ("false", "true"):
        ft = Finetuner(make_config(*ON_POLICY, f"train.reuse_rollout_graph={flag}",
                                   "train.grad_clip=0"), None, setup=make_setup())
        m = ft.train_epoch()
        assert m["cost/model_evals_grad"] > 0
        moments.append([ft.opt.state[p]["exp_avg"].clone() for p in ft.model.parameters()
                        if p.requires_grad])
    _assert_close(*moments)


@pytest.mark.parametrize("loss,chunk,fold", [("ppo_clip", 1, False), ("grpo", 2, True),
                                             ("ppo_clip", 0, True)])
def test_chunked_and_folded_backward_equal_plain(make_setup, make_config, chunk, fold, loss):
    kw = ["algo.loss_kwargs={beta: 0.1}"] if loss == "grpo" else []
    ft = Finetuner(make_config(f"algo.loss={loss}", "algo.advantage=group", *kw), None,
                   setup=make_setup())
    traj, adv = _batch(ft)
    ft.opt.zero_grad()
    plain = policy_loss(ft, traj, adv)
    plain.loss.backward()
    want = _grads(ft)
    ft.opt.zero_grad()
    calls = []
    out = chunked_policy_loss(ft, traj, adv, chunk, fold,
                              lambda loss, last: (calls.append(last), loss.backward()))
    _assert_close(_grads(ft), want)
    torch.testing.assert_close(out.loss, plain.loss.detach(), rtol=1e-6, atol=1e-8)
    n = int(traj.trained.any(0).sum())
    assert calls == [False] * (len(calls) - 1) + [True]
    assert len(calls) == (n if chunk == 0 and not fold else -(-n // (chunk or n)))


def test_step_chunk_in_the_trainer_matches_plain_epoch(make_setup, make_config):
    moments = []
    for extra in (["train.step_chunk=0", "train.fold_steps=false"],
                  ["train.step_chunk=1", "train.grad_accum=2"], ["train.fold_steps=true"]):
        ft = Finetuner(make_config("algo.loss=ppo_clip", "train.grad_clip=0", *extra), None,
                       setup=make_setup())
        ft.train_epoch()
        moments.append([ft.opt.state[p]["exp_avg"].clone() for p in ft.model.parameters()
                        if p.requires_grad])
    _assert_close(moments[1], moments[0])
    _assert_close(moments[2], moments[0])


def _loss_inputs(names, b=3, s=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = {"logp_old": torch.randn(b, s, generator=g) * 3,
            "adv": torch.randn(b, generator=g),
            "mask": torch.rand(b, s, generator=g) > 0.2,
            "dt": torch.rand(s, generator=g) * 0.1 + 0.01}
    data["logp"] = data["logp_old"] + torch.randn(b, s, generator=g) * 1e-4
    data["kl"] = torch.rand(b, s, generator=g)
    return {n: data[n] for n in names if n in data}


@pytest.mark.parametrize("name", sorted(n for n in RL_LOSSES  # the chunked log-prob kind's
                                        if update_kind_for(RL_LOSSES.get(n)) == "log_prob"))
def test_registered_losses_are_step_separable(name):  # (the others are never chunked)
    """∂L/∂(logp, kl)[:, k] does not depend on the other steps' values: the per-chunk
    backward of ``chunked_policy_loss`` sums to the full gradient."""
    entry = RL_LOSSES.get(name)
    names, hyper = split_signature(entry.fn)
    kw = {"beta": 0.1} if "beta" in hyper else {}
    data = _loss_inputs(names)
    diff = [n for n in ("logp", "kl") if n in data]

    def grad(d):
        d = {n: (v.clone().requires_grad_(True) if n in diff else v) for n, v in d.items()}
        torch.autograd.backward(entry.fn(**d, **kw).loss)
        return {n: d[n].grad for n in diff}

    base = grad(data)
    for j in range(data["logp"].shape[1]):
        moved = dict(data)
        for n in diff:
            moved[n] = data[n].clone()
            moved[n][:, j] += torch.randn(data[n].shape[0]) * 1e-4
        other = grad(moved)
        keep = [k for k in range(data["logp"].shape[1]) if k != j]
        for n in diff:
            torch.testing.assert_close(other[n][:, keep], base[n][:, keep], rtol=1e-9,
                                       atol=1e-12)


def test_reuse_graph_config_errors(make_config):
    with pytest.raises((ConfigError, ValueError)) as e:
        make_config("train.reuse_rollout_graph=true", "train.inner_epochs=2")
    assert "reuse_rollout_graph" in str(e.value)
    with pytest.raises((ConfigError, ValueError)) as e:
        make_config(*ON_POLICY, "train.reuse_rollout_graph=true", "algo.loss=grpo",
                    "algo.loss_kwargs={beta: 0.1}", "algo.advantage=group")
    assert "beta" in str(e.value)
    with pytest.raises((ConfigError, ValueError)) as e:
        make_config("train.step_chunk=-1")
    assert "step_chunk" in str(e.value)


def test_pipeline_setup_places_encoder_and_vae_with_the_model():
    from scorealign.config import load_config
    from scorealign.rl.config import FinetuneConfig
    from scorealign.rl.setup import build_setup
    setup = build_setup(load_config(None, FinetuneConfig, SD_SETS))
    seen = []
    parts = setup.encode.__self__
    setup.place = lambda d: (seen.append(torch.device(d)), parts.to(d))
    setup.encode(["a cat"])
    ft = Finetuner(load_config(None, FinetuneConfig, SD_SETS), None, setup=setup)
    assert seen == [ft.acc.device]
    pipe = parts.pipe
    for m in (pipe.text_encoder, pipe.vae):
        assert next(m.parameters()).device == ft.acc.device
    assert all(e.device == ft.acc.device for e in parts.cache.values())
