"""The input checks, table helpers and drawing helpers shared by the scale-sweep figures
(:mod:`spectra.figures.sweep`, :mod:`spectra.figures.sweep_qk`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

#: Per-head subplot grids (gain fits, Q-vs-K panels) draw at most this many heads.
MAX_HEAD_PANELS = 12
_PANELS_PER_ROW = 6
_KIND_STYLE = {"q": "-", "k": "--", "logits": ":"}
_MODE_MARKER = {"local": "o", "propagated": "s"}
_KIND_NAME = {"q": "Q", "k": "K", "logits": "logits"}

HeadList = Sequence[tuple[int, int]]


# ----------------------------------------------------------------------------------------------
# Input checks and table helpers
# ----------------------------------------------------------------------------------------------


def _values(frame: pd.DataFrame, column: str) -> list:
    return sorted(frame[column].dropna().unique().tolist(), key=str)


def _one_value(frame: pd.DataFrame, column: str, value, prefer: str | None, name: str) -> tuple[pd.DataFrame, object]:
    """Rows of ``frame`` with ``column == value``. ``value=None`` takes the column's only value,
    else ``prefer`` when present; a table without the column is taken whole."""
    if column not in frame.columns:
        if value is not None:
            raise KeyError(
                f"{column}={value!r} was asked for but {name} has no {column!r} column; it has {list(frame.columns)}"
            )
        return frame, None
    present = _values(frame, column)
    if value is None:
        if len(present) == 1:
            value = present[0]
        elif prefer is not None and prefer in present:
            value = prefer
        else:
            raise ValueError(f"{name} mixes {column} values {present}; pass {column}= to choose one")
    rows = frame[frame[column] == value]
    if rows.empty:
        raise ValueError(f"{name} has no rows with {column} == {value!r}; it has {present}")
    return rows, value


def _some_values(frame: pd.DataFrame, column: str, values, name: str) -> pd.DataFrame:
    """Rows whose ``column`` is one of ``values`` (a value or a sequence); ``None`` keeps all."""
    if values is None:
        return frame
    wanted = [values] if isinstance(values, str) else list(values)
    if column not in frame.columns:
        raise KeyError(
            f"{column}={values!r} was asked for but {name} has no {column!r} column; it has {list(frame.columns)}"
        )
    rows = frame[frame[column].isin(wanted)]
    if rows.empty:
        raise ValueError(f"{name} has no rows with {column} in {wanted}; it has {_values(frame, column)}")
    return rows


def _head_pairs(frame: pd.DataFrame) -> list[tuple[int, int]]:
    pairs = frame[["layer", "head"]].drop_duplicates().sort_values(["layer", "head"])
    return [(int(layer), int(head)) for layer, head in pairs.itertuples(index=False)]


def _chosen_heads(frame: pd.DataFrame, heads: HeadList | None, name: str) -> list[tuple[int, int]]:
    available = _head_pairs(frame)
    if heads is None:
        return available
    chosen = []
    for pair in heads:
        layer, head = pair
        if (int(layer), int(head)) not in chosen:
            chosen.append((int(layer), int(head)))
    if not chosen:
        raise ValueError("heads is empty; pass None for every head")
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise ValueError(f"{name} has no rows for head(s) {missing}")
    return chosen


def _rows_of_heads(frame: pd.DataFrame, heads: Sequence[tuple[int, int]]) -> pd.DataFrame:
    index = pd.MultiIndex.from_arrays([frame["layer"].astype(np.int64), frame["head"].astype(np.int64)])
    return frame[index.isin(list(heads))]


def _check_alpha(frame: pd.DataFrame, name: str) -> None:
    alpha = frame["alpha"].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(alpha) & (alpha > 0)):
        raise ValueError(f"{name} has alpha values that are not finite and > 0")


def _curve(rows: pd.DataFrame, metric: str, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per (``by``, alpha): ``mean`` across samples of the per-sample means of ``metric``, its
    standard error ``se`` (NaN unless > 1 finite sample) and ``n``; NaN skipped, alpha ascending."""
    keys = [*by, "alpha"]
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "mean", "se", "n"])
    per_sample = rows.groupby([*keys, "sample"], sort=True)[metric].mean()
    grouped = per_sample.groupby(level=keys, sort=True)
    out = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()})
    n = out["n"].to_numpy(dtype=np.float64)
    out["se"] = np.where(n > 1, out["std"].to_numpy(dtype=np.float64) / np.sqrt(np.maximum(n, 1.0)), np.nan)
    return out.drop(columns="std").reset_index()


def _label(layer: int, head: int) -> str:
    return f"L{int(layer)}H{int(head)}"


def _colour(i: int, n: int):
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return cmap(i % cmap.N)


def _draw_curve(ax, x, mean, se, *, colour, linestyle="-", marker="o", label=None) -> Line2D:
    (line,) = ax.plot(x, mean, linestyle=linestyle, marker=marker, markersize=3, color=colour, label=label)
    se = np.asarray(se, dtype=np.float64)
    if np.any(np.isfinite(se)):
        mean = np.asarray(mean, dtype=np.float64)
        ax.fill_between(x, mean - se, mean + se, color=colour, alpha=0.2, linewidth=0)
    return line


def _alpha_axis(ax, alphas=None) -> None:
    """Log alpha axis marking alpha = 1; a short alpha grid is labelled at its own values."""
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("α (scale)")
    grid = np.unique(np.asarray(alphas, dtype=np.float64)) if alphas is not None else np.array([])
    if 0 < grid.size <= 9:
        ax.xaxis.set_major_locator(FixedLocator(grid))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=8)


def _grid_shape(n: int, per_row: int = _PANELS_PER_ROW) -> tuple[int, int]:
    ncols = max(1, min(per_row, n))
    return math.ceil(n / ncols), ncols


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")
