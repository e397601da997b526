"""The control training loop: rollout → critic → advantages → policy update → evaluate → checkpoint.

``train_control(cfg, out)`` runs one algorithm of :data:`scorealign.control.algorithms.ALGOS` on
one environment of :data:`scorealign.control.envs.ENVS` at step size ``cfg.dt`` and writes the
standard run directory (config.yaml, metrics.jsonl, checkpoints/, plots/performance.png).
Every random draw of iteration i comes from generators keyed by (seed, purpose, i), so a resumed
run is bit-identical to an uninterrupted one. Resume, logging and checkpoint cadence are
:func:`scorealign.run.loop.run_steps`'s (one count = one iteration).

Performance is measured in continuous time, independently of the training Δt: for ``lq`` and
``lq2d`` with a linear policy, J(π) = E V^π(X₀) in closed form and the gap to the optimum J*;
otherwise a Monte Carlo estimate at ``eval_dt`` with common random numbers across iterations.
"""

from __future__ import annotations

import inspect
import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from scorealign.config import Tracker, config_from_dict, tracker_field
from scorealign.control import lq, lq2d
from scorealign.control.algorithms import ALGOS
from scorealign.control.envs import ENVS, LQ2DEnv, LQEnv, make_env
from scorealign.control.estimators import build_ct_batch, build_dt_batch, discounted_return
from scorealign.control.policy import GaussianPolicy, LinearCritic
from scorealign.control.simulate import simulate
from scorealign.rng import generator
from scorealign.run.loop import Cadence, lr_at, resume_checkpoint, run_steps
from scorealign.run.rundir import RunDir


def _check_registered(registry, name: str) -> None:
    """ValueError ``name: unknown <kind> …; choose one of …`` for a name not in ``registry``."""
    if name not in registry:
        raise ValueError(f"name: unknown {registry.kind} {name!r}; "
                         f"choose one of {sorted(registry)}")


@dataclass(frozen=True)
class EnvConfig:
    name: str = field(default="lq", metadata={
        "help": "registered environment (lq, double_well, lq2d)"})
    params: dict[str, float] = field(default_factory=dict,
                                     metadata={"help": "overrides of the environment's fields"})

    def __post_init__(self):
        _check_registered(ENVS, self.name)
        try:
            make_env(self.name, self.params)
        except ValueError as e:
            raise ValueError(f"params: {e}") from None


@dataclass(frozen=True)
class PolicyConfig:
    degree: int = field(default=1, metadata={"help": "polynomial degree of the policy mean"})
    init_std: float = field(default=0.5, metadata={"help": "initial action std e^ψ"})
    critic_degree: int = field(default=2, metadata={"help": "polynomial degree of the LSTD critic"})
    critic_ridge: float = field(default=1e-8, metadata={"help": "relative ridge of the LSTD solve"})
    q_estimator: Literal["td", "regression"] = field(default="regression", metadata={
        "help": "CT advantage: one-step TD rate q̂ per row, or a least-squares q(x,a) fit of q̂"})
    q_degree: int = field(default=2, metadata={"help": "state degree of the q regression features"})


@dataclass(frozen=True)
class AlgoConfig:
    name: str = field(default="ct_ppo", metadata={
        "help": "ct_pg | ct_trpo | ct_ppo | ct_ppo_penalty | dt_pg | dt_ppo"})
    lr: float = field(default=0.02, metadata={"help": "Adam learning rate (unused by ct_trpo)"})
    hparams: dict[str, Any] = field(default_factory=dict,
                                    metadata={"help": "keyword hyper-parameters of the update"})

    def __post_init__(self):
        _check_registered(ALGOS, self.name)
        params = inspect.signature(ALGOS[self.name].fn).parameters
        allowed = {n for n, p in params.items()
                   if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "state"}
        bad = sorted(set(self.hparams) - allowed)
        if bad:
            raise ValueError(f"hparams: unknown key(s) {bad} for {self.name}; "
                             f"valid: {sorted(allowed)}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")


