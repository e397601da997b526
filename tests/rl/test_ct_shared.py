"""The continuous-time estimator (rl/ct.py) is one piece of code for control/ and diffusion RL:
an LQ control problem cast as a "sampler" gives score_as_action exactly control's CT-PPO value."""

from __future__ import annotations

import torch

from scorealign.control.algorithms import ct_local_approximation
from scorealign.control.envs import make_env
from scorealign.control.estimators import build_ct_batch
from scorealign.control.policy import GaussianPolicy, LinearCritic
from scorealign.control.simulate import simulate
from scorealign.control.train import num_threads
from scorealign.rl.losses import score_as_action


def test_lq_problem_cast_as_a_sampler_gives_controls_ct_ppo_objective():
    with num_threads(1):
        env = make_env("lq")
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        policy = GaussianPolicy(env.state_dim, env.action_dim).double()
        dt, horizon = 0.05, 1.0
        ro = simulate(env, policy, 16, dt, horizon, g)
        critic = LinearCritic(env.state_dim)
        # discount β, γ = 0: occupation weights e^{−βt_n} Δt / B, advantage = TD q-rate
        beta = 0.5
        batch, _ = build_ct_batch(ro, policy, critic, beta=beta, gamma=0.0)
        N, B = ro.rewards.shape
        logp_old = ro.log_probs
        logp_new = logp_old + 0.3 * torch.randn(N, B, generator=g, dtype=torch.float64)
        obj = ct_local_approximation(logp_new.reshape(-1), logp_old.reshape(-1), batch.adv,
                                     torch.zeros_like(batch.adv), batch.weight, 0.0, clip=0.2)
        # the sampler view: discounted reward accumulated into the state,
        # Ṽ_n = e^{−βt_n} V(X_n) + Σ_{m<n} e^{−βt_m} r_m Δt, terminal condition Ṽ_N; its
        # increments are e^{−βt_n} q̂_n Δt, and e^{−βt_n} > 0 moves out of the clipped min
        t = dt * torch.arange(N + 1, dtype=torch.float64)[:, None]
        disc = torch.exp(-beta * t)
        v = critic(ro.xs)  # [N + 1, B]
        acc = torch.cat([torch.zeros(1, B, dtype=v.dtype),
                         (disc[:-1] * ro.rewards * dt).cumsum(0)])
        v_aug = disc * v + acc
        adv = (v_aug[-1:] - v_aug[:-1]).T  # [B, N]
        dts = torch.full((N,), dt, dtype=torch.float64)
        out = score_as_action(logp_new.T, logp_old.T, adv, dts,
                              clip=0.2)
    torch.testing.assert_close(out.loss.double(), -obj, rtol=1e-10, atol=1e-12)
    assert float(out.metrics["policy/clipfrac"]) > 0  # the clip is active in this comparison
