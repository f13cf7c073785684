"""The project stands alone: no code, docs or test text cites the team's background documents.

Walks the text files of the repository and fails, naming file:line, on any citation of those
documents (their section-sign references or a relative path out of the repository).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCAN = ["python", "cpp", "docs", "tests", "benchmarks", "notebooks", "README.md"]
SUFFIXES = {".py", ".md", ".cpp", ".hpp", ".cu", ".ipynb", ".yaml", ".txt"}
# Built by concatenation so that this file does not match itself.
PATTERNS = [
    "spec " + "\u00a7",
    "spec " + "seed-experiments",
    "spec " + "qk-geometry",
    "spec " + "hf-integration",
    ".." + "/shared",
]
SKIP_DIRS = {".venv", "build", "__pycache__", ".ipynb_checkpoints", "site", "node_modules"}


def _files():
    for name in SCAN:
        path = ROOT / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix in SUFFIXES and not SKIP_DIRS.intersection(f.relative_to(ROOT).parts):
                    yield f


def test_no_citations_of_outside_documents():
    hits = []
    for f in _files():
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for pattern in PATTERNS:
                if pattern in line:
                    hits.append(f"{f.relative_to(ROOT)}:{number}: {pattern!r} in {line.strip()[:120]}")
    assert not hits, "citations of outside documents:\n" + "\n".join(hits)
