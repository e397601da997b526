"""Run kind ``finetune`` (``scorealign finetune``): RL fine-tuning of a digits model or of an
SD / SD3 / FLUX pipeline.

``load`` returns the model in its ecosystem's form: a plain digits model (LoRA merged), or the
run's base pipeline (``StableDiffusionPipeline`` / ``StableDiffusion3Pipeline`` /
``FluxPipeline``, built as the run's own setup builds it) with the trained LoRA loaded from
``final/`` (``load_lora_weights``) or the trained weights (a full fine-tune's pipeline directory).
``Loaded.sample`` rolls that pipeline's denoiser out with the run's own policy (sampler, steps,
guidance, per-row seeds), so it reproduces the run's sampler.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from scorealign.commands.kinds import EvalRequest, RunKind, SampleRequest, Sampled
from scorealign.commands.runs import (digits_from_dir, draw_digits, out_file, prompt_tag,
                                      read_run_config, run_checkpoint, sample_digits,
                                      samples_dir, sampling_overrides)
from scorealign.errors import ExportError, UsageError
from scorealign.rl.config import FinetuneConfig

FLOW_TYPES = ("sd3_tiny", "flux_tiny", "sd3", "flux")
SD_TYPES = ("sd_tiny", "sd")  # UNet pipelines (StableDiffusionPipeline)


def finetune_setup(run_dir: str | Path, checkpoint: str | Path | None = None,
                   trained: bool = True):
    """(config, Setup) of a finetune run with the trained (or, ``trained=False``, base) weights."""
    from scorealign.rl.setup import build_setup

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, FinetuneConfig)
    setup = build_setup(cfg)
    if trained:
        states, _ = run_checkpoint(run_dir, checkpoint)
        setup.load_trainable(states.get("ema") or states["model"])
    setup.model.eval()
    return cfg, setup


def export_setup(setup: Any, cfg: Any, dest: str | Path) -> Path:
    """Export a fine-tuning :class:`~scorealign.rl.setup.Setup` (trained weights loaded)."""
    from scorealign.commands import formats

    if cfg.base.type == "digits":
        return formats.export_digits(setup.model, dest)
    if cfg.base.type == "testbed":
        return export_testbed(setup, cfg, dest)
    if cfg.base.type in SD_TYPES:  # the base pipeline is rebuilt from its seed / loaded
        from scorealign.rl.setup import base_pipeline

        unet = setup.model.unet
        lora = cfg.lora.rank > 0
        return formats.export_sd(unet if lora else copy.deepcopy(unet),
                                 None if lora else base_pipeline(cfg), dest, lora)
    if cfg.base.type in FLOW_TYPES:
        from scorealign.policy import flow_pipelines as fp

        tr = setup.model.transformer
        lora = cfg.lora.rank > 0
        if lora:
            base = None
        elif cfg.base.type.endswith("_tiny"):  # the base pipeline is rebuilt from its seed
            build = fp.build_tiny_sd3_pipeline if cfg.base.type == "sd3_tiny" \
                else fp.build_tiny_flux_pipeline
            base = build(cfg.base.seed)
        else:
            base = fp.load_flow_pipeline(cfg.base.path, cfg.base.type)
        family = "sd3" if cfg.base.type.startswith("sd3") else "flux"
        return formats.export_flow(tr if lora else copy.deepcopy(tr), family, base, dest, lora)
    raise ExportError(f"base.type {cfg.base.type!r}: no export format")


BASE_DIR = "base"  # RUN/base: a built-in base pipeline's weights (diffusers format)
# sd_tiny sizes too large to copy into every run (sd15: SD 1.5's 860M-parameter UNet, 3.4 GB);
# their record says how to rebuild them (type, size, seed) and has no "saved"
BASE_NOT_SAVED_SIZES = ("sd15",)


def base_record(cfg: Any) -> dict[str, Any]:
    """What ``cfg.base`` is, for ``run.json``: a built-in pipeline (rebuilt from ``seed``), a
    local directory (resolved path) or a hub id, or a digits base (``pretrained:NAME`` shipped
    with scorealign, or a run / model directory)."""
    b = cfg.base
    rec: dict[str, Any] = {"type": b.type}
    if b.type in ("sd_tiny", "sd3_tiny", "flux_tiny"):
        rec.update(source="builtin", seed=b.seed,
                   **({"size": b.size} if b.type == "sd_tiny" else {}))
    elif b.type in ("sd", "sd3", "flux", "digits"):
        if b.type == "digits" and str(b.path).startswith("pretrained:"):
            rec.update(source="scorealign", path=b.path)
        elif Path(b.path).is_dir():
            rec.update(source="local", path=str(Path(b.path).resolve()))
        else:
            rec.update(source="hub", id=b.path)
    else:
        rec.update(source="builtin", problem=b.problem, dim=b.dim)
    return rec


def record_base(run: Any, cfg: Any) -> dict[str, Any]:
    """Record the run's base in ``run.json`` (:meth:`RunDir.record_base`); a built-in
    pipeline's weights are drawn in code, so they are saved in ``RUN/base`` (diffusers format,
    :func:`~scorealign.commands.formats.save_pipeline`; ``"saved": "base"``) unless its size is
    in :data:`BASE_NOT_SAVED_SIZES`. Returns the record."""
    from scorealign.commands.formats import save_pipeline
    from scorealign.rl.setup import base_pipeline
    from scorealign.run.atomic import atomic_dir

    rec = base_record(cfg)
    if rec["source"] == "builtin" and cfg.base.type != "testbed" \
            and rec.get("size") not in BASE_NOT_SAVED_SIZES:
        with atomic_dir(Path(run.path) / BASE_DIR) as tmp:
            save_pipeline(base_pipeline(cfg), tmp)
        rec["saved"] = BASE_DIR
    run.record_base(rec)
    return rec


def run_base_pipeline(run_dir: Path, cfg: Any) -> Any:
    """The run's base pipeline: ``RUN/base`` when the run saved it, else as the run's setup
    builds it (rebuilt from the seed, or loaded from ``base.path``)."""
    from scorealign.rl.setup import base_pipeline

    saved = run_dir / BASE_DIR
    if (saved / "model_index.json").is_file():
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained(str(saved), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    return base_pipeline(cfg)


def export_with_base(run_dir: Path, dest: Path, checkpoint=None, adapter: bool = False) -> Path:
    """``scorealign export RUN --with-base``: a pipeline that loads without scorealign.

    SD / SD3 / FLUX: the base pipeline (``RUN/base``, else rebuilt / loaded) with the trained
    denoiser, LoRA fused (``adapter``: kept as diffusers LoRA weights in the same directory);
    digits: the merged model as a diffusers pipeline replaying the run's policy sampler
    (:func:`scorealign.commands.digits_diffusers.write_digits_pipeline`).
    """
    from scorealign.commands import formats

    cfg, setup = finetune_setup(run_dir, checkpoint)
    t = cfg.base.type
    if t == "digits":
        if adapter:
            raise UsageError("--adapter: a digits model is exported whole (LoRA merged); drop "
                             "--adapter")
        from scorealign.commands.digits_diffusers import write_digits_pipeline
        from scorealign.train.bases import load_digits_base
        from scorealign.train.task import SamplingConfig

        p = cfg.policy
        scfg = SamplingConfig(sampler=p.sampler, steps=p.steps, eta=p.eta, grid=p.grid,
                              guidance=p.guidance)
        task, _ = load_digits_base(cfg.base.path)
        return write_digits_pipeline(formats.merged_model(setup.model), task, scfg, dest,
                                     field="policy")
    if t == "testbed":
        raise ExportError("base.type testbed: a closed-form base has no diffusers pipeline; "
                          "export without --with-base")
    denoiser = setup.model.unet if t in SD_TYPES else setup.model.transformer
    return formats.export_pipeline_with_base(denoiser, run_base_pipeline(run_dir, cfg), dest,
                                             lora=cfg.lora.rank > 0, adapter=adapter)


TESTBED_WEIGHTS = "control.safetensors"


def export_testbed(setup: Any, cfg: Any, dest: str | Path) -> Path:
    """A testbed run's trained control network (``control.safetensors``: the trainable weights
    by name) and ``testbed.json`` (problem, d, β, SDE, kind); the base is exact, rebuilt from the
    config."""
    import json

    from safetensors.torch import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in setup.trainable_state().items()},
              str(dest / TESTBED_WEIGHTS))
    b = cfg.base
    (dest / "testbed.json").write_text(json.dumps(
        {"problem": b.problem, "dim": b.dim, "beta": b.beta, "sde": b.sde, "kind": setup.kind,
         "control_hidden": b.control_hidden}, indent=2))
    return dest


@torch.no_grad()
def testbed_evaluate(cfg: Any, setup: Any, model: Any, *, n: int = 1000, seed: int = 10_000,
                     device: Any = "cpu", plot: str | Path | None = None) -> dict[str, float]:
    """The testbed yardsticks (``testbed.finetune.testbed_metrics``) of ``model`` (keys
    ``testbed/…``) and of the frozen base (``base/testbed/…``) from the same ``n`` row seeds
    with the run's policy; the KL of ``model`` is its policy's summed per-step KL to the base on
    these rollouts (a path KL). The sampler's floor is computed once. ``plot``: write the
    samples-over-contours / frontier PNG there."""
    from scorealign.testbed.finetune import plot_testbed, testbed_metrics

    p, problem = cfg.policy, setup.problem
    ref_pol = setup.policy(cfg, setup.ref)
    out, xs, pts = {}, {}, {}
    for name, m in (("trained", model), ("base", setup.ref)):
        pol = setup.policy(cfg, m)
        traj = pol.rollout(setup.prompts[:1], n, seeds=torch.arange(n) + seed, device=device)
        kl = 0.0 if m is setup.ref else float(pol.kl(ref_pol, traj).double().sum(1).mean())

        def pred_fn(x, t, m=m):
            return m(x.to(device), t.to(device)).cpu()
        met = testbed_metrics(problem, setup.sde, setup.kind, traj.x0, kl, pred_fn,
                              sampler=p.sampler, steps=p.steps, eta=p.eta, grid=p.grid,
                              seed=seed, with_floor=name == "trained")
        prefix = "testbed/" if name == "trained" else "base/testbed/"
        out.update({prefix + k: v for k, v in met.items()})
        xs[name], pts[name] = traj.x0.cpu(), (kl, met["reward"])
    if plot is not None:
        plot_testbed(problem, {"base": xs["base"], "trained": xs["trained"]}, pts, plot)
    return out


def export_finetuner(ft: Any, dest: str | Path | None = None) -> Path:
    """``RUN/final`` of a finished :class:`~scorealign.rl.trainer.Finetuner` (main process)."""
    dest = Path(dest) if dest is not None else ft.run.path / "final"
    return export_setup(ft.setup, ft.cfg, dest)


def trained_pipeline(cfg: FinetuneConfig, run_dir: Path, setup: Any) -> Any:
    """The run's base pipeline with the trained weights: ``final/``'s diffusers LoRA weights
    loaded into the base pipeline (``load_lora_weights``), ``final/``'s pipeline directory, or,
    without ``final/``, the base pipeline around ``setup``'s trained denoiser."""
    from scorealign.rl.setup import base_pipeline

    final = run_dir / "final"
    if (final / "pytorch_lora_weights.safetensors").is_file():
        pipe = base_pipeline(cfg)
        pipe.load_lora_weights(str(final))
        return pipe
    if (final / "model_index.json").is_file():
        from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline
        if cfg.base.type in SD_TYPES:
            return StableDiffusionPipeline.from_pretrained(str(final), local_files_only=True,
                                                           safety_checker=None)
        cls = StableDiffusion3Pipeline if cfg.base.type.startswith("sd3") else FluxPipeline
        return cls.from_pretrained(str(final), local_files_only=True)
    pipe = base_pipeline(cfg)
    if cfg.base.type in SD_TYPES:
        pipe.unet = setup.model.unet
    else:
        pipe.transformer = setup.model.transformer
    return pipe


