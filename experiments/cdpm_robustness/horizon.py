"""Does a contractive backward process stop errors from growing with the horizon? [CDPM]

Closed-form part of the CDPM experiment (issue 16). Gaussian data N(μ₀, σ₀²), where the exact
score is linear, so the output law of the Euler–Maruyama reverse sampler is Gaussian and is
computed exactly (``scorealign.sde.bounds.gaussian_reverse_em``): no network, no Monte Carlo
noise, no seeds. It measures, for matched forward SDEs and horizons T = 1 … 20:

* score error in three models, each a bias e(t) added to the exact score, per unit δ:
  ``abs`` e = δ (uniform absolute error), ``eps`` e = δ/s(t) (error δ in the ε-prediction,
  what DSM controls), ``eps/s²`` e = δ/s(t)² (the authors' 1-D test perturbs the numerator
  of (μ_t − x)/σ_t², github.com/hanyang1999/CDPM ``Exp1-One_Dim_Syn.ipynb``,
  ``FixedNumeratorPerturbation``). Fresh noise per call is not a score function: not used;
* the bound's factor F = ∫ g² |e| e^{−∫r} beside each measured output shift, with the
  drift-only rate r = a (the worst case over data, the CDPM mechanism) and with the exact rate
  for this data r = a + g²/Var p_t (``scorealign.sde.bounds.error_factor``);
* the backward process started from the exact marginal of X_T and from the usual prior
  N(0, s(T)²) (which ignores m(T)μ₀);
* discretization error against the step size at each T;
* the authors' 1-D test itself (point mass x₀ = −1, OU vs COU with θ = σ = 1, ε/σ_t² error, EM
  with their step rule), unclipped.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/cdpm_robustness/horizon.py [--quick]

Runs in seconds (closed forms), so there is no cell cache. Writes ``horizon.json`` (every cell),
``horizon.md`` (tables) and ``horizon.png`` to ``--results`` (default ``results/`` here;
``--quick``: OUT/horizon_quick).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdpm_report import save_png  # noqa: E402

from scorealign.sde import build_sde  # noqa: E402
from scorealign.sde.base import SDE, Marginal, as_time  # noqa: E402
from scorealign.sde.bounds import (error_amplification, error_factor,  # noqa: E402
                                   gaussian_reverse_em, gaussian_w2, log_grid, marginal_moments)

HERE = Path(__file__).resolve().parent
MU0, VAR0 = 2.0, 0.25  # data N(2, 0.5²): off-centre, so the prior's missing m(T)μ₀ shows
T_MIN = 1e-3
DELTA = 0.1


@dataclass(frozen=True)
class OU(SDE):
    """dX = −θ X dt + σ dW: the authors' OU of the 1-D test (``SDE('OU')``, θ = σ = 1), the
    non-contractive twin of ``cou`` with the same θ and σ (∫g² = σ²T for both)."""

    theta: float = 1.0
    sigma: float = 1.0
    T: float = 1.0
    t_min: float = T_MIN

    def drift_coef(self, t: Tensor) -> Tensor:
        return torch.full_like(as_time(t), -self.theta)

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.full_like(as_time(t), self.sigma)

    def marginal(self, t: Tensor) -> Marginal:
        t = as_time(t)
        s = self.sigma * (-torch.expm1(-2 * self.theta * t) / (2 * self.theta)).sqrt()
        return Marginal(torch.exp(-self.theta * t), s)

    @property
    def prior_std(self) -> float:
        return float(self.marginal(torch.tensor(self.T)).std)


def matched(family: str, T: float) -> SDE:
    """Per-unit-time coefficients fixed, horizon T varied: OU/COU (θ = σ = 1) and
    sub-VP/CsubVP with constant β = 1 (B(t) = t)."""
    if family == "ou":
        return OU(1.0, 1.0, T, T_MIN)
    if family == "cou":
        return build_sde("cou", theta=1.0, sigma=1.0, T=T, t_min=T_MIN)
    return build_sde(family, beta_min=1.0, beta_max=1.0, T=T, t_min=T_MIN)


FAMILIES = ("ou", "cou", "subvp", "csubvp")
CONTRACTIVE = {"cou", "csubvp"}


def error_fn(model: str, sde: SDE):
    """e(t) per unit δ of an error model (module doc)."""
    def s(t):
        return sde.marginal(torch.as_tensor(t)).std.numpy()
    return {"abs": lambda t: np.ones_like(t), "eps": lambda t: 1.0 / s(t),
            "eps/s2": lambda t: 1.0 / s(t) ** 2}[model]


def uniform_grid(T: float, t_min: float, h: float) -> np.ndarray:
    n = max(1, math.ceil((T - t_min) / h - 1e-9))
    return np.linspace(T, t_min, n + 1)


def run_em(sde: SDE, h: float, start: str, model: str | None, delta: float,
           mu0: float = MU0, var0: float = VAR0) -> tuple[float, float]:
    """Output (mean, var) of EM at step h from ``start`` ('exact' marginal or 'prior')."""
    if start == "exact":
        m, v = marginal_moments(sde, sde.T, mu0, var0)
    else:
        m, v = 0.0, sde.prior_std ** 2
    e = None
    if model is not None:
        base = error_fn(model, sde)
        e = lambda t: delta * base(t)  # noqa: E731
    return gaussian_reverse_em(sde, uniform_grid(sde.T, sde.t_min, h), mu0, var0, m, v, e)


def horizon_rows(Ts: list[float], hs: list[float], h_fine: float) -> list[dict]:
    rows = []
    for fam in FAMILIES:
        for T in Ts:
            sde = matched(fam, T)
            t = log_grid(sde.t_min, T)
            g2 = float(np.trapezoid(sde.diffusion(torch.as_tensor(t)).numpy() ** 2, t))
            base = {"family": fam, "T": T, "int_g2": g2, "nsr_T": float(sde.nsr(torch.tensor(T))),
                    "start_survival_drift": error_amplification(sde),
                    "start_survival_exact": error_amplification(sde, data_var=VAR0)}
            clean = {st: run_em(sde, h_fine, st, None, 0.0) for st in ("exact", "prior")}
            for st, (m, v) in clean.items():
                base[f"w2_clean_{st}"] = gaussian_w2(m, v, MU0, VAR0)
            for model in ("abs", "eps", "eps/s2"):
                e = error_fn(model, sde)
                r = {**base, "kind": "error", "model": model,
                     "F_bound_drift": error_factor(sde, e),
                     "F_exact": error_factor(sde, e, data_var=VAR0)}
                for h in (h_fine, max(hs)):
                    m1, _ = run_em(sde, h, "exact", model, 1.0)
                    m0, _ = run_em(sde, h, "exact", None, 0.0)
                    r[f"measured_shift_per_delta_h{h:g}"] = abs(m1 - m0)
                for st in ("exact", "prior"):
                    m, v = run_em(sde, h_fine, st, model, DELTA)
                    r[f"w2_delta{DELTA:g}_{st}"] = gaussian_w2(m, v, MU0, VAR0)
                rows.append(r)
            for h in hs:
                m, v = run_em(sde, h, "exact", None, 0.0)
                rows.append({**base, "kind": "steps", "h": h,
                             "steps": len(uniform_grid(T, sde.t_min, h)) - 1,
                             "w2_exact_start": gaussian_w2(m, v, MU0, VAR0)})
    return rows


def registered_rows() -> list[dict]:
    """The registered defaults at T = 1 (the families of the learned-model experiment)."""
    rows = []
    for fam in ("ve", "vp", "subvp", "cou", "csubvp"):
        sde = build_sde(fam)
        t = log_grid(sde.t_min, sde.T)
        g2 = float(np.trapezoid(sde.diffusion(torch.as_tensor(t)).numpy() ** 2, t))
        r = {"family": fam, "int_g2": g2, "nsr_T": float(sde.nsr(torch.tensor(sde.T)))}
        for model in ("abs", "eps", "eps/s2"):
            e = error_fn(model, sde)
            r[f"F_bound_drift_{model}"] = error_factor(sde, e)
            r[f"F_exact_{model}"] = error_factor(sde, e, data_var=VAR0)
        for st in ("exact", "prior"):
            m, v = run_em(sde, 1e-3, st, None, 0.0)
            r[f"w2_clean_{st}"] = gaussian_w2(m, v, MU0, VAR0)
        rows.append(r)
    return rows


def authors_rows(Ts: list[float]) -> list[dict]:
    """The authors' 1-D test: x₀ = −1, x_T from the forward process, EM from T with their step
    rule (int(T // dt) − 1 steps of dt, so it stops at t ≈ dt), error ε/σ_t²; W2 to the point
    (unclipped; the notebook clips samples to [−2, 0] first)."""
    rows = []
    for noise, dt in ((1.0, 0.02), (0.5, 0.02), (0.05, 0.05), (0.02, 0.05), (0.0, 0.02)):
        for fam in ("ou", "cou"):
            for T in Ts:
                n = max(int(T // dt) - 1, 0)
                sde = OU(1.0, 1.0, T, T - n * dt) if fam == "ou" else build_sde(
                    "cou", theta=1.0, sigma=1.0, T=T, t_min=T - n * dt)
                m, v = marginal_moments(sde, T, -1.0, 0.0)
                grid = T - dt * np.arange(n + 1)
                e = (lambda t, s=sde, k=noise: k / s.marginal(torch.as_tensor(t)).std.numpy()
                     ** 2)
                M, S = gaussian_reverse_em(sde, grid, -1.0, 0.0, m, v, e)
                rows.append({"family": fam, "T": T, "noise_lvl": noise, "dt": dt,
                             "w2_to_point": math.sqrt((M + 1.0) ** 2 + S), "mean": M,
                             "std": math.sqrt(S)})
    return rows


def _g(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


def tables(hz: list[dict], reg: list[dict], auth: list[dict], Ts: list[float],
           hs: list[float], h_fine: float) -> str:
    out = [f"Data N({MU0:g}, {math.sqrt(VAR0):g}²); t_min = {T_MIN:g}; uniform Euler–Maruyama "
           f"grid of step h (h = {h_fine:g} unless stated); exact output laws (closed form).", ""]
    out += ["### Registered defaults at T = 1 (the learned-model families)", "",
            "| family | ∫g² | s/m at T | F abs: bound / exact | F eps: bound / exact | "
            "F eps/s²: bound / exact | W2 clean, exact start | W2 clean, prior start |",
            "|---|---|---|---|---|---|---|---|"]
    for r in reg:
        out.append(f"| {r['family']} | {_g(r['int_g2'])} | {_g(r['nsr_T'])} | "
                   + " | ".join(f"{_g(r[f'F_bound_drift_{m}'])} / {_g(r[f'F_exact_{m}'])}"
                                for m in ("abs", "eps", "eps/s2"))
                   + f" | {r['w2_clean_exact']:.4f} | {r['w2_clean_prior']:.4f} |")
    names = {"abs": "absolute score error δ", "eps": "ε-norm error δ (score error δ/s)",
             "eps/s2": "authors' ε/σ_t² (score error δ/s²)"}
    head = "| family | " + " | ".join(f"T = {T:g}" for T in Ts) + " |"
    sep = "|---|" + "---|" * len(Ts)
    for model, label in names.items():
        out += ["", f"### Output shift per unit error, {label}: measured (h = {h_fine:g}) · "
                    "exact-rate factor · drift-only bound", "",
                "Cell: measured |ΔE[x₀]|/δ of the EM sampler · F with r = a + g²/Var p_t · "
                "F with r = a.", "", head, sep]
        for fam in FAMILIES:
            cells = []
            for T in Ts:
                r = next(x for x in hz if x["kind"] == "error" and x["family"] == fam
                         and x["T"] == T and x["model"] == model)
                cells.append(f"{_g(r[f'measured_shift_per_delta_h{h_fine:g}'])} · "
                             f"{_g(r['F_exact'])} · {_g(r['F_bound_drift'])}")
            out.append(f"| {fam} | " + " | ".join(cells) + " |")
    out += ["", f"### W2(output, data) with error δ = {DELTA:g}: exact start / prior start", "",
            "| family | error | " + " | ".join(f"T = {T:g}" for T in Ts) + " |",
            "|---|---|" + "---|" * len(Ts)]
    for fam in FAMILIES:
        r0 = [next(x for x in hz if x["kind"] == "error" and x["family"] == fam and x["T"] == T)
              for T in Ts]
        out.append(f"| {fam} | none | " + " | ".join(
            f"{r['w2_clean_exact']:.4f} / {_g(r['w2_clean_prior'])}" for r in r0) + " |")
        for model in names:
            rs = [next(x for x in hz if x["kind"] == "error" and x["family"] == fam
                       and x["T"] == T and x["model"] == model) for T in Ts]
            out.append(f"| {fam} | {model} | " + " | ".join(
                f"{_g(r[f'w2_delta{DELTA:g}_exact'])} / {_g(r[f'w2_delta{DELTA:g}_prior'])}"
                for r in rs) + " |")
    out += ["", "### Start error surviving to t_min, exp(−∫r): exact rate / drift-only", "",
            head, sep]
    for fam in FAMILIES:
        rs = [next(x for x in hz if x["kind"] == "steps" and x["family"] == fam and x["T"] == T)
              for T in Ts]
        out.append(f"| {fam} | " + " | ".join(
            f"{_g(r['start_survival_exact'])} / {_g(r['start_survival_drift'])}" for r in rs)
            + " |")
    out += ["", "### Discretization: W2(output, data), exact start, no score error, step h", "",
            "| family | h | " + " | ".join(f"T = {T:g}" for T in Ts) + " |",
            "|---|---|" + "---|" * len(Ts)]
    for fam in FAMILIES:
        for h in hs:
            rs = [next(x for x in hz if x["kind"] == "steps" and x["family"] == fam
                       and x["T"] == T and x["h"] == h) for T in Ts]
            out.append(f"| {fam} | {h:g} | " + " | ".join(f"{r['w2_exact_start']:.4f}"
                                                       for r in rs) + " |")
    aT = sorted({r["T"] for r in auth})
    out += ["", "### The authors' 1-D test (x₀ = −1, θ = σ = 1, error ε/σ_t², exact x_T), "
                "W2 to the point, unclipped", "",
            "| noise, dt | family | " + " | ".join(f"T = {T:g}" for T in aT) + " |",
            "|---|---|" + "---|" * len(aT)]
    for noise, dt in dict.fromkeys((r["noise_lvl"], r["dt"]) for r in auth):
        for fam in ("ou", "cou"):
            rs = [next(x for x in auth if x["family"] == fam and x["T"] == T
                       and x["noise_lvl"] == noise and x["dt"] == dt) for T in aT]
            out.append(f"| {noise:g}, {dt:g} | {fam} | "
                       + " | ".join(f"{r['w2_to_point']:.4f}" for r in rs) + " |")
    return "\n".join(out) + "\n"


def figure(hz: list[dict], Ts: list[float], h_fine: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for j, model in enumerate(("abs", "eps", "eps/s2")):
        ax = axes[j]
        for fam in FAMILIES:
            rs = [next(x for x in hz if x["kind"] == "error" and x["family"] == fam
                       and x["T"] == T and x["model"] == model) for T in Ts]
            line = ax.plot(Ts, [r[f"measured_shift_per_delta_h{h_fine:g}"] for r in rs], "o-",
                           label=f"{fam} measured")[0]
            ax.plot(Ts, [r["F_bound_drift"] for r in rs], ":", color=line.get_color(),
                    label=f"{fam} drift-only bound")
        ax.set_title(f"output shift / δ, error {model}", fontsize=9)
    for fam in FAMILIES:
        rs = [next(x for x in hz if x["kind"] == "error" and x["family"] == fam and x["T"] == T)
              for T in Ts]
        axes[3].plot(Ts, [max(r["w2_clean_prior"], 1e-8) for r in rs], "o-", label=fam)
    axes[3].set_title("W2, no error, prior start N(0, s(T)²)", fontsize=9)
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("horizon T")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    axes[3].legend(fontsize=7)
    save_png(fig, path, dpi=80)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T ∈ {1, 5}, coarse steps")
    ap.add_argument("--results", type=Path, default=None)
    args = ap.parse_args(argv)
    results = args.results or (Path("runs") / "horizon_quick" if args.quick else HERE / "results")
    Ts = [1.0, 5.0] if args.quick else [1.0, 2.0, 5.0, 10.0, 20.0]
    hs = [0.2, 0.05] if args.quick else [0.2, 0.1, 0.05, 0.02, 0.01]
    h_fine = 0.01 if args.quick else 1e-3
    hz = horizon_rows(Ts, hs, h_fine)
    reg = registered_rows()
    auth = authors_rows(Ts)
    results.mkdir(parents=True, exist_ok=True)
    (results / "horizon.json").write_text(json.dumps(
        {"data": {"mean": MU0, "var": VAR0}, "t_min": T_MIN, "delta": DELTA, "h_fine": h_fine,
         "horizon": hz, "registered": reg, "authors_1d": auth}, indent=1))
    md = tables(hz, reg, auth, Ts, hs, h_fine)
    (results / "horizon.md").write_text(md)
    figure(hz, Ts, h_fine, results / "horizon.png")
    print(md)


if __name__ == "__main__":
    main()
