"""RPO stages for real models, loaded from local paths: a VLM critic and an InstructPix2Pix editor.

* :class:`VLMCritic` asks a vision-language model (transformers ``AutoProcessor`` +
  ``AutoModelForImageTextToText``, e.g. BLIP, LLaVA-style models) for a critique of each image
  against its prompt, and reads structured findings from the text with :func:`parse_findings`
  [Zhao+25 RPO, arXiv:2503.11720, §3.1: VLM critique].
* :class:`TextInstructionExtractor` turns each finding into a free-form edit instruction
  (``op="text"``) for an instruction-following editor [Zhao+25, §3.2].
* :class:`InstructPix2PixEditor` performs such instructions with diffusers'
  ``StableDiffusionInstructPix2PixPipeline`` [Brooks+23, arXiv:2211.09800] [Zhao+25, §3.3].

Nothing is downloaded: both load with ``local_files_only`` from a directory (tests build tiny
random models from configs and save them locally).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from scorealign.preference.rpo.records import (Critique, Finding, Instruction, StageError, check_images,
                                    check_prompts)

# finding code → phrases that signal it in a critique (lower case, regular expressions).
DEFAULT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "wrong_digit": (r"\bwrong (digit|number|object)\b", r"\bdoes not (show|match|depict)\b",
                    r"\bnot an? \w+\b"),
    "broken_stroke": (r"\bbroken\b", r"\bdisconnected\b", r"\bgap\b"),
    "off_centre": (r"\boff[- ]cent(re|er)\b", r"\bnot cent(red|ered)\b"),
    "low_contrast": (r"\blow contrast\b", r"\bfaint\b", r"\bwashed[- ]out\b"),
}

DEFAULT_QUESTION = ("Critique this image generated for the prompt '{prompt}'. List what is wrong "
                    "(wrong object, broken strokes, off-centre, low contrast).")


def parse_findings(text: str, keywords: dict[str, tuple[str, ...]] | None = None
                   ) -> tuple[Finding, ...]:
    """Structured findings read from a free-text critique, one per code whose phrases occur.

    The severity is 1 (a text critic gives no measure); the matched sentence is the detail.
    """
    if not isinstance(text, str):
        raise StageError(f"parse_findings: text must be a string, got {type(text).__name__}")
    out = []
    low = text.lower()
    for code, pats in (keywords or DEFAULT_KEYWORDS).items():
        for pat in pats:
            m = re.search(pat, low)
            if m:
                start = low.rfind(".", 0, m.start()) + 1
                end = low.find(".", m.end())
                out.append(Finding(code, 1.0, text[start: end if end >= 0 else None].strip(),
                                   {"match": m.group(0)}))
                break
    return tuple(out)


def to_pil(images: Tensor) -> list[Image.Image]:
    """Images ``[B, C, H, W]`` in [-1, 1] → RGB PIL images."""
    u = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    u = u.expand(-1, 3, -1, -1) if u.shape[1] == 1 else u
    return [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in u]


class VLMCritic:
    """A vision-language model as the critic.

    Args:
        path: local directory with the processor and the model (``save_pretrained`` output).
        question: prompt template with ``{prompt}``.
        max_new_tokens: length of the critique.
        keywords: finding code → phrases (default :data:`DEFAULT_KEYWORDS`).
    """

    name = "vlm_critic"

    def __init__(self, path: str | Path, question: str = DEFAULT_QUESTION,
                 max_new_tokens: int = 64, keywords: dict[str, tuple[str, ...]] | None = None,
                 device: str = "cpu"):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: VLM directory not found (no hub downloads)")
        self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(
            str(path), local_files_only=True).to(device).eval()
        self.question, self.max_new_tokens, self.keywords = question, max_new_tokens, keywords
        self.device = device

    @torch.no_grad()
    def critique(self, images: Tensor, prompts: Sequence[str]) -> list[Critique]:
        """One critique per image: the generated text and the findings parsed from it."""
        images = check_images(images, self.name)
        prompts = check_prompts(prompts, self.name, images.shape[0])
        questions = [self.question.format(prompt=p) for p in prompts]
        inputs = self.processor(images=to_pil(images), text=questions, return_tensors="pt",
                                padding=True).to(self.device)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        result = []
        for q, p, text in zip(questions, prompts, texts):
            text = text.strip()
            # Decoder-only VLMs echo the question; keep only the answer.
            if text.lower().startswith(q.lower()):
                text = text[len(q):].strip()
            result.append(Critique(p, text, parse_findings(text, self.keywords)))
        return result


class TextInstructionExtractor:
    """One free-form instruction per finding: "Fix this: <finding detail>" (``op="text"``)."""

    name = "text_instructions"

    def extract(self, critiques: Sequence[Critique]) -> list[list[Instruction]]:
        if isinstance(critiques, Critique) or not isinstance(critiques, (list, tuple)):
            raise StageError(f"{self.name}: expects a list of Critique")
        out = []
        for i, c in enumerate(critiques):
            if not isinstance(c, Critique):
                raise StageError(f"{self.name}: item {i} is {type(c).__name__}, expected Critique")
            out.append([Instruction("text", f"Make it match '{c.prompt}': fix that "
                                    f"{f.detail or f.code.replace('_', ' ')}",
                                    {"target_prompt": c.prompt}, (f.code,)) for f in c.findings])
        return out


class InstructPix2PixEditor:
    """Instruction-following edits with ``StableDiffusionInstructPix2PixPipeline``.

    Args:
        pipe_or_path: a loaded pipeline or a local directory (``save_pretrained`` output).
        steps: denoising steps.
        guidance: text guidance scale.
        image_guidance: image guidance scale (how much of the input to keep).
        seed: generator seed; call k uses ``seed + k``.
    """

    name = "instruct_pix2pix"

    def __init__(self, pipe_or_path: Any, steps: int = 20, guidance: float = 7.5,
                 image_guidance: float = 1.5, seed: int = 0):
        if isinstance(pipe_or_path, (str, Path)):
            from diffusers import StableDiffusionInstructPix2PixPipeline

            path = Path(pipe_or_path)
            if not path.is_dir():
                raise FileNotFoundError(f"{path}: pipeline directory not found (no hub downloads)")
            pipe_or_path = StableDiffusionInstructPix2PixPipeline.from_pretrained(
                str(path), local_files_only=True, safety_checker=None,
                requires_safety_checker=False)
            pipe_or_path.set_progress_bar_config(disable=True)
        self.pipe, self.steps, self.guidance = pipe_or_path, steps, guidance
        self.image_guidance, self.seed, self._calls = image_guidance, seed, 0

    @torch.no_grad()
    def edit(self, images: Tensor, prompts: Sequence[str],
             instructions: Sequence[Instruction]) -> Tensor:
        """Edited images with the shape and channels of ``images``, in [-1, 1]."""
        from scorealign.preference.rpo.editors import check_edit_args

        images, prompts, instructions = check_edit_args(images, prompts, instructions, self.name)
        g = torch.Generator().manual_seed(self.seed + self._calls)
        self._calls += 1
        size = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        pil = [im.resize((size, size), Image.BICUBIC) for im in to_pil(images)]
        out = self.pipe(prompt=[ins.text for ins in instructions], image=pil,
                        num_inference_steps=self.steps, guidance_scale=self.guidance,
                        image_guidance_scale=self.image_guidance, generator=g,
                        output_type="np").images
        x = torch.from_numpy(np.asarray(out)).permute(0, 3, 1, 2).float() * 2 - 1
        x = F.interpolate(x, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if images.shape[1] == 1:
            x = x.mean(1, keepdim=True)
        return x.clamp(-1, 1).to(images.dtype)