def load(run_dir: Path, device: str):
    """A digits model (``final/``, else the checkpoint with LoRA merged) with its task and base,
    or an SD-style run's pipeline (:func:`trained_pipeline`) with the trainer's setup."""
    from scorealign.commands.load import Loaded

    cfg = read_run_config(run_dir, FinetuneConfig)
    if cfg.base.type == "testbed":  # final/'s control (else the checkpoint's) on the exact base
        weights = run_dir / "final" / TESTBED_WEIGHTS
        _, setup = finetune_setup(run_dir, trained=not weights.is_file())
        if weights.is_file():
            from safetensors.torch import load_file
            setup.load_trainable(load_file(str(weights)))
        model = setup.model.to(device).eval()
        return Loaded("finetune", cfg, model, setup=setup, base=setup.ref.to(device),
                      denoiser=model)
    if cfg.base.type == "digits":
        from scorealign.commands.formats import merged_model
        from scorealign.train.bases import load_digits_base
        from scorealign.train.task import SamplingConfig

        task, base = load_digits_base(cfg.base.path)
        p = cfg.policy
        scfg = SamplingConfig(sampler=p.sampler, steps=p.steps, eta=p.eta, grid=p.grid,
                              guidance=p.guidance)
        model = digits_from_dir(run_dir / "final",
                                lambda: merged_model(finetune_setup(run_dir)[1].model))
        return Loaded("finetune", cfg, model.to(device).eval(), task=task, sampling=scfg,
                      base=base.eval())
    from scorealign.rl.setup import pipeline_model

    _, setup = finetune_setup(run_dir)  # the trainer's setup: prompts, decoding, the base
    pipe = trained_pipeline(cfg, run_dir, setup)
    return Loaded("finetune", cfg, pipe, setup=setup, base=setup.ref,
                  denoiser=pipeline_model(cfg, pipe))


