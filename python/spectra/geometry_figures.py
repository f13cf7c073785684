"""Figures of the QK geometry tables (``spectra.geometry``): PC0 r_q vs |r_k| with the taxonomy
regions, and the explained-variance spectrum. Drawn on matplotlib's Agg canvas without pyplot's
global state and written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spectra.geometry import PC0_CLASSES
from spectra.profile_report import _atomic_savefig, check_frame

__all__ = ["plot_explained_variance", "plot_pc0_scatter"]

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
        ax.scatter(group["pc0_r_q"], group["pc0_r_k"].abs(), s=18, alpha=0.8, color=_COLOURS.get(label, "black"),
                   label=f"{label} ({len(group)})")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="PC0 r_q (canonical, >= 0)", ylabel="PC0 |r_k|",
           title=f"PC0 position correlations of {len(heads)} heads")
    ax.legend(fontsize=7, loc="center right")
    return _atomic_savefig(fig, Path(path))


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
        mean="mean", low=lambda s: np.nanquantile(s, 0.1), high=lambda s: np.nanquantile(s, 0.9))
    fig = Figure(figsize=(5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.fill_between(stats.index, stats["low"], stats["high"], alpha=0.25, color="tab:blue", label="10–90 % of heads")
    ax.plot(stats.index, stats["mean"], marker="o", color="tab:blue", label="mean")
    ax.set(yscale="log", xlabel="component", ylabel="explained variance (share of pooled Q+K variance)",
           title="combined Q+K PCA spectrum")
    ax.legend(fontsize=8)
    return _atomic_savefig(fig, Path(path))
