"""Authors' details of the flow methods: DanceGRPO/MixGRPO's shared initial noise per group,
MixGRPO's sliding SDE window (progressive schedule), DiffusionNFT's soft-updated old model; all
continue bit for bit after a resume."""

from __future__ import annotations

import pytest
import torch

from scorealign.config import load_config
from scorealign.policy.actions import parse_action_steps, slide_window_start, stochastic_steps
from scorealign.rl.config import FinetuneConfig
from scorealign.rl.flow_methods import nft_decay
from scorealign.rl.trainer import Finetuner, epoch_rows
from scorealign.run.rundir import RunDir

PROMPTS = ["digit 3", "digit 7", "digit 0"]
BASE = ["policy.sampler=flow_sde", "policy.eta=0.7", "policy.steps=5", "policy.guidance=1.5",
        "prompts.per_epoch=2", "prompts.k=2", "train.minibatch_size=2",
        "train.sample_batch_size=4", "train.lr=1e-3", "reward.optimized=aesthetic_proxy",
        "device=cpu"]


def _cfg(*sets: str) -> FinetuneConfig:
    return load_config(None, FinetuneConfig, [*BASE, *sets])


# -- DanceGRPO / MixGRPO: one x_T per prompt group ---------------------------------------------
def test_group_rows_share_x_T_and_groups_epochs_differ(flow_unet, flow_policy):
    pol = flow_policy(flow_unet, sampler="dance_sde", eta=0.3, init_same_noise=True)
    traj = pol.rollout(PROMPTS, k=2, seeds=torch.arange(6) + 3, run_seed=5, epoch=1)
    x_T = traj.xs[:, 0]
    for g in range(3):
        assert torch.equal(x_T[2 * g], x_T[2 * g + 1])
    assert not torch.equal(x_T[0], x_T[2]) and not torch.equal(x_T[2], x_T[4])
    # the SDE noise stays per row: members of a group part after the first step
    assert not torch.equal(traj.xs[0, 1], traj.xs[1, 1])
    # x_T depends on (run seed, epoch, group id) only: not on the chunk a group is sampled in
    alone = pol.rollout(PROMPTS[1:2], k=2, seeds=torch.tensor([50, 51]), run_seed=5, epoch=1,
                        prompt_ids=torch.tensor([1, 1]))
    assert torch.equal(alone.xs[:, 0], x_T[2:4])
    later = pol.rollout(PROMPTS, k=2, seeds=torch.arange(6) + 3, run_seed=5, epoch=2)
    assert not torch.equal(later.xs[0, 0], x_T[0])
    # the shared draw is N(0, I) like the per-row one (prior std 1 on the flow at t = 1)
    with torch.no_grad():
        assert torch.equal(pol.log_prob(traj), traj.log_probs)
    off = flow_policy(flow_unet, sampler="dance_sde", eta=0.3)
    assert not torch.equal(off.rollout(PROMPTS, k=2, seeds=torch.arange(6) + 3).xs[0, 0],
                           off.rollout(PROMPTS, k=2, seeds=torch.arange(6) + 3).xs[1, 0])


def test_trainer_rollouts_share_x_T_per_group_across_chunks(flow_setup):
    cfg = _cfg("algo.loss=dance_grpo", "policy.sampler=dance_sde", "policy.eta=0.3",
               "policy.init_same_noise=true", "prompts.per_epoch=3", "prompts.k=2",
               "train.sample_batch_size=1", "train.minibatch_size=6")
    ft = Finetuner(cfg, None, setup=flow_setup())
    prompts, ids, seeds = epoch_rows(cfg, ft.setup.prompts, 0)
    _, traj, _ = ft.sample_and_score(prompts, ids, seeds)  # six chunks of one row
    x_T = traj.xs[:, 0].flatten(1)
    same = (x_T[:, None] == x_T[None]).all(-1)
    assert torch.equal(same, ids[:, None] == ids[None])
    shipped = load_config("configs/finetune/digits_flow_dance_grpo.yaml", FinetuneConfig)
    assert shipped.policy.init_same_noise


# -- MixGRPO: the progressive sliding window ---------------------------------------------------
def _authors_starts(iters: int, every: int, stride: int, max_timesteps: int) -> list[int]:
    """Tencent-Hunyuan/MixGRPO fastvideo/utils/grpo_states.py GRPOTrainingStates (progressive,
    prog_overlap, roll_back) as written there: the start used by each iteration."""
    cur, it, out = 0, 0, []
    for _ in range(iters):
        out.append(cur)  # get_current_timesteps() precedes update_iteration()
        it += 1
        if it >= every:
            it, cur = 0, cur + stride
        if cur > max_timesteps:
            cur, it = 0, 0
    return out


