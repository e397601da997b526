"""``sample(RUN, ...)``: draw samples from a trained run of any kind into a file.

Diffusion runs: a grid per class, or for the given prompts; dpo runs: completions; control runs:
simulated paths. File names carry the prompt. The run's kind is looked up once and its record's
``sample`` writes the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from scorealign.commands.kinds import SampleRequest, Sampled, get_kind
from scorealign.commands.load import load


def sample(run_dir: str | Path, prompts: Optional[list[str]] = None, n: int = 10,
           sampler: Optional[str] = None, steps: Optional[int] = None,
           eta: Optional[float] = None, guidance: Optional[float] = None, seed: int = 0,
           out: Optional[str | Path] = None) -> Sampled:
    """Write samples of ``run_dir``'s model; returns the file and the lines to report.

    Raises:
        RunNotFoundError, ConfigError, CheckpointError, ExportError: an unusable run;
        UsageError: an option the run cannot use (``--prompt`` on an unconditional model, a
        bad ``--steps``, an unwritable ``--out``).
    """
    loaded = load(run_dir)
    req = SampleRequest(list(prompts) if prompts else None, n, sampler, steps, eta, guidance,
                        seed, Path(out) if out is not None else None)
    return get_kind(loaded.kind).sample(loaded, req)


__all__ = ["sample"]
