"""No machine paths in committed files (issue 28 item 5): results, JSON, Markdown, YAML and HTML
files under version control record paths relative to the checkout, never the absolute home, work
or temporary directories of the machine they were written on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = (".json", ".jsonl", ".md", ".csv", ".txt", ".yaml", ".yml", ".html", ".toml")
#: an absolute path under a machine's home, work or temporary directories
MACHINE_PATH = re.compile(r"(?<![\w.~$/-])/(?:home|work|tmp|root|Users|mnt|scratch|opt|private|"
                          r"var/folders)/[^\s\"'`)]*")
#: in Markdown, the value of a command's --out/--to is the reader's choice, not a recorded path
CHOSEN = re.compile(r"--(?:out|to)\s+$")


def committed() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / f for f in out.split("\0") if f.endswith(SUFFIXES)]


def machine_paths(text: str, markdown: bool) -> list[str]:
    return [m.group(0) for m in MACHINE_PATH.finditer(text)
            if not (markdown and CHOSEN.search(text[max(0, m.start() - 12):m.start()]))]


def test_the_pattern_finds_machine_paths_and_spares_relative_ones():
    assert machine_paths('{"run": "/home/alice/scorealign/runs/x"}', False) == [
        "/home/alice/scorealign/runs/x"]
    assert machine_paths("wrote /tmp/pytest-of-root/p0/a.json", False) == [
        "/tmp/pytest-of-root/p0/a.json"]
    assert machine_paths('"path": "/work/main/.venv/bin/python"', False)
    assert not machine_paths('{"run": "runs/x", "url": "https://example.org/tmp/a"}', False)
    assert not machine_paths("run.py --quick --out /tmp/mb   # the test", True)
    assert machine_paths("run.py --quick --out /tmp/mb", False)


def test_no_committed_file_records_a_machine_path():
    found = []
    for f in committed():
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        found += [f"{f.relative_to(ROOT)}: {p}" for p in machine_paths(text, f.suffix == ".md")]
    assert not found, "machine paths in committed files:\n" + "\n".join(found[:20])
