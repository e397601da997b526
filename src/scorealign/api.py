"""The public Python API: ``scorealign.load(RUN)`` and the training commands
``scorealign.finetune(...)``, ``pretrain``, ``dpo``, ``control`` and ``build_pairs``.

Each training function resolves its config like the CLI (a YAML file or a shipped config's name,
``set`` overrides, or ``resume``'s ``config.yaml``), calls the command of
:mod:`scorealign.commands` and returns the run directory. Bad input raises a
:class:`~scorealign.errors.ScorealignError` subclass whose message names the file, line or
field; no function here exits the interpreter.

``load`` opens a run directory of any command and returns a :class:`Loaded` whose ``model`` is
ready to use (a digits diffusion model with its task, a diffusers pipeline, a transformers causal
LM with its tokenizer, or a control policy) and whose ``sample(prompts, n)`` draws from it.

``finetune(config, reward=fn, out=DIR)`` runs RL fine-tuning with a Python reward callable
``fn(images [B,C,H,W] in [-1,1], prompts: list[str], meta: dict) -> Tensor [B]``. The callable
is recorded in the run's ``config.yaml`` by its import path (``package.module:function``), so
``scorealign finetune --resume DIR`` (or ``finetune(resume=DIR)``) finds it again; it must
therefore be importable (a module-level function, not a lambda or a ``__main__`` function).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from scorealign.export import read_run_config, run_kind


@dataclass
class Loaded:
    """A trained run, ready to use.

    Attributes:
        kind: the command that wrote the run (``scorealign.export.RUN_KINDS``).
        config: the run's resolved config (the command's dataclass).
        model: the trained model (digits: ``model(x, t, cond)``; sd: the diffusers pipeline;
            dpo: a transformers ``PreTrainedModel`` or peft model; control: the policy module).
        task: digits runs: the :class:`~scorealign.train.task.Task` (SDE, conditioning, sampler).
        tokenizer: dpo runs: the tokenizer saved beside the model.
        sampling: digits runs: the ``SamplingConfig`` used by :meth:`sample`.
        base: the base model for runs that fine-tune one (finetune, Diffusion-DPO), else None.
        setup: finetune runs: the trainer's ``Setup`` (policy, rewards' decode) with the weights.
    """

    kind: str
    config: Any
    model: Any
    task: Any = None
    tokenizer: Any = None
    sampling: Any = None
    base: Any = None
    setup: Any = None
    run_dir: Path | None = None

    @torch.no_grad()
    def sample(self, prompts: list[str] | str, n: int = 4, seed: int = 0,
               base: bool = False) -> Any:
        """``n`` samples per prompt: images ``[len(prompts)·n, C, H, W]`` in [-1, 1] (diffusion
        runs; ``base=True``: from the base model) or completions (dpo runs)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        rows = [p for p in prompts for _ in range(n)]
        model = self.base if base else self.model
        if base and model is None:
            raise ValueError(f"a {self.kind} run has no base model")
        if self.kind in ("pretrain", "diffusion_dpo") or (self.kind == "finetune"
                                                          and self.task is not None):
            from scorealign.data import labels_from_prompts
            cond = None
            if self.task.model_cfg.cond != "none":
                cond = self.task.cond_for(labels_from_prompts(rows), rows)
            scfg = dataclasses.replace(self.sampling, seed=seed)
            return self.task.generate(model, cond, len(rows), scfg)
        if self.kind == "finetune":  # an SD-style policy: roll out, decode through the VAE
            pol = self.setup.policy(self.config, self.setup.ref if base else self.setup.model)
            seeds = torch.arange(len(rows)) + seed
            traj = pol.rollout(prompts, n, seeds=seeds)
            return self.setup.decode(traj.x0).cpu()
        if self.kind == "dpo":
            tok = self.tokenizer
            out = []
            for p in rows:
                ids = tok(p, return_tensors="pt").input_ids
                torch.manual_seed(seed + len(out))
                gen = model.generate(ids, max_new_tokens=16, do_sample=True,
                                     pad_token_id=tok.pad_token_id)
                out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
            return out
        raise ValueError(f"{self.kind} runs have no prompts to sample from")


def _digits_from_dir(final: Path, task: Any, fallback: Callable[[], Any]) -> Any:
    from safetensors import SafetensorError

    from scorealign.nets import load_pretrained
    from scorealign.run.checkpoint import CheckpointError

    if (final / "model.safetensors").is_file():
        try:
            return load_pretrained(final)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{final / 'model.safetensors'}: cannot read the model: "
                                  f"{' '.join(str(e).split())}") from None
    return fallback()


