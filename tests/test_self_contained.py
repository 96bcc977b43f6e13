"""The code base is self-contained: comments, docstrings and configs cite only the paper (arXiv 2508.10104) or a
file path in Meta's official repository, never notes outside this repository nor issue-tracker ids."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED_DIRS = ("src", "tests", "training", "examples", "bench")
SCANNED_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".txt", ".toml", ".cfg", ".ini", ".sh"}

# Every pattern is assembled from pieces so that this file's own source does not match it.
_NOTE_NAMES = ("official" + "_dinov3", "official" + "_dense_heads", "hf" + "_ecosystem", "training" + "_and_data")
# A requirement label of a tracker's acceptance list: a capital and one or two digits, or several joined by "/", "," or
# "and"; the norms L1 / L2 and the F1 score are ordinary terms.
_LABEL = r"(?!L[12]\b)[A-Z]" + r"\d{1,2}\b(?!\s+score)"
_LABELS = _LABEL + r"(?:\s*(?:/|,|&|and)\s*" + _LABEL + ")*"
FORBIDDEN: dict[str, re.Pattern[str]] = {
    "research note file": re.compile(r"\b(?:" + "|".join(_NOTE_NAMES) + r")\b"),
    "research notes folder": re.compile("shared" + "/research"),
    "research notes": re.compile("research" + r"\s+notes?\b", re.IGNORECASE),
    "section of a .md note": re.compile(r"\.md\s*" + "\u00a7"),
    "issue number": re.compile(r"\b(?:issue|pr|pull request)s?\s*#?\s*" + r"\d+", re.IGNORECASE),
    "repo#number": re.compile(r"\b[\w.-]+" + "#" + r"\d+\b"),
    "#number": re.compile(r"(?<![\w&'\"/])" + "#" + r"\d{1,5}\b"),
    # a label right after a docstring's opening quotes or a comment's `#` (and any section dashes), or in parentheses
    "requirement label opening a docstring or comment": re.compile(
        r"(?:\"\"\"|'''|#)[\s#-]*" + _LABELS + r"(?=[\s:'),.]|$)"
    ),
    "requirement label in parentheses": re.compile(r"(?<!\S)\(\s*" + _LABELS + r"(?:\s+part\s+\d+)?\s*\)"),
}


def scan(root: Path = ROOT) -> list[str]:
    """All `path:line: text [pattern]` hits of the forbidden patterns in the scanned folders, this file excluded."""
    this_file = Path(__file__).resolve()
    hits = []
    for folder in SCANNED_DIRS:
        for path in sorted((root / folder).rglob("*")):
            if not path.is_file() or path.suffix not in SCANNED_SUFFIXES or path.resolve() == this_file:
                continue
            for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                labels = [label for label, pattern in FORBIDDEN.items() if pattern.search(line)]
                if labels:
                    hits.append(f"{path.relative_to(root)}:{lineno}: {line.strip()} [{', '.join(labels)}]")
    return hits


def test_patterns_catch_citations_and_spare_ordinary_code() -> None:
    bad = [
        "# see " + _NOTE_NAMES[0] + ".md " + "\u00a7" + "6.5",
        '"""Heads (' + _NOTE_NAMES[1] + ".md)." + '"""',
        "# facts from " + "shared" + "/research",
        "# see the " + "research" + " notes, part B",
        "# (" + "issue" + " 5, C3)",
        "# upstream dinov3" + "#" + "286",
        "# fixed in PR " + "#" + "342",
        '"""F' + '3: schedules match the official builders."""',
        "# -- A" + "2: round trips ----------",
        '    """E' + "1 / E" + "5 / H" + '5: the tokenizer gives open_clip\'s ids."""',
        '"""Official head checkpoints (D' + '5 part 2): each layout loads."""',
        "    assert x  # (B" + "4)",
        "# F" + "1's budget: 300 steps",
        '    """E' + '4 at a small budget: zero-shot above chance."""',
        "## C" + "3 and C" + "5: distillation",
    ]
    for line in bad:
        assert any(p.search(line) for p in FORBIDDEN.values()), line
    good = [
        'colors = ["#999999", "#1f77b4"]',
        "x = y[1]  # 2 heads",
        "# `dinov3/loss/gram_loss.py`, arXiv 2508.10104",
        "tissue 5 is fine",
        'F1_WEIGHT = 0.5',
        '"""L2-normalised rows of `features`."""',
        "# L2 norm over the last dimension",
        "# F1 score per class",
        'colors = ["#E5E5E5", "#A1B2C3"]',
        "# (B, C, H, W) on an H100; bf16 as on the C4 stage",
        "y = f(A1) + (B1 + B2) / 2",
    ]
    for line in good:
        assert not any(p.search(line) for p in FORBIDDEN.values()), line


def test_scan_reports_path_and_line(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "mod.py").write_text('"""Fine."""\n\nx = 1  # see ' + _NOTE_NAMES[2] + ".md\n")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "run.yaml").write_text("# fixes " + "issue" + " 7\nlr: 1.0\n")
    (tmp_path / "training" / "plot.png").write_bytes(b"issue" + b" 7")  # not a text source: not scanned
    hits = scan(tmp_path)
    assert [h.split(": ", 1)[0] for h in hits] == ["src/pkg/mod.py:3", "training/run.yaml:1"]
    assert "[research note file]" in hits[0] and "[issue number]" in hits[1]


def test_no_citation_of_notes_or_tracker_ids() -> None:
    hits = scan()
    assert not hits, (
        "cite the paper (arXiv 2508.10104) or Meta's file path (e.g. `dinov3/layers/attention.py`) instead of notes "
        "outside this repository or issue-tracker ids:\n" + "\n".join(hits)
    )
