"""Run every `scorealign ...` command of the README's bash blocks, shortened, in a scratch dir.

CI runs this after the tests (`.ci/run`): each command is taken from README.md as written, its
placeholders filled (`runs/x` → a run made by an earlier line, `<command>` → each training
command, `{a,b}` → a), and a shortening `--set` list for its command appended, so a README
command that stops working fails CI. Usage: python scripts/readme_commands.py [--list] [WORKDIR]
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
SHORT = {  # command → --set overrides that make it take seconds
    "demo": ["train.epochs=1", "prompts.per_epoch=2", "prompts.k=2", "train.minibatch_size=4",
             "train.sample_batch_size=4", "policy.steps=3"],
    "pretrain": ["train.steps=4", "train.batch_size=16", "sample.num_eval=20", "sample.steps=3"],
    "finetune": ["train.epochs=1", "prompts.per_epoch=2", "prompts.k=2", "train.minibatch_size=4",
                 "train.sample_batch_size=4", "policy.steps=3"],
    "dpo": ["train.steps=2", "demo.sft_steps=5", "demo.n_prompts=16", "demo.eval_prompts=16",
            "train.batch_size=4"],
    "build-pairs": ["prompts.n=4", "generation.steps=2"],
    "control": ["train.steps=2", "n_paths=8", "eval_paths=50", "eval_every=1"],
}
OPTS = {"sample": ["--n", "2", "--steps", "3"], "eval": ["--n", "10", "--steps", "3"]}
TRAINING = ("pretrain", "finetune", "dpo", "control")
CONFIG = {"pretrain": "pretrain/digits", "finetune": "digits_loop", "dpo": "dpo/demo",
          "control": "ct_ppo"}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("scorealign "):
                out.append(line)
    return out


def expand(line: str) -> list[list[str]]:
    """One README line → the argument lists it stands for."""
    line = re.sub(r"\[([^\]]*)\]", r"\1", line)                    # optional parts: use them
    line = re.sub(r"\{([^,}]*),[^}]*\}", r"\1", line)               # {a,b} → a
    lines = [line.replace("<command>", c).replace("--config ...", f"--config {CONFIG[c]}")
             for c in TRAINING] if "<command>" in line else [line]
    return [shlex.split(x)[1:] for x in lines]


def shorten(args: list[str], runs: dict[str, str]) -> list[str] | None:
    cmd = args[1] if args[0] == "rpo" else args[0]
    if "--resume" in args:
        i = args.index("--resume")
        run = runs.get(cmd)
        if run is None:
            return None
        args[i + 1] = run
        return args
    if "--help-config" in args or "--dry-run" in args:
        return args
    if cmd in SHORT:
        keep, i = [], 0
        while i < len(args):  # the README's own --set values give way to the short ones
            if args[i] == "--set" and i + 1 < len(args):
                i += 2
                continue
            keep.append(args[i])
            i += 1
        args = keep + [x for s in SHORT[cmd] for x in ("--set", s)]
    return args + OPTS.get(cmd, [])


def main() -> int:
    work = Path(sys.argv[-1]) if len(sys.argv) > 1 and sys.argv[-1] != "--list" else \
        Path(tempfile.mkdtemp(prefix="readme-"))
    todo = [a for line in readme_commands() for a in expand(line)]
    if "--list" in sys.argv:
        print("\n".join(shlex.join(a) for a in todo))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}" +
           os.environ.get("PYTHONPATH", "")}
    runs: dict[str, str] = {}
    (work / "configs").exists() or (work / "configs").symlink_to(ROOT / "configs")
    for n, args in enumerate(todo):
        cmd = args[1] if args[0] == "rpo" else args[0]
        args = shorten(args, runs)
        if args is None:
            continue
        if cmd in SHORT and "--out" not in args and "--resume" not in args and \
                "--dry-run" not in args and "--help-config" not in args:
            args += ["--out", f"runs/{n:02d}-{cmd}"]
        print("$ scorealign " + shlex.join(args), flush=True)
        res = subprocess.run([sys.executable, "-m", "scorealign.cli", *args], cwd=work, env=env,
                             stdout=subprocess.DEVNULL if "--help-config" in args else None)
        if res.returncode != 0:
            print(f"README command failed (exit {res.returncode}): scorealign {shlex.join(args)}")
            return 1
        if "--out" in args and cmd in TRAINING:
            runs[cmd] = args[args.index("--out") + 1]
    print(f"all {len(todo)} README commands ran in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