@pytest.mark.parametrize("n,every,stride", [(9, 25, 1), (5, 2, 1), (7, 3, 2), (4, 1, 3)])
def test_slide_window_start_is_the_authors_progressive_schedule(n, every, stride):
    want = _authors_starts(120, every, stride, max_timesteps=n - 1)
    assert [slide_window_start(e, n, every, stride) for e in range(120)] == want


def test_slide_window_positions_over_epochs():
    spec = parse_action_steps("slide:2:3:1")
    assert (spec.mode, spec.value, spec.every, spec.stride) == ("slide", 2.0, 3, 1)
    assert parse_action_steps("slide:4") == parse_action_steps("slide:4:25:1")
    for bad in ("slide:0", "slide:2:0", "slide:2:1:0", "slide:2:1:1:1", "slide:"):
        with pytest.raises(ValueError):
            parse_action_steps(bad)
    # 6 steps: auto = steps 0..4 (the last is the deterministic denoising step)
    stds = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.15, 0.01], dtype=torch.float64)
    sets = [stochastic_steps(spec, stds, score_action=False, run_seed=r, epoch=e).nonzero()
            .flatten().tolist() for r in (0, 7) for e in range(16)]
    want = [[0, 1]] * 3 + [[1, 2]] * 3 + [[2, 3]] * 3 + [[3, 4]] * 3 + [[4]] * 3 + [[0, 1]]
    assert sets[:16] == want and sets[16:] == want  # epoch only: no seed, no hidden state


def test_policy_and_trainer_take_the_window_of_the_epoch(flow_unet, flow_policy, flow_setup):
    pol = flow_policy(flow_unet, action_steps="slide:2:1:1", steps=5)
    for e, win in enumerate([[0, 1], [1, 2], [2, 3], [3], [0, 1]]):
        traj = pol.rollout(PROMPTS[:1], k=2, seeds=torch.tensor([1, 2]), epoch=e)
        assert traj.stochastic[0].nonzero().flatten().tolist() == win
        assert bool((traj.stds[:, traj.stochastic[0]] > 0).all())
        assert bool((traj.stds[:, ~traj.stochastic[0]] == 0).all())  # ODE outside
    ft = Finetuner(_cfg("algo.loss=mixgrpo", "policy.action_steps=slide:2:1:1",
                        "train.epochs=4"), None, setup=flow_setup())
    ft.epoch = 3  # as a run resumed at epoch 3: the window is the epoch's, [3]
    m = ft.train_epoch()
    assert m["cost/model_evals_grad"] == 4 * 1 * 2  # 4 rows × 1 trained step, × 2 with the KL


# -- DiffusionNFT: the soft-updated old model --------------------------------------------------
def test_nft_decay_is_the_authors_return_decay():
    assert [nft_decay(s, 0) for s in (0, 10, 10_000)] == [0.0, 0.0, 0.0]
    assert [nft_decay(s, 1) for s in (0, 1, 100, 499, 500, 10_000)] == \
        [0.0, 0.001, 0.1, 0.499, 0.5, 0.5]
    assert [nft_decay(s, 2) for s in (0, 74, 75, 76, 10_000)] == \
        [0.0, 0.0, 0.0, 0.0075, 0.999]


def test_nft_unknown_decay_type_is_refused_before_training(flow_setup):
    with pytest.raises(ValueError, match="decay_type"):
        Finetuner(_cfg("algo.loss=diffusion_nft", "algo.loss_kwargs={decay_type: 7}"), None,
                  setup=flow_setup())


def test_nft_old_model_samples_and_is_soft_updated(flow_setup):
    cfg = _cfg("algo.loss=diffusion_nft", "train.epochs=1", "algo.loss_kwargs={kl_beta: 0.0}")
    ft = Finetuner(cfg, None, setup=flow_setup())
    theta0 = ft.setup.trainable_state()
    assert all(torch.equal(v, theta0[k]) for k, v in ft.old.state().items())
    m = ft.fit()
    steps = 2  # B = 4 rows, minibatch 2, one inner epoch
    d = nft_decay(steps, 1)
    assert m["nft/old_decay"] == d == 0.002
    theta1 = ft.setup.trainable_state()
    old = ft.old.state()
    assert old.keys() == theta0.keys()
    for k in old:
        assert torch.equal(old[k], theta0[k] * d + theta1[k] * (1.0 - d)), k
    assert any(not torch.equal(old[k], theta1[k]) for k in old)
    # the next epoch's rollouts come from the old model, not from θ
    prompts, ids, seeds = epoch_rows(cfg, ft.setup.prompts, 1)
    _, traj, _ = ft.sample_and_score(prompts, ids, seeds)
    rows = [prompts[int(i)] for i in ids]
    by_old = ft.old.policy.rollout(rows, 1, seeds=seeds, prompt_ids=ids, epoch=1)
    by_theta = ft.policy.rollout(rows, 1, seeds=seeds, prompt_ids=ids, epoch=1)
    assert torch.equal(traj.x0, by_old.x0) and not torch.equal(traj.x0, by_theta.x0)


