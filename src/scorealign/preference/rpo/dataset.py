"""Preference datasets on disk: ``pairs.jsonl`` + PNG files, sealed by a manifest written last.

Layout of a dataset directory::

    pairs.jsonl     one JSON record per pair: id, prompt, chosen, rejected (PNG paths relative
                    to the directory), source ("rpo" | "reward" | ...), meta (critique, ...)
    images/         000000_w.png, 000000_l.png, ... (8-bit grey or RGB)
    manifest.json   format, version, count, image shape, SHA-256 of pairs.jsonl and of the
                    images, builder info; written atomically after everything else

A writer killed before :meth:`PairWriter.close` leaves no manifest, and :func:`read_pairs` refuses
such a directory (:class:`IncompleteDatasetError`); a manifest whose count or hashes disagree with
the files is refused too. A half-written dataset is therefore detected, never silently used.
Images are stored as 8-bit PNG: u8 = round((x + 1) · 127.5), read back as u8 / 127.5 − 1.
"""

from __future__ import annotations

from scorealign.errors import ScorealignError

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

FORMAT = "scorealign.pairs"
VERSION = 1
PAIRS_FILE = "pairs.jsonl"
MANIFEST_FILE = "manifest.json"
IMAGES_DIR = "images"
_REQUIRED = ("id", "prompt", "chosen", "rejected", "source")


class DatasetError(ScorealignError, ValueError):
    """A pair dataset that cannot be used; the message names the file (and line)."""


class IncompleteDatasetError(DatasetError):
    """The writer did not finish (no manifest, or files that disagree with it)."""


