"""Consistency distillation (CD) and consistency training (CT)  [Song+23, arXiv:2303.01469].

Both train f_θ (``sde.consistency``: the project network with Song's skip/out scalings) so that
adjacent points of one PF-ODE trajectory map to the same output:

    L = E_{n, x_0, z} λ(t_n) d(f_θ(x_{t_{n+1}}, t_{n+1}), f_{θ⁻}(x̂_{t_n}, t_n)),
    x_{t_{n+1}} = m(t_{n+1}) x_0 + s(t_{n+1}) z,

* **CD** [Alg. 2, Eq. 7]: x̂_{t_n} is one step of a PF-ODE solver of the teacher from t_{n+1}
  to t_n (``solver``: ``heun_ode`` [EDM Alg. 1], ``euler_ode`` or ``ddim`` at η = 0, the
  project's registered steps); the teacher may be classifier-free guided (fixed scale w).
* **CT** [Alg. 3, Eq. 10]: no teacher; x̂_{t_n} = m(t_n) x_0 + s(t_n) z with the same z (the
  one-sample estimate of the score that CT substitutes).

θ⁻ is the target network, θ⁻ ← stopgrad(μ θ⁻ + (1 − μ) θ). t_1 < … < t_N is the Karras grid
(ρ = 7) in the noise-to-signal ratio s/m between t_min and t_max [Song+23, §5 / Karras+22
Eq. 5]. N and μ follow ``create_ema_and_scales_fn`` of openai/consistency_models
(``cm/script_util.py``): ``fixed`` keeps N = s₀ and μ = μ₀ (their CD runs: N = 18 or 40,
μ₀ = 0.95); ``progressive`` grows
N(k) = ceil(sqrt(k/K ((s₁ + 1)² − s₀²) + s₀²) − 1) + 1 [Song+23, App. C, N(·)], and
``adaptive`` sets μ(k) = exp(s₀ log μ₀ / N(k)) [App. C, μ(·)] (their CT: s₀ = 2, s₁ = 150,
μ₀ = 0.9 on CIFAR-10). λ ≡ 1 (openai ``weight_schedule=uniform``).

Modern recipes (``train/consistency_recipes.py``, every piece an option of this loop):
iCT [Song & Dhariwal 23, arXiv:2310.14189] = ``distance: pseudo_huber``, ``pair_sampling:
lognormal``, ``weighting: inv_dsigma``, ``target_ema_mode: none``, ``scale_mode: exponential``
(s₀ = 10, s₁ = 1280); ECT [Geng+24, arXiv:2406.14548] = ``init_from: <diffusion model>``,
``pair_sampling: ect`` (continuous lognormal σ_t, Δt shrinking by ``ect_q`` per stage),
``weighting: inv_dsigma``, ``target_ema_mode: none``, ``distance: pseudo_huber`` with
``huber_c: 0``. Both are written in EDM's σ; on the project's SDEs σ = s(t)/m(t) (VP:
sqrt(1 − ᾱ)/sqrt(ᾱ)) and times are t = nsr⁻¹(σ) (module docstring of consistency_recipes).

LPIPS is not available offline; the distance d is ``l2`` (mean squared error over dimensions,
openai ``loss_norm=l2``) or ``pseudo_huber`` sqrt(‖a − b‖² + c²) − c with c = 0.00054 sqrt(D)
[Song & Dhariwal 23 (iCT), arXiv:2310.14189, §3.3].

Every step draws its batch, indices n, noise and condition from a generator seeded by
(run seed, step), and N(k), μ(k) and the learning rate are pure functions of k, so a run
killed at any point and resumed from its checkpoint (model, EMA, target, optimizer) continues
bit for bit, as the DSM loop of ``train/pretrain.py`` does.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor, nn

from scorealign.config import FieldError
from scorealign.nets.cond import guided
from scorealign.rng import generator
from scorealign.samplers.grids import make_grid
from scorealign.samplers.steps import SAMPLERS
from scorealign.sde.base import SDE, bcast
from scorealign.sde.consistency import ConsistencyFunction

from scorealign.train.config import SOLVERS, ConsistencyConfig  # noqa: F401 (re-export)
from scorealign.train.consistency_recipes import (ect_sigma_r, ect_stage, ict_num_scales,
                                                  inv_dsigma, lognormal_pair_probs,
                                                  lognormal_sigma)
from scorealign.train.optim import lr_at, make_accelerator, update_ema

if TYPE_CHECKING:
    from scorealign.train.config import PretrainConfig
    from scorealign.run.rundir import RunDir

PredFn = Callable[[Tensor, Tensor], Tensor]
def ema_and_scales(step: int, total: int, cfg: ConsistencyConfig) -> tuple[float, int]:
    """(μ(k), N(k)) at training step k of K  [Song+23, App. C; openai ``cm/script_util.py``].

    ``scale_mode: exponential`` is iCT's curriculum (``consistency_recipes.ict_num_scales``);
    ``target_ema_mode: none`` is μ ≡ 0, θ⁻ = stopgrad(θ) [iCT §3.2].
    """
    if cfg.scale_mode == "fixed":
        n = cfg.start_scales
    elif cfg.scale_mode == "exponential":
        n = ict_num_scales(step, total, cfg.start_scales, cfg.end_scales)
    else:
        s0, s1 = cfg.start_scales, cfg.end_scales
        n = math.ceil(math.sqrt(step / total * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1)
        n = max(n, 1) + 1
    if cfg.target_ema_mode == "none":
        return 0.0, n
    if cfg.target_ema_mode == "fixed":
        return cfg.start_ema, n
    return math.exp(cfg.start_scales * math.log(cfg.start_ema) / n), n


def discretization(sde: SDE, n: int, cfg: ConsistencyConfig) -> Tensor:
    """The N training times t_max = t_N > … > t_1 = t_min, decreasing float64 [N]."""
    return make_grid(sde, n - 1, cfg.grid, rho=cfg.rho)


def distance(a: Tensor, b: Tensor, kind: str = "l2", c: float | None = None) -> Tensor:
    """Per-sample d(a, b) [B] in fp32: ``l2`` mean squared error, or pseudo-Huber [iCT §3.3].

    pseudo-Huber: sqrt(‖a − b‖² + c²) − c, c = 0.00054 sqrt(D) by default (D = dimensions);
    it is ‖a − b‖²/(2c) for ‖a − b‖ ≪ c and ‖a − b‖ − c for ‖a − b‖ ≫ c; c = 0 is the norm
    ‖a − b‖ itself (ECT's default c, ect:training/loss.py:86-89; its gradient at 0 is 0).
    """
    diff = (a - b).float().flatten(1)   # subtract before rounding to fp32
    if kind == "l2":
        return diff.pow(2).mean(1)
    if kind == "pseudo_huber":
        c = 0.00054 * math.sqrt(diff.shape[1]) if c is None else c
        if c == 0:
            return torch.linalg.vector_norm(diff, dim=1)
        sq = diff.pow(2).sum(1)
        return sq / ((sq + c**2).sqrt() + c)  # = sqrt(sq + c²) − c without cancellation
    raise ValueError(f"unknown distance {kind!r}; choose l2 or pseudo_huber")


def pair_probs(sde: SDE, ts: Tensor, cfg: ConsistencyConfig) -> Tensor | None:
    """Probabilities [N−1] of the pairs (ts[n], ts[n+1]) of a decreasing grid, or None (uniform).

    ``lognormal``: iCT's discretized lognormal in σ = s/m (``lognormal_pair_probs``).
    """
    if cfg.pair_sampling != "lognormal":
        return None
    return lognormal_pair_probs(sde.nsr(ts).flip(0), cfg.p_mean, cfg.p_std).flip(0)


def ect_times(sde: SDE, u: Tensor, stage: int, cfg: ConsistencyConfig) -> tuple[Tensor, Tensor]:
    """ECT's pair (t, r) as project times from standard-normal draws u [B] (float64).

    σ_t = exp(P_mean + P_std u) clipped to [1.01 σ(t_min), σ(t_max)] (the SDE's σ range; the
    1.01 keeps t > t_min, where f is not the identity), σ_r by ``ect_sigma_r``; times by
    t = nsr⁻¹(σ), and t_r = t_min exactly where σ_r ≤ σ(t_min) (the boundary: the target is
    x_{t_min} itself, as ECT's target is the data where r = 0).
    """
    lim = sde.nsr(torch.tensor([sde.t_min, sde.t_max], dtype=torch.float64))
    sig_t = lognormal_sigma(u, cfg.p_mean, cfg.p_std).clamp(float(lim[0]) * 1.01, float(lim[1]))
    sig_r = ect_sigma_r(sig_t, stage, cfg.ect_q, cfg.ect_k, cfg.ect_b)
    t_hi = torch.where(sig_t >= lim[1], torch.full_like(sig_t, sde.t_max), sde.t_from_nsr(sig_t))
    t_lo = torch.where(sig_r <= lim[0], torch.full_like(sig_r, sde.t_min),
                       sde.t_from_nsr(sig_r.clamp_min(float(lim[0]))))
    return t_hi, t_lo


def pair_weight(sde: SDE, t_hi: Tensor, t_lo: Tensor, cfg: ConsistencyConfig) -> Tensor:
    """λ per pair [B] float64: 1, or 1/(σ(t_hi) − σ(t_lo)) (``inv_dsigma``, iCT §3.1 / ECT)."""
    if cfg.weighting == "uniform":
        return torch.ones_like(t_hi, dtype=torch.float64)
    return inv_dsigma(sde.nsr(t_hi), sde.nsr(t_lo))


def teacher_step(teacher: PredFn, kind: str, sde: SDE, x: Tensor, t: Tensor, t_next: Tensor,
                 solver: str) -> Tensor:
    """One deterministic PF-ODE step of the teacher from t to t_next < t (per-sample [B] times).

    Uses the project's registered step (``heun_ode``: 2 evaluations; ``euler_ode``, ``ddim``
    at η = 0: 1); ``teacher(x, t)`` gets t in fp32 as samplers pass it.
    """
    fn = SAMPLERS.get(solver).fn
    kw = {"eta": 0.0} if solver == "ddim" else {}
    t32 = t.to(device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
    return fn(x, teacher(x, t32), kind, t, t_next, sde, noise=None, pred_fn=teacher, **kw).x_next


def consistency_loss(student: Callable[[Tensor, Tensor], Tensor],
                     target: Callable[[Tensor, Tensor], Tensor], sde: SDE, x0: Tensor,
                     t_hi: Tensor, t_lo: Tensor, z: Tensor, *, teacher: PredFn | None = None,
                     teacher_kind: str = "eps", solver: str = "heun_ode",
                     dist: str = "l2", huber_c: float | None = None) -> Tensor:
    """Per-sample CD (teacher given) or CT (teacher None) loss [B]  [Song+23, Eq. 7 / Eq. 10].

    Args:
        student: f_θ(x, t) with gradient; t float64 [B].
        target: f_{θ⁻}(x, t), evaluated without gradient.
        sde: the forward SDE.
        x0: data [B, *D]; t_hi > t_lo: adjacent grid times [B] (float64); z ~ N(0, I).
        teacher: CD: the teacher's ``kind`` prediction ``teacher(x, t)``; None: CT.
    """
    mg = sde.marginal(t_hi)
    x_hi = (bcast(mg.mean_coef, x0) * x0.to(torch.float64)
            + bcast(mg.std, x0) * z.to(torch.float64)).to(x0.dtype)
    with torch.no_grad():
        if teacher is not None:
            x_lo = teacher_step(teacher, teacher_kind, sde, x_hi, t_hi, t_lo, solver)
        else:
            lo = sde.marginal(t_lo)
            x_lo = (bcast(lo.mean_coef, x0) * x0.to(torch.float64)
                    + bcast(lo.std, x0) * z.to(torch.float64)).to(x0.dtype)
        f_target = target(x_lo, t_lo)
    return distance(student(x_hi, t_hi), f_target, dist, huber_c)


def recipe_loss(student: Callable[[Tensor, Tensor], Tensor],
                target: Callable[[Tensor, Tensor], Tensor], sde: SDE, cfg: ConsistencyConfig,
                x0: Tensor, z: Tensor, draw: Tensor, step: int, total: int, *,
                ts: Tensor | None = None, teacher: PredFn | None = None,
                teacher_kind: str = "eps") -> Tensor:
    """Per-sample λ(t_hi, t_lo) d(f_θ(x_hi, t_hi), f_θ⁻(x̂_lo, t_lo)) [B] of the configured recipe.

    The pair comes from ``draw`` (``consistency_batch``): grid indices n into the decreasing
    grid ``ts`` (Song+23; iCT's lognormal), or ECT's normal draws u with the stage of ``step``
    of ``total``; λ is ``pair_weight``; d is ``cfg.distance``. With ``target_ema_mode: none``
    pass the student as ``target`` (θ⁻ = stopgrad(θ): the target side runs without gradient).
    """
    if cfg.pair_sampling == "ect":
        t_hi, t_lo = ect_times(sde, draw, ect_stage(step, total, cfg.ect_stages), cfg)
    else:
        if ts is None:
            raise ValueError(f"pair_sampling {cfg.pair_sampling!r} needs the grid ts")
        t_hi, t_lo = ts[draw], ts[draw + 1]
    lam = pair_weight(sde, t_hi, t_lo, cfg).to(x0.device, torch.float32)
    t_hi, t_lo = t_hi.to(x0.device), t_lo.to(x0.device)
    return lam * consistency_loss(student, target, sde, x0, t_hi, t_lo, z, teacher=teacher,
                                  teacher_kind=teacher_kind, solver=cfg.solver,
                                  dist=cfg.distance, huber_c=cfg.huber_c)


@torch.no_grad()
def update_target(target: nn.Module, model: nn.Module, mu: float) -> None:
    """θ⁻ ← μ θ⁻ + (1 − μ) θ  [Song+23, Alg. 2-3] (buffers copied)."""
    src = model.state_dict()
    for k, v in target.state_dict().items():
        if v.dtype.is_floating_point:
            v.mul_(mu).add_(src[k].detach().to(v.device), alpha=1 - mu)
        else:
            v.copy_(src[k])


# -- teachers ---------------------------------------------------------------------------------
def load_teacher(cfg: "PretrainConfig", task) -> tuple[Callable[[Any], PredFn], str,
                                                       nn.Module | None]:
    """(teacher factory, kind, teacher network or None) for CD; factory(cond) -> pred_fn(x, t).

    Raises:
        FieldError: the teacher does not fit the run (SDE, data, model config).
    """
    c = cfg.consistency
    if c.teacher == "exact":
        from scorealign.data.toys import DATASETS
        from scorealign.sde.mixture import GaussianMixture
        mix = DATASETS.get(cfg.data.name).fn() if cfg.data.name in DATASETS else None
        if not isinstance(mix, GaussianMixture):
            raise FieldError("consistency.teacher", f"'exact' needs a Gaussian-mixture data set "
                                                    f"(gaussians), got {cfg.data.name!r}")
        fn = mix.pred_fn(task.sde, "x0")
        return (lambda cond: fn), "x0", None
    from scorealign.train.bases import load_digits_base
    try:
        t_task, net = load_digits_base(c.teacher)
    except (FileNotFoundError, ValueError) as e:
        raise FieldError("consistency.teacher", str(e)) from None
    if t_task.sde != task.sde:
        raise FieldError("sde", f"the run's SDE {task.sde} differs from the teacher's "
                                f"{t_task.sde}: distil on the teacher's SDE")
    if t_task.data_cfg.name != cfg.data.name:
        raise FieldError("data.name", f"the teacher was trained on {t_task.data_cfg.name!r}")
    net = net.requires_grad_(False).eval()
    w = c.teacher_guidance

    def factory(cond):
        if cond is None or w == 1.0:
            return lambda x, t: net(x, t, cond)
        return lambda x, t: guided(net, x, t, cond, w)

    return factory, net.kind, net


def _same_arch(a, b) -> bool:
    import dataclasses
    return (dataclasses.replace(a, cfg_dropout=0.0, kind="eps")
            == dataclasses.replace(b, cfg_dropout=0.0, kind="eps"))


# -- the loop ---------------------------------------------------------------------------------
def consistency_batch(task, cfg: "PretrainConfig", step: int, n_scales: int, rank: int,
                      world: int, probs: Tensor | None = None):
    """This process's slice of step ``step``'s global batch: (x0, cond, draw, z).

    ``draw`` is the pair index n [B] (uniform, or from ``probs``: iCT's lognormal) or, for
    ``pair_sampling: ect``, the standard-normal draw u [B] float64 of σ_t.
    """
    tc = cfg.train
    g = generator(tc.seed, "consistency", tc.objective, step)
    idx = torch.randint(task.num_train, (tc.batch_size,), generator=g)
    if cfg.consistency.pair_sampling == "ect":
        n = torch.randn(tc.batch_size, generator=g, dtype=torch.float64)
    elif probs is not None:
        n = torch.multinomial(probs, tc.batch_size, replacement=True, generator=g)
    else:
        n = torch.randint(n_scales - 1, (tc.batch_size,), generator=g)
    x0, labels = task.train_x[idx], task.train_y[idx]
    z = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    cond = task.training_cond(labels, g)
    mine = slice(rank, None, world)
    return x0[mine], task.slice_cond(cond, mine), n[mine], z[mine]


def _init_student(model: nn.Module, cfg: "PretrainConfig", t_net: nn.Module | None) -> None:
    """θ ← ``init_from`` (ECT: the diffusion model), else the CD teacher (``init_from_teacher``).

    The architecture must match (``cfg_dropout`` and the prediction kind may differ: a student
    of another kind re-reads the copied output head as its own kind).
    """
    from scorealign.train.bases import load_digits_base
    cc = cfg.consistency
    src = t_net if cfg.train.objective == "cd" and cc.init_from_teacher else None
    if cc.init_from is not None:
        try:
            src = load_digits_base(cc.init_from)[1]
        except (FileNotFoundError, ValueError) as e:
            raise FieldError("consistency.init_from", str(e)) from None
    if src is None:
        return
    if not _same_arch(src.config, cfg.model):
        raise FieldError("model", "initializing the student needs the source's model config "
                                  "(cfg_dropout and kind may differ)")
    model.load_state_dict(src.state_dict())


def consistency_pretrain(cfg: "PretrainConfig", run: "RunDir", resume: bool = False
                         ) -> dict[str, Tensor]:
    """Run CD or CT (``cfg.train.objective``) into ``run``; returns the student's EMA weights
    (the model; the ``pretrain`` command exports them to ``final/``, as for DSM runs).

    The checkpoint holds the student θ, its EMA, the target θ⁻ and the optimizer.
    """
    from scorealign.run.loop import Cadence, optimizer_step, resume_states, run_steps
    from scorealign.train.task import build_task

    tc, cc = cfg.train, cfg.consistency
    acc = make_accelerator(cfg.device)
    task = build_task(cfg.data, cfg.sde, cfg.model, device="cpu")
    model, sde = task.model, task.sde
    factory, t_kind, t_net = (None, task.kind, None)
    if tc.objective == "cd":
        factory, t_kind, t_net = load_teacher(cfg, task)
    _init_student(model, cfg, t_net)
    target = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    states, start = resume_states(run, resume, acc)
    if states is not None:
        model.load_state_dict(states["model"])
        target.load_state_dict(states["target"])
        opt.load_state_dict(states["optimizer"])
        ema = {k: v.clone() for k, v in states["ema"].items()}
    model, opt = acc.prepare(model, opt)
    target = target.to(acc.device).eval()
    if t_net is not None:
        t_net.to(acc.device)
    ema = {k: v.to(acc.device) for k, v in ema.items()}
    student_f = ConsistencyFunction(model, sde, task.kind)
    target_f = ConsistencyFunction(target, sde, task.kind)
    grids: dict[int, Tensor] = {}

    online = cc.target_ema_mode == "none"   # θ⁻ = stopgrad(θ) [iCT §3.2]

    def step(i: int) -> dict[str, float | None]:
        mu, n_scales = ema_and_scales(i, tc.steps, cc)
        probs, ts = None, None
        if cc.pair_sampling != "ect":
            ts = grids.setdefault(n_scales, discretization(sde, n_scales, cc))
            probs = pair_probs(sde, ts, cc)
        x0, cond, n, z = consistency_batch(task, cfg, i, n_scales, acc.process_index,
                                           acc.num_processes, probs)
        x0, z = x0.to(acc.device), z.to(acc.device)
        cond = task.cond_to(cond, acc.device)
        tgt = student_f if online else target_f
        loss = recipe_loss(
            lambda x, t: student_f(x, t, cond), lambda x, t: tgt(x, t, cond), sde, cc, x0, z,
            n, i, tc.steps, ts=ts,
            teacher=factory(cond) if factory is not None else None, teacher_kind=t_kind).mean()
        gnorm = optimizer_step(acc, model, opt, loss, tc.grad_clip)
        if not online:
            update_target(target, acc.unwrap_model(model), mu)
        update_ema(ema, acc.unwrap_model(model), tc.ema_decay, i)
        return {f"loss/{tc.objective}": loss.item(), "opt/lr": lr_at(i, tc),
                "cm/num_scales": n_scales, "cm/target_ema": mu, "opt/grad_norm": gnorm}

    run_steps(run=run, acc=acc, cadence=Cadence(tc.steps, tc.log_every, tc.ckpt_every,
                                                 tc.keep_checkpoints),
              start=start, step=step, label=tc.objective, lr=lambda i: lr_at(i, tc),
              optimizers=opt, bar_field=lambda m: {"loss": m[f"loss/{tc.objective}"]},
              states=lambda: {"model": acc.unwrap_model(model).state_dict(), "ema": ema,
                              "target": target.state_dict(), "optimizer": opt.state_dict()})
    acc.wait_for_everyone()
    return ema
