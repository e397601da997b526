"""scorealign: align generative models with rewards and preferences.

A diffusion sampler is a policy in a controlled SDE: the score is the action, the reward is paid at
the end, and the KL to the base model is a path-space integral. See docs/conventions.md.

Python API: ``scorealign.load(RUN)`` opens a run of any command (``scorealign.api.Loaded``);
``scorealign.finetune(config, reward=fn, out=DIR)`` fine-tunes with a Python reward callable;
``pretrain``, ``dpo``, ``control`` and ``build_pairs`` run the other training commands. They
raise ``scorealign.errors.ScorealignError`` subclasses on bad input.
"""

__version__ = "0.1.0"


_API = ("load", "Loaded", "finetune", "pretrain", "dpo", "build_pairs", "sample", "evaluate",
        "export", "report")  # control: the package (scorealign.api.control is the command)


def __getattr__(name: str):  # lazy: `import scorealign` stays light for the CLI
    if name in _API:
        from scorealign import api
        return getattr(api, name)
    raise AttributeError(f"module 'scorealign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