def to_uint8(image: Tensor) -> np.ndarray:
    """``[C, H, W]`` in [-1, 1] → uint8 ``[H, W]`` (C = 1) or ``[H, W, 3]``."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise DatasetError(f"an image must be [C, H, W] with C in (1, 3), got {tuple(image.shape)}")
    u = ((image.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    arr = u.permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def from_uint8(arr: np.ndarray) -> Tensor:
    """uint8 ``[H, W]`` or ``[H, W, 3]`` → float32 ``[C, H, W]`` in [-1, 1]."""
    t = torch.from_numpy(np.array(arr, copy=True))
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    return t.float() / 127.5 - 1.0


def quantize(images: Tensor) -> Tensor:
    """What a round trip through the dataset does to float images (8-bit quantization)."""
    return torch.stack([from_uint8(to_uint8(x)) for x in images]) if len(images) else images


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _images_digest(root: Path, names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0")
        h.update(hashlib.sha256((root / name).read_bytes()).digest())
    return h.hexdigest()


class PairWriter:
    """Write a pair dataset; only :meth:`close` (or a clean ``with`` exit) seals it.

    Args:
        path: the dataset directory. An existing *complete* dataset is an error unless
            ``overwrite``; an incomplete one (a killed writer's leftovers) is cleared.
        info: JSON-serializable description of how the pairs were built (stored in the manifest).
        overwrite: replace an existing complete dataset.
    """

    def __init__(self, path: str | Path, info: dict[str, Any] | None = None,
                 overwrite: bool = False):
        self.path = Path(path)
        if (self.path / MANIFEST_FILE).exists() and not overwrite:
            raise FileExistsError(f"{self.path} already holds a complete pair dataset; choose "
                                  f"another --out or pass overwrite")
        if self.path.exists():
            shutil.rmtree(self.path)
        (self.path / IMAGES_DIR).mkdir(parents=True)
        self.info = info or {}
        self._file = open(self.path / PAIRS_FILE, "w")
        self._count = 0
        self._names: list[str] = []
        self._shape: tuple[int, ...] | None = None
        self.closed = False

    def add(self, prompt: str, chosen: Tensor, rejected: Tensor, source: str,
            meta: dict[str, Any] | None = None) -> int:
        """Append one pair (chosen ≻ rejected for ``prompt``); returns its id."""
        if self.closed:
            raise DatasetError(f"{self.path}: writer already closed")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DatasetError(f"pair {self._count}: prompt must be a non-empty string")
        if chosen.shape != rejected.shape:
            raise DatasetError(f"pair {self._count}: chosen {tuple(chosen.shape)} and rejected "
                               f"{tuple(rejected.shape)} differ in shape")
        if self._shape is None:
            self._shape = tuple(chosen.shape)
        elif tuple(chosen.shape) != self._shape:
            raise DatasetError(f"pair {self._count}: image shape {tuple(chosen.shape)} differs "
                               f"from the dataset's {self._shape}")
        i = self._count
        names = (f"{IMAGES_DIR}/{i:06d}_w.png", f"{IMAGES_DIR}/{i:06d}_l.png")
        for name, img in zip(names, (chosen, rejected)):
            Image.fromarray(to_uint8(img)).save(self.path / name)
        rec = {"id": i, "prompt": prompt, "chosen": names[0], "rejected": names[1],
               "source": source, "meta": meta or {}}
        self._file.write(json.dumps(rec) + "\n")
        self._count += 1
        self._names += list(names)
        return i

    def close(self) -> Path:
        """Flush, hash and write the manifest atomically; the dataset is usable from then on."""
        if self.closed:
            return self.path
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        manifest = {"format": FORMAT, "version": VERSION, "count": self._count,
                    "image_shape": list(self._shape or ()),
                    "pairs_sha256": _sha256(self.path / PAIRS_FILE),
                    "images_sha256": _images_digest(self.path, self._names), "info": self.info}
        tmp = self.path / f".{MANIFEST_FILE}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, self.path / MANIFEST_FILE)
        self.closed = True
        return self.path

    def __enter__(self) -> "PairWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self._file.closed:
            self._file.close()  # leave it unsealed: readers will refuse it


@dataclass(frozen=True)
class PairDataset:
    """A read pair dataset: records and images (float32 in [-1, 1], ``[N, C, H, W]``)."""

    path: Path
    records: list[dict[str, Any]]
    chosen: Tensor
    rejected: Tensor
    info: dict[str, Any]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def prompts(self) -> list[str]:
        """The prompt of each pair."""
        return [r["prompt"] for r in self.records]


def read_pairs(path: str | Path, limit: int | None = None) -> PairDataset:
    """Read and verify a dataset written by :class:`PairWriter`.

    Raises:
        IncompleteDatasetError: no manifest (the writer was killed), or files that disagree with
            the manifest (count, hashes).
        DatasetError: a malformed record (naming ``pairs.jsonl:LINE``) or image.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such pair dataset directory")
    mfile, pfile = root / MANIFEST_FILE, root / PAIRS_FILE
    if not mfile.is_file():
        raise IncompleteDatasetError(f"{root}: no {MANIFEST_FILE}: the writer did not finish "
                                     f"(killed?); rebuild the dataset")
    try:
        manifest = json.loads(mfile.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{mfile}: invalid JSON: {e}") from None
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{mfile}: not a {FORMAT} manifest (format={manifest.get('format')!r})")
    if not pfile.is_file() or _sha256(pfile) != manifest["pairs_sha256"]:
        raise IncompleteDatasetError(f"{pfile}: missing or changed after the manifest was written")
    records = []
    for lineno, line in enumerate(pfile.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{pfile}:{lineno}: invalid JSON: {e}") from None
        missing = [k for k in _REQUIRED if k not in rec]
        if missing:
            raise DatasetError(f"{pfile}:{lineno}: missing field(s) {missing}")
        records.append(rec)
    if len(records) != manifest["count"]:
        raise IncompleteDatasetError(f"{pfile}: {len(records)} records, manifest says "
                                     f"{manifest['count']}")
    names = [n for r in records for n in (r["chosen"], r["rejected"])]
    for n in names:
        if not (root / n).is_file():
            raise IncompleteDatasetError(f"{root / n}: image missing")
    if _images_digest(root, names) != manifest["images_sha256"]:
        raise IncompleteDatasetError(f"{root}: images changed after the manifest was written")
    if limit is not None:
        records = records[:limit]
    shape = tuple(manifest["image_shape"])
    chosen, rejected = [], []
    for lineno, r in enumerate(records, 1):
        for key, bucket in (("chosen", chosen), ("rejected", rejected)):
            with Image.open(root / r[key]) as im:
                x = from_uint8(np.asarray(im))
            if tuple(x.shape) != shape:
                raise DatasetError(f"{pfile}:{lineno}: {key} image {r[key]} has shape "
                                   f"{tuple(x.shape)}, manifest says {shape}")
            bucket.append(x)
    empty = torch.empty(0, *shape)
    return PairDataset(root, records, torch.stack(chosen) if chosen else empty,
                       torch.stack(rejected) if rejected else empty, manifest.get("info", {}))
