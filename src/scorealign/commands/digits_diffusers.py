"""A scorealign digits model as a diffusers pipeline directory that loads without scorealign.

``write_digits_pipeline(model, task, sampling, dest)`` writes

* ``unet/``: the network's own diffusers ``UNet2DConditionModel`` (``UNet2DModel`` for
  ``model.type: unet``), weights unchanged (LoRA merged by the caller);
* ``conditioner/``: ``DigitsConditioner`` (``nets/hub/digits_conditioner.py``, shipped with its
  source): the learned null token or label embedding;
* ``text_encoder/`` + ``tokenizer/`` (text models): the bundled all-MiniLM-L6-v2;
* ``scheduler/``: ``AffineStepScheduler`` (``nets/hub/scheduling_affine_steps.py``) holding the
  run's grid and each step's (A_i, B_i, σ_i), read off the sampler's own step
  (:func:`scorealign.samplers.steps.affine_step_coefs`, checked affine by :func:`_step_coefs`);
* ``pipeline.py`` (``ScorealignDigitsPipeline``), ``model_index.json`` and ``README.md``.

``DiffusionPipeline.from_pretrained(DIR, custom_pipeline=f"{DIR}/pipeline.py",
trust_remote_code=True)`` then samples exactly as scorealign does: the same latents (and noise,
for stochastic samplers) give the same x_0 (tests/export/test_digits_diffusers.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorealign.errors import ExportError

PIPELINE_FILE = "pipeline.py"
# probe rows (x, pred) at which each step's mean must equal A x + B pred: an affinity check
_PROBE_X, _PROBE_PRED = (0.5, 2.0), (-1.5, 0.25)


def _step_coefs(fn: Any, kind: str, t: float, t_next: float, sde: Any, kw: dict,
                where: str) -> tuple[float, float, float]:
    """(A, B, σ) of one sampler step, checked to be affine in (x, pred) with a σ that depends
    on neither (a third and fourth probe against A x + B pred, float64).

    Raises:
        ExportError: the step is not of that form (``where`` names the config field).
    """
    from scorealign.samplers.steps import affine_step_coefs, general_path

    f64 = torch.float64
    try:
        a, b, std = affine_step_coefs(fn, kind, t, t_next, sde, **kw)
        x = torch.tensor(_PROBE_X, dtype=f64)[:, None]
        p = torch.tensor(_PROBE_PRED, dtype=f64)[:, None]
        with general_path(), torch.no_grad():
            st = fn(x, p, kind, torch.full((2,), t, dtype=f64),
                    torch.full((2,), t_next, dtype=f64), sde, noise=None, **kw)
    except ValueError as e:
        raise ExportError(f"{where}: {' '.join(str(e).split())}; the diffusers export replays "
                          f"one-evaluation samplers") from None
    affine = torch.allclose(st.mean.to(f64), a * x + b * p, rtol=1e-9, atol=1e-12) and \
        torch.allclose(st.std.to(f64), torch.full((2,), std, dtype=f64), rtol=1e-9, atol=0)
    if not affine:
        raise ExportError(f"{where}: its step is not affine in (x, prediction) with a fixed "
                          f"noise level; the diffusers export cannot replay it")
    return a, b, std


def scheduler_config(task: Any, sampling: Any, field: str = "sample") -> dict:
    """The ``AffineStepScheduler`` config of ``sampling`` (sampler, steps, eta, grid) on the
    task's SDE and prediction kind: the grid and each step's (A_i, B_i, σ_i).

    Every one-evaluation sampler here (ddim, ddpm, euler_ode, euler_maruyama, flow_sde,
    flow_cps, dance_sde, consistency) takes such steps; Heun (two evaluations) and Langevin
    correctors do not.

    Raises:
        ExportError: a sampler whose step is not affine (checked per step), or corrector steps
            (``field``: the config section named in the message).
    """
    from scorealign.samplers.grids import make_grid
    from scorealign.samplers.loop import _is_stochastic
    from scorealign.samplers.steps import SAMPLERS

    where = f"{field}.sampler {sampling.sampler!r}"
    if getattr(sampling, "corrector_steps", 0):
        raise ExportError(f"{field}.corrector_steps {sampling.corrector_steps}: the diffusers "
                          f"export has no Langevin corrector; set it to 0")
    sde, kind = task.sde, task.kind
    ts = make_grid(sde, sampling.steps, sampling.grid)
    entry = SAMPLERS.get(sampling.sampler)
    kw = {} if sampling.eta is None else {"eta": float(sampling.eta)}
    if "stochastic_if_eta" not in entry.properties and kw.get("eta", 0.0) == 0.0:
        kw = {}  # deterministic / always-stochastic steps take their own η
    coefs = [_step_coefs(entry.fn, kind, float(ts[i]), float(ts[i + 1]), sde, kw, where)
             for i in range(sampling.steps)]
    return {"times": [float(t) for t in ts], "coef_x": [c[0] for c in coefs],
            "coef_pred": [c[1] for c in coefs], "noise_std": [c[2] for c in coefs],
            "time_scale": float(task.model_cfg.time_scale), "prediction_type": kind,
            "init_noise_sigma": float(sde.prior_std), "sampler": sampling.sampler,
            "stochastic": bool(_is_stochastic(sampling.sampler, sampling.eta))}


def _copy_source(name: str, dest: Path) -> None:
    from scorealign.nets.hub import HUB_DIR

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HUB_DIR / name, dest / name)


def write_digits_pipeline(model: nn.Module, task: Any, sampling: Any, dest: str | Path,
                          field: str = "sample") -> Path:
    """Write the plain digits ``model`` (``build_model``'s UNet / CondUNet, no adapters) with
    ``task``'s SDE and ``sampling`` as a diffusers pipeline directory ``dest`` (module
    docstring), atomically."""
    from diffusers import __version__ as diffusers_version

    from scorealign.nets.hub.digits_conditioner import DigitsConditioner
    from scorealign.nets.hub.scheduling_affine_steps import AffineStepScheduler
    from scorealign.run.atomic import atomic_dir

    mcfg = model.config
    if mcfg.type == "mlp":
        raise ExportError("model.type mlp (2-D toy data): no diffusers pipeline export")
    sched = AffineStepScheduler(**scheduler_config(task, sampling, field))
    index: dict[str, Any] = {
        "_class_name": "ScorealignDigitsPipeline", "_diffusers_version": diffusers_version,
        "unet": ["diffusers", type(model.unet).__name__],
        "scheduler": ["scheduling_affine_steps", "AffineStepScheduler"],
        "conditioner": [None, None], "text_encoder": [None, None], "tokenizer": [None, None],
        "guidance_scale": float(sampling.guidance), "max_length": 64}
    if mcfg.cond == "text":
        from scorealign.nets.text import get_text_encoder
        index["max_length"] = get_text_encoder().max_length  # the prompts' token limit
    with atomic_dir(dest) as tmp:
        model.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        sched.save_pretrained(tmp / "scheduler")
        _copy_source("scheduling_affine_steps.py", tmp / "scheduler")
        if mcfg.type == "unet_cond":
            dim = mcfg.label_dim if mcfg.cond == "label" else mcfg.text_dim
            cond = DigitsConditioner(mode=mcfg.cond, dim=dim, num_classes=mcfg.num_classes)
            cond.load_state_dict(model.conditioner.state_dict(), strict=True)
            cond.save_pretrained(tmp / "conditioner", safe_serialization=True)
            _copy_source("digits_conditioner.py", tmp / "conditioner")
            index["conditioner"] = ["digits_conditioner", "DigitsConditioner"]
        if mcfg.cond == "text":
            from transformers import AutoModel, AutoTokenizer

            from scorealign.nets.text import minilm_path
            src = str(minilm_path())
            enc = AutoModel.from_pretrained(src, local_files_only=True)
            tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
            enc.save_pretrained(tmp / "text_encoder", safe_serialization=True)
            tok.save_pretrained(tmp / "tokenizer")
            index["text_encoder"] = ["transformers", type(enc).__name__]
            index["tokenizer"] = ["transformers", type(tok).__name__]
        _copy_source(PIPELINE_FILE, tmp)
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        (tmp / "README.md").write_text(_readme(mcfg, sampling))
    return Path(dest)


def _readme(mcfg: Any, sampling: Any) -> str:
    call = ('pipe(["a handwritten digit 3"], num_images_per_prompt=4, generator=g)'
            if mcfg.cond == "text" else
            "pipe(class_labels=[3], num_images_per_prompt=4, generator=g)"
            if mcfg.cond == "label" else "pipe(num_images_per_prompt=4, generator=g)")
    return f"""# scorealign digits model (diffusers)

{mcfg.type} / {mcfg.cond} / predicts {mcfg.kind}; sampler {sampling.sampler}, {sampling.steps} \
steps, eta {sampling.eta}, grid {sampling.grid}, guidance {sampling.guidance}.

```python
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("THIS_DIR", custom_pipeline="THIS_DIR/pipeline.py",
                                         trust_remote_code=True)
g = torch.Generator().manual_seed(0)
images = {call}.images
```
"""


__all__ = ["PIPELINE_FILE", "scheduler_config", "write_digits_pipeline"]
