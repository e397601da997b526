"""Peak memory of the training process, for the ``mem/peak_gb`` metric.

On a CUDA device: ``torch.cuda.max_memory_allocated`` (tensors allocated by PyTorch on that
device, the number TRL's and diffusers' benchmarks report); otherwise the process's peak resident
set size, ``getrusage(RUSAGE_SELF).ru_maxrss`` (kibibytes on Linux, bytes on macOS). Both are
peaks since the process started (nothing is reset), in GiB (2**30 bytes).
"""

from __future__ import annotations

import resource
import sys

import torch

GIB = float(2**30)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (``ru_maxrss``: KiB on Linux, bytes on
    macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def peak_gb(device: torch.device | str | None = None) -> float:
    """Peak memory in GiB: CUDA max allocated on ``device`` when it is a CUDA device, else the
    process's peak RSS (module docstring)."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(dev) / GIB
    return peak_rss_bytes() / GIB


__all__ = ["peak_gb", "peak_rss_bytes", "GIB"]
