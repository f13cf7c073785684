"""Pooled Q+K PCA of one head (the thesis's) and the published tool's PCA of one kind alone, with the
input checks the geometry functions share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats

from spectra.ops import qk_geometry


def _tensors(q, k, q_pos, k_pos) -> tuple[torch.Tensor, ...]:
    out = []
    for name, x in (("q", q), ("k", k), ("q_pos", q_pos), ("k_pos", k_pos)):
        out.append(_checked(name, x, positions=name.endswith("pos")))
    return tuple(out)


def _checked(name: str, x, *, positions: bool) -> torch.Tensor:
    t = torch.as_tensor(x)
    if positions:
        if not bool(torch.isfinite(t.double()).all()):
            raise ValueError(f"{name}: positions must be finite")
        return t.double()
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected floating vectors; got dtype {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: holds NaN or inf")
    return t


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}; got {value!r}")


def combined_pca(q, k, q_pos, k_pos, n_components: int = 10, *, anchor_tolerance: float = 0.05) -> pd.DataFrame:
    """Pooled, centred PCA of one head's [Q; K]: one row per component with ``pc``,
    ``explained_variance``, ``r_q``, ``r_k`` (signs canonicalised: r_q >= 0, or r_k >= 0 when
    |r_q| < ``anchor_tolerance``); ``attrs`` holds ``p_q``, ``p_k`` (position-linear variance
    shares), ``fisher_pc0``, ``accuracy_pc01`` (Q/K linear-discriminant accuracy on PC0–PC1), the
    ``components`` and the pooled ``mean``.

    Example:
        >>> import torch
        >>> t = torch.arange(200.0)
        >>> q = torch.randn(200, 8) + torch.outer(t, torch.eye(8)[0]) * 0.05
        >>> table = combined_pca(q, torch.randn(200, 8), t, t, n_components=3)
        >>> list(table.columns), bool(table["r_q"].iloc[0] > 0.9)
        (['pc', 'explained_variance', 'r_q', 'r_k'], True)
    """
    q, k, q_pos, k_pos = _tensors(q, k, q_pos, k_pos)
    _check_count("n_components", n_components, 1)
    out = qk_geometry.combined_pca(q, q_pos, k, k_pos, n_components, anchor_tolerance)
    table = pd.DataFrame(
        {
            "pc": np.arange(len(out["r_q"])),
            "explained_variance": out["explained_variance"].numpy(),
            "r_q": out["r_q"].numpy(),
            "r_k": out["r_k"].numpy(),
        }
    )
    table.attrs.update(
        p_q=out["p_q"],
        p_k=out["p_k"],
        fisher_pc0=out["fisher_pc0"],
        accuracy_pc01=out["accuracy_pc01"],
        components=out["components"].numpy(),
        mean=out["mean"].numpy(),
    )
    return table


def kind_pca(x, pos, n_components: int = 10) -> pd.DataFrame:
    """The published tool's PCA of one kind alone: one row per component with
    ``pca_dim``, ``correlation`` (Pearson with raw position; 0 with p 1 when a side is constant),
    ``p_value`` (two-sided) and ``explained_variance_ratio``. Components are signed as
    scikit-learn signs them (largest loading positive) — no Q/K sign canonicalisation.

    Example:
        >>> import torch
        >>> t = torch.arange(500.0)
        >>> x = torch.randn(500, 6)
        >>> x[:, 2] += 0.05 * t
        >>> table = kind_pca(x, t, n_components=2)
        >>> bool(abs(table["correlation"].iloc[0]) > 0.9), bool(table["p_value"].iloc[0] < 1e-10)
        (True, True)
    """
    x, pos = _checked("x", x, positions=False), _checked("pos", pos, positions=True)
    _check_count("n_components", n_components, 1)
    out = qk_geometry.kind_pca(x, pos, n_components)
    r = out["r"].numpy()
    table = pd.DataFrame(
        {
            "pca_dim": np.arange(len(r)),
            "correlation": r,
            "p_value": _pearson_p(r, x.shape[0]),
            "explained_variance_ratio": out["explained_variance"].numpy(),
        }
    )
    table.attrs.update(components=out["components"].numpy(), mean=out["mean"].numpy())
    return table


def _pearson_p(r: np.ndarray, n: int) -> np.ndarray:
    """Two-sided p-values of Pearson correlations from n pairs (scipy.stats.pearsonr's, vectorised);
    r = 0 (incl. a constant side) gives 1."""
    if n < 3:
        return np.ones_like(r)
    # pearsonr's exact null: (r + 1)/2 ~ Beta(n/2 − 1, n/2 − 1).
    dist = stats.beta(n / 2 - 1, n / 2 - 1, loc=-1, scale=2)
    return np.clip(2 * dist.sf(np.abs(r)), 0.0, 1.0)
