"""tests/soc: one intra-op thread for these tiny-tensor tests.

Measured on the 2-core CI box under load: with 2 intra-op threads each small op (a softmax of
[256, 1]) cost ~20 ms instead of ~6 µs, and the LQ training test took 95 s instead of 4 s.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
