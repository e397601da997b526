"""Time grids: decreasing float64 from t_max to t_min; karras/logsnr follow their noise ladders."""

import math

import pytest
import torch

from scorealign.samplers import GRIDS, make_grid
from scorealign.sde import build_sde


@pytest.mark.parametrize("name", ["ve", "vp", "subvp", "cou", "csubvp", "flow"])
@pytest.mark.parametrize("kind", [k for k in sorted(GRIDS)
                                  if "own_endpoints" not in GRIDS[k].properties])
def test_grid_is_decreasing_with_exact_endpoints(name, kind):
    sde = build_sde(name)
    ts = make_grid(sde, 12, kind)
    assert ts.dtype == torch.float64 and ts.shape == (13,)
    assert float(ts[0]) == sde.t_max and float(ts[-1]) == sde.t_min
    assert bool((ts[1:] < ts[:-1]).all())


def test_the_scheduler_grid_needs_a_pipeline_sde():
    # its endpoints are the scheduler's own (tests/policy/test_scheduler_grid.py, tests/flow)
    assert "own_endpoints" in GRIDS["scheduler"].properties
    with pytest.raises(ValueError, match="needs the SDE of a diffusers pipeline"):
        make_grid(build_sde("vp"), 8, "scheduler")


def test_noise_ladders():
    sde = build_sde("vp")
    r = sde.nsr(make_grid(sde, 10, "logsnr")).log()
    torch.testing.assert_close(r[1:] - r[:-1], (r[1] - r[0]).expand(10), rtol=1e-8, atol=1e-8)
    rho = 7.0
    k = sde.nsr(make_grid(sde, 10, "karras", rho=rho)) ** (1 / rho)
    torch.testing.assert_close(k[1:] - k[:-1], (k[1] - k[0]).expand(10), rtol=1e-8, atol=1e-8)


def test_auto_uses_the_sde_default():
    assert torch.equal(make_grid(build_sde("cou"), 8, "auto"), make_grid(build_sde("cou"), 8, "karras"))
    assert torch.equal(make_grid(build_sde("vp"), 8, "auto"), make_grid(build_sde("vp"), 8, "uniform"))
    with pytest.raises(KeyError, match="uniform"):
        make_grid(build_sde("vp"), 8, "cosine")
    with pytest.raises(ValueError, match="steps"):
        make_grid(build_sde("vp"), 0)


def test_flow_starts_short_of_its_singular_end():
    sde = build_sde("flow")
    assert sde.t_max < 1.0 and math.isfinite(float(sde.drift_coef(torch.tensor([sde.t_max]))))
