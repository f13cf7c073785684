"""The input checks and drawing helpers shared by the attention-plasticity figures
(:mod:`spectra.figures.plasticity`, :mod:`spectra.figures.plasticity_heatmaps`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps

from spectra.geometry import checkpoint_order
from spectra.io.tables import check_frame

#: Trend colours of :func:`profile_figure` (as the published ``plot_plasticity.py``).
TREND_COLOURS = {"rising": "green", "falling": "red", "flat": "gray"}
_COLOR_BY = ("trend", "layer", "none")
_AGGS = ("mean", "median")
_PANELS_PER_ROW = 4
_MAX_TICKS = 16


class MissingColumnsError(KeyError, ValueError):
    """A required column is missing: a ``ValueError`` (this module's contract) that is also the
    ``KeyError`` :func:`spectra.io.tables.check_frame` raises elsewhere."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _check(frame: pd.DataFrame, required: Sequence[str], name: str) -> None:
    try:
        check_frame(frame, list(required), name)
    except KeyError as error:
        raise MissingColumnsError(error.args[0]) from None


def _option(value, options: Sequence[str], name: str) -> None:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, not {value!r}")


def _single_model(frame: pd.DataFrame, name: str, alternative: str) -> str | None:
    """The one checkpoint label of ``frame`` (None without a ``checkpoint`` column); several raise."""
    if "checkpoint" not in frame:
        return None
    labels = list(frame["checkpoint"].drop_duplicates())
    if len(labels) > 1:
        raise ValueError(f"{name} holds {len(labels)} checkpoints {labels[:6]}; select one, or use {alternative}")
    return None if pd.isna(labels[0]) else str(labels[0])


def _group_order(frame: pd.DataFrame, by: str, name: str) -> list:
    if frame[by].isna().any():
        raise ValueError(f"{name}[{by!r}] has missing labels")
    return checkpoint_order(frame) if by == "checkpoint" else list(frame[by].drop_duplicates())


def _group_colours(n: int, sequential: bool) -> list:
    """A sequential map for checkpoints (early dark, late bright), a qualitative cycle otherwise."""
    if sequential:
        return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, n)] if n > 1 else ["tab:blue"]
    return [f"C{i % 10}" for i in range(n)]


def _nonnegative_ints(values: pd.Series, name: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(numbers)) or np.any(numbers < 0) or np.any(numbers != np.round(numbers)):
        raise ValueError(f"{name} must hold non-negative integers")
    return numbers.astype(np.int64)


def _span(lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)`` widened around a single value, so a norm or axis never collapses."""
    if lo < hi:
        return lo, hi
    pad = 0.05 * abs(lo) or 0.5
    return lo - pad, hi + pad


def _thinned(n: int) -> np.ndarray:
    return np.arange(0, n, max(1, math.ceil(n / _MAX_TICKS)))


def _legend(ax, n_entries: int, **kwargs) -> None:
    ax.legend(fontsize=7 if n_entries > 6 else 8, ncols=1 + (n_entries - 1) // 14, **kwargs)
