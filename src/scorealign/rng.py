"""Seeded randomness: one generator per (run seed, purpose, step), never global RNG.

A resumed run re-derives the same generators from the same integers, so it continues
bit-for-bit without saving generator state; a per-sample generator makes draws invariant to
batch size and order.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from a tuple of ints/strings (stable across processes and platforms)."""
    h = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def generator(*keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded by :func:`derive_seed` of ``keys``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*keys))
    return g


def randn_per_sample(seeds: list[int] | torch.Tensor, shape: tuple[int, ...], *keys: int | str,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Stack one ``randn(shape)`` per sample, each from its own generator (seed, *keys).

    The draw for sample i depends only on ``seeds[i]`` and ``keys``: the batch can be split,
    reordered or resized without changing any sample's noise.
    """
    out = [torch.randn(shape, generator=generator(int(s), *keys), dtype=dtype) for s in seeds]
    return torch.stack(out) if out else torch.empty((0, *shape), dtype=dtype)
