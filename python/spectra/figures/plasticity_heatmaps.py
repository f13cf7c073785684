"""Heatmap figures of the attention-plasticity tables: the 2-D (inter-key distance Δ × query-to-midpoint
distance D) pairwise-plasticity heatmap and its comparison across checkpoints, and the published
(query bucket × key bucket) heatmap (see :mod:`spectra.figures.plasticity` for the input tables)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from spectra.figures.plasticity_common import (
    _AGGS,
    _PANELS_PER_ROW,
    _check,
    _group_order,
    _nonnegative_ints,
    _option,
    _single_model,
    _span,
    _thinned,
)
from spectra.io.atomic import save_figure

# ---------------------------------------------------------------------------------------------
# 2-D (Δ, D) heatmaps
# ---------------------------------------------------------------------------------------------

_HEATMAP_COLUMNS = ("delta_bin", "distance_bin", "bin_width", "pp_sum", "n_pairs")


def _bin_width(heatmap: pd.DataFrame) -> int:
    widths = pd.to_numeric(heatmap["bin_width"], errors="coerce").drop_duplicates().to_numpy(dtype=np.float64)
    if len(widths) != 1 or not (np.isfinite(widths[0]) and widths[0] > 0 and widths[0] == round(widths[0])):
        raise ValueError(f"heatmap['bin_width'] must be one positive integer for all rows, not {list(widths)[:6]}")
    return int(widths[0])


def heatmap_matrix(
    heatmap: pd.DataFrame, *, n_distance: int | None = None, n_delta: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pooled 2-D heatmap: ``matrix[i, j] = Σ pp_sum / Σ n_pairs`` over the rows (heads) with
    ``distance_bin == i`` and ``delta_bin == j``; a cell without pairs is NaN, never 0.

    Returns ``(matrix, delta_edges, distance_edges)``: ``matrix`` has shape ``(n_distance,
    n_delta)`` (by default one past the largest bin on each axis), and the edges are the bin
    boundaries in tokens, ``bin · bin_width``, so ``len(delta_edges) == n_delta + 1``. A pair with
    inter-key distance Δ has its midpoint at least Δ/2 before the query, so only cells with
    ``j < 2 (i + 1)`` are feasible.

    Example:
        >>> heatmap = pd.DataFrame({"delta_bin": [1, 1], "distance_bin": [2, 2], "bin_width": 4,
        ...                         "pp_sum": [1.0, 2.0], "n_pairs": [2, 4]})
        >>> matrix, delta_edges, distance_edges = heatmap_matrix(heatmap)
        >>> float(matrix[2, 1]), int(np.isnan(matrix).sum()), distance_edges.tolist()
        (0.5, 5, [0, 4, 8, 12])
    """
    _check(heatmap, _HEATMAP_COLUMNS, "heatmap")
    width = _bin_width(heatmap)
    delta = _nonnegative_ints(heatmap["delta_bin"], "heatmap['delta_bin']")
    distance = _nonnegative_ints(heatmap["distance_bin"], "heatmap['distance_bin']")
    pairs = pd.to_numeric(heatmap["n_pairs"], errors="coerce").to_numpy(dtype=np.float64)
    pp = pd.to_numeric(heatmap["pp_sum"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(pairs)) or np.any(pairs < 0):
        raise ValueError("heatmap['n_pairs'] must hold finite counts >= 0")
    shape = []
    for given, values, label in ((n_distance, distance, "n_distance"), (n_delta, delta, "n_delta")):
        needed = int(values.max()) + 1
        if given is None:
            given = needed
        elif int(given) != given or given < needed:
            raise ValueError(f"{label} must be an integer >= {needed} (the largest bin + 1), not {given!r}")
        shape.append(int(given))
    pp_total, pair_total = np.zeros(shape), np.zeros(shape)
    np.add.at(pp_total, (distance, delta), np.where(pairs > 0, pp, 0.0))
    np.add.at(pair_total, (distance, delta), pairs)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(pair_total > 0, pp_total / pair_total, np.nan)
    return matrix, np.arange(shape[1] + 1, dtype=np.int64) * width, np.arange(shape[0] + 1, dtype=np.int64) * width


def _heatmap_norm(values: np.ndarray, vmin: float | None, vmax: float | None) -> Normalize:
    finite = values[np.isfinite(values)]
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise ValueError(f"vmin ({vmin}) must be below vmax ({vmax})")
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if lo > hi:
        raise ValueError(f"vmin ({lo}) must be below vmax ({hi}, from the data when not given)")
    return Normalize(*_span(lo, hi))


def _draw_delta_heatmap(
    ax,
    matrix: np.ndarray,
    delta_edges: np.ndarray,
    distance_edges: np.ndarray,
    norm: Normalize,
    *,
    boundary_label: bool = True,
):
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        cmap="magma",
        norm=norm,
        extent=(0, delta_edges[-1], 0, distance_edges[-1]),
    )
    x_max = float(delta_edges[-1])
    ax.plot(
        [0.0, x_max],
        [0.0, x_max / 2],
        color="tab:cyan",
        lw=1.2,
        ls="--",
        label="D = Δ/2 (feasibility boundary)" if boundary_label else None,
    )
    ax.set_xlim(0, delta_edges[-1])
    ax.set_ylim(0, distance_edges[-1])
    # Ticks at bin starts, in tokens.
    x_starts = delta_edges[:-1][_thinned(len(delta_edges) - 1)]
    ax.set_xticks(x_starts)
    ax.set_xticklabels([f"{int(v):,}" for v in x_starts], fontsize=7, rotation=45, ha="right")
    y_starts = distance_edges[:-1][_thinned(len(distance_edges) - 1)]
    ax.set_yticks(y_starts)
    ax.set_yticklabels([f"{int(v):,}" for v in y_starts], fontsize=7)
    ax.set_xlabel("inter-key distance Δ (tokens)")
    ax.set_ylabel("query-to-key-midpoint distance D (tokens)")
    return image


