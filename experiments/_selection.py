"""One selection-and-reporting protocol for the experiments (issue 25, item 1).

Pure functions, no training inside; an experiment supplies a ``score_fn`` that runs its cells.

- :func:`split`: tuning seeds and evaluation draws disjoint from the reported ones (a
  hyper-parameter is never chosen on a row that is then reported).
- :func:`select`: the value with the best reward among those whose gold reward is ≥ a stated
  floor; :func:`pareto_frontier` reports the whole (reward, gold) frontier instead.
- :func:`edge_side`, :func:`widen`, :func:`tune_grid`: a pick at the end of its grid is not a
  tuned pick; the grid is extended outward (geometrically for learning rates) until the pick is
  interior or a cap is hit, then ``edge: true`` is recorded.
- :func:`paired_interval` (t-interval on the paired differences of a paired design, e.g. the same
  seeds and evaluation draws for both arms) with :func:`welch_interval` beside it; :func:`holm`
  (Holm 1979, step-down) across the claims of one experiment; :func:`claims_table` writes them
  as the markdown claims table; :func:`collapse_rate`.
- :func:`record`: the results block every experiment writes (chosen values with the edge flag,
  the selection rule, the interval and the correction used).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------
# tuning vs reported seeds and evaluation draws
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Seeds and evaluation-draw seeds of the tuning stage and of the reported stage.

    ``tuning_seeds``/``reported_seeds`` seed the training runs; ``tuning_draws``/
    ``reported_draws`` seed the evaluation samples (x_T of the evaluation set). The two stages
    share nothing, so the reported numbers are not the ones the choice was made on.
    """

    tuning_seeds: tuple[int, ...]
    reported_seeds: tuple[int, ...]
    tuning_draws: int
    reported_draws: int


def split(n_reported: int, n_tuning: int, *, tuning_offset: int = 1000,
          draws_reported: int = 10_000, draws_tuning: int = 20_000) -> Split:
    """Reported seeds 0..n_reported−1, tuning seeds ``tuning_offset``.. (disjoint), and the two
    base seeds of the evaluation draws.

    Raises ValueError if the ranges would overlap (``tuning_offset < n_reported``) or a count
    is below 1.
    """
    if n_reported < 1 or n_tuning < 1:
        raise ValueError(f"need ≥ 1 reported and ≥ 1 tuning seed; got {n_reported}, {n_tuning}")
    if tuning_offset < n_reported:
        raise ValueError(f"tuning seeds from {tuning_offset} overlap the reported seeds "
                         f"0..{n_reported - 1}")
    if draws_reported == draws_tuning:
        raise ValueError("tuning and reported evaluation draws must use different seeds")
    return Split(tuning_seeds=tuple(range(tuning_offset, tuning_offset + n_tuning)),
                 reported_seeds=tuple(range(n_reported)), tuning_draws=draws_tuning,
                 reported_draws=draws_reported)


# ----------------------------------------------------------------------------------------------
# selection
# ----------------------------------------------------------------------------------------------


def selection_rule(gold_floor: float | None, key: str = "reward") -> str:
    """The sentence a results file records for :func:`select`'s rule."""
    base = f"max mean {key} over the tuning seeds and tuning evaluation draws"
    return base if gold_floor is None else f"{base}, among values with mean gold ≥ {gold_floor:g}"


def select(scores: Mapping[Hashable, Mapping[str, float]], gold_floor: float | None = None,
           key: str = "reward", gold_key: str = "gold") -> Hashable | None:
    """The value whose ``scores[v][key]`` is largest among those with ``scores[v][gold_key] ≥
    gold_floor`` (every value when ``gold_floor`` is None). NaN scores never win.

    Returns None when no value is eligible (all below the floor, or all NaN).
    """
    best, best_score = None, -math.inf
    for v, s in scores.items():
        r = float(s[key])
        if not math.isfinite(r):
            continue
        if gold_floor is not None:
            g = float(s.get(gold_key, float("nan")))
            if not (math.isfinite(g) and g >= gold_floor):
                continue
        if r > best_score:
            best, best_score = v, r
    return best


