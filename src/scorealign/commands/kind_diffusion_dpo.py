"""Run kind ``diffusion_dpo`` (``scorealign diffusion-dpo``): a digits diffusion model fine-tuned
on preference pairs; exported like a digits model (LoRA merged)."""

from __future__ import annotations

from pathlib import Path

from scorealign.commands.kinds import EvalRequest, RunKind
from scorealign.commands.runs import (digits_from_dir, draw_digits, read_run_config,
                                      run_checkpoint, sample_digits, sampling_overrides)
from scorealign.preference.rpo.config import DiffusionDPOConfig


def trained_policy(run_dir: Path, checkpoint=None):
    """(config, base, policy) with the checkpoint's weights (LoRA adapters unmerged)."""
    from scorealign.preference.diffusion_dpo import build_policy
    from scorealign.train.bases import load_base

    cfg = read_run_config(run_dir, DiffusionDPOConfig)
    base = load_base(cfg.base.path, cfg.base.sde)
    policy = build_policy(cfg, base)[0]
    policy.load_state_dict(run_checkpoint(run_dir, checkpoint)[0]["model"])
    return cfg, base, policy.eval()


def testbed_run(run_dir: Path, checkpoint=None, final: bool = True):
    """(config, its FinetuneConfig twin, ``rl.setup.Setup``) of a ``base.type: testbed`` run
    with the trained control: ``final/``'s (when ``final``, no ``checkpoint`` is named and it
    exists), else the checkpoint's (:mod:`scorealign.commands.testbed_dpo_run`)."""
    from scorealign.commands.kind_finetune import TESTBED_WEIGHTS
    from scorealign.commands.testbed_dpo_run import testbed_setup

    cfg = read_run_config(run_dir, DiffusionDPOConfig)
    ft, setup = testbed_setup(cfg)
    weights = Path(run_dir) / "final" / TESTBED_WEIGHTS
    if final and checkpoint is None and weights.is_file():
        from safetensors.torch import load_file
        setup.load_trainable(load_file(str(weights)))
    else:
        setup.model.load_state_dict(run_checkpoint(run_dir, checkpoint)[0]["model"])
    setup.model.eval()
    return cfg, ft, setup


def load(run_dir: Path, device: str):
    """The trained model from ``final/`` (else the newest checkpoint, LoRA merged) beside its
    base; sampled with the default ``SamplingConfig``. A testbed run: the control on the exact
    base, with the trainer's setup (sampled and evaluated as a finetune testbed run)."""
    from scorealign.commands.load import Loaded
    from scorealign.commands.formats import merged_model
    from scorealign.train.bases import load_base
    from scorealign.train.task import SamplingConfig

    cfg = read_run_config(run_dir, DiffusionDPOConfig)
    if cfg.base.type == "testbed":
        _, _, setup = testbed_run(run_dir)
        model = setup.model.to(device)
        return Loaded("diffusion_dpo", cfg, model, setup=setup, base=setup.ref.to(device),
                      denoiser=model)
    base = load_base(cfg.base.path, cfg.base.sde)
    model = digits_from_dir(run_dir / "final",
                            lambda: merged_model(trained_policy(run_dir)[2])).eval()
    return Loaded("diffusion_dpo", cfg, model, task=base.task, sampling=SamplingConfig(),
                  base=base.model)


def sample(loaded, req):
    """Digits: as a pretraining run; testbed: points over p*_β's contours (as finetune)."""
    if loaded.setup is not None:
        from scorealign.commands import kind_finetune
        return kind_finetune.sample(loaded, req)
    return sample_digits(loaded, req)


def draw(loaded, prompts, n, seed, base):
    """Digits: the task's sampler; testbed: the run's policy (as finetune)."""
    if loaded.setup is not None:
        from scorealign.commands import kind_finetune
        return kind_finetune.draw(loaded, prompts, n, seed, base)
    return draw_digits(loaded, prompts, n, seed, base)


def evaluate(loaded, req: EvalRequest):
    """Class accuracy and FD of the trained model and (``base/``) of its base, same seeds; a
    testbed run: the yardsticks against the exact optimum (``testbed_evaluate``)."""
    from scorealign.train.evaluate import image_metrics

    if loaded.setup is not None:
        from scorealign.commands import kind_finetune
        return kind_finetune.evaluate(loaded, req)

    scfg = sampling_overrides(loaded.sampling, req.sampler, req.steps, req.eta, req.guidance,
                              req.n)
    n = req.n or scfg.num_eval
    after = image_metrics(loaded.task, loaded.model, scfg, None, n)
    before = image_metrics(loaded.task, loaded.base, scfg, None, n)
    return {**after, **{f"base/{k}": v for k, v in before.items()}}, scfg


def export(run_dir: Path, dest: Path, checkpoint=None) -> Path:
    """The checkpoint's model, LoRA merged, as the ``save_pretrained`` pair (a testbed run: its
    control, as finetune exports one)."""
    from scorealign.commands.formats import export_digits

    if read_run_config(run_dir, DiffusionDPOConfig).base.type == "testbed":
        from scorealign.commands.kind_finetune import export_testbed
        _, ft, setup = testbed_run(run_dir, checkpoint, final=False)
        return export_testbed(setup, ft, dest)
    return export_digits(trained_policy(run_dir, checkpoint)[2], dest)


def export_with_base(run_dir: Path, dest: Path, checkpoint=None) -> Path:
    """The checkpoint's model (LoRA merged) as a diffusers pipeline replaying the sampler the
    run's ``sample``/``eval`` use (the default ``SamplingConfig``)."""
    if read_run_config(run_dir, DiffusionDPOConfig).base.type == "testbed":
        from scorealign.errors import ExportError
        raise ExportError("base.type testbed: a closed-form base has no diffusers pipeline; "
                          "export without --with-base")
    from scorealign.commands.digits_diffusers import write_digits_pipeline
    from scorealign.commands.formats import merged_model
    from scorealign.train.task import SamplingConfig

    _, base, policy = trained_policy(run_dir, checkpoint)
    return write_digits_pipeline(merged_model(policy).eval(), base.task, SamplingConfig(), dest)


def detect(config: dict) -> bool:
    return config.get("task") == "diffusion"


RECORD = RunKind("diffusion_dpo", DiffusionDPOConfig, load, sample, evaluate, export,
                 detect=detect, draw=draw)
