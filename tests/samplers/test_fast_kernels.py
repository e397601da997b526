"""The one-time fast path of the affine step kernels (``samplers.steps`` module docstring).

* Equal to the general float64 path: ~1e-12 relative in fp64, fp32 rounding in fp32, for ddim
  (η = 0, 1), ddpm, euler_maruyama and euler_ode on VP, DiscreteVP, VE and flow, kinds eps, v,
  x0, score, and for flow_sde, flow_cps, dance_sde; the std is the general path's.
* Per-row times and ``clip_x0`` still take the general path, bit for bit.
* No per-step host↔device traffic: on the ``meta`` device (where any read of a device value
  raises) ``sample``, ``Policy.rollout`` and ``Policy.log_prob`` run, and the number of CPU→device
  copies does not grow with the number of steps; a fast step dispatches a handful of ops.
"""

import pytest
import torch
from diffusers import DDIMScheduler
from torch.utils._python_dispatch import TorchDispatchMode

from scorealign.policy import Policy
from scorealign.samplers import SAMPLERS, make_grid, sample
from scorealign.samplers.steps import general_path
from scorealign.sde import DiscreteVP, build_sde

F64 = torch.float64


def _sdes():
    sch = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return {"vp": build_sde("vp"), "discrete_vp": DiscreteVP.from_scheduler(sch),
            "ve": build_sde("ve"), "flow": build_sde("flow")}


SDES = _sdes()
STEPS = [("ddim", {"eta": 0.0}), ("ddim", {"eta": 1.0}), ("ddpm", {}),
         ("euler_maruyama", {"eta": 1.0}), ("euler_ode", {})]


def _data(dtype, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 2, 3, 3, generator=g, dtype=F64).to(dtype) for _ in range(3)]


def _both(name, kw, x, pred, kind, t, tn, sde, noise):
    fn = SAMPLERS.get(name).fn
    fast = fn(x, pred, kind, t, tn, sde, noise=noise, **kw)
    with general_path():
        gen = fn(x, pred, kind, t, tn, sde, noise=noise, **kw)
    return fast, gen


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("kind", ["eps", "v", "x0", "score"])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_fast_path_equals_general_path(sde_name, kind, dtype):
    sde = SDES[sde_name]
    ts = make_grid(sde, 10, "uniform")
    x, pred, z = _data(dtype)
    rtol = 1e-12 if dtype == F64 else 2e-6
    for name, kw in STEPS:
        for k in (0, 4, 9):
            t, tn = ts[k].expand(4), ts[k + 1].expand(4)
            fast, gen = _both(name, kw, x, pred, kind, t, tn, sde, z)
            assert fast.std_value is not None and gen.std_value is None
            assert fast.mean.dtype == gen.mean.dtype == dtype
            assert fast.std.dtype == gen.std.dtype
            # scale of the terms A x and B pred (cancellation is measured against it)
            scale = max(float(gen.mean.abs().max()), float(x.abs().max()), 1.0)
            for a, b in ((fast.mean, gen.mean), (fast.x_next, gen.x_next)):
                err = float((a.to(F64) - b.to(F64)).abs().max())
                assert err <= rtol * scale * 8, (name, kw, k, err, scale)
            torch.testing.assert_close(fast.std, gen.std, rtol=1e-13 if dtype == F64 else 0,
                                       atol=0)
            assert fast.std_value == pytest.approx(float(gen.std[0]),
                                                   rel=1e-13 if dtype == F64 else 1e-7, abs=0)


@pytest.mark.parametrize("kind", ["v", "eps", "x0"])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_flow_samplers_fast_path_equals_general_path(kind, dtype):
    sde = SDES["flow"]
    ts = make_grid(sde, 8, "uniform")
    x, pred, z = _data(dtype)
    rtol = 1e-12 if dtype == F64 else 2e-6
    for name in ("flow_sde", "flow_cps", "dance_sde"):
        for eta in (0.0, 0.7):
            for k in (0, 3, 7):
                fast, gen = _both(name, {"eta": eta}, x, pred, kind, ts[k].expand(4),
                                  ts[k + 1].expand(4), sde, z)
                assert fast.std_value is not None and gen.std_value is None
                scale = max(float(gen.mean.abs().max()), float(x.abs().max()), 1.0)
                for a, b in ((fast.mean, gen.mean), (fast.x_next, gen.x_next)):
                    err = float((a.to(F64) - b.to(F64)).abs().max())
                    assert err <= rtol * scale * 8, (name, eta, k, err, scale)
                torch.testing.assert_close(fast.std, gen.std, rtol=1e-13, atol=0)


def test_fast_path_keeps_graph_and_std_value_zero_when_deterministic():
    sde = SDES["flow"]
    ts = make_grid(sde, 4, "uniform")
    x, pred, _ = _data(torch.float32)
    pred.requires_grad_(True)
    st = SAMPLERS.get("ddim").fn(x, pred, "v", ts[1].expand(4), ts[2].expand(4), sde, eta=0.0)
    assert st.std_value == 0.0 and st.deterministic
    st.mean.sum().backward()
    # flow, v, η = 0: mean = x + (t' − t) v, so ∂mean/∂pred = t' − t
    torch.testing.assert_close(pred.grad, torch.full_like(pred, float(ts[2] - ts[1])))


