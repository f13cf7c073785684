"""The King James Bible as the zoo's training corpus.

The text ships compressed inside the package (``assets/corpus/kjv.txt.xz``) so that training,
evaluation and tests never need the network. Format: one chapter per paragraph, chapters separated
by one blank line; each chapter starts with a heading line ``"<Book> <chapter>"`` followed by one
verse per line, verse numbers stripped. The split into train and held-out text is by whole
chapters (every ``HELDOUT_EVERY``-th chapter is held out), so both splits cover every genre of the
book while no held-out verse is ever seen in training.
"""

from __future__ import annotations

import functools
import lzma
import re
import subprocess
from pathlib import Path

from spectra.models.zoo.paths import CORPUS_FILE

HELDOUT_EVERY = 20
"""Chapters whose 1-based position in the whole Bible is a multiple of this are held out."""

# Abbreviations printed by Debian's `bible` program, in canonical order, with the full names used
# in the chapter headings.
BOOKS: dict[str, str] = {
    "Ge": "Genesis",
    "Exo": "Exodus",
    "Lev": "Leviticus",
    "Num": "Numbers",
    "Deu": "Deuteronomy",
    "Josh": "Joshua",
    "Jdgs": "Judges",
    "Ruth": "Ruth",
    "1Sm": "1 Samuel",
    "2Sm": "2 Samuel",
    "1Ki": "1 Kings",
    "2Ki": "2 Kings",
    "1Chr": "1 Chronicles",
    "2Chr": "2 Chronicles",
    "Ezra": "Ezra",
    "Neh": "Nehemiah",
    "Est": "Esther",
    "Job": "Job",
    "Psa": "Psalms",
    "Prv": "Proverbs",
    "Eccl": "Ecclesiastes",
    "SSol": "Song of Solomon",
    "Isa": "Isaiah",
    "Jer": "Jeremiah",
    "Lam": "Lamentations",
    "Eze": "Ezekiel",
    "Dan": "Daniel",
    "Hos": "Hosea",
    "Joel": "Joel",
    "Amos": "Amos",
    "Obad": "Obadiah",
    "Jonah": "Jonah",
    "Mic": "Micah",
    "Nahum": "Nahum",
    "Hab": "Habakkuk",
    "Zep": "Zephaniah",
    "Hag": "Haggai",
    "Zec": "Zechariah",
    "Mal": "Malachi",
    "Mat": "Matthew",
    "Mark": "Mark",
    "Luke": "Luke",
    "John": "John",
    "Acts": "Acts",
    "Rom": "Romans",
    "1Cor": "1 Corinthians",
    "2Cor": "2 Corinthians",
    "Gal": "Galatians",
    "Eph": "Ephesians",
    "Phi": "Philippians",
    "Col": "Colossians",
    "1Th": "1 Thessalonians",
    "2Th": "2 Thessalonians",
    "1Tim": "1 Timothy",
    "2Tim": "2 Timothy",
    "Titus": "Titus",
    "Phmn": "Philemon",
    "Heb": "Hebrews",
    "Jas": "James",
    "1Pet": "1 Peter",
    "2Pet": "2 Peter",
    "1Jn": "1 John",
    "2Jn": "2 John",
    "3Jn": "3 John",
    "Jude": "Jude",
    "Rev": "Revelation",
}

_VERSE = re.compile(r"(?P<book>[1-3]?[A-Za-z]+)(?P<chapter>\d+):(?P<verse>\d+) (?P<text>.+)")


def clean(raw: str) -> str:
    """Turn ``bible -f`` output into the corpus format described in the module docstring.

    Every line must parse and every book must appear in canonical order; anything else means the
    Debian package changed and the committed corpus should not be silently replaced.

    >>> clean("Ge1:1 In the beginning.\\nGe1:2 And  the earth.\\nGe2:1 Thus.")
    'Genesis 1\\nIn the beginning.\\nAnd the earth.\\n\\nGenesis 2\\nThus.\\n'
    """
    chapters: list[list[str]] = []
    current: tuple[str, str] | None = None
    books_seen: list[str] = []
    for line in raw.splitlines():
        match = _VERSE.fullmatch(line.strip())
        if match is None or match["book"] not in BOOKS:
            raise ValueError(f"unexpected line in bible output: {line!r}")
        if (match["book"], match["chapter"]) != current:
            current = (match["book"], match["chapter"])
            if not books_seen or books_seen[-1] != match["book"]:
                books_seen.append(match["book"])
            chapters.append([f"{BOOKS[match['book']]} {match['chapter']}"])
        chapters[-1].append(" ".join(match["text"].split()))
    if books_seen != list(BOOKS)[: len(books_seen)]:
        raise ValueError("books are not in canonical order")
    return "\n\n".join("\n".join(chapter) for chapter in chapters) + "\n"


def build_corpus(path: Path = CORPUS_FILE) -> Path:
    """Regenerate the committed corpus from Debian's ``bible-kjv`` (maintainers only).

    Needs the ``bible`` program (``apt-get install bible-kjv``); never called at run time.
    Example (writes the file)::

        python -m spectra.models.zoo.corpus
    """
    raw = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    if not raw.strip():
        raise RuntimeError("`bible -f` printed nothing; is bible-kjv-text installed?")
    text = clean(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    # xz output is a pure function of input and preset, so regeneration is byte-reproducible.
    path.write_bytes(lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
    return path


@functools.cache
def corpus_text() -> str:
    """The whole cleaned corpus, decompressed once per process.

    >>> corpus_text().splitlines()[:2]
    ['Genesis 1', 'In the beginning God created the heaven and the earth.']
    """
    return lzma.decompress(CORPUS_FILE.read_bytes()).decode("utf-8")


def chapters() -> list[str]:
    """All 1189 chapters in canonical order, each with its heading line.

    >>> len(chapters()), chapters()[-1].splitlines()[0]
    (1189, 'Revelation 22')
    """
    return corpus_text().strip("\n").split("\n\n")


def _split(heldout: bool) -> str:
    picked = (c for i, c in enumerate(chapters(), 1) if (i % HELDOUT_EVERY == 0) == heldout)
    return "\n\n".join(picked) + "\n"


def train_text() -> str:
    """Training split: every chapter that is not held out, in the corpus format.

    >>> train_text().startswith("Genesis 1\\n")
    True
    """
    return _split(heldout=False)


def heldout_text() -> str:
    """Held-out split: chapters 20, 40, 60, ... of the whole Bible, never used for training.

    >>> heldout_text().splitlines()[0]
    'Genesis 20'
    """
    return _split(heldout=True)


if __name__ == "__main__":
    print(build_corpus())
