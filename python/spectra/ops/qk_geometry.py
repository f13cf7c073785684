"""Typed front ends of the native Q/K geometry functions of ``spectra._core`` (one head's pooled
Q+K PCA, one kind's PCA, the planar rotation model, and both at once for many heads).

Names and argument order are the native ones: ``(q, q_pos, k, k_pos, ...)``. The tables and checks
that analyses use are in :mod:`spectra.geometry`, whose ``combined_pca(q, k, q_pos, k_pos)`` and
``planar_rotation(q, k, q_pos, k_pos)`` take the vectors first. Definitions: docs/geometry.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from spectra.ops import _core

__all__ = ["combined_pca", "kind_pca", "planar_rotation", "qk_geometry", "qk_geometry_batch"]

#: One head's inputs to :func:`qk_geometry_batch`: ``(q, q_pos, k, k_pos)``.
HeadInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def combined_pca(
    q: torch.Tensor,
    q_pos: torch.Tensor,
    k: torch.Tensor,
    k_pos: torch.Tensor,
    n_components: int = 10,
    anchor_tolerance: float = 0.05,
) -> dict[str, Any]:
    """Pooled, centred PCA of one head's ``[Q; K]`` (``q (Nq, D)``, ``k (Nk, D)``, positions float64):
    ``components``, ``explained_variance``, ``r_q``, ``r_k`` (signs canonicalised: r_q >= 0, or r_k >= 0
    when |r_q| < ``anchor_tolerance``), ``p_q``, ``p_k``, ``fisher_pc0``, ``accuracy_pc01`` and ``mean``.

    Example:
        >>> import torch
        >>> t = torch.arange(200.0, dtype=torch.float64)
        >>> out = combined_pca(torch.randn(200, 8), t, torch.randn(200, 8), t, 3)
        >>> tuple(out["components"].shape), len(out["r_q"])
        ((3, 8), 3)
    """
    return _core.combined_pca(q, q_pos, k, k_pos, n_components, anchor_tolerance)


def kind_pca(x: torch.Tensor, pos: torch.Tensor, n_components: int = 10) -> dict[str, Any]:
    """The published tool's PCA of one kind alone (``x (N, D)``, ``pos (N,)`` float64): ``components``
    (signed as scikit-learn signs them), ``explained_variance`` (ratios), ``r`` (Pearson with position
    per component) and ``mean``."""
    return _core.kind_pca(x, pos, n_components)


def planar_rotation(
    q: torch.Tensor,
    q_pos: torch.Tensor,
    k: torch.Tensor,
    k_pos: torch.Tensor,
    axis_b: str = "centroid",
    n_planes: int = 30,
    active_threshold: float = 0.3,
) -> dict[str, Any]:
    """The planar rotation model of one head: axes ``a``, ``b``, the per-head metrics and the complement's
    rotation planes (see :func:`spectra.geometry.planar_rotation` for each key)."""
    return _core.planar_rotation(q, q_pos, k, k_pos, axis_b, n_planes, active_threshold)


def qk_geometry(
    q: torch.Tensor,
    q_pos: torch.Tensor,
    k: torch.Tensor,
    k_pos: torch.Tensor,
    n_components: int = 10,
    axis_b: str = "centroid",
    anchor_tolerance: float = 0.05,
    n_planes: int = 30,
    active_threshold: float = 0.3,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(combined_pca, planar_rotation)`` of one head from one pass (they share the covariances)."""
    return _core.qk_geometry(q, q_pos, k, k_pos, n_components, axis_b, anchor_tolerance, n_planes, active_threshold)


def qk_geometry_batch(
    heads: Sequence[HeadInputs],
    n_components: int = 10,
    axis_b: str = "centroid",
    anchor_tolerance: float = 0.05,
    n_planes: int = 30,
    active_threshold: float = 0.3,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """:func:`qk_geometry` of many heads ``[(q, q_pos, k, k_pos), ...]``, in parallel over heads (OpenMP)."""
    return _core.qk_geometry_batch(heads, n_components, axis_b, anchor_tolerance, n_planes, active_threshold)
