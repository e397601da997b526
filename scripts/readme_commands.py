"""Run the README's commands as written, in order, in a scratch directory.

CI runs this after the tests (`.ci/run`). Every line of the README's ```bash blocks that starts
with ``scorealign`` (or with ``bash benchmarks/``, ``.venv/bin/python benchmarks/`` or
``.venv/bin/python experiments/`` and carries ``--quick``: a smoke run, from the checkout) runs
exactly as written: the same arguments and paths, in the README's order, so a chain
(``rpo build-pairs`` → ``dpo``; ``finetune --out runs/loop`` → ``--resume runs/loop`` → ``sample``/``eval``/``report``/``export runs/loop``) runs on the paths the earlier
lines wrote. A line holding a placeholder (``<command>``, ``runs/x``, ``...``, ``[optional]``,
``{a,b}``) is an error: the README must hold runnable commands.

The only change is appended, never substituted: training commands get short budgets as
``--set FIELD=VALUE`` (the README documents that they take ``--set`` and that a later ``--set``
of a field wins), so the block takes minutes. Usage:
``python scripts/readme_commands.py [--list] [WORKDIR]``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_DIGITS_RL = ["train.epochs=1", "prompts.per_epoch=2", "prompts.k=2", "train.minibatch_size=4",
              "train.sample_batch_size=4", "policy.steps=3"]
#: (command, config stem or None) → ``--set`` values that make a fresh run take seconds
SHORT: dict[tuple[str, str | None], list[str]] = {
    ("demo", None): _DIGITS_RL,
    ("pretrain", None): ["train.steps=4", "train.batch_size=16", "sample.num_eval=20",
                         "sample.steps=3"],
    ("finetune", None): _DIGITS_RL,
    ("dpo", None): ["train.steps=2", "demo.sft_steps=5", "demo.n_prompts=16",
                    "demo.eval_prompts=16", "train.batch_size=4"],
    ("dpo", "digits_rpo"): ["train.steps=2", "train.batch_size=4", "eval.num_samples=20",
                            "eval.generation.steps=3"],
    ("build-pairs", None): ["prompts.n=4", "generation.steps=2"],
    ("control", None): ["train.steps=2", "n_paths=8", "eval_paths=50", "eval_every=1"],
}
#: command → ``--set`` values for a ``--resume`` line: one more epoch/step than the short run
RESUME = {"finetune": ["train.epochs=2"], "pretrain": ["train.steps=6"], "dpo": ["train.steps=3"],
          "control": ["train.steps=3"]}
PLACEHOLDER = re.compile(r"<[a-z_]+>|\.\.\.|\[[^\]]*\]|\{[^}]*,[^}]*\}|\bruns/x\b")
STARTS = ("scorealign ", "bash benchmarks/", ".venv/bin/python benchmarks/",
          ".venv/bin/python experiments/")


def readme_commands(text: str | None = None) -> list[str]:
    """The runnable lines of the README's ```bash blocks, in order, comments stripped."""
    text = (ROOT / "README.md").read_text() if text is None else text
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
            if line.startswith(STARTS[0]) or (line.startswith(STARTS[1:]) and "--quick" in line):
                if PLACEHOLDER.search(line):
                    raise ValueError(f"README command is not runnable as written: {line}")
                out.append(line)
    return out


def command_of(args: list[str]) -> str:
    """``finetune``, ``build-pairs``, ...: the scorealign command of an argument list."""
    return args[1] if args[:1] == ["rpo"] and len(args) > 1 else (args[0] if args else "")


def config_stem(args: list[str]) -> str | None:
    if "--config" not in args:
        return None
    value = args[args.index("--config") + 1]
    return Path(value).stem if value.endswith((".yaml", ".yml")) else value


def shorten(args: list[str]) -> list[str]:
    """``args`` (a scorealign line, without ``scorealign``) with the short budget appended."""
    cmd = command_of(args)
    if {"--help-config", "--dry-run", "--help", "--version"} & set(args):
        return list(args)
    if "--resume" in args:
        extra = RESUME.get(cmd, [])
    else:
        extra = SHORT.get((cmd, config_stem(args)), SHORT.get((cmd, None), []))
    return list(args) + [x for s in extra for x in ("--set", s)]


def argv_of(line: str) -> list[str]:
    """The process to start for one README line."""
    words = shlex.split(line)
    if words[0] == "scorealign":
        return [sys.executable, "-m", "scorealign.cli", *shorten(words[1:])]
    if words[0] == ".venv/bin/python":
        return [sys.executable, *words[1:]]
    return words


def main() -> int:
    argv = [a for a in sys.argv[1:] if a != "--list"]
    todo = readme_commands()
    if "--list" in sys.argv:
        print("\n".join(shlex.join(argv_of(x)) for x in todo))
        return 0
    work = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="readme-"))
    work.mkdir(parents=True, exist_ok=True)
    link = work / "configs"  # `--config configs/...` as in a checkout; runs/ go to WORKDIR
    link.exists() or link.symlink_to(ROOT / "configs")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}" +
           os.environ.get("PYTHONPATH", "")}
    for line in todo:
        cmd = argv_of(line)
        print(f"$ {line}", flush=True)
        quiet = "--help-config" in line
        # scorealign lines run in WORKDIR; the benchmarks' smoke runs from the checkout (they
        # write under its ignored .cache/ only)
        res = subprocess.run(cmd, cwd=work if cmd[1:3] == ["-m", "scorealign.cli"] else ROOT,
                             env=env, stdout=subprocess.DEVNULL if quiet else None)
        if res.returncode != 0:
            print(f"README command failed (exit {res.returncode}): {line}\n"
                  f"  ran: {shlex.join(cmd)}")
            return 1
    print(f"all {len(todo)} README commands ran in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
