"""Summary tables and figures of a per-token profile frame (the output of ``spectra.profile``).

The frame has one row per (sample, layer, head, token) and float32 metric columns with NaN where a
metric is undefined (attention-row metrics for tokens before ``ignore_first``). Every statistic
here skips NaN and reports how many values it used, so a mean never silently mixes in the
undefined positions (see docs/metrics.md: per-head means run over t = ignore_first..T-1).

Figures are drawn on matplotlib's Agg canvas without touching pyplot's global state, and written
atomically: to a hidden temporary file in the target folder, then ``os.replace`` into place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spectra.metrics.correlations import pearson

__all__ = [
    "DEFAULT_HEATMAP_METRICS",
    "METRICS",
    "head_summary",
    "layer_summary",
    "plot_entropy_vs_norm",
    "plot_head_heatmaps",
]

METRICS: tuple[str, ...] = ("entropy", "entropy_normalized", "max_attn", "k_eff", "sink_mass", "q_norm", "k_norm")
DEFAULT_HEATMAP_METRICS: tuple[str, ...] = ("entropy", "max_attn", "k_eff", "sink_mass")
_HEATMAP_CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")


def _metric_columns(frame: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    if metrics is None:
        return [m for m in METRICS if m in frame.columns]
    metrics = list(metrics)
    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise KeyError(f"frame has no metric column(s) {missing}; it has {list(frame.columns)}")
    return metrics


def head_summary(frame: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (layer, head): ``<metric>_mean``, ``<metric>_std`` (ddof=1) and ``<metric>_n``
    (non-NaN count) of each metric, pooled over samples and tokens, NaN skipped.

    ``metrics=None`` takes every column of :data:`METRICS` that the frame has. Means and stds are
    float64 (NaN where a head has no value, std also where it has one), counts int64.

    Example:
        >>> frame = pd.DataFrame({"sample": 0, "layer": [0, 0, 0, 0, 1, 1], "head": [0, 0, 1, 1, 0, 0],
        ...                       "token": [0, 1, 0, 1, 0, 1],
        ...                       "entropy": [np.nan, 1.0, np.nan, 2.0, np.nan, 3.0],
        ...                       "q_norm": [1.0, 3.0, 2.0, 2.0, 4.0, 8.0]})
        >>> summary = head_summary(frame)
        >>> list(summary.columns)
        ['layer', 'head', 'entropy_mean', 'entropy_std', 'entropy_n', 'q_norm_mean', 'q_norm_std', 'q_norm_n']
        >>> print(summary[["layer", "head", "entropy_mean", "entropy_n", "q_norm_std"]].round(4).to_string(index=False))
         layer  head  entropy_mean  entropy_n  q_norm_std
             0     0           1.0          1      1.4142
             0     1           2.0          1      0.0000
             1     0           3.0          1      2.8284
    """
    columns = _metric_columns(frame, metrics)
    grouped = frame.groupby(["layer", "head"], sort=True)[columns]
    stats = grouped.agg(["mean", "std", "count"])  # pandas skips NaN; std is ddof=1
    out = pd.DataFrame(index=stats.index)
    for metric in columns:
        out[f"{metric}_mean"] = stats[(metric, "mean")].astype(np.float64)
        out[f"{metric}_std"] = stats[(metric, "std")].astype(np.float64)
        out[f"{metric}_n"] = stats[(metric, "count")].astype(np.int64)
    return out.reset_index()


def layer_summary(frame: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per layer: the mean of each metric over all heads, samples and tokens (NaN
    skipped), float64, for a short printed summary.

    Example:
        >>> frame = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1],
        ...                       "entropy": [1.0, np.nan, 2.0, 4.0], "max_attn": [0.5, 0.7, 0.1, 0.3]})
        >>> print(layer_summary(frame).to_string(index=False))
         layer  entropy  max_attn
             0      1.0       0.6
             1      3.0       0.2
    """
    columns = _metric_columns(frame, metrics)
    means = frame.groupby("layer", sort=True)[columns].mean().astype(np.float64)
    return means.reset_index()


def check_frame(frame: pd.DataFrame, required: Sequence[str], name: str) -> None:
    """The input check every figure function shares: a non-empty DataFrame holding ``required``,
    else a TypeError, ValueError or KeyError naming ``name`` and what it has."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, not {type(frame).__name__}")
    if frame.empty:
        raise ValueError(f"{name} is empty (columns {list(frame.columns)})")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise KeyError(f"{name} has no column(s) {missing}; it has {list(frame.columns)}")