@dataclass(frozen=True)
class DiscreteConfig:
    scaling: Literal["step", "time"] = field(default="step", metadata={
        "help": "DT baselines: 'step' keeps per-step discount/λ/entropy weight fixed at their "
                "reference_dt values; 'time' rescales them with Δt "
                "(κ=e^{-βΔt}, α=γΔt, λ^{Δt/Δt_ref})"})
    reference_dt: float = field(default=0.05, metadata={
        "help": "Δt at which per-step values were set"})
    lam: float = field(default=0.95, metadata={"help": "GAE λ at reference_dt"})
    normalize_adv: bool = field(default=True, metadata={"help": "standardize DT advantages"})
    advantage: Literal["gae", "regression"] = field(default="gae", metadata={
        "help": "DT advantage: GAE(λ) per row (the TD critic), or a least-squares q(x,a) fit of "
                "it minus its analytic π-mean (the DT twin of policy.q_estimator=regression)"})


@dataclass(frozen=True)
class ControlTrainConfig:
    """The run contract's shared fields (issue 11: one set of names for every command)."""

    steps: int = field(default=60, metadata={"help": "policy updates (iterations)"})
    seed: int = field(default=0, metadata={"help": "run seed"})
    ckpt_every: int = field(default=20, metadata={"help": "checkpoint every N iterations"})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept"})

    def __post_init__(self):
        for name in ("steps", "ckpt_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class ControlConfig:
    env: EnvConfig = field(default_factory=EnvConfig, metadata={"help": "controlled SDE"})
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata={"help": "policy/critic"})
    algo: AlgoConfig = field(default_factory=AlgoConfig, metadata={"help": "policy update"})
    discrete: DiscreteConfig = field(default_factory=DiscreteConfig,
                                     metadata={"help": "settings of the discrete-time baselines"})
    temperature: float = field(default=0.1, metadata={"help": "entropy weight γ of the objective"})
    dt: float = field(default=0.05, metadata={"help": "simulation and decision step Δt"})
    horizon: float = field(default=6.0, metadata={
        "help": "rollout length in time units (discount)"})
    occupation: Literal["discount", "exponential"] = field(default="discount", metadata={
        "help": "CT weights: e^{-βt}Δt on [0,horizon], or Δt·1{t<τ}, τ~Exp(β) (untruncated)"})
    n_paths: int = field(default=128, metadata={"help": "paths per iteration"})
    train: ControlTrainConfig = field(default_factory=ControlTrainConfig, metadata={
        "help": "steps (policy updates), seed, ckpt_every, keep_checkpoints"})
    tracker: Tracker = tracker_field()
    eval_every: int = field(default=5, metadata={"help": "evaluate every N iterations"})
    eval_paths: int = field(default=1000, metadata={
        "help": "Monte Carlo paths (non-LQ evaluation)"})
    eval_dt: float = field(default=0.01, metadata={"help": "Δt of the Monte Carlo evaluation"})
    threads: int = field(default=1, metadata={
        "help": "torch intra-op threads during the run (tensors are tiny: 1 avoids fan-out cost)"})

    @property
    def iterations(self) -> int:
        """``train.steps`` (issue 11: one name for every command)."""
        return self.train.steps

    @property
    def seed(self) -> int:
        """``train.seed``."""
        return self.train.seed

    @property
    def ckpt_every(self) -> int:
        """``train.ckpt_every``."""
        return self.train.ckpt_every

    def __post_init__(self):
        positive = {"dt": self.dt, "n_paths": self.n_paths,
                    "eval_every": self.eval_every, "eval_paths": self.eval_paths,
                    "eval_dt": self.eval_dt, "threads": self.threads}
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name}: must be > 0, got {value}")
        if self.horizon < self.dt:
            raise ValueError(f"horizon: must be >= dt ({self.dt}), got {self.horizon}")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")


def discrete_settings(cfg: ControlConfig, beta: float) -> tuple[float, float, float]:
    """(κ per-step discount, λ, α per-step entropy weight) of the DT baselines at cfg.dt."""
    d = cfg.discrete
    dt = cfg.dt if d.scaling == "time" else d.reference_dt
    lam = d.lam ** (cfg.dt / d.reference_dt) if d.scaling == "time" else d.lam
    return math.exp(-beta * dt), lam, cfg.temperature * dt