def load(run_dir: str | Path, device: str = "cpu") -> Loaded:
    """Open ``run_dir`` (written by any scorealign command) and return its trained model.

    The model comes from ``RUN/final`` when present, else from the newest checkpoint.
    Raises FileNotFoundError/ConfigError/CheckpointError with a message naming the file.
    """
    from scorealign.errors import RunNotFoundError
    if not (Path(run_dir) / "config.yaml").is_file():  # integrator: A2's load raises this itself
        raise RunNotFoundError(f"{Path(run_dir) / 'config.yaml'}: not a run directory (no "
                               f"config.yaml)")
    out = _load(Path(run_dir), device)
    out.run_dir = Path(run_dir)
    return out


def _load(run_dir: Path, device: str) -> Loaded:
    kind = run_kind(run_dir)
    final = run_dir / "final"
    if kind == "pretrain":
        from scorealign.train.evaluate import load_run
        cfg, task, model = load_run(run_dir)
        return Loaded(kind, cfg, model.to(device), task=task, sampling=cfg.sample)
    if kind == "finetune":
        return _load_finetune(run_dir, device)
    if kind == "diffusion_dpo":
        from scorealign.preference.rpo.base import load_base
        from scorealign.preference.rpo.config import DiffusionDPOConfig
        from scorealign.train.task import SamplingConfig
        cfg = read_run_config(run_dir, DiffusionDPOConfig)
        base = load_base(cfg.base.path, cfg.base.sde)

        def from_ckpt():
            from scorealign.export import _checkpoint
            from scorealign.nets import build_model
            states, _ = _checkpoint(run_dir, None)
            m = build_model(base.model.config)
            m.load_state_dict(states["model"], strict=False)
            return m
        model = _digits_from_dir(final, base.task, from_ckpt).eval()
        return Loaded(kind, cfg, model, task=base.task, sampling=SamplingConfig(), base=base.model)
    if kind == "dpo":
        return _load_lm(run_dir, final)
    if kind == "control":
        from safetensors.torch import load_file

        from scorealign.control.train import build_state, config_from_run
        cfg = config_from_run(run_dir)
        _, policy, _ = build_state(cfg)
        if (final / "policy.safetensors").is_file():
            policy.load_state_dict(load_file(str(final / "policy.safetensors")))
        else:
            from scorealign.export import _checkpoint
            policy.load_state_dict(_checkpoint(run_dir, None)[0]["policy"])
        return Loaded(kind, cfg, policy)
    raise ValueError(f"{run_dir}: cannot load a {kind} run")


def _load_finetune(run_dir: Path, device: str) -> Loaded:
    from scorealign.export import finetune_setup
    from scorealign.rl.config import FinetuneConfig

    cfg = read_run_config(run_dir, FinetuneConfig)
    final = run_dir / "final"
    if cfg.base.type == "digits":
        from scorealign.rl.setup import load_digits_base
        from scorealign.train.task import SamplingConfig
        task, base = load_digits_base(cfg.base.path)
        p = cfg.policy
        scfg = SamplingConfig(sampler=p.sampler, steps=p.steps, eta=p.eta, grid=p.grid,
                              guidance=p.guidance)

        def from_ckpt():
            from scorealign.export import merged_copy
            from scorealign.nets import build_model
            _, setup = finetune_setup(run_dir)
            m = build_model(base.config)
            m.load_state_dict(merged_copy(setup.model)[1])
            return m
        model = _digits_from_dir(final, task, from_ckpt).to(device).eval()
        return Loaded("finetune", cfg, model, task=task, sampling=scfg, base=base.eval())
    _, setup = finetune_setup(run_dir)  # SD-style: the trainer's setup with the trained weights
    pipe = None
    if (final / "pytorch_lora_weights.safetensors").is_file():
        from scorealign.policy.sd import build_tiny_sd_pipeline
        pipe = build_tiny_sd_pipeline(cfg.base.seed)
        pipe.load_lora_weights(str(final))
    elif (final / "model_index.json").is_file():
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(str(final), local_files_only=True,
                                                       safety_checker=None)
    return Loaded("finetune", cfg, pipe if pipe is not None else setup.model, setup=setup,
                  base=setup.ref)


def _load_lm(run_dir: Path, final: Path) -> Loaded:
    from scorealign.preference.config import DPOConfig
    cfg = read_run_config(run_dir, DPOConfig)
    if not (final / "config.json").is_file():
        from scorealign.export import export_run
        export_run(run_dir, final)  # from the newest checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(final), local_files_only=True)
    if (final / "adapter_config.json").is_file():
        from peft import PeftModel
        from scorealign.preference import setup as S
        base = S.build_policy(dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, lora=dataclasses.replace(cfg.model.lora, enabled=False))), tok, None)
        model = PeftModel.from_pretrained(base, str(final))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(final), local_files_only=True)
    return Loaded("dpo", cfg, model.eval(), tokenizer=tok)


