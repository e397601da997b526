"""``mem/peak_gb`` (run/memory.py): the process's peak RSS in GiB off the CPU. (Logged on every
metrics row: pretrain in tests/train/test_resume.py, finetune in tests/export/test_with_base.py,
dpo in tests/preference/test_mem_metric.py.)"""

import subprocess
import sys

import pytest
import torch

from scorealign.run.memory import GIB, peak_gb, peak_rss_bytes, rusage_peak_bytes

LINUX = sys.platform.startswith("linux")
PROBE = r"""
import sys, torch
from scorealign.run.memory import peak_gb
def status(key):  # KiB → GiB
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 2**20
before, rss = peak_gb("cpu"), status("VmRSS:")
x = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB, every page touched
hwm_before = status("VmHWM:")
after = peak_gb("cpu")
print(before, rss, after, hwm_before, status("VmHWM:"))
"""


@pytest.mark.skipif(not LINUX, reason="reads /proc/self/status")
def test_peak_rss_is_in_gib_and_grows_with_a_touched_allocation():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True).stdout.split()
    before, rss, after, hwm_before, hwm_after = map(float, out)
    # 0.25 GiB more than was resident; the peak before may lie above the RSS then
    assert rss + 0.24 < after < max(before, rss) + 0.27
    # the kernel's high-water mark, KiB → GiB: read just before and just after peak_gb, which
    # lies between them (the mark only grows; reading /proc itself may touch a new page, so the
    # two reads can differ by a page: equality with one read was flaky in CI, 4 KiB apart)
    assert hwm_before <= after <= hwm_after


@pytest.mark.skipif(not LINUX, reason="reads /proc/self/status")
def test_rusage_is_read_in_kib_and_bounds_the_peak():
    # ru_maxrss ≈ VmHWM or above (it also holds the pre-exec image's peak; the two counters are
    # updated at different moments, ~0.1 % apart); read as bytes instead of KiB it would be
    # 1024 times too small
    assert rusage_peak_bytes() > 0.9 * peak_rss_bytes() > 10 * 2**20


def test_off_cuda_it_is_the_rss_peak():
    assert peak_gb("cpu") == peak_rss_bytes() / GIB == peak_gb(None)
    assert peak_gb(torch.device("cpu")) > 0.01  # a Python process with torch: > 10 MiB
