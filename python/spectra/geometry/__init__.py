"""QK geometry of attention heads (see docs/geometry.md, 'Definitions'): the thesis's combined Q+K
PCA and the planar rotation model, per (layer, query head) with its KV head, on captured post-RoPE
vectors, plus the published tool's per-kind PCA. The math runs in ``spectra._core`` (float64, from
per-kind sufficient statistics, parallel over heads); this module turns it into tables.

Example:
    >>> import torch
    >>> from spectra import geometry
    >>> t = torch.arange(400.0)
    >>> q = torch.randn(400, 16) + 5.0
    >>> k = torch.randn(400, 16) - 5.0
    >>> k[:, 1] += 0.01 * t                              # keys drift with position
    >>> r = geometry.rotation(q, k, t, t)
    >>> bool(abs(r["r_k_a"]) > 0.7), r["residual_pos_r"] < 1e-10
    (True, True)
"""

from __future__ import annotations

from spectra.geometry.pca import combined_pca, kind_pca
from spectra.geometry.rotation_model import PC0_CLASSES, pc0_class, planar_rotation, rotation
from spectra.geometry.rotation_model import AxisB as AxisB
from spectra.geometry.summary import checkpoint_order, depth_bins, family_correlations, summarize, summarize_series
from spectra.geometry.tables import GeometryTables, capture_table, head_table, series

__all__ = [
    "PC0_CLASSES",
    "GeometryTables",
    "capture_table",
    "checkpoint_order",
    "combined_pca",
    "depth_bins",
    "family_correlations",
    "head_table",
    "kind_pca",
    "pc0_class",
    "planar_rotation",
    "rotation",
    "series",
    "summarize",
    "summarize_series",
]
