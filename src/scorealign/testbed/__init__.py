"""Ground truth: alignment problems whose optimum p*_β ∝ p₀ e^{r/β} is known exactly (issue 22).

Importing this package registers the preset problems in ``PROBLEMS``.
"""

from scorealign.testbed.frontier import (Frontier, beta_at_kl, frontier, frontier_reward,
                                         reward_gap)
from scorealign.testbed.metrics import (energy_distance, floor, sample_distance,
                                        score_error)
from scorealign.testbed.problems import (DIMS, PROBLEMS, Problem, base_mixture, make_problem)
from scorealign.testbed.rewards import MixtureLogReward, QuadraticReward
from scorealign.testbed.tilt import Tilt, mixture_product_tilt, quadratic_exp_tilt

__all__ = [
    "DIMS", "PROBLEMS", "Frontier", "MixtureLogReward", "Problem", "QuadraticReward", "Tilt",
    "base_mixture", "beta_at_kl", "energy_distance", "floor", "frontier", "frontier_reward",
    "make_problem", "mixture_product_tilt", "quadratic_exp_tilt", "reward_gap",
    "sample_distance", "score_error",
]
