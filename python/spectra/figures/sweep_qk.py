"""Q-vs-K figures of a scale sweep: the entropy change of scaling q against scaling k, per head, and
the Q/K asymmetry panel (see :mod:`spectra.figures.sweep` for the sweep table and the conventions)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from spectra.figures.sweep_common import (
    _KIND_NAME,
    MAX_HEAD_PANELS,
    HeadList,
    _alpha_axis,
    _check_alpha,
    _chosen_heads,
    _colour,
    _curve,
    _draw_curve,
    _grid_shape,
    _head_pairs,
    _label,
    _no_data,
    _one_value,
    _rows_of_heads,
)
from spectra.io.atomic import save_figure
from spectra.io.tables import check_frame


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
            raise ValueError(
                "sweep has no head with both q and k rows"
                + (f" in mode {chosen_mode!r}" if chosen_mode is not None else "")
            )
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
            _draw_curve(
                ax,
                part["alpha"].to_numpy(np.float64),
                part["mean"].to_numpy(np.float64),
                part["se"].to_numpy(np.float64),
                colour=colour,
            )
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
                    _draw_curve(
                        ax,
                        part["alpha"].to_numpy(np.float64),
                        part["mean"].to_numpy(np.float64),
                        part["se"].to_numpy(np.float64),
                        colour=colour,
                        linestyle=style,
                        label=f"{_KIND_NAME[k]} scaled",
                    )
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
    return save_figure(fig, Path(path))


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
            ax.text(
                xi,
                bar.get_height(),
                "inf" if value > 0 else "-inf",
                ha="center",
                va="bottom" if value > 0 else "top",
                fontsize=7,
                fontweight="bold",
            )
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
    fig = Figure(
        figsize=(max(3.2 * ncols, 0.45 * len(chosen) * (2 if has_shift else 1) + 2.0), 2.6 * top_rows + 3.4),
        layout="constrained",
    )
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
                _draw_curve(
                    ax,
                    part["alpha"].to_numpy(np.float64),
                    part["mean"].to_numpy(np.float64),
                    part["se"].to_numpy(np.float64),
                    colour=colour,
                    linestyle=style,
                    label=f"{_KIND_NAME[k]} scaled",
                )
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
        _bars(
            ax,
            labels,
            table["k_group_entropy_shift"].to_numpy(np.float64),
            colours,
            "GQA group entropy shift under K scaling",
            "k_group_entropy_shift (nats)",
        )
    scope = f" (mode: {chosen_mode})" if chosen_mode is not None else ""
    shown = f"; curves for first {len(curve_heads)} of {len(chosen)} heads" if len(chosen) > len(curve_heads) else ""
    fig.suptitle(f"Q vs K scaling: entropy curves and asymmetry{scope}{shown}", fontsize=11)
    return save_figure(fig, Path(path))
