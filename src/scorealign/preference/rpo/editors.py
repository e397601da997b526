"""Editors for digits: SDEdit with the base model itself, and exact image operations.

* :class:`SDEditEditor` performs ``redraw`` / ``repair`` instructions with the base diffusion
  model: noise the image to t₀ = strength · T along the forward SDE, x_{t₀} = m(t₀) x + s(t₀) ε,
  then integrate the reverse process from t₀ to t_min under the instruction's *target* prompt
  [Meng+22 SDEdit, arXiv:2108.01073, §3 (Alg. 1)]. Low strength keeps the layout, high strength
  lets the model redraw the digit.
* :class:`ImageOpsEditor` performs ``recenter`` (sub-pixel shift of the ink by the measured
  centre-of-mass offset, bilinear) and ``contrast`` (stretch of the ink so the brightest eighth
  of the pixels becomes 1 and the darkest half 0): edits with an exact answer need no model.
* :class:`RoutingEditor` sends each instruction to the editor registered for its ``op``.

RPO applies its instructions with an instruction-following editor (InstructPix2Pix) and
ControlNet [Zhao+25, arXiv:2503.11720, §3.3]; ``hf_parts.InstructPix2PixEditor`` is that editor
for real models.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from scorealign.rng import generator
from scorealign.preference.rpo.base import Base
from scorealign.preference.rpo.digits_critic import ink
from scorealign.preference.rpo.records import Instruction, StageError, check_images, check_prompts
from scorealign.samplers import sample
from scorealign.sde.base import bcast


def check_edit_args(images: object, prompts: object, instructions: object, stage: str
                    ) -> tuple[Tensor, list[str], list[Instruction]]:
    """Validate an editor's arguments: images, one prompt and one Instruction per image."""
    images = check_images(images, stage)
    n = images.shape[0]
    prompts = check_prompts(prompts, stage, n)
    if not isinstance(instructions, (list, tuple)) or len(instructions) != n:
        raise StageError(f"{stage}: expected {n} instructions (one per image)")
    for i, ins in enumerate(instructions):
        if not isinstance(ins, Instruction):
            raise StageError(f"{stage}: instruction {i} is {type(ins).__name__}, "
                             f"expected Instruction")
    return images, prompts, list(instructions)


class SDEditEditor:
    """Partially noise, then denoise under the instruction's target prompt (see module doc).

    Args:
        base: the base model (its own weights perform the edit).
        steps: reverse steps for a full trajectory; an edit of strength s takes ⌈s · steps⌉.
        guidance: classifier-free guidance scale during the edit.
        sampler: a ``samplers.SAMPLERS`` name.
        eta: the sampler's noise level.
        seed: run seed; call k draws from ``generator(seed, "sdedit", k)``.
    """

    name = "sdedit"
    ops = ("redraw", "repair")

    def __init__(self, base: Base, steps: int = 25, guidance: float = 2.0, sampler: str = "ddim",
                 eta: float | None = 0.0, seed: int = 0):
        self.base, self.steps, self.guidance = base, steps, guidance
        self.sampler, self.eta, self.seed = sampler, eta, seed
        self._calls = 0

    @torch.no_grad()
    def edit(self, images: Tensor, prompts: Sequence[str],
             instructions: Sequence[Instruction]) -> Tensor:
        """Edited images ``[B, C, H, W]`` in [-1, 1]; rows are grouped by strength."""
        images, prompts, instructions = check_edit_args(images, prompts, instructions, self.name)
        n = images.shape[0]
        out = images.clone()
        strengths = []
        for i, ins in enumerate(instructions):
            s = ins.params.get("strength")
            if not isinstance(s, (int, float)) or not 0.0 < float(s) <= 1.0:
                raise StageError(f"{self.name}: instruction {i} ({ins.op}) needs params.strength "
                                 f"in (0, 1], got {s!r}")
            strengths.append(float(s))
        g = generator(self.seed, "sdedit", self._calls)
        self._calls += 1
        for s in sorted(set(strengths)):
            rows = [i for i in range(n) if strengths[i] == s]
            targets = [str(instructions[i].params.get("target_prompt") or prompts[i]) for i in rows]
            out[rows] = self._sdedit(images[rows], targets, s, g)
        return out

    def _sdedit(self, x: Tensor, prompts: list[str], strength: float, g: torch.Generator) -> Tensor:
        sde, model = self.base.sde, self.base.model
        t0 = max(strength * sde.T, sde.t_min * 1.001)
        k = max(1, round(strength * self.steps))
        grid = torch.linspace(t0, sde.t_min, k + 1, dtype=torch.float64)
        mg = sde.marginal(torch.full((x.shape[0],), t0, dtype=torch.float64))
        eps = torch.randn(x.shape, generator=g, dtype=x.dtype)
        x_t = (bcast(mg.mean_coef, x) * x + bcast(mg.std, x) * eps).to(x.dtype)
        cond = self.base.cond(prompts)
        pred_fn = self.base.task.pred_fn(model, cond, self.guidance)
        res = sample(pred_fn, self.base.kind, sde, x_t, sampler=self.sampler, steps=k,
                     eta=self.eta, grid=grid, generator=g)
        return res.x0.clamp(-1.0, 1.0)


