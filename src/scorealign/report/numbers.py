"""The before → after numbers of a fine-tuning run, each with the one source it comes from.

Used by the report's summary and by the terminal's closing table, so both show the same numbers
with the same labels: a reward or gold number is either the *after-training evaluation* (base and
fine-tuned model sampled from the same fixed seeds, ``eval_before_after.json``) or the *training
epochs* (batch means of the first and last epoch, ``metrics.jsonl``), never both unlabelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

#: One sentence per metric on what it measures (the report's glossary and captions).
METRIC_MEANS: dict[str, str] = {
    "reward/mean": "Optimized reward: batch mean of the reward the run maximizes, over the epoch's "
                   "rollouts (P prompts × k samples).",
    "reward/std": "Spread (standard deviation) of the optimized reward over the epoch's rollouts.",
    "reward/gold_mean": "Gold reward: batch mean of the held-out reward the run never optimizes "
                        "(digits: prompt alignment); a fall means the proxy is being gamed.",
    "alarm/gold": "1 when the epoch's gold reward fell more than the margin below the base's "
                  "(the gold-reward alarm), else 0.",
    "kl/base": "KL divergence of the fine-tuned sampler from the base model's, in nats, summed "
               "over the sampler's random steps (batch mean): how far the model has moved.",
    "kl/max_step_share": "Largest single step's share of kl/base (1 = one step carries all of "
                         "the KL).",
    "kl/step": "Per-step KL to the base (nats) at each action step of the sampler grid.",
    "queries/reward": "Cumulative number of reward evaluations (samples scored) so far: the "
                      "x-axis of the key curves.",
    "loss/policy": "Value of the policy surrogate loss; for ratio losses its gradient, not its "
                   "value, carries the signal (tiny values are expected).",
    "loss/kl": "The KL term of the loss before its weight β (per-step KL, reduced as the loss "
               "reduces its steps).",
    "policy/ratio_mean": "Mean importance ratio p_θ/p_old over the trained steps (1 = on-policy).",
    "policy/ratio_max": "Largest importance ratio over the trained steps.",
    "policy/clipfrac": "Share of trained steps whose ratio lies outside the clip range 1 ± ε.",
    "policy/approx_kl_k3": "Schulman's k3 estimate of KL(p_old ‖ p_θ) per step: how far one "
                           "update moved the policy.",
    "policy/approx_kl_k2": "DDPO's k2 estimate ½(log ρ)² of the per-step update size.",
    "clip/frac_mb0": "Clipped share in the first minibatch of the epoch (0 on-policy).",
    "clip/frac_later": "Clipped share in the later minibatches of the epoch.",
    "opt/grad_norm": "Gradient norm before clipping, mean over the epoch's optimizer steps.",
    "adv/mean": "Mean advantage of the epoch's rows.",
    "value/mean": "Mean value-baseline prediction V(x_t, t, c).",
    "cost/model_evals_grad": "Model evaluations with a gradient in the epoch's update.",
    "time/epoch_s": "Wall time of the epoch (rollouts, rewards and update), seconds.",
    "time/total_s": "Wall time of the whole run, seconds.",
    "mem/peak_gb": "Peak memory of the run so far, GB.",
    "perf/steps_per_s": "Training steps per second over the last logging window.",
    "loss": "Training loss (mean over the logging window).",
    "lr": "Learning rate at the step.",
    "rewards/accuracy": "Share of preference pairs whose implicit reward ranks the chosen answer "
                        "above the rejected one.",
    "eval/win_rate": "Share of samples the oracle prefers over the reference (SFT) model's.",
    "eval/accuracy": "Share of samples the digits classifier assigns to the prompted class.",
    "eval/fd": "Fréchet distance between classifier features of samples and data (lower is "
               "closer).",
    "perf/J": "Expected return J(π) of the control policy.",
    "perf/gap": "Gap J* − J(π) to the optimal control's return.",
}

#: Where a metric group's numbers come from, for groups without a sentence of their own.
GROUP_MEANS: dict[str, str] = {
    "policy": "Importance-ratio diagnostics of the update.",
    "clip": "How often the PPO clip binds.",
    "kl": "KL to the base model.",
    "time": "Wall time.",
    "mem": "Memory.",
    "cost": "Compute spent.",
}


def metric_meaning(key: str) -> str | None:
    """The one-sentence description of ``key`` (``kl/step/03`` uses ``kl/step``'s), else its
    group's, else None."""
    if key in METRIC_MEANS:
        return METRIC_MEANS[key]
    parts = key.split("/")
    for i in range(len(parts) - 1, 0, -1):
        if (head := "/".join(parts[:i])) in METRIC_MEANS:
            return METRIC_MEANS[head]
    return GROUP_MEANS.get(parts[0])


@dataclass(frozen=True)
class BeforeAfter:
    """One quantity before and after fine-tuning, and the one source both numbers come from."""

    name: str
    before: float | None
    after: float | None
    source: str
    unit: str = ""

    def text(self) -> str:
        """``name b → a unit`` (plain text)."""
        fmt = _duration if self.unit == "time" else fmt_value
        unit = "" if self.unit in ("", "time") else f" {self.unit}"
        if self.before is None:
            return f"{self.name} {fmt(self.after)}{unit}"
        return f"{self.name} {fmt(self.before)} → {fmt(self.after)}{unit}"


def fmt_value(v: float) -> str:
    """A reward-like number: 3 decimals (``1.000``, ``0.354``) up to 1000, else 4 significant
    digits."""
    return f"{v:.3f}" if abs(v) < 1000 else f"{v:.4g}"


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _first(rows: Sequence[Mapping], key: str) -> tuple[float, int] | None:
    return next(((v, int(r.get("step", 0))) for r in rows if (v := _num(r.get(key))) is not None),
                None)


def _last(rows: Sequence[Mapping], key: str) -> tuple[float, int] | None:
    return _first(list(reversed(rows)), key)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def eval_source(before_after: Mapping) -> str:
    """The label of the after-training evaluation's numbers."""
    n = before_after.get("samples")
    count = f", {int(n)} samples" if isinstance(n, (int, float)) else ""
    return f"after-training evaluation{count}"


def before_after_numbers(rows: Sequence[Mapping], before_after: Mapping | None = None
                         ) -> list[BeforeAfter]:
    """Reward, gold reward, KL to the base and wall time of a run, each labelled by its source.

    Reward and gold come from the after-training evaluation when it holds both numbers, else
    from the first and last training epoch; the KL is the last training epoch's (the base is at
    0 by definition); the time is the run's total (``time/total_s``, else the sum of the
    epochs').
    """
    ba = before_after or {}
    out = []
    for key, name in (("reward/mean", "reward"), ("reward/gold_mean", "gold reward")):
        b, a = _num(ba.get(f"before/{key}")), _num(ba.get(f"after/{key}"))
        if b is not None and a is not None:
            out.append(BeforeAfter(name, b, a, eval_source(ba)))
            continue
        first, last = _first(rows, key), _last(rows, key)
        if first is not None and last is not None:
            out.append(BeforeAfter(name, first[0], last[0],
                                   f"training epochs {first[1]} → {last[1]}, batch means"))
    kl = _last(rows, "kl/base")
    if kl is not None:
        out.append(BeforeAfter("KL to base", 0.0, kl[0], f"last training epoch ({kl[1]})",
                               unit="nats"))
    total = _last(rows, "time/total_s")
    if total is not None:
        out.append(BeforeAfter("time", None, total[0], "wall time of the run", unit="time"))
    else:
        epochs = [v for r in rows if (v := _num(r.get("time/epoch_s"))) is not None]
        if epochs:
            out.append(BeforeAfter("time", None, sum(epochs), "sum of the training epochs' "
                                   "wall times", unit="time"))
    return out


__all__ = ["BeforeAfter", "METRIC_MEANS", "before_after_numbers", "eval_source", "fmt_value",
           "metric_meaning"]
