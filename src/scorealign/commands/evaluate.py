"""``evaluate(RUN, ...)``: evaluate a trained run of any kind and write ``RUN/<name>.json``.

Pretraining: class accuracy and Fréchet distance (digits), sliced W2 (2-D). Finetune: reward, gold
reward (and on digits class accuracy and FD) of the trained and of the base model. Diffusion-DPO:
the digits metrics of both. dpo: the demo's win rate, else preference accuracy on the data.
control: J(π). The run's kind is looked up once and its record's ``evaluate`` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from scorealign.commands.kinds import EvalRequest, get_kind
from scorealign.commands.load import load
from scorealign.errors import ScorealignError, UsageError


@dataclass(frozen=True)
class Evaluated:
    """The metrics and the file they were written to."""

    metrics: dict
    path: Path


def evaluate(run_dir: str | Path, sampler: Optional[str] = None, steps: Optional[int] = None,
             eta: Optional[float] = None, guidance: Optional[float] = None,
             n: Optional[int] = None, name: str = "eval") -> Evaluated:
    """Evaluate ``run_dir``'s model and write ``RUN/<name>.json`` (metrics and sampling).

    Raises:
        RunNotFoundError, ConfigError, CheckpointError, ExportError: an unusable run;
        UsageError: an option the run cannot use, or a run with no evaluation defined.
    """
    from scorealign.run.rundir import RunDir
    from scorealign.train.evaluate import write_eval

    loaded = load(run_dir)
    try:
        metrics, scfg = get_kind(loaded.kind).evaluate(
            loaded, EvalRequest(sampler, steps, eta, guidance, n))
    except ScorealignError:
        raise
    except ValueError as e:
        raise UsageError(f"{run_dir}: {e}") from None
    path = write_eval(RunDir.open(run_dir), metrics, scfg, name)
    return Evaluated(metrics, path)


__all__ = ["Evaluated", "evaluate"]