def reward_path(fn: Callable) -> str:
    """``package.module:qualname`` of an importable reward callable (recorded in config.yaml).

    Raises:
        UsageError (a ValueError): for lambdas, nested functions and functions defined in
            ``__main__``.
    """
    import importlib

    from scorealign.errors import UsageError

    if isinstance(fn, str):
        return fn
    mod, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or mod == "__main__" or "<" in name:
        raise UsageError(f"reward {fn!r}: a Python reward must be importable (a module-level "
                         f"function in a module on the path) so that --resume can find it")
    obj: Any = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn:
        raise UsageError(f"reward {fn!r}: {mod}:{name} does not import back to it")
    return f"{mod}:{name}"


def _path(p: str | Path | None) -> Path | None:
    return Path(p) if p is not None else None


def finetune(config: str | Path | None = None, *, reward: Callable | str | None = None,
             gold: Callable | str | None = None, out: str | Path | None = None,
             resume: str | Path | None = None, set: list[str] | None = None) -> Path:  # noqa: A002
    """RL fine-tuning from Python; returns the run directory (see the module docstring).

    Args:
        config: a YAML file or a shipped config's name (``digits_loop``); None: the defaults.
        reward, gold: a callable (recorded by import path) or a reward name / import path.
        out: the new run directory; resume: continue this run instead (its config.yaml).
        set: ``--set`` overrides, e.g. ``["train.epochs=2"]``.

    Raises:
        ScorealignError: a bad config (ConfigError, naming file:line: field), an unusable
            ``out`` or ``resume`` (UsageError, RunNotFoundError), a failing reward (RewardError).
    """
    from scorealign.commands import finetune as command
    from scorealign.commands.common import resolve_config
    from scorealign.rl.config import FinetuneConfig

    sets = list(set or [])
    for key, fn in (("reward.optimized", reward), ("reward.gold", gold)):
        if fn is not None:
            sets.append(f"{key}={reward_path(fn)}")
    cfg = resolve_config(FinetuneConfig, config, sets, resume)
    return command.finetune(cfg, _path(out) if resume is None else None, _path(resume))


def pretrain(config: str | Path | None = None, *, out: str | Path | None = None,
             resume: str | Path | None = None, set: list[str] | None = None  # noqa: A002
             ) -> Path:
    """Pretrain a diffusion model (DSM or consistency); returns the run directory, which holds
    ``final/``, ``eval.json`` and ``report.html``. Arguments as :func:`finetune`'s."""
    from scorealign.commands import pretrain as command
    from scorealign.commands.common import resolve_config
    from scorealign.train.pretrain import PretrainConfig

    cfg = resolve_config(PretrainConfig, config, set, resume)
    return command.pretrain(cfg, _path(out) if resume is None else None, _path(resume))


def dpo(config: str | Path | None = None, *, out: str | Path | None = None,
        resume: str | Path | None = None, set: list[str] | None = None  # noqa: A002
        ) -> Path:
    """Preference optimization of a causal LM (DPO, IPO, SimPO, ...) or, for a config with
    ``task: diffusion``, Diffusion-DPO; returns the run directory. A config or ``resume`` is
    required (UsageError otherwise); the other arguments as :func:`finetune`'s."""
    from scorealign.commands import dpo as command

    cfg = command.resolve_dpo_config(config, set, resume)
    return command.dpo(cfg, _path(out) if resume is None else None, _path(resume))["run_dir"]


def control(config: str | Path | None = None, *, out: str | Path | None = None,
            resume: str | Path | None = None, set: list[str] | None = None  # noqa: A002
            ) -> Path:
    """Continuous-time RL of a policy on a controlled SDE; returns the run directory.
    Arguments as :func:`finetune`'s."""
    from scorealign.commands import control as command
    from scorealign.commands.common import resolve_config
    from scorealign.control.train import ControlConfig

    cfg = resolve_config(ControlConfig, config, set, resume)
    return command.control(cfg, _path(out) if resume is None else None, _path(resume))


def build_pairs(config: str | Path | None = None, *, out: str | Path | None = None,
                set: list[str] | None = None, overwrite: bool = False  # noqa: A002
                ) -> Path:
    """Build a preference dataset (RPO or reward-labelled pairs) at ``out``; returns its
    directory. ``overwrite`` replaces a complete dataset there; the other arguments as
    :func:`finetune`'s."""
    from scorealign.commands import rpo as command
    from scorealign.commands.common import resolve_config
    from scorealign.preference.rpo.config import BuildPairsConfig

    cfg = resolve_config(BuildPairsConfig, config, set)
    return command.build_pairs(cfg, _path(out), overwrite=overwrite)[0]


__all__ = ["Loaded", "load", "finetune", "pretrain", "dpo", "control", "build_pairs",
           "reward_path"]