def evaluate(env, policy: GaussianPolicy, cfg: ControlConfig) -> dict[str, float]:
    """Continuous-time performance J(π): closed form on lq and lq2d (linear policies), else
    Monte Carlo at ``eval_dt`` with common random numbers across evaluations."""
    if isinstance(env, LQ2DEnv) and cfg.policy.degree == 1:
        with torch.no_grad():
            W, s = policy.W.numpy(), torch.exp(policy.log_std).numpy()
        K_star, h_star, s_star = lq2d.optimal_policy(env, cfg.temperature, float(s.mean()))
        J = lq2d.performance(env, W[:, 1:], W[:, 0], s, cfg.temperature)
        J_star = lq2d.performance(env, K_star, h_star, s_star, cfg.temperature)
        return {"perf/J": J, "perf/J_star": J_star, "perf/gap": J_star - J,
                "policy/gain_error": float(np.abs(W[:, 1:] - K_star).max()),
                "policy/std": float(s.mean())}
    if isinstance(env, LQEnv) and cfg.policy.degree == 1:
        k, h, s = policy.linear_gain()
        pi_star, _ = lq.optimal_policy(env, cfg.temperature, s_fixed=s)
        J = lq.performance(env, lq.LinearGaussian(k, h, s), cfg.temperature)
        J_star = lq.performance(env, pi_star, cfg.temperature)
        return {"perf/J": J, "perf/J_star": J_star, "perf/gap": J_star - J, "policy/k": k,
                "policy/h": h, "policy/std": s, "policy/k_star": pi_star.k}
    ro = simulate(env, policy, cfg.eval_paths, cfg.eval_dt, 0.0, generator(cfg.seed, "eval"),
                  occupation="exponential")
    G = discounted_return(ro, env.beta, cfg.temperature, "exponential")
    return {"perf/J": float(G.mean()), "perf/J_se": float(G.std() / math.sqrt(G.numel())),
            "policy/std": float(torch.exp(policy.log_std.detach()).mean())}


def _build(env, policy, ro, cfg: ControlConfig, continuous: bool):
    critic = LinearCritic(env.state_dim, cfg.policy.critic_degree)
    if continuous:
        p = cfg.policy
        return build_ct_batch(ro, policy, critic, env.beta, cfg.temperature, cfg.occupation,
                              p.q_estimator, p.q_degree, p.critic_ridge)
    kappa, lam, alpha = discrete_settings(cfg, env.beta)
    return build_dt_batch(ro, policy, critic, kappa, lam, alpha, cfg.discrete.normalize_adv,
                          cfg.policy.critic_ridge, cfg.discrete.advantage, cfg.policy.q_degree)


def iterate(env, policy, optimizer, cfg: ControlConfig, it: int,
            algo_state: dict | None = None) -> dict[str, float]:
    """One iteration i: rollout with generator (seed, 'rollout', i), batch, update.

    ``algo_state`` is handed to a ``stateful`` update as ``state=`` (e.g. an adaptive penalty
    coefficient); the trainer checkpoints it with the weights.
    """
    entry = ALGOS.get(cfg.algo.name)
    continuous = "continuous_time" in entry.properties
    occupation = cfg.occupation if continuous else "discount"
    ro = simulate(env, policy, cfg.n_paths, cfg.dt, cfg.horizon,
                  generator(cfg.seed, "rollout", it), occupation=occupation)
    batch, diag = _build(env, policy, ro, cfg, continuous)
    extra = {"state": algo_state if algo_state is not None else {}} \
        if "stateful" in entry.properties else {}
    metrics = entry.fn(policy, optimizer, batch, generator(cfg.seed, "update", it),
                       **cfg.algo.hparams, **extra)
    ret = discounted_return(ro, env.beta, cfg.temperature, occupation)
    return {**diag, **metrics, "rollout/return": float(ret.mean()), "rollout/steps": ro.n_steps}