def heatmap_figure(
    heatmap: pd.DataFrame,
    path: str | Path,
    *,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """Mean pairwise plasticity per (Δ bin, D bin), pooled over heads (:func:`heatmap_matrix`), on
    magma; empty cells blank; axes in tokens with ticks at bin starts; the boundary D = Δ/2 dashed.

    ``vmin`` / ``vmax`` fix the colour scale (by default the data's range).

    Example:
        >>> import tempfile
        >>> heatmap = pd.DataFrame({"delta_bin": [0, 1, 0], "distance_bin": [0, 1, 2], "bin_width": 1024,
        ...                         "pp_sum": [5.0, 3.0, 1.0], "n_pairs": [8, 8, 8]})
        >>> heatmap_figure(heatmap, Path(tempfile.mkdtemp()) / "h.png", vmin=0, vmax=1).name
        'h.png'
    """
    _check(heatmap, _HEATMAP_COLUMNS, "heatmap")
    label = _single_model(heatmap, "heatmap", "heatmaps_comparison_figure")
    matrix, delta_edges, distance_edges = heatmap_matrix(heatmap)
    norm = _heatmap_norm(matrix, vmin, vmax)
    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = _draw_delta_heatmap(ax, matrix, delta_edges, distance_edges, norm)
    fig.colorbar(image, ax=ax, label="mean pairwise plasticity")
    ax.legend(fontsize=8, loc="upper left")
    default = "pairwise plasticity by key distance" + (f" ({label})" if label else "")
    ax.set_title(title or default)
    return save_figure(fig, Path(path))


def heatmaps_comparison_figure(
    heatmap: pd.DataFrame, path: str | Path, *, by: str = "checkpoint", title: str | None = None
) -> Path:
    """One (Δ, D) heatmap panel per ``by`` group (checkpoints in step order), side by side and
    wrapped at four per row, on the same grid and one shared colour scale.

    Example:
        >>> import tempfile
        >>> heatmap = pd.DataFrame({"checkpoint": ["a", "b"], "step": [0, 10], "delta_bin": [0, 1],
        ...                         "distance_bin": [0, 1], "bin_width": 1024, "pp_sum": [5.0, 3.0],
        ...                         "n_pairs": [8, 8]})
        >>> heatmaps_comparison_figure(heatmap, Path(tempfile.mkdtemp()) / "hc.png").name
        'hc.png'
    """
    if not isinstance(by, str):
        raise ValueError(f"by must be a column name, not {by!r}")
    _check(heatmap, [by, *_HEATMAP_COLUMNS], "heatmap")
    order = _group_order(heatmap, by, "heatmap")
    _, delta_edges, distance_edges = heatmap_matrix(heatmap)
    shape = {"n_distance": len(distance_edges) - 1, "n_delta": len(delta_edges) - 1}
    groups = dict(list(heatmap.groupby(by, sort=False)))
    matrices = [heatmap_matrix(groups[g], **shape)[0] for g in order]
    norm = _heatmap_norm(np.stack(matrices), None, None)
    ncols = min(len(order), _PANELS_PER_ROW)
    nrows = -(-len(order) // ncols)
    fig = Figure(figsize=(1.0 + 4.2 * ncols, 0.6 + 3.8 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = []
    for i, (group, matrix) in enumerate(zip(order, matrices, strict=True)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        image = _draw_delta_heatmap(ax, matrix, delta_edges, distance_edges, norm, boundary_label=i == 0)
        ax.set_title(str(group), fontsize=10)
        if i % ncols:
            ax.set_ylabel("")
        axes.append(ax)
    fig.colorbar(image, ax=axes, label="mean pairwise plasticity")
    fig.suptitle(title or f"pairwise plasticity by key distance, by {by} (dashed: D = Δ/2)", fontsize=11)
    return save_figure(fig, Path(path))


# ---------------------------------------------------------------------------------------------
# published (query bucket × key bucket) heatmap
# ---------------------------------------------------------------------------------------------


def bucket_heatmap_figure(
    cells: pd.DataFrame, path: str | Path, *, agg: str = "mean", title: str | None = None
) -> Path:
    """The published heatmap: query bucket (rows) × key bucket (columns), the mean or median of
    ``ap`` over heads, cells with ``k_bucket >= q_cell`` masked, magma.

    Rows with NaN ``k_bucket`` are dropped; a table with no key bucket at all (thesis mode pools
    the keys of every earlier position) raises ``ValueError``.

    Example:
        >>> import tempfile
        >>> cells = pd.DataFrame({"layer": 0, "head": [0, 0, 0, 1, 1, 1], "q_cell": [1, 2, 2] * 2,
        ...                       "k_bucket": [0, 0, 1] * 2, "ap": [0.7, 0.6, 0.8, 0.5, 0.6, 0.4]})
        >>> bucket_heatmap_figure(cells, Path(tempfile.mkdtemp()) / "b.png", agg="median").name
        'b.png'
    """
    _check(cells, ["q_cell", "k_bucket", "ap"], "cells")
    _option(agg, _AGGS, "agg")
    label = _single_model(cells, "cells", "one figure per checkpoint")
    k = pd.to_numeric(cells["k_bucket"], errors="coerce")
    if k.isna().all():
        raise ValueError(
            "cells has no key buckets: k_bucket is NaN in every row (thesis mode pools the keys of "
            "every earlier position); the bucket heatmap needs the per (q, k) bucket table"
        )
    frame = cells.loc[k.notna()].assign(ap=lambda f: pd.to_numeric(f["ap"], errors="coerce"))
    q_cell = _nonnegative_ints(frame["q_cell"], "cells['q_cell']")
    k_bucket = _nonnegative_ints(frame["k_bucket"], "cells['k_bucket']")
    n = int(max(q_cell.max(), k_bucket.max())) + 1
    grid = (
        frame.assign(q_cell=q_cell, k_bucket=k_bucket)
        .pivot_table(index="q_cell", columns="k_bucket", values="ap", aggfunc=agg, dropna=False)
        .reindex(index=range(n), columns=range(n))
        .to_numpy(dtype=np.float64, copy=True)
    )
    grid[np.arange(n)[None, :] >= np.arange(n)[:, None]] = np.nan
    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite = grid[np.isfinite(grid)]
    norm = Normalize(*_span(finite.min(), finite.max())) if finite.size else Normalize(0, 1)
    image = ax.imshow(
        np.ma.masked_invalid(grid), origin="lower", aspect="auto", interpolation="nearest", cmap="magma", norm=norm
    )
    fig.colorbar(image, ax=ax, label=f"{agg} AP over heads")
    ticks = _thinned(n)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_yticks(ticks)
    ax.set_yticklabels([str(t) for t in ticks])
    default = f"{agg} attention plasticity per (query, key) bucket" + (f" ({label})" if label else "")
    ax.set(xlabel="key bucket", ylabel="query bucket", title=title or default)
    return save_figure(fig, Path(path))
