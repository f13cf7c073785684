"""Figures of the attention-plasticity tables (see docs/plasticity.md, 'Aggregates'): the
per-head AP profile, profiles compared across checkpoints, the 2-D (inter-key distance Δ ×
query-to-midpoint distance D) pairwise-plasticity heatmap and its comparison, the published
(query bucket × key bucket) heatmap, the per-dimension component weights with the RoPE
``rotate_half`` pairing, and a per-model metric against an external score. Drawn on matplotlib's
Agg canvas without pyplot's global state and written atomically; every function returns the
:class:`~pathlib.Path` written.

The input tables (any may carry a ``checkpoint`` label and a ``step`` column when several models
or checkpoints are compared; checkpoints are ordered by step, those without one after, in order of
first appearance):

* ``profile``: ``layer, head, q_cell, tau`` (query position, tokens), ``context_fraction``
  (τ / L_ctx), ``n_queries``, ``ap`` (may be NaN);
* ``heatmap``: ``layer, head, delta_bin, distance_bin, bin_width`` (tokens, one value),
  ``pp_sum, n_pairs``; a cell is Σ pp_sum / Σ n_pairs pooled over heads (:func:`heatmap_matrix`);
* ``cells``: ``layer, head, q_cell, k_bucket`` (NaN in thesis mode), ``ap``;
* ``components``: ``layer, head, component, component_r2, component_weight``;
* ``report``: one row per model: ``checkpoint, step, ap_overall, ap_first_20, ap_last_20,
  ap_drop, ap_len_0, …``.

Bad input raises ``ValueError`` naming the argument: an empty frame, a missing column (the error is
also a ``KeyError``, like :func:`spectra.io.tables.check_frame`'s), an unknown option, or
several checkpoints given to a single-model figure.

Example:
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> profile = pd.DataFrame({"layer": 0, "head": [0, 0, 0, 1, 1, 1], "q_cell": [1, 2, 3] * 2,
    ...                         "tau": [1536.0, 2560.0, 3584.0] * 2, "ap": [0.8, 0.7, 0.6, 0.5, 0.5, 0.6]})
    >>> profile_figure(profile, out / "plasticity.png").name
    'plasticity.png'
    >>> heatmap = pd.DataFrame({"layer": 0, "head": [0, 1, 1], "delta_bin": [0, 0, 1], "distance_bin": [0, 0, 1],
    ...                         "bin_width": 8192, "pp_sum": [3.0, 1.0, 2.5], "n_pairs": [4, 4, 5]})
    >>> matrix, delta_edges, distance_edges = heatmap_matrix(heatmap)
    >>> matrix.tolist(), delta_edges.tolist()
    ([[0.5, nan], [nan, 0.5]], [0, 8192, 16384])
    >>> heatmap_figure(heatmap, out / "heatmap.png").name
    'heatmap.png'
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from spectra.figures.plasticity_common import (
    _AGGS,
    _COLOR_BY,
    TREND_COLOURS,
    MissingColumnsError,
    _check,
    _group_colours,
    _group_order,
    _legend,
    _nonnegative_ints,
    _option,
    _single_model,
    _span,
)
from spectra.figures.plasticity_heatmaps import (
    bucket_heatmap_figure,
    heatmap_figure,
    heatmap_matrix,
    heatmaps_comparison_figure,
)
from spectra.geometry import checkpoint_order
from spectra.io.atomic import save_figure

__all__ = [
    "TREND_COLOURS",
    "MissingColumnsError",
    "bucket_heatmap_figure",
    "component_weights_figure",
    "heatmap_figure",
    "heatmap_matrix",
    "heatmaps_comparison_figure",
    "profile_figure",
    "profiles_comparison_figure",
    "score_correlation_figure",
]


# ---------------------------------------------------------------------------------------------
# 1-D profiles
# ---------------------------------------------------------------------------------------------


def _trend(tau: np.ndarray, ap: np.ndarray, threshold: float) -> str:
    """``rising``, ``falling`` or ``flat`` by the slope of ``np.polyfit(tau, ap, 1)`` (AP per token)."""
    keep = np.isfinite(tau) & np.isfinite(ap)
    if keep.sum() < 2 or np.ptp(tau[keep]) == 0:
        return "flat"
    slope = np.polyfit(tau[keep], ap[keep], 1)[0]
    return "rising" if slope > threshold else "falling" if slope < -threshold else "flat"


def profile_figure(
    profile: pd.DataFrame,
    path: str | Path,
    *,
    title: str | None = None,
    color_by: str = "trend",
    trend_threshold: float = 1e-6,
) -> Path:
    """One thin line per head (AP against the query position τ in tokens) and, thick and red, the
    mean over heads per ``q_cell`` (the published tool's ``plot_plasticity.py``).

    ``color_by``: ``"trend"`` colours a head by the slope of ``np.polyfit(tau, ap, 1)``: green
    above ``+trend_threshold`` (AP per token), red below ``−trend_threshold``, gray between;
    ``"layer"`` by layer on viridis; ``"none"`` one colour. NaN AP points are skipped.

    Example:
        >>> import tempfile
        >>> profile = pd.DataFrame({"layer": [0, 0, 1, 1], "head": 0, "q_cell": [1, 2, 1, 2],
        ...                         "tau": [1536.0, 2560.0, 1536.0, 2560.0], "ap": [0.7, 0.6, 0.5, float("nan")]})
        >>> profile_figure(profile, Path(tempfile.mkdtemp()) / "p.png", color_by="layer").name
        'p.png'
    """
    _check(profile, ["layer", "head", "q_cell", "tau", "ap"], "profile")
    _option(color_by, _COLOR_BY, "color_by")
    try:
        threshold = float(trend_threshold)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"trend_threshold must be a finite number >= 0, not {trend_threshold!r}")
    label = _single_model(profile, "profile", "profiles_comparison_figure")
    frame = profile.assign(
        tau=pd.to_numeric(profile["tau"], errors="coerce"), ap=pd.to_numeric(profile["ap"], errors="coerce")
    )
    heads = frame.groupby(["layer", "head"], sort=True)
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    layers = frame["layer"].to_numpy(dtype=np.float64)
    layer_norm = Normalize(*_span(np.nanmin(layers), np.nanmax(layers)))
    counts = dict.fromkeys(TREND_COLOURS, 0)
    for (layer, _head), rows in heads:
        rows = rows.sort_values("tau")
        tau, ap = rows["tau"].to_numpy(np.float64), rows["ap"].to_numpy(np.float64)
        if color_by == "trend":
            trend = _trend(tau, ap, threshold)
            counts[trend] += 1
            colour = TREND_COLOURS[trend]
        elif color_by == "layer":
            colour = colormaps["viridis"](layer_norm(layer))
        else:
            colour = "tab:blue"
        keep = np.isfinite(tau) & np.isfinite(ap)
        ax.plot(tau[keep], ap[keep], color=colour, lw=0.8, alpha=0.45)
    mean = frame.groupby("q_cell").agg(tau=("tau", "mean"), ap=("ap", "mean")).dropna().sort_values("tau")
    ax.plot(mean["tau"], mean["ap"], color="red", lw=3, zorder=5)
    handles = [Line2D([], [], color="red", lw=3, label="mean over heads")]
    if color_by == "trend":
        handles += [Line2D([], [], color=TREND_COLOURS[t], lw=1, label=f"{t} ({n})") for t, n in counts.items()]
    elif color_by == "layer":
        fig.colorbar(ScalarMappable(layer_norm, "viridis"), ax=ax, label="layer")
    ax.legend(handles=handles, fontsize=8)
    ax.set_xlim(left=0)
    default = f"attention plasticity of {heads.ngroups} heads" + (f" ({label})" if label else "")
    ax.set(xlabel="query position τ (tokens)", ylabel="attention plasticity AP", title=title or default)
    return save_figure(fig, Path(path))


def profiles_comparison_figure(
    profile: pd.DataFrame, path: str | Path, *, by: str = "checkpoint", title: str | None = None
) -> Path:
    """The head-mean profile of each ``by`` group (mean AP over heads per ``q_cell``) against the
    context fraction τ / L_ctx, one line per group; checkpoints in step order on a sequential map.

    Example:
        >>> import tempfile
        >>> profile = pd.DataFrame({"checkpoint": ["late"] * 2 + ["early"] * 2, "step": [100] * 2 + [0] * 2,
        ...                         "q_cell": [1, 2] * 2, "context_fraction": [0.25, 0.75] * 2,
        ...                         "ap": [0.6, 0.5, 0.7, 0.7]})
        >>> profiles_comparison_figure(profile, Path(tempfile.mkdtemp()) / "c.png").name
        'c.png'
    """
    if not isinstance(by, str):
        raise ValueError(f"by must be a column name, not {by!r}")
    _check(profile, [by, "q_cell", "context_fraction", "ap"], "profile")
    order = _group_order(profile, by, "profile")
    frame = profile.assign(
        context_fraction=pd.to_numeric(profile["context_fraction"], errors="coerce"),
        ap=pd.to_numeric(profile["ap"], errors="coerce"),
    )
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    groups = dict(list(frame.groupby(by, sort=False)))
    for group, colour in zip(order, _group_colours(len(order), by == "checkpoint"), strict=True):
        mean = (
            groups[group]
            .groupby("q_cell")
            .agg(x=("context_fraction", "mean"), ap=("ap", "mean"))
            .dropna()
            .sort_values("x")
        )
        ax.plot(mean["x"], mean["ap"], color=colour, lw=1.8, marker="o", ms=2.5, label=str(group))
    _legend(ax, len(order), title=by)
    ax.set_xlim(left=0)
    ax.set(
        xlabel="context fraction τ / L_ctx",
        ylabel="mean AP over heads",
        title=title or f"attention plasticity profiles by {by}",
    )
    return save_figure(fig, Path(path))


# ---------------------------------------------------------------------------------------------
# component weights
# ---------------------------------------------------------------------------------------------


def _halves_r(values: np.ndarray) -> float:
    """Pearson r between dimensions 0..d/2−1 and d/2..d−1 (the rotate_half pairs); NaN if undefined."""
    half = len(values) // 2
    first, second = values[:half], values[half : 2 * half]
    keep = np.isfinite(first) & np.isfinite(second)
    if len(values) % 2 or keep.sum() < 2 or np.ptp(first[keep]) == 0 or np.ptp(second[keep]) == 0:
        return float("nan")
    return float(np.corrcoef(first[keep], second[keep])[0, 1])


def component_weights_figure(
    components: pd.DataFrame, path: str | Path, *, agg: str = "mean", by: str | None = None, title: str | None = None
) -> Path:
    """The mean (or median) ``component_weight`` per native query dimension over heads:
    bars, or with ``by`` (e.g. ``"checkpoint"``, in step order) one line per group.

    HF's ``rotate_half`` pairs dimension j with j + d/2 (the same RoPE frequency), so the two halves
    should be near mirror images: a dashed line marks d/2, an arrow the pairing, and the Pearson r
    between the halves is given (in the annotation, or per group in the legend).

    Example:
        >>> import tempfile
        >>> components = pd.DataFrame({"layer": 0, "head": np.repeat([0, 1], 4), "component": np.tile(range(4), 2),
        ...                            "component_weight": [0.1, 0.4, 0.1, 0.4, 0.2, 0.3, 0.2, 0.3]})
        >>> component_weights_figure(components, Path(tempfile.mkdtemp()) / "w.png").name
        'w.png'
    """
    _option(agg, _AGGS, "agg")
    if by is not None and not isinstance(by, str):
        raise ValueError(f"by must be a column name or None, not {by!r}")
    _check(components, ["component", "component_weight", *([by] if by else [])], "components")
    label = None if by else _single_model(components, "components", "by='checkpoint'")
    dims = _nonnegative_ints(components["component"], "components['component']")
    frame = components.assign(
        component=dims, component_weight=pd.to_numeric(components["component_weight"], errors="coerce")
    )
    d = int(dims.max()) + 1
    x = np.arange(d)
    fig = Figure(figsize=(max(7.0, 3.0 + 0.06 * d), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if by is None:
        stats = frame.groupby("component")["component_weight"].agg(agg).reindex(x).to_numpy(dtype=np.float64)
        ax.bar(x, stats, width=0.85, color="tab:blue", alpha=0.85, label=f"{agg} over heads")
        tops, halves_r = [stats], _halves_r(stats)
    else:
        order = _group_order(frame, by, "components")
        groups = dict(list(frame.groupby(by, sort=False)))
        tops, halves_r = [], float("nan")
        for group, colour in zip(order, _group_colours(len(order), by == "checkpoint"), strict=True):
            stats = (
                groups[group].groupby("component")["component_weight"].agg(agg).reindex(x).to_numpy(dtype=np.float64)
            )
            r = _halves_r(stats)
            ax.plot(
                x, stats, color=colour, lw=1.4, label=f"{group}" + (f" (halves r = {r:.2f})" if np.isfinite(r) else "")
            )
            tops.append(stats)
    top = np.nanmax(np.concatenate(tops)) if np.isfinite(np.concatenate(tops)).any() else 1.0
    ax.set_ylim(0, 1.3 * top if top > 0 else 1.0)
    if d % 2 == 0 and d >= 2:
        half = d // 2
        ax.axvline(half - 0.5, color="black", lw=1, ls="--", label=f"d/2 = {half}")
        # In axes coordinates vertically, so the pairing needs no second x axis.
        ax.annotate(
            "",
            xy=(half + (half - 1) / 2, 0.93),
            xytext=((half - 1) / 2, 0.93),
            xycoords=ax.get_xaxis_transform(),
            arrowprops={"arrowstyle": "<->", "color": "dimgray"},
        )
        text = f"rotate_half: j ↔ j + {half} (same RoPE frequency)"
        if np.isfinite(halves_r):
            text += f"; halves r = {halves_r:.2f}"
        ax.text(
            half - 0.5,
            0.95,
            text,
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            color="dimgray",
        )
    ax.set_xlim(-0.6, d - 0.4)
    _legend(ax, len(ax.get_legend_handles_labels()[1]), loc="upper left", bbox_to_anchor=(0.0, 0.9), title=by)
    if {"layer", "head"} <= set(frame.columns):
        n_heads = len(frame[["layer", "head"]].drop_duplicates())
        default = f"{agg} component weight of {n_heads} heads per dimension"
    else:
        default = f"{agg} component weight per dimension"
    ax.set(
        xlabel="dimension (oriented query basis)",
        ylabel=f"{agg} component weight",
        title=title or default + (f" ({label})" if label else ""),
    )
    return save_figure(fig, Path(path))


# ---------------------------------------------------------------------------------------------
# metric against an external score
# ---------------------------------------------------------------------------------------------


def score_correlation_figure(
    report: pd.DataFrame,
    scores: pd.DataFrame,
    path: str | Path,
    *,
    metric: str = "ap_drop",
    score_column: str = "score",
    title: str | None = None,
) -> Path:
    """One labelled point per model at (score, ``report[metric]``), matched on ``checkpoint``, with
    a least-squares line and the Pearson r (``scipy.stats.pearsonr``) in the title.

    Models missing from either table, or with a NaN value, are left out; fewer than 3 remaining
    raises ``ValueError``. Constant values leave r undefined (said in the title).

    Example:
        >>> import tempfile
        >>> report = pd.DataFrame({"checkpoint": ["a", "b", "c"], "ap_drop": [0.10, 0.15, 0.20]})
        >>> scores = pd.DataFrame({"checkpoint": ["c", "b", "a"], "score": [80.0, 85.0, 95.0]})
        >>> score_correlation_figure(report, scores, Path(tempfile.mkdtemp()) / "s.png").name
        's.png'
    """
    if not isinstance(metric, str) or not isinstance(score_column, str):
        raise ValueError(f"metric and score_column must be column names, not {metric!r}, {score_column!r}")
    _check(report, ["checkpoint", metric], "report")
    _check(scores, ["checkpoint", score_column], "scores")
    for frame, name in ((report, "report"), (scores, "scores")):
        duplicated = frame["checkpoint"][frame["checkpoint"].duplicated()]
        if len(duplicated):
            raise ValueError(f"{name} has several rows for checkpoint(s) {list(duplicated.unique())[:6]}")
    left = pd.DataFrame({"checkpoint": report["checkpoint"], "_y": pd.to_numeric(report[metric], errors="coerce")})
    if "step" in report:
        left["step"] = report["step"]
    right = pd.DataFrame(
        {"checkpoint": scores["checkpoint"], "_x": pd.to_numeric(scores[score_column], errors="coerce")}
    )
    merged = left.merge(right, on="checkpoint", how="inner").dropna(subset=["_x", "_y"])
    if len(merged) < 3:
        raise ValueError(
            f"scores matches {len(merged)} model(s) of report with finite {metric!r} and "
            f"{score_column!r}; a Pearson correlation needs at least 3"
        )
    merged = merged.set_index("checkpoint", drop=False).loc[checkpoint_order(merged)]
    x, y = merged["_x"].to_numpy(np.float64), merged["_y"].to_numpy(np.float64)
    fig = Figure(figsize=(6, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(x, y, s=30, color="tab:blue", zorder=3)
    for label, xi, yi in zip(merged["checkpoint"], x, y, strict=True):
        ax.annotate(str(label), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        summary = f"Pearson r undefined (constant values), n = {len(x)}"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r, p = stats.pearsonr(x, y)
        summary = f"Pearson r = {r:.3f} (p = {p:.2g}, n = {len(x)})"
        slope, intercept = np.polyfit(x, y, 1)
        line_x = np.array([x.min(), x.max()])
        ax.plot(line_x, slope * line_x + intercept, color="gray", lw=1, ls="--", zorder=2)
    ax.set(xlabel=score_column, ylabel=metric)
    ax.set_title(f"{title or f'{metric} vs {score_column}'}\n{summary}", fontsize=10)
    return save_figure(fig, Path(path))
