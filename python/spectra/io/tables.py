"""Checks shared by every reader of a result table."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def check_frame(frame: pd.DataFrame, required: Sequence[str], name: str) -> None:
    """The input check every figure function shares: a non-empty DataFrame holding ``required``,
    else a TypeError, ValueError or KeyError naming ``name`` and what it has."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, not {type(frame).__name__}")
    if frame.empty:
        raise ValueError(f"{name} is empty (columns {list(frame.columns)})")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise KeyError(f"{name} has no column(s) {missing}; it has {list(frame.columns)}")
