"""Run kind ``control`` (``scorealign control``): a continuous-time control policy; exported as
``policy.safetensors`` beside the run's ``config.yaml``."""

from __future__ import annotations

import shutil
from pathlib import Path

from scorealign.commands.kinds import EvalRequest, RunKind, SampleRequest, Sampled
from scorealign.commands.runs import out_file, run_checkpoint, samples_dir
from scorealign.control.train import ControlConfig


def load(run_dir: Path, device: str):
    """The policy with ``final/policy.safetensors``, else the newest checkpoint's weights."""
    from safetensors.torch import load_file

    from scorealign.commands.load import Loaded
    from scorealign.control.train import build_state, config_from_run

    cfg = config_from_run(run_dir)
    _, policy, _ = build_state(cfg)
    final = run_dir / "final"
    if (final / "policy.safetensors").is_file():
        policy.load_state_dict(load_file(str(final / "policy.safetensors")))
    else:
        policy.load_state_dict(run_checkpoint(run_dir)[0]["policy"])
    return Loaded("control", cfg, policy)


def draw(loaded, prompts, n: int, seed: int, base: bool):
    """``n`` simulated state paths ``[steps + 1, n, state_dim]`` under the policy
    (``Loaded.sample``; the same paths ``scorealign sample`` plots). Control runs have no
    prompts and no base model."""
    from scorealign.control.envs import make_env
    from scorealign.control.simulate import simulate
    from scorealign.errors import UsageError
    from scorealign.rng import generator

    if prompts:
        raise UsageError("control runs have no prompts; call sample(n=...) without prompts")
    cfg = loaded.config
    env = make_env(cfg.env.name, cfg.env.params)
    return simulate(env, loaded.model, n, cfg.dt, cfg.horizon, generator(seed, "sample-paths")).xs


def sample(loaded, req: SampleRequest) -> Sampled:
    """A plot of ``req.n`` simulated state paths under the policy (:func:`draw`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    path = out_file(req.out, samples_dir(loaded) / f"paths_seed{req.seed}.png")
    cfg = loaded.config
    xs = draw(loaded, None, req.n, req.seed, False)
    t = torch.arange(xs.shape[0], dtype=torch.float64).numpy() * cfg.dt
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for b in range(xs.shape[1]):
        ax.plot(t, xs[:, b, 0].numpy(), lw=0.8)
    ax.set_xlabel("time t")
    ax.set_ylabel("state X_t[0]")
    ax.set_title(f"{req.n} paths under the trained policy")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Sampled(path)


def evaluate(loaded, req: EvalRequest):
    """J(π) (``control.train.evaluate``)."""
    from scorealign.control.envs import make_env
    from scorealign.control.train import evaluate as control_eval

    c = loaded.config
    return control_eval(make_env(c.env.name, c.env.params), loaded.model, c), None


def export_policy(policy_state: dict, config_file: Path, dest: str | Path) -> Path:
    """A control policy: ``policy.safetensors`` beside the run's ``config.yaml``."""
    from safetensors.torch import save_file

    from scorealign.run.atomic import atomic_dir

    with atomic_dir(dest) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in policy_state.items()},
                  str(tmp / "policy.safetensors"))
        shutil.copyfile(config_file, tmp / "config.yaml")
    return Path(dest)


def export(run_dir: Path, dest: Path, checkpoint=None) -> Path:
    """The checkpoint's policy (:func:`export_policy`)."""
    states, _ = run_checkpoint(run_dir, checkpoint)
    return export_policy(states["policy"], run_dir / "config.yaml", dest)


def detect(config: dict) -> bool:
    return {"env", "algo"} <= set(config)


RECORD = RunKind("control", ControlConfig, load, sample, evaluate, export, detect=detect,
                 draw=draw)
