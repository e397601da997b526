"""The gold-reward alarm: one rule, used by the trainer's terminal lines and by the report.

A fine-tuning run optimizes one reward (the proxy, e.g. the demo's brightness/contrast
``aesthetic_proxy``) and logs a second, held-out one it never optimizes: the *gold* reward (the
demo's ``digit_alignment``: does the sample still show the digit its prompt asks for). When gold
falls while the proxy rises, the proxy is being gamed: the model is buying reward with what the
proxy does not see (for digits: prompt alignment).

Rule (:func:`gold_fell`): an evaluation raises the alarm when its gold reward is more than
``GOLD_MARGIN`` = 0.05 (absolute) below the base model's gold, ``gold < base − margin``; a fall of
exactly the margin does not. The base's gold is the first training epoch's (its rollouts are drawn
from the base weights, before any update), or the after-training evaluation's ``before/`` number
for the ``after/`` one. 0.05 is the demo's done-when bound: a base at gold 1.000 must stay ≥ 0.95.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

#: Absolute fall of the gold reward below the base's that raises the alarm.
GOLD_MARGIN = 0.05
#: Metric key of the gold reward (batch mean per training epoch).
GOLD_KEY = "reward/gold_mean"
#: Metric key recording the alarm per epoch (1.0 raised, 0.0 not).
ALARM_KEY = "alarm/gold"

#: What a gold reward measures, by registered name (the report's and the terminal's words).
GOLD_MEANS = {
    "digit_alignment": "prompt alignment: the digits classifier's probability that a sample "
                       "shows the digit its prompt asks for",
}
_GENERIC = "a held-out score the run does not optimize"


def gold_fell(gold: float, base: float, margin: float = GOLD_MARGIN) -> bool:
    """Whether ``gold`` is more than ``margin`` below ``base`` (``gold < base − margin``).

    Non-finite inputs never raise the alarm (nothing was measured)."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if not (math.isfinite(gold) and math.isfinite(base)):
        return False
    return gold < base - margin


def gold_meaning(name: str | None) -> str:
    """What the gold reward ``name`` measures, in words."""
    return GOLD_MEANS.get(name or "", _GENERIC)


@dataclass(frozen=True)
class GoldAlarm:
    """One raised alarm: ``where`` (``"epoch 7"``, ``"after-training evaluation"``), the gold
    reward there, the base's gold and the margin."""

    where: str
    gold: float
    base: float
    margin: float = GOLD_MARGIN

    def sentence(self, gold_name: str | None = None) -> str:
        """The alarm in words: what gold measures, how far it fell, what the fall means."""
        return (f"Gold-reward alarm at {self.where}: the gold reward fell to {self.gold:.4f}, "
                f"more than {self.margin:g} below the base model's {self.base:.4f}. Gold "
                f"({gold_meaning(gold_name)}) is held out, never optimized; a fall while the "
                f"optimized reward rises means the proxy is being gamed and the model is losing "
                f"what gold measures.")

    def short(self) -> str:
        """One line for the epochs after the first alarm."""
        return (f"gold alarm ({self.where}): gold {self.gold:.4f} < base {self.base:.4f} − "
                f"{self.margin:g}")


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def base_gold(rows: Iterable[Mapping]) -> float | None:
    """The base model's gold: the first logged training epoch's ``reward/gold_mean``."""
    return next((g for r in rows if (g := _num(r.get(GOLD_KEY))) is not None), None)


def epoch_alarms(rows: Iterable[Mapping], margin: float = GOLD_MARGIN) -> list[GoldAlarm]:
    """Every training epoch (metrics row with ``reward/gold_mean``) whose gold fell more than
    ``margin`` below the first epoch's; ``[]`` without gold."""
    rows = list(rows)
    base = base_gold(rows)
    if base is None:
        return []
    return [GoldAlarm(f"epoch {int(r['step'])}", g, base, margin) for r in rows
            if (g := _num(r.get(GOLD_KEY))) is not None and gold_fell(g, base, margin)]


def eval_alarm(before_after: Mapping, margin: float = GOLD_MARGIN) -> GoldAlarm | None:
    """The after-training evaluation's alarm (``after/`` gold against ``before/`` gold from the
    same seeds), or None (no alarm, or no gold evaluated)."""
    b, a = _num(before_after.get(f"before/{GOLD_KEY}")), _num(before_after.get(f"after/{GOLD_KEY}"))
    if b is None or a is None or not gold_fell(a, b, margin):
        return None
    return GoldAlarm("the after-training evaluation", a, b, margin)


__all__ = ["ALARM_KEY", "GOLD_KEY", "GOLD_MARGIN", "GoldAlarm", "base_gold", "epoch_alarms",
           "eval_alarm", "gold_fell", "gold_meaning"]