def build_state(cfg: ControlConfig):
    """(env, policy, optimizer) at initialization."""
    env = make_env(cfg.env.name, cfg.env.params)
    policy = GaussianPolicy(env.state_dim, env.action_dim, cfg.policy.degree,
                            math.log(cfg.policy.init_std))
    optimizer = None if cfg.algo.name == "ct_trpo" else torch.optim.Adam(policy.parameters(),
                                                                          lr=cfg.algo.lr)
    return env, policy, optimizer


@contextlib.contextmanager
def num_threads(n: int):
    """Set torch's intra-op thread count for a block and restore it afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_control(cfg: ControlConfig, out: str | Path | None = None, resume: bool = False,
                  stop_after: int | None = None) -> dict[str, Any]:
    """Train; with ``out`` write/continue a run directory. Returns the final evaluation.

    ``stop_after`` ends the loop early (used to test resume), as a kill would.
    """
    with num_threads(cfg.threads):
        return _train(cfg, out, resume, stop_after)


def _train(cfg: ControlConfig, out, resume: bool, stop_after: int | None) -> dict[str, Any]:
    env, policy, optimizer = build_state(cfg)
    run = None
    if out is not None:
        run = RunDir.open(out) if resume else RunDir.create(out, cfg)
    states, extra, start = resume_checkpoint(run, resume, unit="iteration")
    algo_state = dict(extra.get("algo_state", {}))
    if states is not None:
        policy.load_state_dict(states["policy"])
        if optimizer is not None and "optimizer" in states:
            optimizer.load_state_dict(states["optimizer"])
    if start == 0 and run is not None:
        run.log(0, **evaluate(env, policy, cfg))
    last: dict[str, float] = {}

    def step(it: int) -> dict[str, float]:
        nonlocal last
        row = iterate(env, policy, optimizer, cfg, it, algo_state)
        done = it + 1
        if done % cfg.eval_every == 0 or done == cfg.iterations:
            last = evaluate(env, policy, cfg)
            row.update(last)
        return row

    def states_now() -> dict[str, Any]:
        out = {"policy": dict(policy.state_dict())}
        if optimizer is not None:
            out["optimizer"] = optimizer.state_dict()
        return out

    # stop_after ends the invocation as a kill would: no checkpoint, plot or export at the cut.
    run_steps(run=run, acc=None, start=start, stop=stop_after, checkpoint_at_stop=False,
              cadence=Cadence(cfg.iterations, 1, cfg.ckpt_every, cfg.train.keep_checkpoints,
                              unit="iteration"),
              step=step, states=states_now, label="control", progress=run is not None,
              lr=lambda i: lr_at(i, cfg.algo.lr, cfg.iterations),
              optimizers=optimizer if optimizer is not None else (),
              extra=lambda done: {"iteration": done, "algo_state": dict(algo_state)})
    if stop_after is not None and stop_after < cfg.iterations:
        return last
    if run is not None:  # the command exports RUN/final and writes report.html
        plot_performance(run)
    return last or evaluate(env, policy, cfg)


def plot_performance(run: RunDir) -> Path:
    """plots/performance.png: J(π) against iteration (and J* when known)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in run.read_metrics() if "perf/J" in r]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in rows], [r["perf/J"] for r in rows], marker="o", ms=3, label="J(π)")
    if rows and "perf/J_star" in rows[-1]:
        ax.axhline(rows[-1]["perf/J_star"], color="k", ls="--", lw=1, label="J* (closed form)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("J(π) = E V^π(X₀)")
    ax.legend()
    fig.tight_layout()
    path = run.plots / "performance.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def config_from_run(path: str | Path) -> ControlConfig:
    """Read a run directory's resolved config back."""
    import yaml
    return config_from_dict(yaml.safe_load((Path(path) / "config.yaml").read_text()), ControlConfig)


__all__ = ["ControlConfig", "EnvConfig", "PolicyConfig", "AlgoConfig", "DiscreteConfig",
           "train_control", "num_threads", "evaluate", "iterate", "build_state",
           "discrete_settings",
           "plot_performance", "config_from_run"]
