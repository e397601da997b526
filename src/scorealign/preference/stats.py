"""Seed statistics of the preference experiments: means with 95 % Student-t intervals."""

from __future__ import annotations

import math
from typing import Sequence


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the two-sided Student-t interval) of independent seed values.

    half = t_{(1+level)/2, n−1} · s / √n, s the sample standard deviation; half = nan for n < 2.
    """
    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def fmt_ci(values: Sequence[float], digits: int = 3) -> str:
    """'mean ± half' with ``digits`` decimals."""
    m, h = mean_ci(values)
    return f"{m:.{digits}f} ± {h:.{digits}f}"