def _atomic_savefig(fig: Figure, path: Path) -> Path:
    """Renders ``fig`` as PNG next to ``path`` under a temporary name, then renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        FigureCanvasAgg(fig)
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def plot_head_heatmaps(
    summary: pd.DataFrame, out_dir: str | os.PathLike, metrics: Sequence[str] | None = None
) -> list[Path]:
    """Writes one PNG per metric, ``head_<metric>.png``: a layer × head grid of ``<metric>_mean``
    from :func:`head_summary`. Returns the paths written.

    ``metrics=None`` plots those of :data:`DEFAULT_HEATMAP_METRICS` (entropy, max_attn, k_eff,
    sink_mass) that the summary has; naming a metric the summary lacks raises ``KeyError``.
    (layer, head) cells missing from the summary, or NaN, are drawn grey.

    Example:
        >>> import tempfile
        >>> summary = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1],
        ...                         "entropy_mean": [1.0, 2.0, 3.0, 4.0]})
        >>> with tempfile.TemporaryDirectory() as out:
        ...     [p.name for p in plot_head_heatmaps(summary, out)]
        ['head_entropy.png']
    """
    if metrics is None:
        metrics = [m for m in DEFAULT_HEATMAP_METRICS if f"{m}_mean" in summary.columns]
    else:
        missing = [m for m in metrics if f"{m}_mean" not in summary.columns]
        if missing:
            raise KeyError(f"summary has no {[f'{m}_mean' for m in missing]} column(s)")
    out_dir = Path(out_dir)
    layers = np.sort(summary["layer"].unique())
    heads = np.sort(summary["head"].unique())
    written = []
    for metric in metrics:
        grid = (
            summary.pivot_table(index="layer", columns="head", values=f"{metric}_mean", aggfunc="mean", dropna=False)
            .reindex(index=layers, columns=heads)
            .to_numpy(dtype=np.float64)
        )
        fig = Figure(figsize=(max(4.0, 1.5 + 0.22 * len(heads)), max(3.0, 1.2 + 0.2 * len(layers))))
        ax = fig.add_subplot()
        image = ax.imshow(
            np.ma.masked_invalid(grid), aspect="auto", origin="lower", interpolation="nearest", cmap=_HEATMAP_CMAP
        )
        fig.colorbar(image, ax=ax, label=metric)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(f"{metric}: mean over tokens")
        _set_index_ticks(ax.set_xticks, ax.set_xticklabels, heads)
        _set_index_ticks(ax.set_yticks, ax.set_yticklabels, layers)
        fig.tight_layout()
        written.append(_atomic_savefig(fig, out_dir / f"head_{metric}.png"))
    return written


def _set_index_ticks(set_ticks, set_labels, values: np.ndarray, max_ticks: int = 16) -> None:
    step = max(1, int(np.ceil(len(values) / max_ticks)))
    positions = np.arange(0, len(values), step)
    set_ticks(positions)
    set_labels([str(v) for v in values[positions]])


def plot_entropy_vs_norm(
    frame: pd.DataFrame, out_path: str | os.PathLike, max_points: int = 20000, seed: int = 0
) -> Path:
    """Scatter of ``q_norm`` (x) against ``entropy`` (y) over the tokens where both are defined,
    coloured by layer, written as PNG to ``out_path``; returns the path.

    At most ``max_points`` rows are drawn, chosen uniformly without replacement by
    ``numpy.random.default_rng(seed)`` (the same frame and seed give the same figure). The title
    gives the pooled Pearson r over *all* defined rows, not only the drawn ones, and its n.

    Example:
        >>> import tempfile
        >>> rng = np.random.default_rng(0)
        >>> q = rng.normal(10.0, 2.0, 500)
        >>> frame = pd.DataFrame({"layer": np.repeat([0, 1], 250), "q_norm": q,
        ...                       "entropy": 0.2 * q + rng.normal(0.0, 0.1, 500)})
        >>> with tempfile.TemporaryDirectory() as out:
        ...     plot_entropy_vs_norm(frame, f"{out}/scatter.png", max_points=100).name
        'scatter.png'
    """
    return _atomic_savefig(_entropy_vs_norm_figure(frame, max_points, seed), Path(out_path))


def _entropy_vs_norm_figure(frame: pd.DataFrame, max_points: int, seed: int) -> Figure:
    q = frame["q_norm"].to_numpy(dtype=np.float64)
    h = frame["entropy"].to_numpy(dtype=np.float64)
    rows = np.flatnonzero(np.isfinite(q) & np.isfinite(h))
    r, _, n = pearson(q[rows], h[rows])
    rng = np.random.default_rng(seed)
    # Random drawing order too, so that no layer is systematically painted over the others.
    rows = rng.choice(rows, size=max_points, replace=False) if rows.size > max_points else rng.permutation(rows)
    layer = frame["layer"].to_numpy()[rows]
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    points = ax.scatter(q[rows], h[rows], c=layer, s=4, alpha=0.5, cmap="viridis", linewidths=0, rasterized=True)
    if rows.size:
        fig.colorbar(points, ax=ax, label="layer")
    ax.set_xlabel("‖q‖ (q_norm)")
    ax.set_ylabel("attention entropy (nats)")
    r_text = "nan" if not np.isfinite(r) else f"{r:.3f}"
    ax.set_title(f"entropy vs ‖q‖: pooled Pearson r = {r_text}\n(n = {n:,} tokens, {rows.size:,} drawn)", fontsize=11)
    fig.tight_layout()
    return fig