def pareto_frontier(scores: Mapping[Hashable, Mapping[str, float]], key: str = "reward",
                    gold_key: str = "gold") -> list[Hashable]:
    """The values not dominated in (``key``, ``gold_key``), both maximized, sorted by ``key``
    descending: the whole trade-off, for experiments that report it instead of one pick."""
    pts = {v: (float(s[key]), float(s[gold_key])) for v, s in scores.items()
           if math.isfinite(float(s[key])) and math.isfinite(float(s[gold_key]))}
    keep = [v for v, (r, g) in pts.items()
            if not any((r2 >= r and g2 >= g) and (r2 > r or g2 > g) for r2, g2 in pts.values())]
    return sorted(keep, key=lambda v: -pts[v][0])


# ----------------------------------------------------------------------------------------------
# grid edges and widening
# ----------------------------------------------------------------------------------------------


def edge_side(grid: Sequence[float], pick: float | None) -> str | None:
    """"low" / "high" if ``pick`` is the smallest / largest value of ``grid``, else None.

    A grid of one value has both ends at its pick ("low" is returned: widen both ways by
    calling :func:`widen` on each side). None for ``pick=None``.
    """
    if pick is None:
        return None
    g = sorted(grid)
    if pick == g[0]:
        return "low"
    if pick == g[-1]:
        return "high"
    return None


def widen(grid: Sequence[float], side: str, *, geometric: bool = True,
          factor: float | None = None) -> list[float]:
    """``grid`` with one more value beyond its ``side`` ("low" or "high").

    Geometric (learning rates): the new value is the edge value divided / multiplied by
    ``factor`` (default: the ratio of the two outermost values on that side; 10 for a
    one-value grid). Arithmetic: minus / plus ``factor`` (default: the outermost spacing).
    """
    g = sorted(float(x) for x in grid)
    if side not in ("low", "high"):
        raise ValueError(f"side must be 'low' or 'high'; got {side!r}")
    if geometric:
        if g[0] <= 0:
            raise ValueError(f"a geometric grid needs positive values; got {g}")
        if factor is None:
            factor = 10.0 if len(g) < 2 else (g[1] / g[0] if side == "low" else g[-1] / g[-2])
        if not factor > 1:
            raise ValueError(f"widening factor must be > 1; got {factor}")
        new = g[0] / factor if side == "low" else g[-1] * factor
    else:
        if factor is None:
            if len(g) < 2:
                raise ValueError("an arithmetic one-value grid needs an explicit factor")
            factor = g[1] - g[0] if side == "low" else g[-1] - g[-2]
        new = g[0] - factor if side == "low" else g[-1] + factor
    return sorted(g + [float(f"{new:.6g}")])


@dataclass
class Tuned:
    """The outcome of :func:`tune_grid` for one arm."""

    pick: float | None
    grid: list[float]
    scores: dict = field(default_factory=dict)
    edge: bool = False
    widened: int = 0
    reason: str = ""

    def as_dict(self) -> dict:
        """JSON-ready (score keys as strings)."""
        d = asdict(self)
        d["scores"] = {f"{k:g}": v for k, v in self.scores.items()}
        return d


def tune_grid(grid: Sequence[float], score_fn: Callable[[float], Mapping[str, float]], *,
              gold_floor: float | None = None, key: str = "reward", max_widen: int = 3,
              geometric: bool = True, limits: tuple[float, float] = (-math.inf, math.inf)
              ) -> Tuned:
    """Select on ``grid``, widening it outward while the pick sits at an edge.

    ``score_fn(v)`` runs (or reads from cache) the tuning cells of value v and returns their
    mean ``key`` (and ``"gold"`` when ``gold_floor`` is set); it is called once per value.
    After each selection (:func:`select`): an interior pick is returned with ``edge=False``; an
    edge pick adds one value beyond that edge (:func:`widen`) unless ``max_widen`` widenings are
    done or the new value would leave ``limits``, in which case ``edge=True`` is returned.
    """
    grid = sorted(float(v) for v in grid)
    scores: dict[float, Mapping[str, float]] = {}
    widened = 0
    while True:
        for v in grid:
            if v not in scores:
                scores[v] = dict(score_fn(v))
        pick = select(scores, gold_floor, key)
        if pick is None:
            return Tuned(None, grid, scores, True, widened, "no value passes the selection rule")
        side = edge_side(grid, pick)
        if side is None:
            return Tuned(pick, grid, scores, False, widened, "interior")
        if widened >= max_widen:
            return Tuned(pick, grid, scores, True, widened, f"cap of {max_widen} widenings "
                         f"reached at the {side} edge")
        wider = widen(grid, side, geometric=geometric)
        new = wider[0] if side == "low" else wider[-1]
        if not limits[0] <= new <= limits[1]:
            return Tuned(pick, grid, scores, True, widened, f"{side} edge at the limit {limits}")
        grid, widened = wider, widened + 1