def test_per_row_times_and_clip_take_the_general_path_exactly():
    sde = SDES["discrete_vp"]
    ts = make_grid(sde, 10, "uniform")
    x, pred, z = _data(torch.float32)
    ddim = SAMPLERS.get("ddim").fn
    t = torch.stack([ts[2], ts[3], ts[2], ts[5]])
    tn = torch.stack([ts[3], ts[4], ts[3], ts[6]])
    for args, kw in (((t, tn), {"eta": 1.0}),
                     ((ts[2].expand(4), ts[3].expand(4)), {"eta": 1.0, "clip_x0": 0.5})):
        fast, gen = _both("ddim", kw, x, pred, "eps", *args, sde, z)
        assert fast.std_value is None
        for a, b in ((fast.mean, gen.mean), (fast.x_next, gen.x_next), (fast.std, gen.std)):
            assert torch.equal(a, b)
    # times on the device are never read back: the general path
    st = ddim(x.to("meta"), pred.to("meta"), "eps", ts[2].expand(4).to("meta"),
              ts[3].expand(4).to("meta"), sde, eta=1.0)
    assert st.std_value is None


class _Count(TorchDispatchMode):
    """Counts device ops (ops touching a meta tensor) and CPU→meta copies."""

    def __init__(self):
        super().__init__()
        self.ops, self.h2d = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = list(args) + list(kwargs.values())
        flat += [a for x in flat if isinstance(x, (list, tuple)) for a in x]
        self.ops += any(isinstance(a, torch.Tensor) and a.device.type == "meta" for a in flat) \
            or kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "meta"
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            dst = kwargs.get("device", args[0].device if func is torch.ops.aten.copy_.default
                             else src.device)
            if src.device.type == "cpu" and torch.device(dst).type == "meta":
                self.h2d += 1
        return func(*args, **(kwargs or {}))


def _meta_sample(steps, sde, kind, sampler, eta):
    x_T = torch.zeros(3, 2, 4, 4, device="meta")
    noise = torch.zeros(steps, 3, 2, 4, 4, device="meta")
    sample(lambda x, t: x * 0.5, kind, sde, x_T, sampler=sampler, steps=steps, eta=eta,
           noise=noise, record=True)  # warm the step-coefficient cache (host work, per grid)
    with _Count() as c:
        out = sample(lambda x, t: x * 0.5, kind, sde, x_T, sampler=sampler, steps=steps,
                     eta=eta, noise=noise, record=True)
    return out, c


@pytest.mark.parametrize("sde_name,kind,sampler,eta", [
    ("discrete_vp", "eps", "ddim", 1.0), ("flow", "v", "ddim", 0.0),
    ("vp", "x0", "euler_maruyama", 1.0), ("ve", "score", "ddpm", None)])
def test_sample_makes_no_per_step_host_device_traffic(sde_name, kind, sampler, eta):
    # meta tensors hold no data: a host sync on one (bool(), .item()) raises, so finishing proves
    # that the loop never reads a device value; and the CPU→device copies are per call, not
    # per step (the model's time grid, copied once)
    sde = SDES[sde_name]
    (o4, c4), (o8, c8) = _meta_sample(4, sde, kind, sampler, eta), \
        _meta_sample(8, sde, kind, sampler, eta)
    assert o8.log_probs.shape == (3, 8) and o8.log_probs.device.type == "meta"
    assert c4.h2d == c8.h2d <= 1
    # a fast step (with its log-prob, noise draw and record) is a few device ops; the general
    # path takes ~60 on the same step
    per_step = (c8.ops - c4.ops) / 4
    assert per_step <= 24, per_step


def test_general_path_reads_the_device_hence_the_meta_check_can_fail():
    sde = SDES["discrete_vp"]
    with general_path(), pytest.raises((RuntimeError, NotImplementedError)):
        _meta_sample(2, sde, "eps", "ddim", 1.0)


def test_policy_rollout_and_log_prob_on_meta_without_syncs():
    sde = SDES["discrete_vp"]
    pol = Policy(lambda x, t, c: x * 0.5, sde, kind="eps", shape=(2, 4, 4), sampler="ddim",
                 steps=4, eta=1.0, action_steps="all")
    traj = pol.rollout(["a", "b"], 2, seeds=torch.arange(4), device="meta")
    assert traj.log_probs.device.type == "meta"
    # (steps=None would pick the trained steps from the device mask: one read per call)
    lp = pol.log_prob(traj, steps=range(4))
    assert lp.shape == (4, 4) and lp.device.type == "meta"


def test_policy_rollout_log_probs_equal_recompute_bitwise_fast_path():
    sde = SDES["flow"]
    w = torch.nn.Parameter(torch.tensor(0.7))
    pol = Policy(lambda x, t, c: w * x + t.view(-1, 1, 1, 1), sde, kind="v", shape=(2, 4, 4),
                 sampler="euler_maruyama", steps=5, eta=1.0, action_steps="all")
    traj = pol.rollout(["a", "b"], 3, seeds=torch.arange(6))
    lp = pol.log_prob(traj)
    assert torch.equal(lp[traj.trained], traj.log_probs[traj.trained])
    with general_path():
        lp_gen = pol.log_prob(traj)
    torch.testing.assert_close(lp_gen, lp, rtol=1e-5, atol=1e-3)
