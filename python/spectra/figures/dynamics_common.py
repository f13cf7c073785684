"""The input checks, table helpers and drawing helpers of the dynamics figures
(:mod:`spectra.figures.dynamics`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, NullLocator

#: :func:`plot_gamma_heatmap` draws at most this many (layer, head) panels (pass ``layers=`` to choose).
MAX_GAMMA_PANELS = 64
_PANELS_PER_ROW = 4
_MAX_STEP_TICKS = 12
_GAMMA_CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")

LayerList = Sequence[int] | int | None


# ----------------------------------------------------------------------------------------------
# Input checks and table helpers
# ----------------------------------------------------------------------------------------------


def _stats_present(frame: pd.DataFrame) -> list[str]:
    return sorted(str(s) for s in frame["stat"].dropna().unique())


def _stat_rows(frame: pd.DataFrame, stat: str, name: str) -> pd.DataFrame:
    """The rows of one stat, or a KeyError naming it and the stats present."""
    rows = frame[frame["stat"] == stat]
    if rows.empty:
        raise KeyError(f"{name} has no stat {stat!r}; stats present: {_stats_present(frame)}")
    return rows


def _select_layers(frame: pd.DataFrame, layers: LayerList, name: str) -> pd.DataFrame:
    if layers is None:
        return frame
    wanted = [int(layers)] if isinstance(layers, (int, np.integer)) else [int(x) for x in layers]
    if not wanted:
        raise ValueError("layers is empty; pass None for every layer")
    present = sorted(int(x) for x in frame["layer"].unique())
    missing = sorted(set(wanted) - set(present))
    if missing:
        raise ValueError(f"{name} has no rows for layer(s) {missing}; it has layers {present}")
    return frame[frame["layer"].isin(wanted)]


def _wide(rows: pd.DataFrame, keys: list[str], column: str = "value") -> pd.DataFrame:
    """Mean of ``column`` per key (duplicates averaged, NaN skipped), keys ascending."""
    out = rows.groupby(keys, sort=True)[column].mean().reset_index()
    out[column] = out[column].astype(np.float64)
    return out


def _steps(frame: pd.DataFrame, name: str) -> np.ndarray:
    steps = np.unique(frame["step"].to_numpy(dtype=np.float64))
    if not np.all(np.isfinite(steps)):
        raise ValueError(f"{name} has steps that are not finite")
    return steps


def _linthresh(steps: np.ndarray) -> float:
    positive = np.abs(steps[steps != 0])
    return float(positive.min()) if positive.size else 1.0


def _step_label(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:g}"


def _step_axis(ax, steps: np.ndarray) -> None:
    """Symlog x axis (linear up to the smallest nonzero step) with ticks at the checkpoints."""
    ax.set_xscale("symlog", linthresh=_linthresh(steps), linscale=0.5)
    if 0 < steps.size <= _MAX_STEP_TICKS:
        ax.xaxis.set_major_locator(FixedLocator(steps))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _step_label(v)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.tick_params(axis="x", labelsize=7, labelrotation=45 if steps.size > 5 else 0)
    ax.set_xlabel("step")


def _step_norm(steps: np.ndarray) -> Normalize:
    lo, hi = float(steps.min()), float(steps.max())
    if hi <= lo:
        hi = lo + 1.0
    return SymLogNorm(linthresh=_linthresh(steps), linscale=0.5, vmin=lo, vmax=hi, base=10)


def _grid(fig: Figure, n: int, per_row: int = _PANELS_PER_ROW) -> np.ndarray:
    """``n`` visible axes in rows of at most ``per_row``; the unused cells are hidden."""
    ncols = max(1, min(per_row, n))
    nrows = math.ceil(n / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def _figure(
    n_panels: int, per_row: int = _PANELS_PER_ROW, width: float = 3.6, height: float = 2.9, extra_width: float = 1.4
) -> Figure:
    ncols = max(1, min(per_row, n_panels))
    nrows = math.ceil(n_panels / ncols)
    return Figure(figsize=(width * ncols + extra_width, height * nrows + 0.7), layout="constrained")


def _colour(i: int, n: int):
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return cmap(i % cmap.N)


class _PlainLogFormatter(LogFormatter):
    """LogFormatter's choice of which ticks to label, with plain numbers ("0.6", "20")."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:.3g}"


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")


def _cv(values: np.ndarray) -> float:
    """Coefficient of variation over heads (population std / |mean|), NaN skipped."""
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan")
    mean = float(values.mean())
    return float(values.std() / abs(mean)) if mean != 0 else float("nan")


def _fmt(value: float, spec: str = ".2f") -> str:
    return format(value, spec) if np.isfinite(value) else "nan"


def _legend(fig: Figure, handles: list[Line2D], title: str | None = None) -> None:
    if handles:
        ncol = max(1, math.ceil(len(handles) / 24))
        fig.legend(
            handles=handles,
            loc="outside right upper",
            fontsize=7 if len(handles) > 12 else 8,
            ncol=ncol,
            title=title,
            title_fontsize=8,
        )
