"""Summary tables of a per-token profile frame (the output of ``spectra.profile``).

The frame has one row per (sample, layer, head, token) and float32 metric columns with NaN where a
metric is undefined (attention-row metrics for tokens before ``ignore_first``). Every statistic
here skips NaN and reports how many values it used, so a mean never silently mixes in the
undefined positions (see docs/metrics.md: per-head means run over t = ignore_first..T-1).

Its figures are in :mod:`spectra.figures.profile`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_HEATMAP_METRICS",
    "METRICS",
    "head_summary",
    "layer_summary",
]

METRICS: tuple[str, ...] = ("entropy", "entropy_normalized", "max_attn", "k_eff", "sink_mass", "q_norm", "k_norm")
DEFAULT_HEATMAP_METRICS: tuple[str, ...] = ("entropy", "max_attn", "k_eff", "sink_mass")


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
