"""The planar rotation model of one head and the 5-class PC0 taxonomy."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from spectra.geometry.pca import _tensors
from spectra.ops import qk_geometry

#: The 5-class PC0 taxonomy (see docs/geometry.md, 'Definitions'), checked in this order.
PC0_CLASSES = ("position-dominated", "Q-positional", "K-positional", "content-focused", "mixed")

AxisB = Literal["centroid", "eigen"]


def planar_rotation(
    q, k, q_pos, k_pos, *, axis_b: AxisB = "centroid", n_planes: int = 30, active_threshold: float = 0.3
) -> dict[str, object]:
    """The planar rotation model of one head: axes ``a``, ``b`` and every per-head metric (see docs/geometry.md, 'Definitions'):
    ``mu_q_a`` (a mean; ``intercept_q_a`` is the OLS intercept), ``alpha_q``, ``alpha_k``,
    ``bias_strength = mu_q_a · alpha_k``, ``r_q_a``, ``r_k_a``, ``position_r``,
    ``separation_strength``, ``var_frac_a``, ``var_frac_b``, ``plane_var_fraction``,
    ``complement_var_fraction``, ``content_var_b``, ``residual_pos_r`` (analytically 0), and the
    complement's rotation planes (``planes``: a DataFrame with ``var_fraction``, ``omega`` — the rate
    in radians per token at which the rows' angles in the plane turn with position —, ``angle_r``
    — that rotation's phase coherence in [0, 1] —, ``accuracy`` — Q/K linear-discriminant accuracy on
    the plane —, ``active`` — angle_r > ``active_threshold``; ``n_active_planes``,
    ``active_var_fraction``). ``axis_b="centroid"`` is
    the thesis's P(μ_Q − μ_K); ``"eigen"`` the top eigenvector of P C_δ P (independent q/k pairing).

    Example:
        >>> import torch
        >>> t = torch.arange(300.0)
        >>> k = torch.randn(300, 8) + torch.outer(t, torch.eye(8)[1]) * 0.05
        >>> r = planar_rotation(torch.randn(300, 8) + 2, k, t, t)
        >>> abs(r["r_k_a"]) > abs(r["r_q_a"]), r["residual_pos_r"] < 1e-10, len(r["planes"])
        (True, True, 3)
    """
    _check_axis(axis_b)
    q, k, q_pos, k_pos = _tensors(q, k, q_pos, k_pos)
    out = dict(qk_geometry.planar_rotation(q, q_pos, k, k_pos, axis_b, n_planes, active_threshold))
    out["planes"] = _planes_frame(out)
    return out


#: The name :func:`planar_rotation` had first (kept: public API).
rotation = planar_rotation


def _check_axis(axis_b: str) -> None:
    if axis_b not in ("centroid", "eigen"):
        raise ValueError(f"axis_b: unknown {axis_b!r}; allowed are 'centroid', 'eigen'")


def _planes_frame(rot: dict) -> pd.DataFrame:
    """Moves the native result's per-plane arrays out of ``rot`` into a table."""
    var = rot.pop("plane_var").numpy()
    return pd.DataFrame(
        {
            "plane": np.arange(len(var)),
            "var_fraction": var,
            "omega": rot.pop("plane_omega").numpy(),
            "angle_r": rot.pop("plane_angle_r").numpy(),
            "accuracy": rot.pop("plane_accuracy").numpy(),
            "active": rot.pop("plane_active").numpy(),
        }
    )


def pc0_class(r_q: float, r_k: float, *, hi: float = 0.7, lo: float = 0.3) -> str:
    """The 5-class PC0 taxonomy on the canonicalised r_q (>= 0) and |r_k|, strict inequalities.

    Example:
        >>> pc0_class(0.8, -0.75), pc0_class(0.8, 0.1), pc0_class(0.1, 0.9), pc0_class(0.1, 0.1), pc0_class(0.5, 0.5)
        ('position-dominated', 'Q-positional', 'K-positional', 'content-focused', 'mixed')
    """
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"lo/hi: expected 0 <= lo < hi <= 1; got lo={lo}, hi={hi}")
    ak = abs(r_k)
    if r_q > hi and ak > hi:
        return "position-dominated"
    if r_q > hi and ak < lo:
        return "Q-positional"
    if r_q < lo and ak > hi:
        return "K-positional"
    if r_q < lo and ak < lo:
        return "content-focused"
    return "mixed"
