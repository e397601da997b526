"""List every verdict sentence of the docs with the table row that supports it (issue 25 item 4).

The convention: a *verdict* is a sentence that concludes from an experiment's numbers (A beats /
needs fewer queries / is faster than B; a claim is supported / not supported; X reaches / does not
reach a bar; no difference). In ``docs/*.md``, ``docs/methods/*.md`` and
``experiments/*/README.md`` every verdict sentence ends with an HTML comment naming the table row
that supports it, on the line where the sentence ends::

    ... LOOP needs fewer queries than DDPO (−305 ± 33). <!-- row: experiments/ground_truth/results/table.md | LOOP − DDPO -->

The path is relative to the repository root and must be a committed markdown file; the text
after ``|`` must occur in exactly one markdown table row (a line starting with ``|``) of it. If
that table has a column saying whether the claim is supported (a header containing
"supported", "significant" or "verdict", cells yes/no), the sentence must agree: a "no" row needs
a sentence that says so ("not supported", "no difference resolved", "not resolved",
"inconclusive", "not significant", "covers 0"); a "yes" row forbids those phrases.

Checks, each a failure (exit status 1):

* a marker whose file is missing, not markdown, or (in a git checkout) not committed;
* a marker whose key matches no table row, or more than one;
* a marked sentence that disagrees with the row's supported column;
* a verdict-like sentence without a marker. "Verdict-like" is a heuristic: a conclusive or
  comparative cue (beats, outperforms, better/worse/faster/slower/higher/lower than,
  fewer/more … than, reaches / does not reach, no difference, converges, (not) supported,
  confirmed/refuted, reproduces, wins, the same curve, …) together with evidence from numbers
  (a decimal, ±, a percentage, an N× ratio, "N/M" or "N of M" runs) or a method's name (LOOP,
  DDPO, GRPO, …). Code (fenced, indented, inline), links, equations, headings, table rows and
  questions are not sentences here; a sentence that only reports what a paper claims
  ("the LOOP paper claims …") is not a verdict of ours.

Usage: ``python scripts/check_verdicts.py [--root DIR] [--failures-only] [FILE ...]``. With no
FILE, every doc of the convention under the root. Prints ``doc:line: STATUS sentence -> row``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_GLOBS = ("docs/*.md", "docs/methods/*.md", "experiments/*/README.md")

MARKER = re.compile(r"<!--\s*row:\s*(?P<path>[^|>]+?)\s*\|\s*(?P<key>.+?)\s*-->")

# --- the verdict heuristic --------------------------------------------------------------------

#: conclusive / comparative wording
CUE = re.compile(
    r"\b(?:"
    r"beat(?:s|en|ing)?|outperform(?:s|ed|ing)?|"
    r"(?:better|worse|faster|slower|cheaper|costlier|higher|lower|larger|smaller|greater|"
    r"quicker|sooner|stronger|weaker|more\s+stable|less\s+stable)\s+than|"
    r"(?:fewer|more|less)\s+(?:\S+\s+){0,3}?than|"
    r"(?:does|do|did)\s+not\s+(?:reach|beat|outperform|converge|reproduce|improve|help|move)|"
    r"reach(?:es|ed)?|"
    r"no\s+(?:\S+\s+){0,2}?difference|indistinguishable|"
    r"converge[sd]?|"
    r"(?:is|are|was|were|not|claims?|claim\s+\S+|hypothesis)\s+(?:not\s+)?supported|"
    r"supported\s+(?:at|by\s+the\s+(?:interval|data|numbers))|"
    r"confirm(?:s|ed)?|refut(?:es|ed)|"
    r"(?:does\s+not\s+)?reproduc(?:es|ed)|"
    r"wins?(?![\s-]+rates?)|won|ties|"
    r"the\s+same\s+curve|on\s+par\s+with|as\s+good\s+as|"
    r"improves?\s+(?:on|over)|gains?\s+over|"
    r"exceed(?:s|ed)?|(?:falls?|fell|stops?|stopped)\s+short|ahead\s+of|"
    r"the\s+(?:best|worst|least\s+\w+|most\s+\w+)|ranks|ranked(?!\s+by)|"
    r"excludes?\s+(?:0|zero)|(?:not\s+)?significant(?:ly)?|"
    r"degrades?|collapsed|collapses|does\s+nothing|is\s+within|are\s+within"
    r")\b",
    re.IGNORECASE)

#: a cue in these contexts describes a protocol, a definition or a bound, not a finding:
#: "to reach", "first reaches", "a schedule that reaches", "no faster than", "more than one",
#: "fewer rounds than planned"
_CUE_BEFORE = re.compile(r"(?:\bto|\bfirst|\bthat|\bwhich|\bwhere|\buntil|\bwhen|\bcan|\bcould|"
                         r"\bwould|\bwill|\bmight|\bmust|\bno)\s+$", re.IGNORECASE)
_CUE_MODAL = re.compile(r"\b(?:could|would|might|may|should)\s+(?:not\s+)?(?:be\s+)?$",
                        re.IGNORECASE)
_CUE_BOUND = re.compile(r"\b(?:cannot|can't|could|would|at\s+least|at\s+most)\b",
                        re.IGNORECASE)
_CUE_THAN_AFTER = re.compile(r"\s*(?:planned|expected|needed|required|requested|allowed|before|"
                             r"usual|intended|budgeted|one\b|once\b)", re.IGNORECASE)

#: numeric evidence: a decimal, ±, a percentage, an N× ratio, N/M or "N of M" (runs, seeds)
NUMBER = re.compile(r"\d\.\d|±|\d\s*%|\d(?:\.\d+)?×(?!\s*\d)|\b\d+\s*/\s*\d+\b|"
                    r"\b\d+\s+of\s+\d+\b")
#: version numbers are not measurements ("SD 1.5", "torch 2.13", "TRL 0.23")
_VERSION = re.compile(r"\b(SD|SDXL|torch|PyTorch|Python|CUDA|TRL|diffusers|transformers|peft|"
                      r"numpy|scipy)\s*v?\d+(?:\.\d+)+")

#: method and solver names of the project's comparisons
METHOD = re.compile(
    r"\b(?:LOOP|DDPO|GRPO|REINFORCE|DPOK|DRaFT|SaA|Score\s+as\s+Action|DiffusionNFT|"
    r"Flow-GRPO(?:-Fast)?|MixGRPO|DanceGRPO|Adjoint\s*Matching|DPO|IPO|KTO|ORPO|SimPO|RPO|"
    r"RainbowPO|MallowsPO|Mallows|CDPM|TRL|PPO|TRPO|(?:CT|DT)-[A-Z]+|ECT|iCT|"
    r"Euler[–-]Maruyama|Heun|DDIM)\b")

#: a sentence that reports someone else's claim (not our measurement), defines a word, or
#: states what a test asserts (a test, not a table, backs it)
PAPER_CLAIM = re.compile(
    r"\b(?:the\s+(?:\S+\s+){0,2}paper|authors?|[A-Z][a-z]+\+\d\d)\s+(?:\S+\s+){0,2}?"
    r"(?:claims?|reports?|argues?|shows?|states?)\b|\bclaims?\s+that\b|"
    r"^\W*\w+\W*\s+means\b|\btests?\b[^.]{0,80}\basserts?\b|\basserted\s+(?:by|in)\b|"
    r"\bby\s+construction\b|^\W*claim\s+tested\b",
    re.IGNORECASE)

#: what a "no" row needs the sentence to say, and a "yes" row forbids
NEGATIVE = re.compile(
    r"\bnot\s+supported\b|\bno\s+(?:\S+\s+){0,2}?difference\b|\bnot\s+resolved\b|"
    r"\bunresolved\b|\bnot\s+significant\b|\binconclusive\b|\bcovers?\s+(?:0|zero)\b|"
    r"\bneither\s+confirmed\s+nor\s+refuted\b|\bnot\s+confirmed\b", re.IGNORECASE)

_ABBREV = re.compile(r"\b(?:e\.g|i\.e|vs|cf|et al|eq|Eq|eqs|Fig|fig|Sec|sec|resp|approx|No|"
                     r"Alg|Thm|Prop|incl|etc)\.", re.UNICODE)
_SENT_END = re.compile(r"(?<=[.!?])[\"'”)\]*_]*\s+(?=[A-Z0-9*_(\[\"“`])")
_BULLET = re.compile(r"^\s*(?:[*+-]|\d+[.)])\s+")


@dataclass
class Sentence:
    """One sentence of a doc: its text, the line it ends on, the markers it carries."""

    doc: str
    line: int
    text: str
    markers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Finding:
    """One listed sentence and what the check found."""

    doc: str
    line: int
    text: str
    row: str
    ok: bool
    why: str = ""  # the failure, or the supporting row's file:line


def _clean(text: str) -> str:
    """The words the heuristic reads: no code, links' targets, URLs, equations, comments."""
    t = re.sub(r"`[^`]*`", " ", text)
    t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)
    t = re.sub(r"https?://\S+|arXiv:\s*\d{4}\.\d{4,5}(?:v\d+)?", " ", t)
    t = re.sub(r"\$[^$]*\$", " ", t)
    t = re.sub(r"<!--.*?-->", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def cues(text: str) -> list[str]:
    """The conclusive/comparative cues of a cleaned sentence that are not in a protocol,
    definition or bound context (:data:`_CUE_BEFORE`, :data:`_CUE_THAN_AFTER`)."""
    out = []
    for m in CUE.finditer(text):
        w = m.group(0).lower()
        if _CUE_MODAL.search(text[max(0, m.start() - 24):m.start()]):
            continue  # "could not be confirmed", "would reach": not a finding
        if w.startswith("reach") and _CUE_BEFORE.search(text[max(0, m.start() - 12):m.start()]):
            continue
        if w.endswith("than") and (_CUE_BEFORE.search(text[max(0, m.start() - 4):m.start()])
                                   or _CUE_BOUND.search(text[max(0, m.start() - 20):m.start()])
                                   or _CUE_THAN_AFTER.match(text, m.end())):
            continue
        out.append(m.group(0))
    return out


def is_verdict_like(text: str) -> bool:
    """The heuristic: a conclusive/comparative cue plus numbers or a method's name; not a
    question, not a report of a paper's own claim, not a definition."""
    t = _clean(text)
    if not t or t.rstrip("*_ )").endswith("?"):
        return False
    if not cues(t) or PAPER_CLAIM.search(t):
        return False
    return bool(NUMBER.search(_VERSION.sub(r"\1", t)) or METHOD.search(t))


def _units(lines: list[str]) -> list[list[tuple[int, str]]]:
    """Paragraphs and bullet items as lists of (line number, text); code (fenced or indented),
    table rows, headings and comments that open a paragraph are left out."""
    units: list[list[tuple[int, str]]] = []
    cur: list[tuple[int, str]] = []
    fence = False
    prev_blank = True
    in_code = False

    def flush() -> None:
        nonlocal cur
        if cur:
            units.append(cur)
        cur = []

    for i, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        s = line.strip()
        if s.startswith("```") or s.startswith("~~~"):
            flush()
            fence = not fence
            prev_blank = False
            continue
        if fence:
            continue
        if not s:
            flush()
            prev_blank, in_code = True, False
            continue
        indented = len(line) - len(line.lstrip(" ")) >= 4 or line.startswith("\t")
        if indented and (prev_blank or in_code) and not cur:
            in_code = True  # an indented code block
            prev_blank = False
            continue
        in_code = False
        prev_blank = False
        if s.startswith(("|", "#")) or (s.startswith("<!--") and not cur
                                         and not MARKER.match(s)):
            flush()
            continue
        if _BULLET.match(line):
            flush()
        cur.append((i, s))
    flush()
    return units


def sentences(doc: str, text: str) -> list[Sentence]:
    """The sentences of a markdown doc with the markers that follow them."""
    out: list[Sentence] = []
    for unit in _units(text.splitlines()):
        joined, ends = "", []  # ends[k] = (offset of the end of line k in joined, line number)
        for n, s in unit:
            joined += (" " if joined else "") + s
            ends.append((len(joined), n))

        def line_at(off: int) -> int:
            for e, n in ends:
                if off <= e:
                    return n
            return ends[-1][1]

        pos = 0
        chunks: list[list] = []  # [start, end of the text, markers]
        for m in MARKER.finditer(joined):
            mark = (m["path"].strip(), m["key"].strip())
            if chunks and chunks[-1][2] and not joined[pos:m.start()].strip():
                chunks[-1][2].append(mark)  # several rows cited by one sentence
            else:
                chunks.append([pos, m.start(), [mark]])
            pos = m.end()
        if joined[pos:].strip():
            chunks.append([pos, len(joined), []])
        for start, end, marks in chunks:
            body = joined[start:end]
            prot = _ABBREV.sub(lambda mm: mm.group(0).replace(".", "\x00"), body)
            cuts = [0] + [m.end() for m in _SENT_END.finditer(prot)] + [len(prot)]
            parts = [(cuts[k], cuts[k + 1]) for k in range(len(cuts) - 1)
                     if prot[cuts[k]:cuts[k + 1]].strip()]
            if marks and not parts:  # a marker that follows no sentence
                out.append(Sentence(doc, line_at(end + 1), "", list(marks)))
            for k, (a, b) in enumerate(parts):
                last = k == len(parts) - 1
                stop = start + len(body[:b].rstrip())
                out.append(Sentence(doc, line_at(stop), re.sub(r"\s+", " ", body[a:b].strip()),
                                    list(marks) if last else []))
    return out


# --- the rows ---------------------------------------------------------------------------------


def _cells(row: str) -> list[str]:
    s = row.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|"):
        s = s[:-1]
    return [c.strip() for c in s.split("|")]


def table_rows(path: Path) -> list[tuple[int, str, list[str] | None]]:
    """Every table row of a markdown file: (line, text, header cells of its table or None)."""
    rows, header, prev = [], None, None
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not s.startswith("|"):
            header, prev = None, None
            continue
        if re.fullmatch(r"\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?", s):
            header = _cells(prev) if prev is not None else None
            continue
        rows.append((i, s, header))
        prev = s
    return rows


_SUPPORT_COL = re.compile(r"supported|significant|verdict", re.IGNORECASE)


def support_value(row: str, header: list[str] | None) -> bool | None:
    """True / False from the row's supported column (yes/no), None if it has none."""
    if not header:
        return None
    cols = [k for k, h in enumerate(header) if _SUPPORT_COL.search(h)]
    cells = _cells(row)
    for k in cols:
        if k < len(cells):
            v = re.sub(r"[*_`]", "", cells[k]).strip().lower()
            if re.match(r"(yes|supported)\b", v):
                return True
            if re.match(r"(no|not supported)\b", v):
                return False
    return None


def _committed(root: Path) -> set[str] | None:
    """Tracked files of the git checkout at ``root`` (None when it is not a checkout's top)."""
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, check=True).stdout.strip()
        if Path(top).resolve() != root.resolve():
            return None
        out = subprocess.run(["git", "-C", str(root), "ls-files"], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(out.splitlines())


def check_marker(root: Path, path: str, key: str, sentence: str, committed: set[str] | None,
                 cache: dict) -> tuple[bool, str]:
    """(ok, reason) for one marker of one sentence."""
    p = root / path
    if not path.endswith(".md"):
        return False, f"{path} is not a markdown file"
    if not p.is_file():
        return False, f"{path} does not exist"
    if committed is not None and path not in committed:
        return False, f"{path} is not committed"
    if path not in cache:
        cache[path] = table_rows(p)
    hits = [(n, r, h) for n, r, h in cache[path] if key in r]
    if not hits:
        return False, f"no table row of {path} contains {key!r}"
    if len(hits) > 1:
        return False, (f"{len(hits)} table rows of {path} contain {key!r} (lines "
                       f"{', '.join(str(n) for n, _, _ in hits)})")
    n, row, header = hits[0]
    sup = support_value(row, header)
    neg = bool(NEGATIVE.search(_clean(sentence)))
    if sup is False and not neg:
        return False, (f"row {path}:{n} says not supported; the sentence must say so "
                       "(\"not supported\", \"no difference resolved\", …)")
    if sup is True and neg:
        return False, f"row {path}:{n} says supported; the sentence says it is not"
    return True, f"{path}:{n}"


def check_doc(root: Path, doc: Path, committed: set[str] | None, cache: dict) -> list[Finding]:
    """Every marked or verdict-like sentence of one doc, checked."""
    rel = str(doc.resolve().relative_to(root.resolve())) if doc.resolve().is_relative_to(
        root.resolve()) else str(doc)
    out = []
    for s in sentences(rel, doc.read_text(encoding="utf-8")):
        if s.markers:
            for path, key in s.markers:
                ok, why = check_marker(root, path, key, s.text, committed, cache)
                if not s.text:
                    ok, why = False, "a marker that follows no sentence"

                out.append(Finding(rel, s.line, s.text, f"{path} | {key}", ok, why))
        elif is_verdict_like(s.text):
            out.append(Finding(rel, s.line, s.text, "", False, "verdict-like sentence without "
                               "a <!-- row: PATH | KEY --> marker"))
    return out


def docs(root: Path) -> list[Path]:
    """The docs the convention covers, sorted."""
    return sorted({p for g in DOC_GLOBS for p in root.glob(g) if p.is_file()})


def run(root: Path, files: list[Path] | None = None) -> list[Finding]:
    """All findings under ``root`` (or in ``files``)."""
    committed = _committed(root)
    cache: dict = {}
    out: list[Finding] = []
    for d in files or docs(root):
        out += check_doc(root, d, committed, cache)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--failures-only", action="store_true")
    a = ap.parse_args(argv)
    root = a.root.resolve()
    files = [f if f.is_absolute() else root / f for f in a.files] or None
    found = run(root, files)
    bad = [f for f in found if not f.ok]
    for f in found:
        if a.failures_only and f.ok:
            continue
        text = f.text if len(f.text) <= 160 else f.text[:157] + "..."
        status = "ok  " if f.ok else "FAIL"
        print(f"{f.doc}:{f.line}: {status} {text}")
        print(f"    -> {f.row or '(no row)'}" + (f"  [{f.why}]" if f.why else "")
              if not f.ok else f"    -> {f.row} ({f.why})")
    n_docs = len(files or docs(root))
    print(f"{len(found)} verdict sentences in {n_docs} docs; {len(bad)} failures", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
