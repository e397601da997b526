"""scripts/readme_commands.py (CI's run of the README's commands): it takes every runnable line of
the README's bash blocks in order, refuses placeholders, and only appends short ``--set`` budgets,
so the README's chains run on the paths they write (issue 28 item 5)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("readme_commands",
                                               ROOT / "scripts" / "readme_commands.py")
rc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rc)

TEXT = '''intro `scorealign demo` in prose is no command
```bash
make demo   # not scorealign
scorealign finetune --config digits_loop --out runs/a   # a comment with --set x=1
scorealign finetune --resume runs/a --set train.epochs=30
scorealign sample runs/a --prompt "a handwritten 7"  # quoted prompt
bash benchmarks/dpo_vs_trl/run.sh                   # no --quick: a long run, not for CI
bash benchmarks/dpo_vs_trl/run.sh --quick
```
```python
scorealign.finetune()
```
```bash
scorealign rpo build-pairs --config configs/rpo/digits.yaml
```
'''


def test_lines_in_order_comments_stripped_quotes_kept():
    assert rc.readme_commands(TEXT) == [
        "scorealign finetune --config digits_loop --out runs/a",
        "scorealign finetune --resume runs/a --set train.epochs=30",
        'scorealign sample runs/a --prompt "a handwritten 7"',
        "bash benchmarks/dpo_vs_trl/run.sh --quick",
        "scorealign rpo build-pairs --config configs/rpo/digits.yaml"]


@pytest.mark.parametrize("line", ["scorealign <command> --resume runs/x",
                                  "scorealign sample runs/x", "scorealign demo [--out runs/d]",
                                  "scorealign finetune --config configs/finetune/digits_{a,b}.yaml",
                                  "scorealign <command> --config ... --dry-run"])
def test_placeholders_are_refused(line):
    with pytest.raises(ValueError, match="not runnable as written"):
        rc.readme_commands(f"```bash\n{line}\n```\n")


def test_shortening_only_appends_and_keeps_paths():
    for line in rc.readme_commands(TEXT):
        words = shlex.split(line)
        argv = rc.argv_of(line)
        if words[0] == "scorealign":
            assert argv[3:3 + len(words) - 1] == words[1:]  # as written, then appended --set
            extra = argv[3 + len(words) - 1:]
            assert all(a == "--set" for a in extra[::2]) and "--out" not in extra
        else:
            assert argv == words
    fresh = rc.shorten(["finetune", "--config", "digits_loop", "--out", "runs/a"])
    resumed = rc.shorten(["finetune", "--resume", "runs/a", "--set", "train.epochs=30"])
    assert "train.epochs=1" in fresh and resumed[-2:] == ["--set", "train.epochs=2"]
    # the resumed line trains past the fresh one: its epochs (the last --set wins) exceed 1
    assert rc.shorten(["finetune", "--help-config"]) == ["finetune", "--help-config"]
    assert "eval.num_samples=20" in rc.shorten(["dpo", "--config", "configs/dpo/digits_rpo.yaml"])
    assert "demo.sft_steps=5" in rc.shorten(["dpo", "--config", "configs/dpo/demo.yaml"])


def test_the_readme_chains_are_runnable_lines_in_order():
    lines = rc.readme_commands()
    def at(prefix):
        return next(i for i, x in enumerate(lines) if x.startswith(prefix))
    out = at("scorealign finetune --config digits_loop --out runs/loop")
    assert out < at("scorealign finetune --resume runs/loop --set train.epochs=") < \
        at("scorealign sample runs/loop") < at("scorealign eval runs/loop")
    assert at("scorealign export runs/loop") > out and at("scorealign report runs/loop") > out
    assert at("scorealign rpo build-pairs --config configs/rpo/digits.yaml") < \
        at("scorealign dpo --config configs/dpo/digits_rpo.yaml")
    assert at("bash benchmarks/dpo_vs_trl/run.sh --quick") >= 0
    assert at(".venv/bin/python benchmarks/ddpo_vs_trl/bench.py --quick") >= 0
    for line in lines:  # every config a line names exists
        args = shlex.split(line)
        if "--config" in args and args[args.index("--config") + 1].startswith("configs/"):
            assert (ROOT / args[args.index("--config") + 1]).is_file(), line
    assert "take `--set FIELD=VALUE`" in (ROOT / "README.md").read_text().replace("\n", " ")
