"""Figures of a per-token profile: layer × head maps of each metric's per-head mean, and each
metric against the query norm.

Figures are drawn on matplotlib's Agg canvas without touching pyplot's global state, and written
atomically (:func:`spectra.io.atomic.save_figure`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from spectra.figures.common import set_index_ticks
from spectra.io.atomic import save_figure
from spectra.metrics.correlations import pearson
from spectra.metrics.summaries import DEFAULT_HEATMAP_METRICS

_HEATMAP_CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")


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
        set_index_ticks(ax.set_xticks, ax.set_xticklabels, heads)
        set_index_ticks(ax.set_yticks, ax.set_yticklabels, layers)
        fig.tight_layout()
        written.append(save_figure(fig, out_dir / f"head_{metric}.png"))
    return written


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
    return save_figure(_entropy_vs_norm_figure(frame, max_points, seed), Path(out_path))


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
