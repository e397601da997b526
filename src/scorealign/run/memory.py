"""Peak memory of the training process, for the ``mem/peak_gb`` metric.

On a CUDA device: ``torch.cuda.max_memory_allocated`` (tensors allocated by PyTorch on that
device, the number TRL's and diffusers' benchmarks report). Otherwise the process's peak resident
set size: on Linux the kernel's high-water mark ``VmHWM`` of ``/proc/self/status`` (KiB), else
``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux and the BSDs, bytes on macOS). On Linux
``ru_maxrss`` also keeps the peak of the image the process replaced at ``exec``: a run started
as a subprocess of a 0.8 GiB Python process read 0.81 GiB there against a VmHWM of 0.47 GiB
(tests/run/test_memory.py), so it is the fallback only. Both are peaks since the process started
(nothing is reset), in GiB (2**30 bytes).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

GIB = float(2**30)
_STATUS = Path("/proc/self/status")


def rusage_peak_bytes() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image in bytes: ``VmHWM`` (KiB) where
    ``/proc/self/status`` has it, else :func:`rusage_peak_bytes`."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rusage_peak_bytes()


def peak_gb(device: torch.device | str | None = None) -> float:
    """Peak memory in GiB: CUDA max allocated on ``device`` when it is a CUDA device, else the
    process's peak RSS (module docstring)."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(dev) / GIB
    return peak_rss_bytes() / GIB


__all__ = ["peak_gb", "peak_rss_bytes", "rusage_peak_bytes", "GIB"]
