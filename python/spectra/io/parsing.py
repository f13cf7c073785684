"""Parsing the comma-separated values that the CLI and run configs accept (``"0,2,5-7"``, ``"q,k"``)."""

from __future__ import annotations

from collections.abc import Sequence


def parse_ints(text: str | None) -> list[int] | None:
    """``"0,2,5-7"`` → [0, 2, 5, 6, 7]; None stays None."""
    if text is None:
        return None
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            values.extend(range(int(lo), int(hi) + 1))
        else:
            values.append(int(part))
    return values


def split_names(text: str) -> Sequence[str]:
    return tuple(part.strip() for part in text.split(",") if part.strip())
