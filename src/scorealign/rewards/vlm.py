"""VLM yes/no reward: the probability that a vision-language model answers "yes" to a question.

r(x, c) = p(yes | x, q(c)) / (p(yes | x, q(c)) + p(no | x, q(c)))

from the next-token distribution after the question (first token of each answer), as in
VQAScore [Lin+24, arXiv:2404.01291, Eq. 1: P("Yes" | image, "Does this figure show {text}?")],
renormalized over the two answers so that it lies in (0, 1) whatever mass the model puts on
other tokens. Any ``transformers`` image-text-to-text model with its processor works (LLaVA,
Qwen2-VL, Idefics, …): the question is wrapped in the processor's chat template when it has one,
else in ``template``. Batched with left padding, so every row's answer position is the last one.

Not differentiable: the processor takes uint8 images (the reward is for policy-gradient methods).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scorealign.rewards.base import REWARDS, RewardError, to_uint8
from scorealign.rewards.hub import ModelReward, from_pretrained

QUESTION = 'Does this image show "{prompt}"? Answer yes or no.'
TEMPLATE = "USER: {image}\n{question} ASSISTANT:"
HOW = ("`hf download <model id>` for an image-text-to-text model with its processor (e.g. "
       "llava-hf/llava-1.5-7b-hf or Qwen/Qwen2-VL-2B-Instruct), or pass a local directory")


class VlmYesNo(ModelReward):
    """p(yes)/(p(yes) + p(no)) of a VLM asked ``question.format(prompt=…)`` about each image."""

    name = "vlm_yes_no"
    differentiable = False  # uint8 processor inputs

    def __init__(self, model: Any, processor: Any, question: str = QUESTION,
                 template: str = TEMPLATE, answers: tuple[str, str] = ("yes", "no"),
                 device: str | None = None, dtype: str = "float32"):
        super().__init__(device, dtype, grad=False)
        self.model, self.processor = model, processor
        self.question, self.template = question, template
        tok = processor.tokenizer
        tok.padding_side = "left"
        ids = [tok.encode(a, add_special_tokens=False) for a in answers]
        if any(not i for i in ids) or ids[0][0] == ids[1][0]:
            raise RewardError(f"vlm_yes_no: answers {answers} must start with different tokens; "
                              f"got token ids {ids}")
        self.answer_ids = [ids[0][0], ids[1][0]]
        self.freeze()

    def text(self, prompt: str) -> str:
        q = self.question.format(prompt=prompt)
        if getattr(self.processor, "chat_template", None):
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
            return self.processor.apply_chat_template(msgs, add_generation_prompt=True)
        image = getattr(self.processor, "image_token", "<image>")
        return self.template.format(image=image, question=q)

    def score(self, samples: Tensor, prompts: list[str]) -> Tensor:
        from PIL import Image

        images = [Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a).convert("RGB")
                  for a in to_uint8(samples)]
        inputs = self.processor(images=images, text=[self.text(p) for p in prompts],
                                return_tensors="pt", padding=True).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        logits = self.model(**inputs).logits[:, -1, self.answer_ids].float()
        return logits.softmax(-1)[:, 0]


@REWARDS.register("vlm_yes_no", paper="Lin+24 VQAScore, arXiv:2404.01291",
                  equation="Eq. 1: r = P(yes | x, q(c)) (renormalized over yes/no)")
def vlm_yes_no(model: Any, processor: Any = None, question: str = QUESTION,
               template: str = TEMPLATE, answers: tuple[str, str] | list[str] = ("yes", "no"),
               device: str | None = None, dtype: str = "float32") -> VlmYesNo:
    """Registry factory: ``model`` (and ``processor``, default the same source): a local
    directory or cached hub id of an image-text-to-text model."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    m = model if not isinstance(model, (str, Path)) else \
        from_pretrained(AutoModelForImageTextToText, model, "vlm_yes_no", HOW)
    src = processor if processor is not None else model
    proc = src if not isinstance(src, (str, Path)) else \
        from_pretrained(AutoProcessor, src, "vlm_yes_no", HOW)
    return VlmYesNo(m, proc, question, template, tuple(answers), device, dtype)
