"""scripts/check_verdicts.py: markers, rows, the supported column, the verdict heuristic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_verdicts",
                                                  ROOT / "scripts" / "check_verdicts.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["check_verdicts"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


cv = _checker()

TABLE = """# Results

| claim | n | paired diff (95 %) | supported at FWER 0.05 |
|---|---|---|---|
| LOOP − DDPO: queries | 10 | -305 ± 33 | yes |
| GRPO − DDPO: final reward | 10 | 0.01 ± 0.05 | no |
| GRPO − DDPO: final gold | 10 | -0.20 ± 0.05 | yes |

| method | reward |
|---|---|
| LOOP | 0.30 |
"""


def _repo(tmp_path: Path, doc: str) -> Path:
    """A synthetic checkout: one results table and one experiment README holding ``doc``."""
    (tmp_path / "experiments" / "x" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "experiments" / "x" / "results" / "table.md").write_text(TABLE)
    (tmp_path / "experiments" / "x" / "README.md").write_text(doc)
    return tmp_path


def _findings(tmp_path: Path, doc: str):
    root = _repo(tmp_path, doc)
    return cv.run(root), cv.main(["--root", str(root)])


T = "experiments/x/results/table.md"


def test_a_good_marker_passes_and_is_listed(tmp_path, capsys):
    doc = ("# X\n\nSome protocol text without any finding.\n\n"
           f"LOOP needs fewer queries than DDPO (−305 ± 33). <!-- row: {T} | LOOP − DDPO: "
           "queries -->\n")
    found, rc = _findings(tmp_path, doc)
    assert rc == 0
    assert len(found) == 1 and found[0].ok and found[0].line == 5
    assert found[0].row == f"{T} | LOOP − DDPO: queries"
    out = capsys.readouterr().out
    assert "experiments/x/README.md:5: ok" in out and "table.md:5" in out


def test_a_marker_on_a_wrapped_sentence_attaches_to_that_sentence_only(tmp_path):
    doc = ("Intro sentence. LOOP needs fewer queries than DDPO\n"
           f"(−305 ± 33). <!-- row: {T} | LOOP − DDPO: queries --> A closing remark.\n")
    found, rc = _findings(tmp_path, doc)
    assert rc == 0
    assert [f.text for f in found] == ["LOOP needs fewer queries than DDPO (−305 ± 33)."]
    assert found[0].line == 2


def test_missing_file_missing_row_and_non_markdown_fail(tmp_path):
    doc = (f"- LOOP beats DDPO by 0.2. <!-- row: {T} | LOOP − REINFORCE -->\n"
           "- DDPO beats GRPO by 0.1. <!-- row: experiments/x/results/none.md | GRPO -->\n"
           "- GRPO beats LOOP by 0.1. <!-- row: experiments/x/results/table.json | GRPO -->\n")
    found, rc = _findings(tmp_path, doc)
    assert rc == 1
    why = [f.why for f in found]
    assert not any(f.ok for f in found)
    assert "no table row" in why[0] and "does not exist" in why[1] and "not a markdown" in why[2]


def test_an_ambiguous_key_fails(tmp_path):
    doc = f"GRPO has a lower gold than DDPO (−0.20 ± 0.05). <!-- row: {T} | GRPO − DDPO -->\n"
    found, rc = _findings(tmp_path, doc)
    assert rc == 1 and len(found) == 1 and "2 table rows" in found[0].why


def test_an_unmarked_verdict_fails(tmp_path):
    doc = "# X\n\nLOOP beats DDPO per reward query (0.30 vs 0.25).\n"
    found, rc = _findings(tmp_path, doc)
    assert rc == 1
    assert len(found) == 1 and not found[0].ok and found[0].line == 3
    assert "without" in found[0].why


@pytest.mark.parametrize("sentence, ok", [
    ("GRPO's final reward is higher than DDPO's (+0.01 ± 0.05).", False),  # row says no
    ("GRPO − DDPO final reward: no difference resolved (+0.01 ± 0.05).", True),
    ("GRPO's higher final reward is not supported (+0.01 ± 0.05).", True),
])
def test_a_no_row_needs_a_sentence_that_says_so(tmp_path, sentence, ok):
    doc = f"{sentence} <!-- row: {T} | GRPO − DDPO: final reward -->\n"
    found, rc = _findings(tmp_path, doc)
    assert len(found) == 1 and found[0].ok is ok and rc == (0 if ok else 1)
    if not ok:
        assert "says not supported" in found[0].why


def test_a_yes_row_forbids_a_negative_sentence(tmp_path):
    doc = (f"GRPO's gold is lower than DDPO's, not supported (−0.20 ± 0.05). <!-- row: {T} | "
           "GRPO − DDPO: final gold -->\n"
           f"GRPO's gold is lower than DDPO's (−0.20 ± 0.05). <!-- row: {T} | "
           "GRPO − DDPO: final gold -->\n")
    found, rc = _findings(tmp_path, doc)
    assert [f.ok for f in found] == [False, True] and rc == 1


def test_a_row_without_a_supported_column_only_needs_to_exist(tmp_path):
    doc = f"LOOP reaches 0.30. <!-- row: {T} | LOOP | 0.30 -->\n"
    found, rc = _findings(tmp_path, doc)
    # the key "LOOP | 0.30" occurs only in the second table's row
    assert rc == 0 and found[0].ok


def test_several_rows_on_one_sentence_are_each_checked(tmp_path):
    doc = (f"LOOP needs fewer queries than DDPO (−305 ± 33). <!-- row: {T} | LOOP − DDPO: "
           f"queries --> <!-- row: {T} | LOOP − X -->\n")
    found, rc = _findings(tmp_path, doc)
    assert [f.ok for f in found] == [True, False] and rc == 1
    assert found[0].text == found[1].text


def test_uncommitted_table_fails_in_a_git_checkout(tmp_path):
    import subprocess

    doc = f"LOOP needs fewer queries than DDPO (−305 ± 33). <!-- row: {T} | LOOP − DDPO: queries -->\n"
    root = _repo(tmp_path, doc)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    found = cv.run(root)
    assert not found[0].ok and "not committed" in found[0].why
    subprocess.run(["git", "-C", str(root), "add", T], check=True)
    assert cv.run(root)[0].ok


@pytest.mark.parametrize("text", [
    "LOOP beats DDPO per reward query (0.30 vs 0.25).",
    "GRPO reaches a higher reward than DDPO at every epoch.",
    "No difference is resolved between LOOP and DDPO (−0.03 ± 0.05).",
    "The claim is not supported at this scale (3/5 seeds).",
    "REINFORCE needs fewer queries than LOOP: 125 vs 311.",
    "MixGRPO is 1.8× faster than Flow-GRPO.",
    "Score as Action does not give the same curve on the three solvers.",
])
def test_the_heuristic_flags_verdicts(text):
    assert cv.is_verdict_like(text)


@pytest.mark.parametrize("text", [
    "LOOP uses leave-one-out advantages over K rollouts per prompt.",
    "Does LOOP beat DDPO per reward query (Gupta+25, arXiv:2503.00897)?",
    "The LOOP paper claims that LOOP beats PPO per sample.",
    "Queries to reach DDPO's final reward are interpolated linearly.",
    "Each run's reward is read where its KL first reaches the budget κ.",
    "The compute rows have fewer rounds than planned: each took 130 s at 5 % of a core.",
    "The SD 1.5 UNet converges in fewer steps with a better schedule.",  # no number, no method
    "The oracle win rate against the SFT model is 0.65 on 512 prompts.",
    "A pair can fix more than one finding of RPO's critic.",
    "An epoch cannot cost less than 0.7 of TRL's.",
    "\"Supported\" means the paired difference is non-zero; the arm has not reached 0.5.",
])
def test_the_heuristic_leaves_descriptive_text_alone(text):
    assert not cv.is_verdict_like(text)


def test_code_tables_and_headings_are_not_sentences():
    doc = ("# LOOP beats DDPO by 0.2\n\n"
           "```\nLOOP beats DDPO by 0.2.\n```\n\n"
           "    LOOP beats DDPO by 0.2 (indented code).\n\n"
           "| LOOP beats DDPO by 0.2 | yes |\n|---|---|\n\n"
           "Plain text, e.g. a description. `LOOP beats DDPO by 0.2` in code.\n")
    sents = cv.sentences("d.md", doc)
    assert [s.text for s in sents] == ["Plain text, e.g. a description.",
                                      "`LOOP beats DDPO by 0.2` in code."]
    assert not any(cv.is_verdict_like(s.text) for s in sents)


def test_support_value_reads_yes_and_no():
    header = ["claim", "p", "supported at FWER 0.05"]
    assert cv.support_value("| a | 0.01 | **yes** |", header) is True
    assert cv.support_value("| a | 0.5 | no |", header) is False
    assert cv.support_value("| a | 0.5 | no |", ["claim", "p", "note"]) is None


def test_the_repository_docs(capsys):
    """The checker runs on the repository and lists every finding; the docs pass when every
    verdict carries a row that supports it (the listing names each failure)."""
    found = cv.run(ROOT)
    bad = [f"{f.doc}:{f.line}: {f.why}: {f.text[:120]}" for f in found if not f.ok]
    assert cv.main(["--failures-only"]) == (1 if bad else 0)
    assert not bad, "\n".join(bad)


def test_a_marker_that_follows_no_sentence_fails(tmp_path):
    doc = f"# X\n\n<!-- row: {T} | LOOP − DDPO: queries -->\n"
    found, rc = _findings(tmp_path, doc)
    assert rc == 1 and len(found) == 1 and "follows no sentence" in found[0].why


@pytest.mark.parametrize("text, verdict", [
    ("DPOK stops short of the optimum (−2.235 ± 0.109).", True),
    ("Flow-GRPO-Fast falls short by 0.024 ± 0.023.", True),
    ("The interval excludes 0 for LOOP.", True),
    ("Two samples per prompt are ranked by an oracle into 1024 pairs; DPO trains on them.", False),
    ("LoRA rank 4 adapters on DDPO's UNet.", False),
    ("Collapse: a final reward below the base's − 0.1.", False),
    ("The test asserts that DDPO's update is within 1e-6 of the hand-computed one.", False),
])
def test_the_heuristic_on_more_wording(text, verdict):
    assert cv.is_verdict_like(text) is verdict


@pytest.mark.parametrize("text", [
    "The paper's CT-PPO form could not be confirmed; 0.5 is a third-party reading.",
    "Flow-GRPO-Fast makes fewer evaluations than Flow-GRPO by construction.",
    "Claim tested (Tang & Zhao 24, CDPM): expanding drifts give the best score error.",
])
def test_modal_constructive_and_claim_statements_are_not_verdicts(text):
    assert not cv.is_verdict_like(text)
