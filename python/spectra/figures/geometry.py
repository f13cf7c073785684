"""Figures of the QK geometry tables (``spectra.geometry``): PC0 r_q vs |r_k| with the taxonomy
regions, the explained-variance spectrum, layer × head and depth × checkpoint heatmaps, the bias
decomposition and class shares across checkpoints, and one head's PC0/PC1 scatter. Drawn on
matplotlib's Agg canvas without pyplot's global state and written atomically.

A checkpoint ``series`` is the concatenation of head tables with a ``checkpoint`` label and a
``step`` column; checkpoints are ordered by step, and those without one (NaN, or no ``step``
column at all) follow in order of first appearance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from spectra.figures.common import set_index_ticks
from spectra.geometry import PC0_CLASSES, checkpoint_order, depth_bins
from spectra.io.atomic import save_figure
from spectra.io.tables import check_frame

__all__ = [
    "plot_bias_decomposition",
    "plot_class_shares",
    "plot_depth_heatmaps",
    "plot_explained_variance",
    "plot_pc0_scatter",
    "plot_pc_scatter",
    "plot_series_depth_heatmap",
]

_COLOURS = dict(zip(PC0_CLASSES, ("tab:red", "tab:blue", "tab:green", "tab:grey", "tab:orange"), strict=True))


def plot_pc0_scatter(heads: pd.DataFrame, path: str | Path, *, hi: float = 0.7, lo: float = 0.3) -> Path:
    """One point per head at (r_q, |r_k|) of PC0, coloured by ``pc0_class``, with the 5-class regions.

    Example:
        >>> import tempfile
        >>> heads = pd.DataFrame({"pc0_r_q": [0.9, 0.1], "pc0_r_k": [0.8, -0.05],
        ...                       "pc0_class": ["position-dominated", "content-focused"]})
        >>> plot_pc0_scatter(heads, Path(tempfile.mkdtemp()) / "pc0.png").name
        'pc0.png'
    """
    check_frame(heads, ["pc0_r_q", "pc0_r_k", "pc0_class"], "heads")
    fig = Figure(figsize=(5.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for value in (lo, hi):
        ax.axvline(value, color="black", lw=0.6, ls=":")
        ax.axhline(value, color="black", lw=0.6, ls=":")
    for label, group in heads.groupby("pc0_class"):
        ax.scatter(
            group["pc0_r_q"],
            group["pc0_r_k"].abs(),
            s=18,
            alpha=0.8,
            color=_COLOURS.get(label, "black"),
            label=f"{label} ({len(group)})",
        )
    ax.set(
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        xlabel="PC0 r_q (canonical, >= 0)",
        ylabel="PC0 |r_k|",
        title=f"PC0 position correlations of {len(heads)} heads",
    )
    ax.legend(fontsize=7, loc="center right")
    return save_figure(fig, Path(path))


def plot_explained_variance(components: pd.DataFrame, path: str | Path) -> Path:
    """Explained-variance spectrum: per component the mean over heads with the 10–90 % band, log scale.

    Example:
        >>> import tempfile
        >>> comps = pd.DataFrame({"layer": 0, "head": [0, 0, 1, 1], "pc": [0, 1, 0, 1],
        ...                       "explained_variance": [0.5, 0.2, 0.6, 0.1]})
        >>> plot_explained_variance(comps, Path(tempfile.mkdtemp()) / "ev.png").name
        'ev.png'
    """
    check_frame(components, ["pc", "explained_variance"], "components")
    stats = components.groupby("pc")["explained_variance"].agg(
        mean="mean", low=lambda s: np.nanquantile(s, 0.1), high=lambda s: np.nanquantile(s, 0.9)
    )
    fig = Figure(figsize=(5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.fill_between(stats.index, stats["low"], stats["high"], alpha=0.25, color="tab:blue", label="10–90 % of heads")
    ax.plot(stats.index, stats["mean"], marker="o", color="tab:blue", label="mean")
    ax.set(
        yscale="log",
        xlabel="component",
        ylabel="explained variance (share of pooled Q+K variance)",
        title="combined Q+K PCA spectrum",
    )
    ax.legend(fontsize=8)
    return save_figure(fig, Path(path))


def _heatmap(fig: Figure, ax, grid: np.ndarray, label: str) -> None:
    """``grid`` as an image with a colour bar; data of both signs get a diverging map centred on 0."""
    finite = grid[np.isfinite(grid)]
    if finite.size and finite.min() < 0 < finite.max():
        bound = float(np.abs(finite).max())
        cmap, norm = "RdBu_r", Normalize(-bound, bound)
    else:
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        cmap, norm = "viridis", Normalize(lo, hi)
    image = ax.imshow(
        np.ma.masked_invalid(grid), aspect="auto", origin="lower", interpolation="nearest", cmap=cmap, norm=norm
    )
    fig.colorbar(image, ax=ax, label=label)


def _checkpoint_ticks(ax, labels: list) -> None:
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(
        [str(c) for c in labels],
        rotation=45 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
        fontsize=8,
    )


def plot_depth_heatmaps(
    heads: pd.DataFrame,
    path: str | Path,
    metrics: str | Sequence[str] = ("pc0_r_q", "pc0_r_k", "bias_strength", "plane_var_fraction"),
) -> Path:
    """One panel per metric: a layer (rows) × query head (columns) grid, NaN or absent cells blank.

    Metrics whose values have both signs use ``RdBu_r`` centred on 0, the others ``viridis``.

    Example:
        >>> import tempfile
        >>> heads = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1],
        ...                       "bias_strength": [0.5, -0.2, 0.1, float("nan")]})
        >>> plot_depth_heatmaps(heads, Path(tempfile.mkdtemp()) / "depth.png", "bias_strength").name
        'depth.png'
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics is empty")
    check_frame(heads, ["layer", "head", *metrics], "heads")
    layers, head_ids = np.sort(heads["layer"].unique()), np.sort(heads["head"].unique())
    ncols = min(len(metrics), 2)
    nrows = -(-len(metrics) // ncols)
    panel_w, panel_h = max(3.5, 1.5 + 0.18 * len(head_ids)), max(2.8, 1.2 + 0.15 * len(layers))
    fig = Figure(figsize=(ncols * panel_w, nrows * panel_h), layout="constrained")
    FigureCanvasAgg(fig)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        grid = (
            heads.pivot_table(index="layer", columns="head", values=metric, aggfunc="mean", dropna=False)
            .reindex(index=layers, columns=head_ids)
            .to_numpy(dtype=np.float64)
        )
        _heatmap(fig, ax, grid, metric)
        set_index_ticks(ax.set_xticks, ax.set_xticklabels, head_ids)
        set_index_ticks(ax.set_yticks, ax.set_yticklabels, layers)
        ax.set(xlabel="query head", ylabel="layer", title=metric)
    return save_figure(fig, Path(path))


def plot_series_depth_heatmap(
    series: pd.DataFrame, path: str | Path, metric: str = "bias_strength", n_bins: int = 10
) -> Path:
    """Depth bin (rows) × checkpoint (columns, by step): the mean of ``metric`` over the bin's heads.

    Depth is layer / the largest layer in ``series``, cut into ``n_bins`` equal bins (depth 1 in the
    last); a bin without heads, or with only NaN, is blank.

    Example:
        >>> import tempfile
        >>> series = pd.DataFrame({"checkpoint": ["step-100"] * 3 + ["step-0"] * 3, "step": [100] * 3 + [0] * 3,
        ...                        "layer": [0, 1, 2] * 2, "bias_strength": [0.1, 0.4, 0.9, 0.0, 0.1, 0.2]})
        >>> plot_series_depth_heatmap(series, Path(tempfile.mkdtemp()) / "series.png").name
        'series.png'
    """
    check_frame(series, ["checkpoint", "layer", metric], "series")
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, not {n_bins!r}")
    n_bins = int(n_bins)
    bins = depth_bins(series["layer"], n_bins=n_bins)
    order = checkpoint_order(series)
    grid = (
        series.assign(depth_bin=bins)
        .pivot_table(index="depth_bin", columns="checkpoint", values=metric, aggfunc="mean", dropna=False)
        .reindex(index=range(n_bins), columns=order)
        .to_numpy(dtype=np.float64)
    )
    fig = Figure(figsize=(max(4.5, 2.5 + 0.45 * len(order)), max(3.5, 1.5 + 0.25 * n_bins)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _heatmap(fig, ax, grid, f"mean {metric}")
    _checkpoint_ticks(ax, order)
    ax.set_yticks(np.arange(n_bins))
    ax.set_yticklabels([f"{b / n_bins:.2g}–{(b + 1) / n_bins:.2g}" for b in range(n_bins)], fontsize=8)
    ax.set(xlabel="checkpoint", ylabel="depth (layer / last layer)", title=f"{metric} by depth across checkpoints")
    return save_figure(fig, Path(path))


def plot_bias_decomposition(series: pd.DataFrame, path: str | Path) -> Path:
    """Per checkpoint (by step) the mean over heads of ``mu_q_a``, ``alpha_k`` and ``bias_strength``,
    each with its 25–75th percentile range.

    ``bias_strength`` is ``mu_q_a · alpha_k`` per head, and a mean of products is not the product
    of means, so each panel shows its own mean rather than deriving the third from the first two.

    Example:
        >>> import tempfile
        >>> series = pd.DataFrame({"checkpoint": ["a", "a", "b", "b"], "step": [0, 0, 10, 10],
        ...                        "mu_q_a": [0.1, 0.3, 0.5, 0.7], "alpha_k": [1.0, -1.0, 2.0, 1.0]})
        >>> series["bias_strength"] = series["mu_q_a"] * series["alpha_k"]
        >>> plot_bias_decomposition(series, Path(tempfile.mkdtemp()) / "bias.png").name
        'bias.png'
    """
    metrics = ("mu_q_a", "alpha_k", "bias_strength")
    check_frame(series, ["checkpoint", *metrics], "series")
    order = checkpoint_order(series)
    grouped = series.groupby("checkpoint", sort=False)
    x = np.arange(len(order))
    fig = Figure(figsize=(max(9.0, 3 * (1.5 + 0.35 * len(order))), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    titles = ("mean mu_q_a", "mean alpha_k", "mean bias_strength\n(mean of per-head mu_q_a · alpha_k)")
    for i, (metric, title, colour) in enumerate(
        zip(metrics, titles, ("tab:blue", "tab:orange", "tab:purple"), strict=True)
    ):
        ax = fig.add_subplot(1, 3, i + 1)
        stats = (
            grouped[metric]
            .agg(mean="mean", low=lambda s: s.quantile(0.25), high=lambda s: s.quantile(0.75))
            .reindex(order)
        )
        ax.bar(x, stats["mean"], color=colour, alpha=0.75, label="mean over heads")
        # The mean can lie outside a skewed IQR, so the range is drawn as-is rather than as ±yerr.
        ax.vlines(x, stats["low"], stats["high"], color="black", lw=1.2, label="25–75th percentile")
        ax.scatter(np.r_[x, x], np.r_[stats["low"], stats["high"]], marker="_", color="black", s=40)
        ax.axhline(0, color="black", lw=0.6)
        _checkpoint_ticks(ax, order)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("checkpoint")
    # Outside the panels, where no whisker can hide it.
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle("bias decomposition across checkpoints", fontsize=11)
    return save_figure(fig, Path(path))


def plot_class_shares(series: pd.DataFrame, path: str | Path) -> Path:
    """A stacked bar per checkpoint (by step): the share of its heads in each ``pc0_class``.

    Example:
        >>> import tempfile
        >>> series = pd.DataFrame({"checkpoint": ["a", "a", "b", "b"], "step": [0, 0, 10, 10],
        ...                        "pc0_class": ["mixed", "content-focused", "position-dominated", "mixed"]})
        >>> plot_class_shares(series, Path(tempfile.mkdtemp()) / "shares.png").name
        'shares.png'
    """
    check_frame(series, ["checkpoint", "pc0_class"], "series")
    order = checkpoint_order(series)
    counts = pd.crosstab(series["checkpoint"], series["pc0_class"])
    # Heads without a class (NaN) stay in the denominator, so their share shows as a gap.
    shares = counts.div(series.groupby("checkpoint").size(), axis=0).reindex(order).fillna(0.0)
    classes = [c for c in PC0_CLASSES if c in shares] + [c for c in shares if c not in PC0_CLASSES]
    x = np.arange(len(order))
    fig = Figure(figsize=(max(5.5, 3.5 + 0.45 * len(order)), 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bottom = np.zeros(len(order))
    for label in classes:
        ax.bar(x, shares[label], bottom=bottom, color=_COLOURS.get(label, "black"), label=label, width=0.8)
        bottom += shares[label].to_numpy()
    _checkpoint_ticks(ax, order)
    ax.set(ylim=(0, 1), xlabel="checkpoint", ylabel="share of heads", title="PC0 class shares across checkpoints")
    handles, labels = ax.get_legend_handles_labels()
    # Reversed, so the legend reads top to bottom like the stack.
    ax.legend(handles[::-1], labels[::-1], fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, Path(path))


def plot_pc_scatter(
    pc0: np.ndarray, pc1: np.ndarray, positions: np.ndarray, is_query: np.ndarray, path: str | Path, *, title: str = ""
) -> Path:
    """One head's query and key rows on its first two principal components, coloured by position;
    queries are circles, keys triangles.

    Example:
        >>> import tempfile
        >>> pos = np.tile(np.arange(8), 2)
        >>> pc0, pc1 = np.cos(pos / 4.0), np.r_[np.zeros(8), np.ones(8)]
        >>> is_query = np.r_[np.ones(8, bool), np.zeros(8, bool)]
        >>> plot_pc_scatter(pc0, pc1, pos, is_query, Path(tempfile.mkdtemp()) / "pc.png", title="L0 H0").name
        'pc.png'
    """
    arrays = {
        "pc0": np.asarray(pc0, dtype=np.float64),
        "pc1": np.asarray(pc1, dtype=np.float64),
        "positions": np.asarray(positions, dtype=np.float64),
        "is_query": np.asarray(is_query, dtype=bool),
    }
    for name, values in arrays.items():
        if values.ndim != 1:
            raise ValueError(f"{name} must be 1-D, not of shape {values.shape}")
        if values.size != arrays["pc0"].size:
            raise ValueError(f"{name} has {values.size} values but pc0 has {arrays['pc0'].size}")
    if arrays["pc0"].size == 0:
        raise ValueError("pc0 is empty")
    pc0, pc1, positions, is_query = arrays.values()
    fig = Figure(figsize=(6, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    norm = Normalize(np.nanmin(positions), np.nanmax(positions))
    image = None
    for mask, marker in ((is_query, "o"), (~is_query, "^")):
        if mask.any():
            image = ax.scatter(
                pc0[mask],
                pc1[mask],
                c=positions[mask],
                cmap="viridis",
                norm=norm,
                marker=marker,
                s=14,
                alpha=0.75,
                linewidths=0,
            )
    fig.colorbar(image, ax=ax, label="position")
    # Grey proxies: the marker, not the colour, tells queries from keys.
    ax.legend(
        handles=[
            Line2D([], [], ls="", marker="o", color="grey", label=f"query ({int(is_query.sum())})"),
            Line2D([], [], ls="", marker="^", color="grey", label=f"key ({int((~is_query).sum())})"),
        ],
        fontsize=8,
    )
    ax.set(xlabel="PC0", ylabel="PC1", title=title)
    return save_figure(fig, Path(path))
