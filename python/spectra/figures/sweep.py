"""Figures of scale-sweep tables: metric curves, gain fits, gain heatmaps and Q-vs-K comparisons.

A *sweep table* is the long frame of the scale-sweep contract: one row per (mode, kind, layer,
head, alpha, sample) with the target head's sample-level metric means (``entropy``,
``max_attn``, ``k_eff``, ...) and, for ``mode == "propagated"``, ``kl_logits`` and friends.
"The curve" of a head is, for each alpha, the mean across samples of the per-sample means; the
bands and error bars here are ±1 standard error of that mean (std with ddof=1 over samples
divided by sqrt(n)), drawn only where more than one sample has a finite value.

Every function takes DataFrames and an output path, draws one figure on matplotlib's Agg canvas
without touching pyplot's global state, writes it atomically as PNG (a hidden temporary file in
the target folder, then ``os.replace``) and returns the :class:`~pathlib.Path` written.

Inputs are checked: an empty frame raises ``ValueError``; a missing required column raises
``KeyError`` naming the missing columns and those present. ``heads`` arguments are sequences of
``(layer, head)`` pairs; naming a head the table does not have raises ``ValueError``.

Tables that mix modes: :func:`plot_metric_vs_scale` draws each mode as its own line; the other
functions use the ``mode=`` given, else the table's only mode, else ``"propagated"`` (the real
forward pass), and name the mode used in the figure title.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from spectra.io.tables import check_frame
from spectra.io.atomic import save_figure as _atomic_savefig
__all__ = [
    "MAX_HEAD_PANELS",
    "plot_gain_fits",
    "plot_gain_heatmap",
    "plot_metric_vs_scale",
    "plot_qk_delta_entropy",
    "plot_qk_panel",
]

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


def _one_value(
    frame: pd.DataFrame, column: str, value, prefer: str | None, name: str
) -> tuple[pd.DataFrame, object]:
    """Rows of ``frame`` with ``column == value``. ``value=None`` takes the column's only value,
    else ``prefer`` when present; a table without the column is taken whole."""
    if column not in frame.columns:
        if value is not None:
            raise KeyError(f"{column}={value!r} was asked for but {name} has no {column!r} column; "
                           f"it has {list(frame.columns)}")
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
        raise KeyError(f"{column}={values!r} was asked for but {name} has no {column!r} column; "
                       f"it has {list(frame.columns)}")
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


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def plot_metric_vs_scale(
    sweep: pd.DataFrame,
    path: str | os.PathLike,
    *,
    metrics: Sequence[str] | str = ("entropy", "max_attn", "k_eff"),
    heads: HeadList | None = None,
    kind: str | Sequence[str] | None = None,
    mode: str | Sequence[str] | None = None,
) -> Path:
    """One subplot per metric: each head's curve (across-sample mean of the per-sample means,
    ±1 standard error band when there is more than one sample) against alpha on a log axis.

    One line per (layer, head[, kind][, mode]), labelled ``L{layer}H{head}`` plus ``" q"``/``" k"``
    when several kinds are drawn and ``" (local)"``/``" (propagated)"`` when several modes are;
    colour follows the head, line style the kind (q solid, k dashed, logits dotted), marker the
    mode. ``heads`` (``(layer, head)`` pairs), ``kind`` and ``mode`` (a value or a sequence)
    restrict the rows; ``None`` draws all. Returns ``Path(path)``.

    Example:
        >>> import tempfile
        >>> alphas = [0.5, 1.0, 2.0]
        >>> sweep = pd.DataFrame({"mode": "local", "kind": "q", "layer": 0, "head": [0] * 6,
        ...                       "alpha": alphas * 2, "sample": [0, 0, 0, 1, 1, 1],
        ...                       "entropy": [2.0, 1.5, 1.0, 2.2, 1.6, 0.9]})
        >>> out = Path(tempfile.mkdtemp())
        >>> png = plot_metric_vs_scale(sweep, out / "exp1.png", metrics=["entropy"])
        >>> png.name, png.stat().st_size > 0, sorted(p.name for p in out.iterdir())
        ('exp1.png', True, ['exp1.png'])
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics is empty")
    check_frame(sweep, ["layer", "head", "alpha", "sample", *metrics], "sweep")
    rows = _some_values(sweep, "kind", kind, "sweep")
    rows = _some_values(rows, "mode", mode, "sweep")
    chosen = _chosen_heads(rows, heads, "sweep")
    rows = _rows_of_heads(rows, chosen)
    _check_alpha(rows, "sweep")

    kind_order = list(_KIND_STYLE)  # q, k, logits, then anything else
    kinds = (sorted(_values(rows, "kind"), key=lambda k: (kind_order.index(k) if k in kind_order else 99, str(k)))
             if "kind" in rows.columns else [None])
    modes = _values(rows, "mode") if "mode" in rows.columns else [None]
    by = ["layer", "head"] + (["kind"] if kinds != [None] else []) + (["mode"] if modes != [None] else [])
    head_colour = {pair: _colour(i, len(chosen)) for i, pair in enumerate(chosen)}

    fig = Figure(figsize=(4.2 * len(metrics) + 1.6, 3.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    handles: list[Line2D] = []
    for ax, metric in zip(axes, metrics):
        curve = _curve(rows, metric, by)
        drew = False
        for (layer, head) in chosen:
            for k in kinds:
                for m in modes:
                    sel = (curve["layer"] == layer) & (curve["head"] == head)
                    if k is not None:
                        sel &= curve["kind"] == k
                    if m is not None:
                        sel &= curve["mode"] == m
                    part = curve[sel]
                    if part.empty:
                        continue
                    label = _label(layer, head)
                    if len(kinds) > 1:
                        label += f" {k}"
                    if len(modes) > 1:
                        label += f" ({m})"
                    line = _draw_curve(
                        ax, part["alpha"].to_numpy(np.float64), part["mean"].to_numpy(np.float64),
                        part["se"].to_numpy(np.float64), colour=head_colour[(layer, head)],
                        linestyle=_KIND_STYLE.get(k, "-."), marker=_MODE_MARKER.get(m, "^"), label=label,
                    )
                    drew = drew or bool(np.isfinite(part["mean"].to_numpy(np.float64)).any())
                    if ax is axes[0]:
                        handles.append(line)
        if not drew:
            _no_data(ax, f"no finite {metric}")
        _alpha_axis(ax, rows["alpha"])
        ax.set_ylabel(metric)
        ax.set_title(metric)
    if handles:
        ncol = max(1, math.ceil(len(handles) / 24))
        fig.legend(handles=handles, loc="outside right upper", fontsize=7 if len(handles) > 12 else 8, ncol=ncol)
    n_samples = rows["sample"].nunique()
    scope = ", ".join(f"{c}: {'/'.join(map(str, v))}" for c, v in (("kind", kinds), ("mode", modes)) if v != [None])
    fig.suptitle(f"metric vs scale ({scope}; mean over {n_samples} sample(s), ±1 s.e.)" if scope
                 else f"metric vs scale (mean over {n_samples} sample(s), ±1 s.e.)", fontsize=11)
    return _atomic_savefig(fig, Path(path))


def plot_gain_fits(
    sweep: pd.DataFrame,
    gains: pd.DataFrame,
    path: str | os.PathLike,
    *,
    metric: str = "max_attn",
    heads: HeadList | None = None,
    kind: str | None = None,
    mode: str | None = None,
) -> Path:
    """Per head, the curve of ``metric`` (points, ±1 s.e. bars) against ln(alpha) with the OLS
    line ``intercept_<metric> + gain_<metric> * ln(alpha)`` from ``gains``, annotated with the
    gain and, when ``gains`` has ``r_squared_<metric>``, R².

    ``gains`` needs ``layer``, ``head``, ``gain_<metric>`` and ``intercept_<metric>``; one panel
    per gains row (of ``heads``, in that order, when given), at most :data:`MAX_HEAD_PANELS`.
    When ``gains`` has ``kind``/``mode`` columns each panel uses its row's kind/mode in the sweep;
    otherwise the sweep's rows of ``kind`` (default: the only kind, else ``"q"``) and ``mode``
    (default: the only mode, else ``"propagated"``) are used. Returns ``Path(path)``.
    """
    gain_col, icpt_col, r2_col = f"gain_{metric}", f"intercept_{metric}", f"r_squared_{metric}"
    check_frame(gains, ["layer", "head", gain_col, icpt_col], "gains")
    check_frame(sweep, ["layer", "head", "alpha", "sample", metric], "sweep")
    table = gains
    if kind is not None and "kind" in table.columns:
        table, _ = _one_value(table, "kind", kind, None, "gains")
    if mode is not None and "mode" in table.columns:
        table, _ = _one_value(table, "mode", mode, None, "gains")
    rows = sweep
    per_row = [c for c in ("kind", "mode") if c in table.columns and c in sweep.columns]
    chosen_kind = chosen_mode = None
    if "kind" not in per_row:
        rows, chosen_kind = _one_value(rows, "kind", kind, "q", "sweep")
    if "mode" not in per_row:
        rows, chosen_mode = _one_value(rows, "mode", mode, "propagated", "sweep")
    _check_alpha(rows, "sweep")

    if heads is not None:
        chosen = _chosen_heads(table, heads, "gains")
        order = {pair: i for i, pair in enumerate(chosen)}
        table = _rows_of_heads(table, chosen)
        rank = [order[(int(layer), int(head))] for layer, head in zip(table["layer"], table["head"])]
        table = table.iloc[np.argsort(rank, kind="stable")]
    n_total = len(table)
    table = table.head(MAX_HEAD_PANELS)

    nrows, ncols = _grid_shape(len(table), per_row=4)
    fig = Figure(figsize=(3.4 * ncols, 2.9 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(table):]:
        ax.set_visible(False)
    for i, (ax, record) in enumerate(zip(axes, table.to_dict("records"))):
        layer, head = int(record["layer"]), int(record["head"])
        sel = (rows["layer"] == layer) & (rows["head"] == head)
        for c in per_row:
            sel &= rows[c] == record[c]
        curve = _curve(rows[sel], metric)
        title = _label(layer, head) + "".join(f" {record[c]}" for c in per_row)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ln α")
        ax.set_ylabel(metric)
        if curve.empty or not np.isfinite(curve["mean"].to_numpy(np.float64)).any():
            _no_data(ax, "no sweep rows")
            continue
        x = np.log(curve["alpha"].to_numpy(np.float64))
        mean = curve["mean"].to_numpy(np.float64)
        se = curve["se"].to_numpy(np.float64)
        colour = _colour(i, len(table))
        ax.errorbar(x, mean, yerr=np.where(np.isfinite(se), se, 0.0), fmt="o", markersize=3.5,
                    color=colour, ecolor=colour, elinewidth=0.8, capsize=2)
        gain, icpt = float(record[gain_col]), float(record[icpt_col])
        text = f"gain = {gain:.3g}"
        if np.isfinite(gain) and np.isfinite(icpt):
            xs = np.linspace(x.min(), x.max(), 50)
            ax.plot(xs, icpt + gain * xs, color="black", linewidth=1.0, linestyle="--")
        if r2_col in record:
            r2 = float(record[r2_col])
            text += f"\nR² = {r2:.3f}" if np.isfinite(r2) else "\nR² = nan"
        ax.text(0.03, 0.97, text, transform=ax.transAxes, ha="left", va="top", fontsize=8,
                bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "alpha": 0.8, "linewidth": 0.5})
        ax.axvline(0.0, color="grey", linewidth=0.6, linestyle=":")
    scope = ", ".join(f"{c}: {v}" for c, v in (("kind", chosen_kind), ("mode", chosen_mode)) if v is not None)
    shown = f"; first {len(table)} of {n_total} heads" if n_total > len(table) else ""
    fig.suptitle(f"{metric} vs ln α with OLS fit{' (' + scope + ')' if scope else ''}{shown}", fontsize=11)
    return _atomic_savefig(fig, Path(path))


def _category_codes(categories: Sequence[str]) -> dict[str, str]:
    """Short cell marks: the upper-case first letter, or a longer prefix when letters collide."""
    codes: dict[str, str] = {}
    for width in range(1, max((len(c) for c in categories), default=1) + 1):
        proposal = {c: (c[:width].upper() if width == 1 else c[:width].capitalize()) for c in categories}
        if len(set(proposal.values())) == len(proposal):
            return proposal
        codes = proposal
    return codes


def plot_gain_heatmap(
    gains: pd.DataFrame,
    path: str | os.PathLike,
    *,
    metric: str = "max_attn",
    n_layers: int | None = None,
    n_heads: int | None = None,
) -> Path:
    """Layer × head heatmap of ``gain_<metric>`` with a colorbar; heads missing from ``gains`` (or
    NaN) are grey. A diverging colour map centred on 0 is used when gains of both signs occur.

    When ``gains`` has a ``category`` column (e.g. ``"high"``/``"low"``), each categorised cell
    carries the category's short mark (``"H"``/``"L"``), explained in the title. ``n_layers`` and
    ``n_heads`` default to one more than the largest index present. ``gains`` must hold one row
    per (layer, head): filter by kind/mode first. Returns ``Path(path)``.
    """
    column = f"gain_{metric}"
    check_frame(gains, ["layer", "head", column], "gains")
    dup = gains.duplicated(["layer", "head"])
    if dup.any():
        raise ValueError(f"gains has {int(dup.sum())} duplicate (layer, head) row(s); filter it to one row per "
                         f"head (e.g. by kind or mode) first; columns {list(gains.columns)}")
    layers = gains["layer"].to_numpy(np.int64)
    heads = gains["head"].to_numpy(np.int64)
    if layers.min() < 0 or heads.min() < 0:
        raise ValueError("gains has negative layer or head indices")
    n_layers = int(layers.max()) + 1 if n_layers is None else int(n_layers)
    n_heads = int(heads.max()) + 1 if n_heads is None else int(n_heads)
    if layers.max() >= n_layers or heads.max() >= n_heads:
        raise ValueError(f"gains has layer/head indices beyond n_layers={n_layers}, n_heads={n_heads}")

    grid = np.full((n_layers, n_heads), np.nan)
    grid[layers, heads] = gains[column].to_numpy(np.float64)
    finite = grid[np.isfinite(grid)]
    if finite.size and finite.min() < 0 < finite.max():
        bound = float(np.abs(finite).max())
        norm, cmap = Normalize(-bound, bound), matplotlib.colormaps["RdBu_r"].with_extremes(bad="darkgrey")
    else:
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        norm, cmap = Normalize(lo, hi if hi > lo else lo + 1e-12), matplotlib.colormaps["viridis"].with_extremes(
            bad="lightgrey")

    fig = Figure(figsize=(max(4.5, 1.8 + 0.32 * n_heads), max(3.2, 1.4 + 0.26 * n_layers)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", origin="lower", interpolation="nearest",
                      cmap=cmap, norm=norm)
    fig.colorbar(image, ax=ax, label=f"{column} (d {metric} / d ln α)")
    title = f"{column}: layer × head"
    if "category" in gains.columns:
        cats = gains["category"]
        present = [str(c) for c in pd.unique(cats.dropna()) if str(c).strip()]
        codes = _category_codes(sorted(set(present)))
        fontsize = max(4.0, min(9.0, 220.0 / max(n_heads, n_layers, 1)))
        for layer, head, cat in zip(layers, heads, cats):
            if pd.isna(cat) or not str(cat).strip():
                continue
            value = grid[layer, head]
            r, g, b, _ = cmap(norm(value)) if np.isfinite(value) else (0.8, 0.8, 0.8, 1.0)
            colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            ax.text(head, layer, codes[str(cat)], ha="center", va="center", fontsize=fontsize,
                    fontweight="bold", color=colour)
        if codes:
            title += "\n" + ", ".join(f"{code} = {cat}" for cat, code in codes.items())
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    for set_ticks, n in ((ax.set_xticks, n_heads), (ax.set_yticks, n_layers)):
        step = max(1, math.ceil(n / 16))
        set_ticks(np.arange(0, n, step))
    return _atomic_savefig(fig, Path(path))


def _qk_rows(sweep: pd.DataFrame, heads: HeadList | None, mode: str | None) -> tuple[pd.DataFrame, object, list]:
    """The sweep's q and k rows of one mode and the heads that have both (or ``heads``)."""
    check_frame(sweep, ["layer", "head", "kind", "alpha", "sample", "entropy"], "sweep")
    rows, chosen_mode = _one_value(sweep, "mode", mode, "propagated", "sweep")
    rows = rows[rows["kind"].isin(["q", "k"])]
    q_heads = set(_head_pairs(rows[rows["kind"] == "q"]))
    k_heads = set(_head_pairs(rows[rows["kind"] == "k"]))
    both = sorted(q_heads & k_heads)
    if heads is None:
        if not both:
            raise ValueError("sweep has no head with both q and k rows"
                             + (f" in mode {chosen_mode!r}" if chosen_mode is not None else ""))
        chosen = both
    else:
        chosen = _chosen_heads(rows, heads, "sweep")
    _check_alpha(rows, "sweep")
    return _rows_of_heads(rows, chosen), chosen_mode, chosen


def _kind_curve(curves: pd.DataFrame, layer: int, head: int, kind: str) -> pd.DataFrame:
    return curves[(curves["layer"] == layer) & (curves["head"] == head) & (curves["kind"] == kind)]


def plot_qk_delta_entropy(
    sweep: pd.DataFrame,
    path: str | os.PathLike,
    *,
    heads: HeadList | None = None,
    mode: str | None = None,
) -> Path:
    """Per head, entropy under Q scaling minus entropy under K scaling against alpha (paired per
    sample, then the across-sample mean ±1 s.e.); when the sweep has finite ``kl_logits``, a
    second row per head shows it for Q and K scaling.

    ``heads=None`` takes every head with both q and k rows; at most :data:`MAX_HEAD_PANELS` are
    drawn, six per row. ``mode`` defaults to the sweep's only mode, else ``"propagated"``.
    Returns ``Path(path)``.
    """
    rows, chosen_mode, chosen = _qk_rows(sweep, heads, mode)
    n_total = len(chosen)
    chosen = chosen[:MAX_HEAD_PANELS]
    has_kl = "kl_logits" in rows.columns and bool(np.isfinite(rows["kl_logits"].to_numpy(np.float64)).any())
    per_sample = rows.groupby(["layer", "head", "kind", "alpha", "sample"], sort=True)["entropy"].mean()
    wide = per_sample.unstack("kind")
    if "q" in wide.columns and "k" in wide.columns:
        diff = (wide["q"] - wide["k"]).rename("delta").reset_index()
    else:
        diff = pd.DataFrame(columns=["layer", "head", "alpha", "sample", "delta"])
    delta = _curve(diff.dropna(subset=["delta"]), "delta", ["layer", "head"])
    kl = _curve(rows, "kl_logits", ["layer", "head", "kind"]) if has_kl else None

    block_rows = 2 if has_kl else 1
    blocks, ncols = _grid_shape(len(chosen))
    fig = Figure(figsize=(3.3 * ncols, 2.7 * blocks * block_rows + 0.6), layout="constrained")
    axes = fig.subplots(blocks * block_rows, ncols, squeeze=False)
    used = set()
    for i, (layer, head) in enumerate(chosen):
        block, col = divmod(i, ncols)
        colour = _colour(i, len(chosen))
        ax = axes[block * block_rows, col]
        used.add((block * block_rows, col))
        part = delta[(delta["layer"] == layer) & (delta["head"] == head)]
        if part.empty:
            _no_data(ax, "no paired q/k rows")
        else:
            _draw_curve(ax, part["alpha"].to_numpy(np.float64), part["mean"].to_numpy(np.float64),
                        part["se"].to_numpy(np.float64), colour=colour)
        ax.axhline(0.0, color="grey", linewidth=0.6)
        _alpha_axis(ax, rows["alpha"])
        ax.set_title(_label(layer, head), fontsize=10)
        if col == 0:
            ax.set_ylabel("H(Q scaled) − H(K scaled) (nats)")
        if has_kl:
            ax = axes[block * block_rows + 1, col]
            used.add((block * block_rows + 1, col))
            for k, style in (("q", "-"), ("k", "--")):
                part = _kind_curve(kl, layer, head, k)
                if not part.empty:
                    _draw_curve(ax, part["alpha"].to_numpy(np.float64), part["mean"].to_numpy(np.float64),
                                part["se"].to_numpy(np.float64), colour=colour, linestyle=style,
                                label=f"{_KIND_NAME[k]} scaled")
            _alpha_axis(ax, rows["alpha"])
            ax.set_title(f"{_label(layer, head)} kl_logits", fontsize=9)
            if col == 0:
                ax.set_ylabel("KL(base ‖ intervened)")
            if i == 0:
                ax.legend(fontsize=7)
    for (r, c), ax in np.ndenumerate(axes):
        if (r, c) not in used:
            ax.set_visible(False)
    scope = f" (mode: {chosen_mode})" if chosen_mode is not None else ""
    shown = f"; first {len(chosen)} of {n_total} heads" if n_total > len(chosen) else ""
    fig.suptitle(f"Q vs K scaling: entropy difference per head{scope}{shown}", fontsize=11)
    return _atomic_savefig(fig, Path(path))


def _bars(ax, labels: list[str], values: np.ndarray, colours: list, title: str, ylabel: str) -> None:
    """Bar chart with ±inf clipped to a visible cap (hatched, marked "inf") and NaN marked "nan"."""
    finite = values[np.isfinite(values)]
    top = float(np.abs(finite).max()) if finite.size else 0.0
    cap = 1.25 * top if top > 0 else 1.0
    shown = np.where(np.isposinf(values), cap, np.where(np.isneginf(values), -cap, values))
    shown = np.where(np.isnan(shown), 0.0, shown)
    x = np.arange(len(values))
    bars = ax.bar(x, shown, color=colours, edgecolor="black", linewidth=0.4)
    for xi, bar, value in zip(x, bars, values):
        if np.isinf(value):
            bar.set_hatch("//")
            ax.text(xi, bar.get_height(), "inf" if value > 0 else "-inf", ha="center",
                    va="bottom" if value > 0 else "top", fontsize=7, fontweight="bold")
        elif np.isnan(value):
            ax.text(xi, 0.0, "nan", ha="center", va="bottom", fontsize=7, color="grey")
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=90 if len(labels) > 8 else 0, fontsize=7 if len(labels) > 8 else 8)
    ax.set_xlim(-0.6, len(values) - 0.4)
    ax.margins(y=0.12)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)


def plot_qk_panel(
    sweep: pd.DataFrame,
    asymmetry: pd.DataFrame,
    path: str | os.PathLike,
    *,
    heads: HeadList | None = None,
    mode: str | None = None,
) -> Path:
    """The combined Q-vs-K panel: on top, per head, the entropy curves under Q scaling (solid) and
    K scaling (dashed, same colour); below, a bar chart of ``asymmetry`` per head (±inf clipped to
    a visible cap and marked "inf") and, when the asymmetry table has it, one of
    ``k_group_entropy_shift``. Bars are coloured by ``role`` when that column exists.

    ``asymmetry`` needs ``layer``, ``head`` and ``asymmetry`` (one row per head; ``q_range``,
    ``k_range``, ``role`` and ``k_group_entropy_shift`` are optional). ``heads=None`` takes the
    asymmetry table's heads in its row order. Every chosen head gets a bar; the curves are drawn
    for the first :data:`MAX_HEAD_PANELS`. Returns ``Path(path)``.
    """
    check_frame(asymmetry, ["layer", "head", "asymmetry"], "asymmetry")
    dup = asymmetry.duplicated(["layer", "head"])
    if dup.any():
        raise ValueError(f"asymmetry has {int(dup.sum())} duplicate (layer, head) row(s)")
    if heads is None:
        chosen = [(int(layer), int(head)) for layer, head in zip(asymmetry["layer"], asymmetry["head"])]
    else:
        chosen = _chosen_heads(asymmetry, heads, "asymmetry")
    rows, chosen_mode, _ = _qk_rows(sweep, None, mode)
    rows = _rows_of_heads(rows, chosen)
    table = asymmetry.set_index([asymmetry["layer"].astype(np.int64), asymmetry["head"].astype(np.int64)])
    table = table.loc[chosen]
    curve_heads = chosen[:MAX_HEAD_PANELS]
    curves = _curve(rows, "entropy", ["layer", "head", "kind"])

    has_shift = "k_group_entropy_shift" in asymmetry.columns
    top_rows, ncols = _grid_shape(len(curve_heads))
    fig = Figure(figsize=(max(3.2 * ncols, 0.45 * len(chosen) * (2 if has_shift else 1) + 2.0),
                          2.6 * top_rows + 3.4), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[2.6 * top_rows, 3.0])
    top = grid[0].subgridspec(top_rows, ncols)
    bottom = grid[1].subgridspec(1, 2 if has_shift else 1)
    for i, (layer, head) in enumerate(curve_heads):
        ax = fig.add_subplot(top[divmod(i, ncols)])
        colour = _colour(i, len(curve_heads))
        drew = False
        for k, style in (("q", "-"), ("k", "--")):
            part = _kind_curve(curves, layer, head, k)
            if not part.empty:
                drew = True
                _draw_curve(ax, part["alpha"].to_numpy(np.float64), part["mean"].to_numpy(np.float64),
                            part["se"].to_numpy(np.float64), colour=colour, linestyle=style,
                            label=f"{_KIND_NAME[k]} scaled")
        if not drew:
            _no_data(ax, "no sweep rows")
        _alpha_axis(ax, rows["alpha"])
        value = float(table.loc[(layer, head), "asymmetry"])
        title = f"{_label(layer, head)}  asym {value:.3g}"
        if "role" in table.columns and pd.notna(table.loc[(layer, head), "role"]):
            title += f"  [{table.loc[(layer, head), 'role']}]"
        ax.set_title(title, fontsize=9)
        if i % ncols == 0:
            ax.set_ylabel("entropy (nats)")
        if i == 0 and drew:
            ax.legend(fontsize=7)

    labels = [_label(layer, head) for layer, head in chosen]
    if "role" in table.columns:
        roles = ["(none)" if pd.isna(r) else str(r) for r in table["role"]]
        role_colour = {r: _colour(i, len(set(roles))) for i, r in enumerate(sorted(set(roles)))}
        colours = [role_colour[r] for r in roles]
        handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.4, label=r) for r, c in role_colour.items()]
    else:
        colours, handles = ["tab:blue"] * len(chosen), []
    ax = fig.add_subplot(bottom[0, 0])
    _bars(ax, labels, table["asymmetry"].to_numpy(np.float64), colours, "Q/K asymmetry", "asymmetry")
    if handles:
        ax.legend(handles=handles, fontsize=7, title="role", title_fontsize=7)
    if has_shift:
        ax = fig.add_subplot(bottom[0, 1])
        _bars(ax, labels, table["k_group_entropy_shift"].to_numpy(np.float64), colours,
              "GQA group entropy shift under K scaling", "k_group_entropy_shift (nats)")
    scope = f" (mode: {chosen_mode})" if chosen_mode is not None else ""
    shown = f"; curves for first {len(curve_heads)} of {len(chosen)} heads" if len(chosen) > len(curve_heads) else ""
    fig.suptitle(f"Q vs K scaling: entropy curves and asymmetry{scope}{shown}", fontsize=11)
    return _atomic_savefig(fig, Path(path))
