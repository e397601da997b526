"""DPOK's learned value baseline V_φ(x_t, t, c), fitted to the terminal reward.

DPOK [Fan+23, arXiv:2305.16381; section/equation numbers not verified here] trains a value
function by regressing the final reward on every state of the rollout,

    φ ← argmin_φ  E_{b,t} (V_φ(x_t^b, t, c_b) − r_b)²,

and uses it as a per-step baseline in the policy gradient,

    A_{b,t} = r_b − V_φ(x_t^b, t, c_b)      (``advantages.value`` with values ``[B, T]``).

The network is a small MLP on the flattened state (any shape: 1×8×8 digits, SD latents), Fourier
features of the normalized time t/t_max, and a learned embedding of the prompt's index in the
run's prompt list (the cheap conditioning that works for every base; the text encoder is not
reused). It has its own Adam optimizer and is trained full-batch on all (row, step) pairs of the
epoch, ``steps_per_epoch`` times: no random draws, so training is deterministic and an exact
resume only needs the weights and the optimizer state (``state_dicts``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from scorealign.rng import derive_seed


class ValueNet(nn.Module):
    """V_φ(x_t, t, c): MLP on [flatten(x_t), Fourier(t)] plus a prompt embedding.

    Args:
        state_dim: number of elements of one state x_t.
        num_prompts: size of the prompt vocabulary (embedding rows).
        hidden: width of the two hidden layers.
        num_freqs: Fourier frequencies of the time feature (sin/cos of 2^j π t, j < num_freqs).
    """

    def __init__(self, state_dim: int, num_prompts: int, hidden: int, num_freqs: int = 4):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_freqs),
                             persistent=False)
        self.inp = nn.Linear(state_dim + 1 + 2 * num_freqs, hidden)
        self.prompt = nn.Embedding(max(num_prompts, 1), hidden)
        nn.init.zeros_(self.prompt.weight)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                  nn.Linear(hidden, 1))

    def forward(self, x: Tensor, t: Tensor, prompt_idx: Tensor) -> Tensor:
        """``x`` ``[N, *D]``, ``t`` ``[N]`` in [0, 1], ``prompt_idx`` ``[N]`` → ``[N]``."""
        tf = t[:, None].float() * self.freqs
        feats = torch.cat([x.flatten(1).float(), t[:, None].float(), tf.sin(), tf.cos()], 1)
        return self.body(self.inp(feats) + self.prompt(prompt_idx)).squeeze(1)


class ValueBaseline:
    """The value network of a run, its Adam optimizer, and the rollout ↔ (x_t, t, c) plumbing.

    Args:
        hidden, lr, steps_per_epoch: ``algo.value`` (``rl.config.ValueConfig``).
        state_shape: shape of one state x_t.
        prompts: the run's prompt vocabulary; a row's conditioning is its prompt's index here.
        seed: run seed; the initial weights derive from (seed, "value").
        device: where the network lives.
    """

    def __init__(self, hidden: int, lr: float, steps_per_epoch: int,
                 state_shape: tuple[int, ...], prompts: list[str], seed: int,
                 device: str | torch.device = "cpu"):
        self.steps_per_epoch = steps_per_epoch
        self.index = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
        with torch.random.fork_rng(devices=[]):  # seeded init, global RNG left untouched
            torch.manual_seed(derive_seed(seed, "value"))
            self.net = ValueNet(math.prod(state_shape), len(self.index), hidden)
        self.net.to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)

    # -- inputs --------------------------------------------------------------------------------
    def _inputs(self, traj: Any) -> tuple[Tensor, Tensor, Tensor]:
        """(x ``[B·T, *D]``, t ``[B·T]``, prompt index ``[B·T]``) of the states x_0..x_{T−1}
        each step starts from, row-major over (row, step)."""
        dev = next(self.net.parameters()).device
        xs = traj.xs[:, :-1].to(dev)
        b, s = xs.shape[:2]
        ts = traj.ts.to(dev, torch.float64)
        t = (ts[:-1] / ts[0]).float().repeat(b)
        missing = [p for p in traj.prompts if p not in self.index]
        if missing:
            raise KeyError(f"value network: prompts {sorted(set(missing))[:3]} are not in the "
                           f"run's prompt list ({len(self.index)} prompts)")
        idx = torch.tensor([self.index[p] for p in traj.prompts], device=dev)
        return xs.reshape(b * s, *xs.shape[2:]), t, idx.repeat_interleave(s)

    @torch.no_grad()
    def predict(self, traj: Any) -> Tensor:
        """V_φ(x_t^b, t, c_b) for every row and step: ``[B, T]`` float32 (no gradient)."""
        x, t, c = self._inputs(traj)
        self.net.eval()
        return self.net(x, t, c).reshape(traj.xs.shape[0], -1)

    def fit(self, traj: Any, rewards: Tensor) -> dict[str, float]:
        """``steps_per_epoch`` full-batch Adam steps on mean_{b,t} (V_φ(x_t^b, t, c_b) − r_b)².

        Args:
            traj: the global batch (``xs [B, T+1, *D]``, ``ts [T+1]``, ``prompts``).
            rewards: ``[B]`` terminal rewards of those rows, or ``[B, T]`` per-step targets
                (the x̂₀ design regresses the correction r − r(x̂₀(x_t, t))).
        Returns:
            ``value/loss_before`` and ``value/loss_after`` (the MSE before the first and after
            the last step).
        """
        x, t, c = self._inputs(traj)
        if rewards.dim() == 2:  # per-(row, step) targets, row-major like the inputs
            target = rewards.detach().float().to(x.device).reshape(-1)
        else:
            target = rewards.detach().float().to(x.device).repeat_interleave(traj.xs.shape[1] - 1)
        self.net.train()
        before = after = float("nan")
        for step in range(self.steps_per_epoch):
            self.opt.zero_grad(set_to_none=True)
            loss = (self.net(x, t, c) - target).pow(2).mean()
            loss.backward()
            self.opt.step()
            if step == 0:
                before = loss.item()
        with torch.no_grad():
            after = (self.net(x, t, c) - target).pow(2).mean().item()
        self.net.eval()
        return {"value/loss_before": before, "value/loss_after": after}

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dicts(self) -> dict[str, dict[str, Any]]:
        """``{"value": weights, "value_optimizer": Adam state}`` for ``train.checkpoint``."""
        return {"value": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
                "value_optimizer": self.opt.state_dict()}

    def load_state_dicts(self, states: dict[str, dict[str, Any]]) -> None:
        """Restore :meth:`state_dicts`; a checkpoint without them raises, naming the key."""
        for key in ("value", "value_optimizer"):
            if key not in states:
                raise KeyError(f"checkpoint has no {key!r} state, but algo.advantage=value "
                               f"needs it (was the run started with another estimator?)")
        self.net.load_state_dict(states["value"])
        self.opt.load_state_dict(states["value_optimizer"])


@torch.no_grad()
def x0_rewards(policy: Any, traj: Any, decode: Any, rewards: Any, meta: dict) -> Tensor:
    """r(x̂₀(x_k, t_k)) for every row and step ``[B, T]``: the reward of the denoised prediction.

    The value design of Score as Action [Zhao+25, arXiv:2502.01819; papers.md §4]: the
    diffusion model's own x̂₀ gives a value estimate V(x_t, t) ≈ r(x̂₀(x_t, t)) that becomes
    exact as t → 0; a learned correction c_φ (:class:`ValueBaseline` fitted on r − r(x̂₀))
    completes it. Uses T model evaluations and B·T reward queries (through ``rewards``, a
    ``RewardSet``: samples are clamped to the data range first).
    """
    from scorealign.sde.param import convert

    b, s = traj.batch_size, traj.num_steps
    preds = policy.step_preds(traj)
    x0 = torch.stack([convert(p, policy.kind, "x0", traj.xs[:, k], traj.ts[k].expand(b),
                              policy.sde) for k, p in enumerate(preds)], 1)  # [B, T, *D]
    images = decode(x0.flatten(0, 1).to(traj.xs.dtype))
    prompts = [p for p in traj.prompts for _ in range(s)]
    return rewards(images, prompts, meta).optimized.reshape(b, s).float()
