"""Figures of training dynamics: how key norms, ranks, attention entropy and the k_norm gain γ of
every head move across checkpoints.

The inputs are the three tidy tables of the dynamics contract (what :func:`spectra.dynamics.track`
returns):

* ``head_series`` — one row per (step, layer, query head, stat): columns ``step``, ``layer``,
  ``head``, ``kv_head``, ``stat``, ``value``;
* ``kv_series`` — one row per (step, layer, KV head, stat): ``step``, ``layer``, ``kv_head``,
  ``stat``, ``value``;
* ``gamma`` — the k_norm gain per checkpoint: ``step``, ``layer``, ``head`` (``-1`` when γ is
  shared by every head, ``0..Hkv-1`` when each KV head has its own), ``dim``, ``gamma``.

Checkpoint steps are not evenly spaced (0, 100, 200, 400, ...), so curves are drawn against the
step *value* on a symlog axis (linear up to the smallest positive step, logarithmic above, ticks at
the checkpoints), never against the checkpoint index; the γ heatmap, whose columns are checkpoints,
labels each column with its step. Rows repeated for the same key (e.g. the same step twice) are
averaged; NaN values are skipped.

Every function draws one figure on matplotlib's Agg canvas without touching pyplot's global state,
writes it atomically as PNG (a hidden temporary file in the target folder, then ``os.replace``)
and returns the :class:`~pathlib.Path` written. Inputs are checked: an empty frame raises
``ValueError``; a missing required column raises ``KeyError`` naming the missing columns and those
present; a stat the table lacks raises ``KeyError`` naming it and the stats present; ``layers=``
naming a layer the table lacks raises ``ValueError``.
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

from spectra.figures.dynamics_common import (
    _GAMMA_CMAP,
    _MAX_STEP_TICKS,
    _PANELS_PER_ROW,
    MAX_GAMMA_PANELS,
    LayerList,
    _colour,
    _cv,
    _figure,
    _fmt,
    _grid,
    _legend,
    _no_data,
    _PlainLogFormatter,
    _select_layers,
    _stat_rows,
    _stats_present,
    _step_axis,
    _step_label,
    _step_norm,
    _steps,
    _wide,
)
from spectra.io.atomic import save_figure
from spectra.io.tables import check_frame
from spectra.metrics.correlations import pearson

__all__ = [
    "MAX_GAMMA_PANELS",
    "RANK_STATS",
    "plot_entropy_vs_norm",
    "plot_gamma_heatmap",
    "plot_norm_divergence",
    "plot_qk_ratio",
    "plot_rank_evolution",
]

#: The default stats of :func:`plot_rank_evolution`.
RANK_STATS: tuple[str, ...] = ("k_participation_ratio_mean", "k_spectral_pr", "k_entropy_rank")


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def plot_norm_divergence(
    kv_series: pd.DataFrame,
    path: str | os.PathLike,
    *,
    stat: str = "k_norm_mean",
    layers: LayerList = None,
) -> Path:
    """One panel per layer: ``stat`` of every KV head against step (a line per head, a marker at
    each checkpoint) over the layer mean across KV heads (thick grey line).

    The question it answers: is a layer's mean made of uniform heads, or of heads that bifurcate
    (sinks climbing, gatherers falling)? Each panel title gives the coefficient of variation
    across the layer's KV heads (std / |mean|) at the first and the last step: a rising CV is a
    divergence the layer mean hides. ``layers`` (an index or a sequence) restricts the panels.
    Returns ``Path(path)``.

    Example:
        >>> import tempfile
        >>> steps = [0, 100, 400, 1600]
        >>> kv = pd.DataFrame({"step": steps * 2, "layer": 0, "kv_head": [0] * 4 + [1] * 4,
        ...                    "stat": "k_norm_mean", "value": [5.0, 6.0, 8.0, 12.0, 5.0, 4.5, 3.0, 2.0]})
        >>> out = Path(tempfile.mkdtemp())
        >>> png = plot_norm_divergence(kv, out / "norms.png")
        >>> png.name, png.stat().st_size > 0, sorted(p.name for p in out.iterdir())
        ('norms.png', True, ['norms.png'])
    """
    check_frame(kv_series, ["step", "layer", "kv_head", "stat", "value"], "kv_series")
    rows = _select_layers(_stat_rows(kv_series, stat, "kv_series"), layers, "kv_series")
    steps = _steps(rows, "kv_series")
    table = _wide(rows, ["layer", "kv_head", "step"])
    layer_ids = sorted(int(x) for x in table["layer"].unique())
    kv_heads = sorted(int(x) for x in table["kv_head"].unique())
    head_colour = {h: _colour(i, len(kv_heads)) for i, h in enumerate(kv_heads)}

    fig = _figure(len(layer_ids))
    axes = _grid(fig, len(layer_ids))
    handles: dict[str, Line2D] = {}
    for ax, layer in zip(axes, layer_ids):
        _step_axis(ax, steps)  # before plotting: autoscaling then works in symlog space
        part = table[table["layer"] == layer]
        wide = part.pivot(index="step", columns="kv_head", values="value").sort_index()
        x = wide.index.to_numpy(np.float64)
        mean = wide.mean(axis=1, skipna=True).to_numpy(np.float64)
        (line,) = ax.plot(
            x, mean, color="grey", linewidth=4.0, alpha=0.55, solid_capstyle="round", zorder=1, label="layer mean"
        )
        handles.setdefault("layer mean", line)
        for head in wide.columns:
            y = wide[head].to_numpy(np.float64)
            ok = np.isfinite(y)
            (line,) = ax.plot(
                x[ok],
                y[ok],
                color=head_colour[int(head)],
                marker="o",
                markersize=3.5,
                linewidth=1.2,
                zorder=2,
                label=f"KV head {int(head)}",
            )
            handles.setdefault(f"KV head {int(head)}", line)
        if not np.isfinite(wide.to_numpy(np.float64)).any():
            _no_data(ax, f"no finite {stat}")
        first, last = wide.iloc[0].to_numpy(np.float64), wide.iloc[-1].to_numpy(np.float64)
        ax.set_title(f"layer {layer}  (CV over heads {_fmt(_cv(first))} → {_fmt(_cv(last))})", fontsize=9)
        ax.set_ylabel(stat)
    order = ["layer mean", *[f"KV head {h}" for h in kv_heads]]
    _legend(fig, [handles[k] for k in order if k in handles])
    fig.suptitle(
        f"{stat} per KV head over training (grey: layer mean)\n"
        "CV = std / |mean| over the layer's KV heads, first → last step",
        fontsize=10,
    )
    return save_figure(fig, Path(path))


def plot_entropy_vs_norm(
    head_series: pd.DataFrame,
    path: str | os.PathLike,
    *,
    layers: LayerList = None,
) -> Path:
    """One panel per layer: a point per (step, query head) with x = ``k_norm_mean`` (of the head's
    KV head) and y = ``entropy_mean``, coloured by step on a blue → red (coolwarm) symlog scale
    with a colorbar labelled "step"; a faint grey line joins each head's points in step order,
    so a head's trajectory can be followed.

    Points need both stats finite. Each panel title gives the Pearson r over its points (NaN
    with fewer than 4). ``layers`` restricts the panels. Returns ``Path(path)``.
    """
    check_frame(head_series, ["step", "layer", "head", "stat", "value"], "head_series")
    stats = ("k_norm_mean", "entropy_mean")
    missing = [s for s in stats if not (head_series["stat"] == s).any()]
    if missing:
        raise KeyError(f"head_series has no stat(s) {missing}; stats present: {_stats_present(head_series)}")
    rows = _select_layers(head_series[head_series["stat"].isin(stats)], layers, "head_series")
    steps = _steps(rows, "head_series")
    table = rows.pivot_table(index=["layer", "head", "step"], columns="stat", values="value", aggfunc="mean")
    table = table.reindex(columns=list(stats)).reset_index()
    table = table[
        np.isfinite(table["k_norm_mean"].to_numpy(np.float64)) & np.isfinite(table["entropy_mean"].to_numpy(np.float64))
    ]
    layer_ids = sorted(int(x) for x in rows["layer"].unique())
    norm = _step_norm(steps)
    cmap = matplotlib.colormaps["coolwarm"]

    fig = _figure(len(layer_ids), extra_width=1.2)
    axes = _grid(fig, len(layer_ids))
    mappable = None
    for ax, layer in zip(axes, layer_ids):
        part = table[table["layer"] == layer].sort_values(["head", "step"])
        if part.empty:
            _no_data(ax, "no step with both stats finite")
        for _, track in part.groupby("head", sort=True):
            if len(track) > 1:
                ax.plot(track["k_norm_mean"], track["entropy_mean"], color="grey", linewidth=0.6, alpha=0.4, zorder=1)
        x = part["k_norm_mean"].to_numpy(np.float64)
        y = part["entropy_mean"].to_numpy(np.float64)
        points = ax.scatter(
            x,
            y,
            c=part["step"].to_numpy(np.float64),
            cmap=cmap,
            norm=norm,
            s=18,
            edgecolors="black",
            linewidths=0.3,
            zorder=2,
        )
        if mappable is None:
            mappable = points
        r, _, n = pearson(x, y)
        ax.set_title(f"layer {layer}  (r = {_fmt(r, '.3f')}, n = {n})", fontsize=9)
        ax.set_xlabel("‖k‖ (k_norm_mean)")
        ax.set_ylabel("attention entropy (entropy_mean)")
    bar = fig.colorbar(mappable, ax=list(axes), label="step")
    if steps.size <= _MAX_STEP_TICKS:
        bar.set_ticks(steps)
        bar.set_ticklabels([_step_label(s) for s in steps])
    bar.ax.minorticks_off()
    fig.suptitle(
        "attention entropy vs key norm over training: one panel per layer, a point per "
        "(step, query head), colour = step",
        fontsize=10,
    )
    return save_figure(fig, Path(path))


def plot_rank_evolution(
    kv_series: pd.DataFrame,
    path: str | os.PathLike,
    *,
    stats: Sequence[str] | str = RANK_STATS,
    layers: LayerList = None,
) -> Path:
    """One panel per stat of ``stats`` that ``kv_series`` has (the others are skipped and named in
    the title; none present is a ``KeyError``): per layer, the mean over KV heads against step,
    with a band from the minimum to the maximum over KV heads. ``layers`` restricts the lines.
    Returns ``Path(path)``.
    """
    wanted = [stats] if isinstance(stats, str) else list(stats)
    if not wanted:
        raise ValueError("stats is empty")
    check_frame(kv_series, ["step", "layer", "kv_head", "stat", "value"], "kv_series")
    available = set(_stats_present(kv_series))
    present = [s for s in dict.fromkeys(wanted) if s in available]
    skipped = [s for s in dict.fromkeys(wanted) if s not in available]
    if not present:
        raise KeyError(f"kv_series has none of the stats {wanted}; stats present: {sorted(available)}")
    rows = _select_layers(kv_series[kv_series["stat"].isin(present)], layers, "kv_series")
    steps = _steps(rows, "kv_series")
    table = _wide(rows, ["stat", "layer", "kv_head", "step"])
    layer_ids = sorted(int(x) for x in table["layer"].unique())
    layer_colour = {layer: _colour(i, len(layer_ids)) for i, layer in enumerate(layer_ids)}
    if len(layer_ids) > 20:
        cmap = matplotlib.colormaps["viridis"]
        layer_colour = {layer: cmap(i / max(1, len(layer_ids) - 1)) for i, layer in enumerate(layer_ids)}

    fig = _figure(len(present), per_row=3, width=4.2, height=3.3)
    axes = _grid(fig, len(present), per_row=3)
    handles: dict[int, Line2D] = {}
    for ax, stat in zip(axes, present):
        _step_axis(ax, steps)
        drew = False
        for layer in layer_ids:
            part = table[(table["stat"] == stat) & (table["layer"] == layer)]
            if part.empty:
                continue
            band = part.groupby("step", sort=True)["value"].agg(["mean", "min", "max"])
            band = band[np.isfinite(band["mean"].to_numpy(np.float64))]
            if band.empty:
                continue
            drew = True
            x = band.index.to_numpy(np.float64)
            colour = layer_colour[layer]
            (line,) = ax.plot(
                x,
                band["mean"].to_numpy(np.float64),
                color=colour,
                marker="o",
                markersize=3,
                linewidth=1.2,
                label=f"layer {layer}",
            )
            ax.fill_between(
                x,
                band["min"].to_numpy(np.float64),
                band["max"].to_numpy(np.float64),
                color=colour,
                alpha=0.18,
                linewidth=0,
            )
            handles.setdefault(layer, line)
        if not drew:
            _no_data(ax, f"no finite {stat}")
        ax.set_ylabel(stat)
        ax.set_title(stat, fontsize=10)
    _legend(fig, [handles[layer] for layer in layer_ids if layer in handles])
    title = "key rank over training: per layer, mean over KV heads (band: min–max over KV heads)"
    if skipped:
        title += f"\nnot in kv_series: {', '.join(skipped)}"
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, Path(path))


def plot_gamma_heatmap(
    gamma: pd.DataFrame,
    path: str | os.PathLike,
    *,
    layers: LayerList = None,
) -> Path:
    """Heatmaps of the k_norm gain γ: dimension (y, dim 0 at the bottom) × checkpoint (x), one
    panel per layer when γ is shared by its heads (``head == -1``), one per (layer, head) when the
    layer has a γ per KV head (then a row of panels per layer). Bright horizontal bands are the
    "golden dimensions" whose gain grows; each panel title names the three largest γ at the last
    step.

    Steps are uneven, so x is categorical: a column per checkpoint, labelled with its step. All
    panels share one colour scale and colorbar; missing (step, dim) cells and NaN are grey. At
    most :data:`MAX_GAMMA_PANELS` panels are drawn (the title says so); ``layers`` restricts
    them. Returns ``Path(path)``.
    """
    check_frame(gamma, ["step", "layer", "head", "dim", "gamma"], "gamma")
    rows = _select_layers(gamma, layers, "gamma")
    steps = _steps(rows, "gamma")
    table = _wide(rows, ["layer", "head", "dim", "step"], column="gamma")
    panels = [
        (int(layer), int(head)) for layer, head in table[["layer", "head"]].drop_duplicates().itertuples(index=False)
    ]
    n_total = len(panels)
    panels = panels[:MAX_GAMMA_PANELS]
    per_layer: dict[int, list[int]] = {}
    for layer, head in panels:
        per_layer.setdefault(layer, []).append(head)
    values = table["gamma"].to_numpy(np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = Normalize(lo, hi if hi > lo else lo + 1e-12)
    dims_all = np.sort(table["dim"].unique())

    # Shared γ everywhere: a grid of layer panels; per-head γ: one row of panels per layer.
    if all(len(heads) == 1 for heads in per_layer.values()):
        cells = [(i, layer, heads[0]) for i, (layer, heads) in enumerate(per_layer.items())]
        per_row = _PANELS_PER_ROW
        nrows, ncols = math.ceil(len(cells) / min(per_row, len(cells))), min(per_row, len(cells))
        positions = [divmod(i, ncols) for i, _, _ in cells]
    else:
        ncols = max(len(heads) for heads in per_layer.values())
        nrows = len(per_layer)
        cells, positions = [], []
        for r, (layer, heads) in enumerate(per_layer.items()):
            for c, head in enumerate(heads):
                cells.append((len(cells), layer, head))
                positions.append((r, c))
    width = max(2.6, 0.9 + 0.32 * steps.size)
    height = max(2.4, 0.8 + 0.02 * dims_all.size)
    fig = Figure(figsize=(width * ncols + 1.3, height * nrows + 0.8), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    used = set(positions)
    for (r, c), ax in np.ndenumerate(grid):
        if (r, c) not in used:
            ax.set_visible(False)
    image = None
    tick_every = max(1, math.ceil(steps.size / 16))
    for (_, layer, head), (r, c) in zip(cells, positions):
        ax = grid[r, c]
        part = table[(table["layer"] == layer) & (table["head"] == head)]
        dims = np.sort(part["dim"].unique())
        matrix = (
            part.pivot(index="dim", columns="step", values="gamma")
            .reindex(index=dims, columns=steps)
            .to_numpy(np.float64)
        )
        image = ax.imshow(
            np.ma.masked_invalid(matrix),
            aspect="auto",
            origin="lower",
            interpolation="nearest",
            cmap=_GAMMA_CMAP,
            norm=norm,
            extent=(-0.5, steps.size - 0.5, -0.5, dims.size - 0.5),
        )
        positions_x = np.arange(0, steps.size, tick_every)
        ax.set_xticks(positions_x)
        ax.set_xticklabels(
            [_step_label(s) for s in steps[positions_x]], fontsize=7, rotation=45 if steps.size > 5 else 0
        )
        dim_every = max(1, math.ceil(dims.size / 12))
        ax.set_yticks(np.arange(0, dims.size, dim_every))
        ax.set_yticklabels([str(int(d)) for d in dims[::dim_every]], fontsize=7)
        name = f"layer {layer}" + (" (shared γ)" if head < 0 else f" head {head}")
        filled = np.flatnonzero(np.isfinite(matrix).any(axis=0))
        if filled.size:  # the three largest γ at the panel's last checkpoint with a value
            last = matrix[:, filled[-1]]
            top = [
                int(dims[i])
                for i in np.argsort(-np.where(np.isfinite(last), last, -np.inf))[:3]
                if np.isfinite(last[i])
            ]
            name += f"\ntop γ @ step {_step_label(steps[filled[-1]])}: {', '.join(f'd{d}' for d in top)}"
        else:
            _no_data(ax, "no finite γ")
        ax.set_title(name, fontsize=8)
        if c == 0:
            ax.set_ylabel("dim")
        if r == nrows - 1 or (r + 1, c) not in used:
            ax.set_xlabel("step (checkpoint)")
    fig.colorbar(image, ax=[ax for ax in grid.ravel() if ax.get_visible()], label="γ (k_norm gain)")
    shown = f"; first {len(panels)} of {n_total} panels (pass layers= to choose)" if n_total > len(panels) else ""
    fig.suptitle(
        f"k_norm gain γ over training: dimension × checkpoint (bright bands: golden dimensions){shown}", fontsize=10
    )
    return save_figure(fig, Path(path))


def plot_qk_ratio(
    head_series: pd.DataFrame,
    path: str | os.PathLike,
    *,
    layers: LayerList = None,
) -> Path:
    """One panel per layer: ``qk_norm_ratio`` (‖q‖ / ‖k‖) of every query head against step, a
    line per query head (a colour per head index; the legend names each head's KV head when
    ``head_series`` has ``kv_head``, so the members of one GQA group can be told apart from a
    shared-key effect). The y axis is logarithmic when every ratio is positive, with a dotted
    line at ratio 1 when it falls inside the data. ``layers`` restricts the panels. Returns
    ``Path(path)``.
    """
    check_frame(head_series, ["step", "layer", "head", "stat", "value"], "head_series")
    rows = _select_layers(_stat_rows(head_series, "qk_norm_ratio", "head_series"), layers, "head_series")
    steps = _steps(rows, "head_series")
    keys = ["layer", "head", "step"]
    table = _wide(rows, keys)
    kv_of: dict[tuple[int, int], int] = {}
    if "kv_head" in rows.columns:
        for layer, head, kv in rows[["layer", "head", "kv_head"]].drop_duplicates().itertuples(index=False):
            if pd.notna(kv):
                kv_of.setdefault((int(layer), int(head)), int(kv))
    layer_ids = sorted(int(x) for x in table["layer"].unique())
    heads = sorted(int(x) for x in table["head"].unique())
    head_colour = {h: _colour(i, len(heads)) for i, h in enumerate(heads)}
    values = table["value"].to_numpy(np.float64)
    finite = values[np.isfinite(values)]
    log_y = finite.size > 0 and bool((finite > 0).all())

    fig = _figure(len(layer_ids))
    axes = _grid(fig, len(layer_ids))
    handles: dict[str, Line2D] = {}
    order: list[str] = []
    for ax, layer in zip(axes, layer_ids):
        _step_axis(ax, steps)  # scales first: autoscaling then works in symlog space
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(_PlainLogFormatter())
            ax.yaxis.set_minor_formatter(_PlainLogFormatter(minor_thresholds=(3, 1)))
        part = table[table["layer"] == layer]
        drew = False
        for head, track in part.groupby("head", sort=True):
            head = int(head)
            x = track["step"].to_numpy(np.float64)
            y = track["value"].to_numpy(np.float64)
            ok = np.isfinite(y)
            drew = drew or bool(ok.any())
            label = f"head {head}" + (f" (KV {kv_of[(layer, head)]})" if (layer, head) in kv_of else "")
            (line,) = ax.plot(
                x[ok], y[ok], color=head_colour[head], marker="o", markersize=3, linewidth=1.1, label=label
            )
            if label not in handles:
                handles[label] = line
                order.append(label)
        if not drew:
            _no_data(ax, "no finite qk_norm_ratio")
        shown = part["value"].to_numpy(np.float64)
        shown = shown[np.isfinite(shown)]
        if shown.size and shown.min() <= 1.0 <= shown.max():
            ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
        ax.set_ylabel("qk_norm_ratio (‖q‖ / ‖k‖)")
        ax.set_title(f"layer {layer}", fontsize=9)
    _legend(fig, [handles[k] for k in order])
    fig.suptitle("query/key norm ratio per query head over training" + (" (log y)" if log_y else ""), fontsize=10)
    return save_figure(fig, Path(path))
