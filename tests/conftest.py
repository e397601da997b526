"""Shared test fixtures; each helper's block is delimited by ``# --- issueN fixtures ---``."""

# --- issue16 fixtures ---
import math as _math

import pytest as _pytest


@_pytest.fixture(scope="session")
def lq_policy():
    """Factory: ``lq_policy(pi)`` is a degree-1 ``GaussianPolicy`` on the 1-D LQ problem with the
    weights (h, k) and std s of the closed-form policy ``pi`` (a ``lq.LinearGaussian``)."""
    import torch

    from scorealign.control.policy import GaussianPolicy

    def make(pi):
        p = GaussianPolicy(1, 1, 1, _math.log(pi.s))
        with torch.no_grad():
            p.W.copy_(torch.tensor([[pi.h, pi.k]], dtype=torch.float64))
        return p

    return make
# --- end issue16 ---