@torch.no_grad()
def draw(loaded, prompts: list[str], n: int, seed: int, base: bool) -> torch.Tensor:
    """Digits: the task's sampler; SD-style: the run's policy around the loaded pipeline's
    denoiser (``base``: the frozen reference), per-row seeds ``seed + i``, decoded by the VAE."""
    if loaded.task is not None:
        return draw_digits(loaded, prompts, n, seed, base)
    rows = len(prompts) * n
    pol = loaded.setup.policy(loaded.config, loaded.setup.ref if base else loaded.denoiser)
    traj = pol.rollout(prompts, n, seeds=torch.arange(rows) + seed)
    return loaded.setup.decode(traj.x0).cpu()


def sample(loaded, req: SampleRequest) -> Sampled:
    """Digits: as a pretraining run; SD-style: a grid of ``req.n`` images per prompt."""
    if loaded.task is not None:
        return sample_digits(loaded, req)
    if loaded.setup.problem is not None:  # testbed: points over p*_β's contours
        x = draw(loaded, loaded.setup.prompts[:1], req.n, req.seed, False)
        path = out_file(req.out, samples_dir(loaded) / f"sample_seed{req.seed}.png")
        loaded.setup.save_samples(x, path, req.n)
        return Sampled(path)
    from scorealign.report.figures import save_image_grid

    prompts = list(req.prompts or loaded.setup.prompts[:4])
    x = draw(loaded, prompts, req.n, req.seed, False)
    path = out_file(req.out, samples_dir(loaded) /
                    f"sample_{prompt_tag(req.prompts)}_seed{req.seed}.png")
    save_image_grid(x, path, nrow=req.n)
    return Sampled(path)


