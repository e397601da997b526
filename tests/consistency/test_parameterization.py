"""f_θ = c_x x + c_D x̂_0: the boundary condition is exact, and it is Song+23's parameterization."""

import pytest
import torch

from scorealign.nets import ModelConfig, build_model
from scorealign.sde import SDES, build_sde
from scorealign.sde.consistency import (SIGMA_DATA, ConsistencyFunction, consistency_coefs,
                                        consistency_fn)
from scorealign.sde.param import KINDS

F64 = torch.float64


def _make(name):
    if name == "discrete_vp":  # DDPM's linear β schedule, 1000 steps [Ho+20, §4]
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
        return build_sde(name, alphas_cumprod=torch.cumprod(1 - betas, 0))
    return build_sde(name)


@pytest.mark.parametrize("name", sorted(SDES))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_boundary_condition_is_exact_for_every_family(name, dtype):
    sde = _make(name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=g, dtype=dtype) * 3
    t = torch.full((16,), sde.t_min, dtype=F64)
    c_x, c_d = consistency_coefs(t, sde)
    assert torch.equal(c_x, torch.ones_like(c_x)) and torch.equal(c_d, torch.zeros_like(c_d))
    for kind in KINDS:
        pred = torch.randn(16, 3, generator=g, dtype=dtype) * 5
        f = consistency_fn(pred, kind, x, t, sde).to(dtype)
        assert torch.equal(f, x), (name, kind)
    # away from t_min the network's output enters: c_D > 0 and the map is not the identity
    ts = torch.linspace(sde.t_min, sde.t_max, 9, dtype=F64)[1:]
    c_x, c_d = consistency_coefs(ts, sde)
    assert bool((c_d > 0).all()) and bool(torch.isfinite(c_x).all())


@pytest.mark.parametrize("name", ["mlp"])
def test_wrapped_network_keeps_the_boundary(name):
    sde = build_sde("flow")
    net = build_model(ModelConfig(type="mlp", kind="v", hidden=32, depth=1), seed=0)
    f = ConsistencyFunction(net, sde)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(f(x, torch.full((8,), sde.t_min, dtype=F64)), x)
    assert not torch.allclose(f(x, torch.full((8,), 0.5, dtype=F64)), x)


def test_equals_song_scalings_of_an_edm_network_on_ve():
    """On VE (y = x, σ = s) f equals c_skip x + c_out F with D = c_skip^E x + c_out^E F."""
    sde = build_sde("ve")
    g = torch.Generator().manual_seed(2)
    t = torch.rand(64, generator=g, dtype=F64) * (sde.T - sde.t_min) + sde.t_min
    x, F = torch.randn(64, 2, generator=g, dtype=F64), torch.randn(64, 2, generator=g, dtype=F64)
    sig = sde.marginal(t).std[:, None]
    smin = float(sde.marginal(torch.tensor([sde.t_min], dtype=F64)).std)
    d2 = SIGMA_DATA**2
    denoiser = d2 / (sig**2 + d2) * x + sig * SIGMA_DATA / (sig**2 + d2).sqrt() * F  # EDM Tab. 1
    song = d2 / ((sig - smin) ** 2 + d2) * x + SIGMA_DATA * (sig - smin) / (d2 + sig**2).sqrt() * F
    assert torch.allclose(consistency_fn(denoiser, "x0", x, t, sde), song, rtol=1e-12, atol=1e-12)