@pytest.mark.parametrize("sets", [
    ("algo.loss=diffusion_nft", "algo.loss_kwargs={kl_beta: 0.0, decay_type: 1}"),
    # 3 steps: action steps 0, 1; windows [0, 1], [1], [0, 1] in epochs 0, 1, 2
    ("algo.loss=mixgrpo", "policy.action_steps=slide:2:1:1", "policy.init_same_noise=true"),
], ids=["nft-old-model", "mixgrpo-slide-shared-noise"])
def test_flow_method_state_resumes_bit_for_bit(tmp_path, flow_setup, sets, monkeypatch):
    # the checkpoints' sample grids use explicit seeds and no run state: not under test here
    monkeypatch.setattr(Finetuner, "save_epoch_grid", lambda self: None)
    def fit(epochs: int, run: RunDir, resume: bool = False) -> Finetuner:
        # one checkpoint per run (at its last epoch): the cut run's, at epoch 2, is resumed
        ft = Finetuner(_cfg(f"train.epochs={epochs}", f"train.ckpt_every={epochs}",
                            "policy.steps=3", *sets), run, setup=flow_setup())
        if resume:
            assert ft.resume() == 2
        ft.fit()
        return ft

    full = fit(3, RunDir.create(tmp_path / "full", _cfg(*sets)))
    run = RunDir.create(tmp_path / "cut", _cfg(*sets))
    fit(2, run)
    cut = fit(3, run, resume=True)
    for name in ("model", "optimizer", "nft_old"):
        assert (name in full.state()) == (name in cut.state())
    a, b = full.setup.trainable_state(), cut.setup.trainable_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if full.old is not None:
        a, b = full.old.state(), cut.old.state()
        assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(("time/", "mem/"))}
                          for r in rows]
    assert strip(run.read_metrics()) == strip(RunDir(tmp_path / "full").read_metrics())


# -- Flow-GRPO family: β weighs the KL in the authors' units (kl_units) -----------------------
@pytest.mark.parametrize("units", ["authors", "exact"])
def test_flow_grpo_kl_term_in_the_authors_units_or_the_exact_kl(flow_setup, units):
    from scorealign.rl.updates import policy_loss
    from scorealign.samplers.flow import flow_grpo_sigma

    ft = Finetuner(_cfg("algo.loss=flow_grpo", f"algo.kl_units={units}"), None,
                   setup=flow_setup())
    prompts, ids, seeds = epoch_rows(ft.cfg, ft.setup.prompts, 0)
    _, traj, _ = ft.sample_and_score(prompts, ids, seeds)
    with torch.no_grad():  # θ ≠ ref: move θ so that the KL is not 0
        for p in ft.model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
        out = policy_loss(ft, traj, torch.randn(traj.batch_size))
        kl = ft.policy.kl(ft.ref_policy, traj)  # [B, S] nats, summed over the 64 dimensions
        ks = list(range(traj.num_steps))
        mine, theirs = ft.policy.kernels(traj, ks), ft.ref_policy.kernels(traj, ks)
    m = traj.trained.float()
    if units == "exact":  # the exact per-step KL per dimension
        per_step = kl / 64
    else:  # yifan123/flow_grpo scripts/train_sd3.py (ac4c86e) lines 895-896, written out:
        # kl_loss = ((prev_sample_mean - prev_sample_mean_ref) ** 2).mean(dim=(1,2,3),
        #           keepdim=True) / (2 * std_dev_t ** 2), std_dev_t = a·sqrt(σ/(1 − σ))
        ts = traj.ts
        per_step = torch.stack([
            ((m1 - m2) ** 2).flatten(1).mean(1).double() /
            (2 * flow_grpo_sigma(ts[k:k + 1], ts[k + 1:k + 2], 0.7) ** 2)
            for k, ((m1, _), (m2, _)) in enumerate(zip(mine, theirs))], 1).float()
        # conversion: authors' = |Δt_k| · exact / D
        torch.testing.assert_close(per_step * m, (kl / 64 * traj.dt.float()[None]) * m,
                                   rtol=1e-4, atol=1e-12)
    want = ((per_step * m).sum(1) / m.sum(1)).mean()
    assert float(want) > 0
    torch.testing.assert_close(out.metrics["loss/kl"], want, rtol=1e-4, atol=0)
