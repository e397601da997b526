"""The student's parameterization (eps, x0, v) on VP: boundary, conditioning, EDM equivalence.

* f(x, t_min) = x bit for bit for a wrapped network of every prediction kind, also a student
  whose weights come from an eps teacher (``init_from_teacher`` with another ``model.kind``);
* the gain ∂f/∂(network output) at T is c_D ∂x̂_0/∂pred: s/m ≈ 152 × c_D for eps, s × c_D ≤ 1
  for v and c_D for x0 (why an eps student needs ε̂ to ~1/150 for one-step sampling);
* v-prediction on VP is EDM's preconditioning with σ_d = 1: x̂_0 = c_skip y + c_out F,
  c_skip = 1/(σ² + 1), c_out = σ/sqrt(σ² + 1), y = x/m, F = −v, network input c_in y = x.
"""

import dataclasses

import pytest
import torch

from scorealign.config import FieldError, load_config
from scorealign.nets import ModelConfig, build_model
from scorealign.sde import build_sde
from scorealign.sde.consistency import ConsistencyFunction, consistency_coefs, consistency_fn
from scorealign.sde.param import to_x0
from scorealign.train.consistency import _init_student
from scorealign.train.pretrain import PretrainConfig

F64 = torch.float64
KINDS = ("eps", "x0", "v")


def _cfg(kind: str, *sets: str) -> PretrainConfig:
    return load_config("configs/pretrain/gaussians.yaml", PretrainConfig,
                       ["train.objective=cd", "consistency.teacher=exact", f"model.kind={kind}",
                        "model.hidden=32", "model.depth=2", *sets])


@pytest.mark.parametrize("kind", KINDS)
def test_student_from_an_eps_teacher_keeps_the_boundary(kind):
    sde = build_sde("vp")
    teacher = build_model(dataclasses.replace(_cfg("eps").model), seed=1)
    cfg = _cfg(kind)
    student = build_model(cfg.model, seed=0)
    _init_student(student, cfg, teacher)
    assert student.kind == kind
    sd_t, sd_s = teacher.state_dict(), student.state_dict()
    assert sd_t.keys() == sd_s.keys() and all(torch.equal(sd_t[k], sd_s[k]) for k in sd_t)
    f = ConsistencyFunction(student, sde)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(f(x, torch.full((32,), sde.t_min, dtype=F64)), x)
    assert not torch.allclose(f(x, torch.full((32,), 0.5, dtype=F64)), x)


def test_init_from_a_missing_model_names_the_field():
    cfg = _cfg("v", "consistency.init_from=/nonexistent/model")
    with pytest.raises(FieldError, match="nonexistent") as e:
        _init_student(build_model(cfg.model, seed=0), cfg, None)
    assert e.value.field == "consistency.init_from"


def test_init_needs_the_same_architecture():
    cfg = _cfg("v")
    other = build_model(ModelConfig(type="mlp", kind="eps", hidden=16, depth=2), seed=0)
    with pytest.raises(FieldError, match="model config") as e:
        _init_student(build_model(cfg.model, seed=0), cfg, other)
    assert e.value.field == "model"


def test_output_gain_at_T_by_parameterization():
    """∂f/∂pred = c_D ∂x̂_0/∂pred: eps −s/m, v −s, x0 1 (VP)."""
    sde = build_sde("vp")
    t = torch.tensor([sde.T], dtype=F64)
    mg = sde.marginal(t)
    _, c_d = consistency_coefs(t, sde)
    x, pred = torch.randn(1, 2, dtype=F64), torch.zeros(1, 2, dtype=F64)
    gains = {}
    for kind in KINDS:
        e = torch.tensor([[1.0, 0.0]], dtype=F64)
        gains[kind] = float((consistency_fn(pred + e, kind, x, t, sde)
                             - consistency_fn(pred, kind, x, t, sde))[0, 0])
    cd = float(c_d)
    assert gains["eps"] == pytest.approx(-cd * float(mg.std / mg.mean_coef), rel=1e-9)
    assert gains["v"] == pytest.approx(-cd * float(mg.std), rel=1e-9)
    assert gains["x0"] == pytest.approx(cd, rel=1e-9)
    assert abs(gains["eps"]) > 100 * abs(gains["v"]) and abs(gains["v"]) <= 1.0


def test_v_prediction_is_edm_preconditioning_with_unit_sigma_data():
    sde = build_sde("vp")
    g = torch.Generator().manual_seed(4)
    t = torch.rand(64, generator=g, dtype=F64) * (sde.T - sde.t_min) + sde.t_min
    x, v = torch.randn(64, 3, generator=g, dtype=F64), torch.randn(64, 3, generator=g, dtype=F64)
    mg = sde.marginal(t)
    sig = (mg.std / mg.mean_coef)[:, None]
    y = x / mg.mean_coef[:, None]
    c_skip, c_out, c_in = 1 / (sig**2 + 1), sig / (sig**2 + 1).sqrt(), 1 / (sig**2 + 1).sqrt()
    assert torch.allclose(c_in * y, x, rtol=1e-12, atol=1e-12)       # the network sees x
    assert torch.allclose(to_x0(v, "v", x, t, sde), c_skip * y + c_out * (-v),
                          rtol=1e-10, atol=1e-10)
