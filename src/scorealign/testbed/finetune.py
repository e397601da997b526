r"""A testbed problem as a fine-tuning base: "the score is the action" (issue 22, item 2).

- :class:`ControlledBase`: ``model(x, t, cond)`` = the *exact* base prediction of p₀ (ε under a
  VP SDE, velocity under a flow; ``GaussianMixture.pred_fn``) plus a control network
  u_φ(x, t) (``nets.mlp.TimeMLP``) whose output layer starts at zero, so at initialization the
  policy *is* the base. Without a control (``control=None``) it is the frozen reference. The
  fine-tuned score is ∇log p₀_t + (control in score units); the optimal control of the
  KL-regularized problem is ∇log p*_t − ∇log p₀_t (memoryless schedules, see ``problems``).
- :class:`ProblemReward` / :class:`TargetLogDensity`: the problem's reward r(x) and the held-out
  gold reward log p*_β(x), as ``reward(samples, prompts, meta)`` → float32 [B].
- :func:`testbed_metrics`: E[r], the reward gap to the exact frontier at the run's KL, the sample
  distance to p*_β beside the sampler's floor, and the score error E_t‖s_θ − ∇log p*_t‖².
- :func:`plot_testbed`: samples over p*_β's density contours (2-D) and the run's point on the
  exact frontier, a PNG the run report picks up from ``RUN/plots/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from scorealign.nets.mlp import TimeMLP
from scorealign.sde.base import SDE
from scorealign.testbed.frontier import frontier, frontier_reward
from scorealign.testbed.metrics import floor, sample_distance, score_error
from scorealign.testbed.problems import Problem

_F64 = torch.float64
_COLORS = {"base": "tab:blue", "trained": "tab:orange", "samples": "tab:orange"}


def _color(name: str, i: int) -> str:
    return _COLORS.get(name, ("tab:green", "tab:red", "tab:purple")[i % 3])


class ControlledBase(nn.Module):
    """Exact base prediction of ``problem.base`` plus an optional zero-initialized control.

    Args:
        problem: the testbed problem (its base mixture p₀ gives the exact prediction).
        sde: the forward SDE.
        kind: the prediction kind ("eps" for VP, "v" for a flow).
        hidden: width of the control MLP; None: no control (the exact base, the reference).
        seed: initialization seed of the control.
    """

    def __init__(self, problem: Problem, sde: SDE, kind: str, hidden: int | None = 64,
                 seed: int = 0):
        super().__init__()
        self.kind, self.dim = kind, problem.dim
        self._base = problem.base_pred_fn(sde, kind)
        self.control: nn.Module | None = None
        if hidden is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.control = TimeMLP(problem.dim, hidden, depth=2, emb_dim=32, kind=kind)
            last = self.control.out[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def base_pred(self, x: Tensor, t: Tensor) -> Tensor:
        """The exact base prediction (float64 on the CPU inside, x's dtype and device out);
        differentiable in x (reward backprop runs through the whole chain)."""
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        cpu = torch.device("cpu")
        return self._base(x.to(cpu, _F64), t.detach().to(cpu, _F64)).to(x)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """Base prediction + control; ``[B, D]`` in x's dtype (the control runs in fp32)."""
        out = self.base_pred(x, t)
        if self.control is None:
            return out
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        return out + self.control(x.float(), t.float()).to(x.dtype)


class ProblemReward:
    """r(x) of the problem, float32 [B] (differentiable, for reward-backprop methods)."""

    name = "testbed_reward"

    def __init__(self, problem: Problem):
        self.problem = problem

    def __call__(self, samples: Tensor, prompts: list[str] | None = None,
                 meta: dict | None = None) -> Tensor:
        return self.problem.reward(samples.reshape(samples.shape[0], -1)).float()


class TargetLogDensity:
    """Gold reward log p*_β(x), float32 [B]: high where the optimum puts its mass (a sample of
    p*_β scores E_{p*}[log p*] = −H(p*_β) on average; collapsing onto the reward's argmax does
    not maximize its mean over a spread-out batch the way it maximizes r)."""

    name = "testbed_log_target"

    def __init__(self, problem: Problem):
        self.problem = problem

    def __call__(self, samples: Tensor, prompts: list[str] | None = None,
                 meta: dict | None = None) -> Tensor:
        x = samples.detach().reshape(samples.shape[0], -1).to(_F64).cpu()
        return self.problem.log_prob(x).float().to(samples.device)


def testbed_metrics(problem: Problem, sde: SDE, kind: str, x: Tensor, kl: float,
                    pred_fn: Callable[[Tensor, Tensor], Tensor], *, sampler: str, steps: int,
                    eta: float | None, grid: str, seed: int = 0, n_score: int = 512,
                    n_t: int = 16, with_floor: bool = True) -> dict[str, float]:
    """The yardsticks of one model against the exact optimum p*_β.

    Args:
        problem: the problem (its ``target`` is p*_β).
        sde, kind: the model's SDE and prediction kind.
        x: [N, D] samples of the model (N ≥ 2).
        kl: the model's KL to the base (e.g. the policy's summed per-step KL, a path KL that
            upper-bounds the terminal KL, so ``reward_gap`` is measured at the larger KL).
        pred_fn: the model as ``pred_fn(x, t)`` → its ``kind`` prediction (for the score error).
        sampler, steps, eta, grid: the sampler that drew ``x`` (for its floor).
        seed: seeds the reference draws, the floor and the score-error states.

    Returns:
        ``reward`` E[r], ``log_target`` E[log p*_β], ``kl``, ``frontier_reward`` R*(kl) (exact
        where the reward is), ``reward_gap`` R*(kl) − E[r], ``optimal_reward`` E_{p*_β}[r],
        ``distance`` (energy distance to N exact draws of p*_β), ``distance_floor`` (the same
        sampler driven by the exact ∇log p*_t, same N), ``score_error`` E_t‖s_θ − ∇log p*_t‖².
    """
    x64 = x.detach().reshape(x.shape[0], -1).to(_F64).cpu()
    r = float(problem.reward(x64).mean())
    out = {"reward": r, "log_target": float(problem.log_prob(x64).mean()), "kl": float(kl),
           "optimal_reward": problem.expected_reward()}
    if problem.reward.exact:  # the frontier is closed form at every β
        out["frontier_reward"] = frontier_reward(problem, max(float(kl), 0.0))
        out["reward_gap"] = out["frontier_reward"] - r
    gen = torch.Generator().manual_seed(seed)
    out["distance"] = sample_distance(x64, problem.target, gen)
    if with_floor:
        out["distance_floor"] = floor(problem.target, sde, torch.Generator().manual_seed(seed + 1),
                                      n=x64.shape[0], sampler=sampler, steps=steps, kind=kind,
                                      eta=eta, grid=grid)
    out["score_error"] = score_error(pred_fn, kind, problem.target, sde,
                                     torch.Generator().manual_seed(seed + 2), n=n_score, n_t=n_t)
    return out


def plot_testbed(problem: Problem, samples: dict[str, Tensor], points: dict[str, tuple[float, float]],
                 path: str | Path) -> Path:
    """Left (d = 2 only): ``samples`` (name → [N, 2]) over p*_β's density contours; right: the
    exact frontier β ↦ (KL, E_{p*_β}[r]) with each ``points`` (name → (KL, E[r])) and p*_β.

    Returns the PNG's path.
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    two_d = problem.dim == 2
    fig, axes = plt.subplots(1, 2 if two_d else 1, figsize=(10 if two_d else 5, 4.5))
    axes = list(axes) if two_d else [axes]
    if two_d:
        ax = axes[0]
        pts = torch.cat([v.detach().reshape(v.shape[0], -1).cpu().to(_F64)
                         for v in samples.values()] + [problem.target.means])
        lo = float(pts.min().clamp(min=-6)) - 0.5
        hi = float(pts.max().clamp(max=6)) + 0.5
        g = torch.linspace(lo, hi, 120, dtype=_F64)
        gx, gy = torch.meshgrid(g, g, indexing="xy")
        dens = problem.log_prob(torch.stack([gx.flatten(), gy.flatten()], -1)).exp()
        ax.contour(gx.numpy(), gy.numpy(), dens.reshape(120, 120).numpy(), levels=8,
                   cmap="Greys")
        for i, (name, v) in enumerate(samples.items()):
            v = v.detach().reshape(v.shape[0], -1).cpu().float()
            ax.scatter(v[:, 0], v[:, 1], s=4, alpha=0.5, color=_color(name, i), label=name)
        ax.set_title(f"samples over p*_β contours ({problem.name}, β={problem.beta:g})")
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize=8)
    ax = axes[-1]
    if problem.reward.exact:
        betas = torch.logspace(math.log10(problem.beta) - 2, math.log10(problem.beta) + 3, 60)
        fr = frontier(problem, betas)
        ax.plot(fr.kl.numpy(), fr.reward.numpy(), color="k", lw=1, label="exact frontier R*(KL)")
    ax.scatter([problem.kl()], [problem.expected_reward()], marker="*", s=120, color="k",
               label=f"p*_β (β={problem.beta:g})", zorder=3)
    for i, (name, (kl, r)) in enumerate(points.items()):
        ax.scatter([kl], [r], s=40, color=_color(name, i), label=name, zorder=3)
    ax.set_xscale("symlog", linthresh=1e-2)
    ax.set_xlabel("KL to the base (nats; a run's is its path KL)")
    ax.set_ylabel("E[r]")
    ax.set_title("reward vs KL against the exact frontier")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["ControlledBase", "ProblemReward", "TargetLogDensity", "plot_testbed",
           "testbed_metrics"]