class ImageOpsEditor:
    """``recenter`` and ``contrast`` as exact image operations on grey images (module doc)."""

    name = "image_ops"
    ops = ("recenter", "contrast")

    def edit(self, images: Tensor, prompts: Sequence[str],
             instructions: Sequence[Instruction]) -> Tensor:
        """Edited images ``[B, 1, H, W]`` in [-1, 1]."""
        images, prompts, instructions = check_edit_args(images, prompts, instructions, self.name)
        out = []
        for i, ins in enumerate(instructions):
            x = images[i: i + 1]
            if ins.op == "recenter":
                dy, dx = ins.params.get("dy"), ins.params.get("dx")
                if not all(isinstance(v, (int, float)) for v in (dy, dx)):
                    raise StageError(f"{self.name}: recenter instruction {i} needs numeric "
                                     f"params dy, dx, got {ins.params}")
                out.append(shift(x, float(dy), float(dx)))
            elif ins.op == "contrast":
                out.append(stretch_contrast(x))
            else:
                raise StageError(f"{self.name}: cannot perform op {ins.op!r}; it does {self.ops}")
        return torch.cat(out)


def shift(images: Tensor, dy: float, dx: float) -> Tensor:
    """Translate the ink by (dy, dx) pixels (bilinear, background fills in), ``[B, 1, H, W]``."""
    u = ink(images)[:, None]
    h, w = u.shape[-2:]
    theta = torch.tensor([[1.0, 0.0, -2.0 * dx / w], [0.0, 1.0, -2.0 * dy / h]],
                         dtype=u.dtype).expand(u.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(u.shape), align_corners=False)
    moved = F.grid_sample(u, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (moved * 2.0 - 1.0).clamp(-1.0, 1.0).to(images.dtype)


def stretch_contrast(images: Tensor) -> Tensor:
    """Map the darkest half's mean ink to 0 and the brightest eighth's mean to 1, clamped."""
    u = ink(images)
    flat = u.flatten(1).sort(1).values
    n = flat.shape[1]
    lo = flat[:, : max(1, n // 2)].mean(1)
    hi = flat[:, -max(1, n // 8):].mean(1)
    v = ((u - lo[:, None, None]) / (hi - lo).clamp_min(1e-3)[:, None, None]).clamp(0.0, 1.0)
    return (v[:, None] * 2.0 - 1.0).to(images.dtype)


class RoutingEditor:
    """Dispatch each instruction to the editor registered for its ``op``.

    Args:
        editors: op → editor (e.g. ``{"redraw": sdedit, "repair": sdedit, "recenter": ops,
            "contrast": ops}``).
    """

    name = "router"

    def __init__(self, editors: Mapping[str, object]):
        self.editors = dict(editors)

    def edit(self, images: Tensor, prompts: Sequence[str],
             instructions: Sequence[Instruction]) -> Tensor:
        """Edited images; every op must have an editor (else a StageError naming the op)."""
        images, prompts, instructions = check_edit_args(images, prompts, instructions, self.name)
        out = images.clone()
        for op in dict.fromkeys(ins.op for ins in instructions):
            if op not in self.editors:
                raise StageError(f"{self.name}: no editor for op {op!r}; known: "
                                 f"{sorted(self.editors)}")
            rows = [i for i, ins in enumerate(instructions) if ins.op == op]
            edited = self.editors[op].edit(images[rows], [prompts[i] for i in rows],
                                           [instructions[i] for i in rows])
            out[rows] = check_images(edited, f"editor for {op!r}", len(rows))
        return out


def digits_editor(base: Base, steps: int = 25, guidance: float = 2.0, seed: int = 0
                  ) -> RoutingEditor:
    """The default digits editor: SDEdit for redraw/repair, image ops for recenter/contrast."""
    sd, ops = SDEditEditor(base, steps=steps, guidance=guidance, seed=seed), ImageOpsEditor()
    return RoutingEditor({"redraw": sd, "repair": sd, "recenter": ops, "contrast": ops})