def evaluate(loaded, req: EvalRequest):
    """Reward, gold reward (and on digits class accuracy and FD) of the trained model and
    (prefixed ``base/``) of the base model, from the same seeds."""
    from scorealign.rewards.compose import build_reward_set
    from scorealign.train.evaluate import image_metrics

    if loaded.setup is not None and loaded.setup.problem is not None:
        if any(v is not None for v in (req.sampler, req.steps, req.eta, req.guidance)):
            from scorealign.errors import UsageError
            raise UsageError("testbed runs are evaluated with their own policy (sampler, "
                             "steps, eta); drop --sampler/--steps/--eta/--guidance")
        dev = next(iter(loaded.model.parameters())).device
        return testbed_evaluate(loaded.config, loaded.setup, loaded.model, n=req.n or 1000,
                                device=dev), None
    rc = loaded.config.reward
    rewards = build_reward_set(rc.optimized, rc.gold)
    if loaded.task is not None:
        scfg = sampling_overrides(loaded.sampling, req.sampler, req.steps, req.eta,
                                  req.guidance, req.n)
        n = req.n or scfg.num_eval
        after = image_metrics(loaded.task, loaded.model, scfg, rewards, n)
        before = image_metrics(loaded.task, loaded.base, scfg, rewards, n)
    else:  # SD-style: rewards of policy rollouts from the same seeds
        scfg = None
        prompts = loaded.setup.prompts
        per = max(1, (req.n or 32) // len(prompts))
        rows = [p for p in prompts for _ in range(per)]
        after = rewards(loaded.sample(prompts, per), rows, {"epoch": -1}).metrics()
        before = rewards(loaded.sample(prompts, per, base=True), rows, {"epoch": -1}).metrics()
    return {**after, **{f"base/{k}": v for k, v in before.items()}}, scfg


def export(run_dir: Path, dest: Path, checkpoint=None) -> Path:
    """The checkpoint's model (:func:`export_setup`)."""
    cfg, setup = finetune_setup(run_dir, checkpoint)
    return export_setup(setup, cfg, dest)


def detect(config: dict) -> bool:
    return {"base", "algo", "reward"} <= set(config)


RECORD = RunKind("finetune", FinetuneConfig, load, sample, evaluate, export, detect=detect,
                 draw=draw)
