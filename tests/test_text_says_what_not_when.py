"""The project speaks of itself: no issue numbers, names of working periods, dates of work or commit hashes in the
code, the documentation, the README or the generated results README. They say what and why, with the measurement;
when it happened is in the git history, and a result's date and commit are in its data (its JSON and file name)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT = {".py", ".md", ".txt", ".yml", ".yaml", ".toml", ".sh"}
FILES = sorted([*(p for p in (ROOT / "src" / "stochgrad").rglob("*") if p.suffix in TEXT),
                *(p for p in (ROOT / "docs").rglob("*") if p.suffix in TEXT),
                ROOT / "README.md", ROOT / "mkdocs.yml", ROOT / "benchmarks" / "results" / "README.md"])
FORBIDDEN = {
    "an issue number": re.compile(r"\bissues?\s*#?\d+", re.I),
    "a working session": re.compile(r"\bsessions?\b", re.I),
    "a working period's folder name": re.compile(r"\b(?:s[3-8](?:i13|core|final|local|fast|rebar|lead_quiet)?|i1[0-3])\b"),
    "a date": re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b"),
    "a commit hash": re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])(?:[0-9a-f]{7,12}|[0-9a-f]{40})\b"),
}
RESULT_FILE = re.compile(r"\d{4}-\d\d-\d\d_[0-9a-f]{7}\.(?:json|png)")   # a result's name: its date and commit


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_no_history_in_the_text(path):
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = RESULT_FILE.sub("", line)
        found += [f"{path.relative_to(ROOT)}:{number}: {what}: {m.group(0)!r}"
                  for what, pattern in FORBIDDEN.items() for m in pattern.finditer(line)]
    assert not found, "say what and why instead:\n" + "\n".join(found)


def test_the_patterns_catch_what_they_are_for():
    caught = {what: bool(p.search(text)) for (what, p), text in zip(FORBIDDEN.items(), [
        "measured in issue 12", "in session 4", "benchmarks/results/s5core", "on 2026-11-28", "at commit a19bee3"])}
    assert all(caught.values()), caught
    harmless = "md5 2ce86e4daeeff3a0cdebce6897c784ba, lr 1e-3, seed 0, Eq. 7, 2013, sha 3f2a"
    assert not any(p.search(harmless) for p in FORBIDDEN.values())
