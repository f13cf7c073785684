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

from spectra.figures.sweep_common import (
    _KIND_STYLE,
    _MODE_MARKER,
    MAX_HEAD_PANELS,
    HeadList,
    _alpha_axis,
    _check_alpha,
    _chosen_heads,
    _colour,
    _curve,
    _draw_curve,
    _grid_shape,
    _label,
    _no_data,
    _one_value,
    _rows_of_heads,
    _some_values,
    _values,
)
from spectra.figures.sweep_qk import plot_qk_delta_entropy, plot_qk_panel
from spectra.io.atomic import save_figure
from spectra.io.tables import check_frame

__all__ = [
    "MAX_HEAD_PANELS",
    "plot_gain_fits",
    "plot_gain_heatmap",
    "plot_metric_vs_scale",
    "plot_qk_delta_entropy",
    "plot_qk_panel",
]


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
    kinds = (
        sorted(_values(rows, "kind"), key=lambda k: (kind_order.index(k) if k in kind_order else 99, str(k)))
        if "kind" in rows.columns
        else [None]
    )
    modes = _values(rows, "mode") if "mode" in rows.columns else [None]
    by = ["layer", "head"] + (["kind"] if kinds != [None] else []) + (["mode"] if modes != [None] else [])
    head_colour = {pair: _colour(i, len(chosen)) for i, pair in enumerate(chosen)}

    fig = Figure(figsize=(4.2 * len(metrics) + 1.6, 3.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    handles: list[Line2D] = []
    for ax, metric in zip(axes, metrics):
        curve = _curve(rows, metric, by)
        drew = False
        for layer, head in chosen:
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
                        ax,
                        part["alpha"].to_numpy(np.float64),
                        part["mean"].to_numpy(np.float64),
                        part["se"].to_numpy(np.float64),
                        colour=head_colour[(layer, head)],
                        linestyle=_KIND_STYLE.get(k, "-."),
                        marker=_MODE_MARKER.get(m, "^"),
                        label=label,
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
    fig.suptitle(
        f"metric vs scale ({scope}; mean over {n_samples} sample(s), ±1 s.e.)"
        if scope
        else f"metric vs scale (mean over {n_samples} sample(s), ±1 s.e.)",
        fontsize=11,
    )
    return save_figure(fig, Path(path))


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
    for ax in axes[len(table) :]:
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
        ax.errorbar(
            x,
            mean,
            yerr=np.where(np.isfinite(se), se, 0.0),
            fmt="o",
            markersize=3.5,
            color=colour,
            ecolor=colour,
            elinewidth=0.8,
            capsize=2,
        )
        gain, icpt = float(record[gain_col]), float(record[icpt_col])
        text = f"gain = {gain:.3g}"
        if np.isfinite(gain) and np.isfinite(icpt):
            xs = np.linspace(x.min(), x.max(), 50)
            ax.plot(xs, icpt + gain * xs, color="black", linewidth=1.0, linestyle="--")
        if r2_col in record:
            r2 = float(record[r2_col])
            text += f"\nR² = {r2:.3f}" if np.isfinite(r2) else "\nR² = nan"
        ax.text(
            0.03,
            0.97,
            text,
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "alpha": 0.8, "linewidth": 0.5},
        )
        ax.axvline(0.0, color="grey", linewidth=0.6, linestyle=":")
    scope = ", ".join(f"{c}: {v}" for c, v in (("kind", chosen_kind), ("mode", chosen_mode)) if v is not None)
    shown = f"; first {len(table)} of {n_total} heads" if n_total > len(table) else ""
    fig.suptitle(f"{metric} vs ln α with OLS fit{' (' + scope + ')' if scope else ''}{shown}", fontsize=11)
    return save_figure(fig, Path(path))


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
        raise ValueError(
            f"gains has {int(dup.sum())} duplicate (layer, head) row(s); filter it to one row per "
            f"head (e.g. by kind or mode) first; columns {list(gains.columns)}"
        )
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
        norm, cmap = (
            Normalize(lo, hi if hi > lo else lo + 1e-12),
            matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey"),
        )

    fig = Figure(figsize=(max(4.5, 1.8 + 0.32 * n_heads), max(3.2, 1.4 + 0.26 * n_layers)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(grid), aspect="auto", origin="lower", interpolation="nearest", cmap=cmap, norm=norm
    )
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
            ax.text(
                head,
                layer,
                codes[str(cat)],
                ha="center",
                va="center",
                fontsize=fontsize,
                fontweight="bold",
                color=colour,
            )
        if codes:
            title += "\n" + ", ".join(f"{code} = {cat}" for cat, code in codes.items())
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    for set_ticks, n in ((ax.set_xticks, n_heads), (ax.set_yticks, n_layers)):
        step = max(1, math.ceil(n / 16))
        set_ticks(np.arange(0, n, step))
    return save_figure(fig, Path(path))