# ----------------------------------------------------------------------------------------------
# intervals, correction, collapse
# ----------------------------------------------------------------------------------------------


def _finite_pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need equal lengths; got {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def paired_interval(a: Sequence[float], b: Sequence[float], conf: float = 0.95) -> dict:
    """t-interval of mean(a − b) over pairs (a_i, b_i) from the same seed / draws.

    d_i = a_i − b_i, mean ± t_{(1+conf)/2, n−1} · sd(d)/√n; two-sided p of H₀: E[d] = 0 from
    the same t statistic (paired t-test). Pairs with a non-finite side are dropped.

    Returns ``{"diff", "half", "lo", "hi", "p", "n"}`` (half and p NaN for n < 2).
    """
    from scipy.stats import t as student

    x, y = _finite_pairs(a, b)
    d = x - y
    n = len(d)
    if n == 0:
        return {"diff": float("nan"), "half": float("nan"), "lo": float("nan"),
                "hi": float("nan"), "p": float("nan"), "n": 0}
    m = float(d.mean())
    if n < 2:
        return {"diff": m, "half": float("nan"), "lo": float("nan"), "hi": float("nan"),
                "p": float("nan"), "n": 1}
    se = float(d.std(ddof=1)) / math.sqrt(n)
    half = float(student.ppf(0.5 + conf / 2, n - 1)) * se
    if se == 0:
        p = 1.0 if m == 0 else 0.0
    else:
        p = float(2 * student.sf(abs(m) / se, n - 1))
    return {"diff": m, "half": half, "lo": m - half, "hi": m + half, "p": p, "n": n}


def welch_interval(a: Sequence[float], b: Sequence[float], conf: float = 0.95) -> dict:
    """Welch's unpaired t-interval of mean(a) − mean(b) (Welch–Satterthwaite df), beside the
    paired one: what the comparison would claim if the pairing were ignored.

    Returns ``{"diff", "half", "lo", "hi", "p", "df"}`` (NaN where a side has < 2 values).
    """
    from scipy.stats import t as student

    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if len(x) < 2 or len(y) < 2:
        m = float(x.mean() - y.mean()) if len(x) and len(y) else float("nan")
        return {"diff": m, "half": float("nan"), "lo": float("nan"), "hi": float("nan"),
                "p": float("nan"), "df": float("nan")}
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    m = float(x.mean() - y.mean())
    if se == 0:
        return {"diff": m, "half": 0.0, "lo": m, "hi": m, "p": 1.0 if m == 0 else 0.0,
                "df": float("inf")}
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = float(student.ppf(0.5 + conf / 2, df)) * se
    return {"diff": m, "half": half, "lo": m - half, "hi": m + half,
            "p": float(2 * student.sf(abs(m) / se, df)), "df": float(df)}


def holm(pvalues: Mapping[str, float], alpha: float = 0.05) -> dict[str, dict]:
    """Holm's step-down correction across the claims of one experiment [Holm 1979].

    With the m p-values sorted p₍₁₎ ≤ … ≤ p₍ₘ₎, the adjusted p₍ᵢ₎ = max_{j≤i} min(1,
    (m − j + 1) p₍ⱼ₎); claim i is rejected (supported) iff its adjusted p ≤ alpha. Controls the
    family-wise error rate at alpha under any dependence. NaN p-values count in m and are never
    rejected.

    Returns ``{name: {"p", "p_holm", "reject"}}``.
    """
    m = len(pvalues)
    order = sorted(pvalues, key=lambda k: (not math.isfinite(pvalues[k]), pvalues[k]))
    out, running = {}, 0.0
    for i, k in enumerate(order):
        p = float(pvalues[k])
        if math.isfinite(p):
            running = max(running, min(1.0, (m - i) * p))
            adj = running
        else:
            adj = float("nan")
        out[k] = {"p": p, "p_holm": adj, "reject": bool(math.isfinite(adj) and adj <= alpha)}
    return out


CLAIMS_HEADER = ("| claim | n | paired diff (95 %) | p | p (Holm) | Welch (95 %) | supported at "
                 "FWER 0.05 |", "|---|---|---|---|---|---|---|")


def claims_table(claims: Mapping[str, Mapping], holm_of: Mapping[str, Mapping] | None = None,
                 digits: str | Callable[[Mapping], str] = ".4f", half: str | None = None,
                 label: Callable[[str, Mapping], str] | None = None) -> list[str]:
    """The markdown claims table of a results file: :data:`CLAIMS_HEADER`, then one row a claim.

    ``claims``: name → ``{"paired": paired_interval(…), "welch": welch_interval(…), …}`` (a
    missing or None Welch interval shows "—"). The claim's Holm entry (``{"p_holm", "reject"}``
    from :func:`holm`) is ``holm_of[name]``, or the claim's own ``"holm"`` when ``holm_of`` is
    None. ``digits``: the format spec of the differences (``"+.4f"``, ``".4g"``), or claim → spec;
    ``half``: the spec of the half-widths (default ``digits`` without its sign). ``label``:
    (name, claim) → the row's first cell (default the name). p-values show 3 significant digits;
    the last column is "yes" where Holm rejects (the claim is supported).
    """
    lines = list(CLAIMS_HEADER)
    for name, c in claims.items():
        p, w = c["paired"], c.get("welch")
        h = c["holm"] if holm_of is None else holm_of[name]
        d = digits(c) if callable(digits) else digits
        hd = d.lstrip("+") if half is None else half
        ws = "—" if w is None else f"{w['diff']:{d}} ± {w['half']:{hd}}"
        lines.append(f"| {name if label is None else label(name, c)} | {p['n']} | "
                     f"{p['diff']:{d}} ± {p['half']:{hd}} | {p['p']:.3g} | {h['p_holm']:.3g} | "
                     f"{ws} | {'yes' if h['reject'] else 'no'} |")
    return lines


def collapse_rule(margin: float) -> str:
    """The sentence a results file records for :func:`collapse_rate`'s rule."""
    return f"a run collapses if its final reward is NaN/inf or below the base reward − {margin:g}"


def collapsed(final_reward: float, base_reward: float, margin: float) -> bool:
    """True if the run diverged: non-finite final reward, or below ``base_reward − margin``."""
    return not math.isfinite(final_reward) or final_reward < base_reward - margin


def collapse_rate(final_rewards: Sequence[float], base_reward: float, margin: float) -> float:
    """Fraction of runs that :func:`collapsed` (NaN for no runs)."""
    if len(final_rewards) == 0:
        return float("nan")
    return float(np.mean([collapsed(float(r), base_reward, margin) for r in final_rewards]))


# ----------------------------------------------------------------------------------------------
# the results record
# ----------------------------------------------------------------------------------------------


def record(chosen: Mapping[str, Tuned], *, selection: str, correction: str = "Holm (FWER 0.05)",
           interval: str = "paired t-interval, 95 %; Welch beside it", collapse: str | None = None,
           split_: Split | None = None) -> dict:
    """The block an experiment's results JSON carries about how it chose and what it claims.

    ``chosen``: arm → :class:`Tuned`. ``any_edge`` is True if any arm's pick sits at a grid
    edge (then that arm was not tuned and the table says so).
    """
    out = {"selection_rule": selection, "interval": interval, "correction": correction,
           "chosen": {arm: t.as_dict() for arm, t in chosen.items()},
           "any_edge": any(t.edge for t in chosen.values())}
    if collapse is not None:
        out["collapse_rule"] = collapse
    if split_ is not None:
        out["split"] = asdict(split_)
    return out


__all__ = ["CLAIMS_HEADER", "Split", "Tuned", "claims_table", "collapse_rate", "collapse_rule",
           "collapsed", "edge_side", "holm", "paired_interval", "pareto_frontier", "record",
           "select", "selection_rule", "split", "tune_grid", "welch_interval", "widen"]
