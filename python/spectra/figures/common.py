"""Axis helpers shared by the figure modules."""

from __future__ import annotations

import numpy as np


def set_index_ticks(set_ticks, set_labels, values: np.ndarray, max_ticks: int = 16) -> None:
    step = max(1, int(np.ceil(len(values) / max_ticks)))
    positions = np.arange(0, len(values), step)
    set_ticks(positions)
    set_labels([str(v) for v in values[positions]])
