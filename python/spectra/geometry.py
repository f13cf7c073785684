"""QK geometry of attention heads (spec qk-geometry-plasticity §3–§4): the thesis's combined Q+K PCA
and the planar rotation model, per (layer, query head) with its KV head, on captured post-RoPE
vectors. The math runs in ``spectra._core`` (float64, from per-kind sufficient statistics).

This module is the Python face; aggregation, figures and the CLI are still to come (issue 7).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd
import torch

from spectra import _core

__all__ = ["PC0_CLASSES", "capture_table", "combined_pca", "head_table", "pc0_class", "rotation", "summarize"]

#: The 5-class PC0 taxonomy (spec §3.3), checked in this order.
PC0_CLASSES = ("position-dominated", "Q-positional", "K-positional", "content-focused", "mixed")


def _tensors(q, k, q_pos, k_pos) -> tuple[torch.Tensor, ...]:
    out = []
    for name, x in (("q", q), ("k", k), ("q_pos", q_pos), ("k_pos", k_pos)):
        t = torch.as_tensor(x)
        if not (t.is_floating_point() or name.endswith("pos")):
            raise TypeError(f"{name}: expected floating vectors; got dtype {t.dtype}")
        if name.endswith("pos") and not bool(torch.isfinite(t.double()).all()):
            raise ValueError(f"{name}: positions must be finite")
        if not name.endswith("pos") and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: holds NaN or inf")
        out.append(t)
    return tuple(out)


def combined_pca(q, k, q_pos, k_pos, n_components: int = 10, *, anchor_tolerance: float = 0.05) -> pd.DataFrame:
    """Pooled, centred PCA of one head's [Q; K]: one row per component with ``pc``,
    ``explained_variance``, ``r_q``, ``r_k`` (signs canonicalised: r_q >= 0, or r_k >= 0 when
    |r_q| < ``anchor_tolerance``); ``attrs`` holds ``p_q``, ``p_k``, ``fisher_pc0`` and the
    components.

    Example:
        >>> import torch
        >>> t = torch.arange(200.0)
        >>> q = torch.randn(200, 8) + torch.outer(t, torch.eye(8)[0]) * 0.05
        >>> table = combined_pca(q, torch.randn(200, 8), t, t, n_components=3)
        >>> list(table.columns), bool(table["r_q"].iloc[0] > 0.9)
        (['pc', 'explained_variance', 'r_q', 'r_k'], True)
    """
    q, k, q_pos, k_pos = _tensors(q, k, q_pos, k_pos)
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components: expected an integer >= 1; got {n_components!r}")
    out = _core.combined_pca(q, q_pos, k, k_pos, n_components, anchor_tolerance)
    table = pd.DataFrame({"pc": np.arange(len(out["r_q"])), "explained_variance": out["explained_variance"].numpy(),
                          "r_q": out["r_q"].numpy(), "r_k": out["r_k"].numpy()})
    table.attrs.update(p_q=out["p_q"], p_k=out["p_k"], fisher_pc0=out["fisher_pc0"],
                       components=out["components"].numpy(), mean=out["mean"].numpy())
    return table


def rotation(q, k, q_pos, k_pos, *, axis_b: Literal["centroid", "eigen"] = "centroid") -> dict[str, object]:
    """The planar rotation model of one head: axes ``a``, ``b`` and every per-head metric (spec §4.3):
    ``mu_q_a`` (a mean; ``intercept_q_a`` is the OLS intercept), ``alpha_q``, ``alpha_k``,
    ``bias_strength = mu_q_a · alpha_k``, ``r_q_a``, ``r_k_a``, ``position_r``,
    ``separation_strength``, ``var_frac_a``, ``var_frac_b``, ``plane_var_fraction``,
    ``content_var_b``, ``residual_pos_r`` (analytically 0). ``axis_b="centroid"`` is the thesis's
    P(μ_Q − μ_K); ``"eigen"`` the top eigenvector of P C_δ P (independent q/k pairing).

    Example:
        >>> import torch
        >>> t = torch.arange(300.0)
        >>> k = torch.randn(300, 8) + torch.outer(t, torch.eye(8)[1]) * 0.05
        >>> r = rotation(torch.randn(300, 8) + 2, k, t, t)
        >>> abs(r["r_k_a"]) > abs(r["r_q_a"]), r["residual_pos_r"] < 1e-10
        (True, True)
    """
    if axis_b not in ("centroid", "eigen"):
        raise ValueError(f"axis_b: unknown {axis_b!r}; allowed are 'centroid', 'eigen'")
    q, k, q_pos, k_pos = _tensors(q, k, q_pos, k_pos)
    return dict(_core.planar_rotation(q, q_pos, k, k_pos, axis_b))


def pc0_class(r_q: float, r_k: float, *, hi: float = 0.7, lo: float = 0.3) -> str:
    """The spec's 5-class PC0 taxonomy on the canonicalised r_q (>= 0) and |r_k|, strict inequalities.

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


def head_table(probe, heads: Iterable[tuple[int, int]] | None = None, *, n_components: int = 10,
               axis_b: Literal["centroid", "eigen"] = "centroid", hi: float = 0.7, lo: float = 0.3) -> pd.DataFrame:
    """One row per (layer, query head) of a Probe that captured post-RoPE q and k: PC0's
    ``explained_variance``, ``r_q``, ``r_k`` and ``pc0_class``, ``p_q``, ``p_k``, ``fisher_pc0``, and
    the rotation metrics. ``heads`` defaults to every captured query head.

    Example:
        >>> import torch, spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> ids = tok(zoo.heldout_text()[:6000], return_tensors="pt").input_ids[:, :512].view(4, 128)
        >>> probe = spectra.Probe(model, layers=[1], heads=[0, 5], capture=("q", "k"))
        >>> with probe, torch.no_grad():
        ...     _ = model(ids)
        >>> table = head_table(probe)
        >>> len(table), bool((table["residual_pos_r"] < 1e-8).all())
        (2, True)
    """
    if "q" not in probe.kinds or "k" not in probe.kinds:
        raise ValueError("probe: needs capture=('q', 'k') (it captured " + ", ".join(probe.kinds) + ")")
    stage = "post_rope" if "post_rope" in probe.stages else probe.stages[0]
    targets = list(heads) if heads is not None else [(layer, h) for layer, hs in probe.heads_by_layer.items() for h in hs]
    rows = []
    for layer, head in targets:
        q = probe.captured(layer, head, "q", stage)
        k = probe.captured(layer, probe.kv_head(head), "k", stage)
        rows.append(_head_row(layer, head, probe.kv_head(head), q, k, n_components, axis_b, hi, lo)[0])
    return pd.DataFrame(rows)


def _head_row(layer, head, kv_head, q, k, n_components, axis_b, hi, lo) -> tuple[dict, pd.DataFrame]:
    pca, rot = _core.qk_geometry(q.vectors, q.positions.double(), k.vectors, k.positions.double(), n_components, axis_b)
    r_q0, r_k0 = float(pca["r_q"][0]), float(pca["r_k"][0])
    row = {"layer": layer, "head": head, "kv_head": kv_head, "n_q": len(q.positions), "n_k": len(k.positions),
           "pc0_explained_variance": float(pca["explained_variance"][0]), "pc0_r_q": r_q0, "pc0_r_k": r_k0,
           "pc0_class": pc0_class(r_q0, r_k0, hi=hi, lo=lo), "p_q": pca["p_q"], "p_k": pca["p_k"],
           "fisher_pc0": pca["fisher_pc0"]}
    row.update({key: value for key, value in rot.items() if key not in ("a", "b")})
    components = pd.DataFrame({"layer": layer, "head": head, "pc": np.arange(len(pca["r_q"])),
                               "explained_variance": pca["explained_variance"].numpy(), "r_q": pca["r_q"].numpy(),
                               "r_k": pca["r_k"].numpy()})
    return row, components


def capture_table(qk_dir, *, n_components: int = 10, axis_b: Literal["centroid", "eigen"] = "centroid",
                  hi: float = 0.7, lo: float = 0.3, gqa_group: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(heads, components) of every captured query head in a qk-sniffer / Spectra capture folder
    (``l{LL}h{HH}q`` with its KV head's ``l{LL}h{GG}k``; post-RoPE). The KV head comes from the
    folder's ``spectra_capture.json`` when present, else ``h // gqa_group``. ``components`` is the
    thesis's ``qk.csv`` layout: layer, head, pc, explained_variance, r_q, r_k."""
    import re
    from pathlib import Path

    from spectra.capture_store import read_capture, read_sidecar

    folder = Path(qk_dir)
    if not folder.is_dir():
        raise ValueError(f"qk: {folder} is not a folder")
    found = sorted((int(m.group(1)), int(m.group(2))) for p in folder.iterdir()
                   if (m := re.fullmatch(r"l(\d+)h(\d+)q", p.name)) and (p / "data.parquet").is_file())
    if not found:
        raise ValueError(f"qk: no query captures (l<L>h<H>q/data.parquet) in {folder}")
    try:
        kv_map = read_sidecar(folder).get("kv_head_map")
    except FileNotFoundError:
        kv_map = None
    if kv_map is None and gqa_group is None:
        raise ValueError(f"gqa_group: {folder} has no spectra_capture.json naming the KV head of each query head; "
                         "pass gqa_group (query heads per KV head)")
    rows, parts = [], []
    for layer, head in found:
        kv = int(kv_map[head]) if kv_map is not None else head // int(gqa_group)
        q, k = read_capture(folder, layer, head, "q"), read_capture(folder, layer, kv, "k")
        row, components = _head_row(layer, head, kv, q, k, n_components, axis_b, hi, lo)
        rows.append(row)
        parts.append(components)
    return pd.DataFrame(rows), pd.concat(parts, ignore_index=True)


def summarize(heads: pd.DataFrame, n_layers: int | None = None) -> dict[str, object]:
    """Per-model aggregates of a head table (spec §4.6, §3.3): class shares, means of the rotation
    metrics, the median |α_K|/|α_Q|, the fraction of heads with positive bias and mu_q_a, the
    bias–separation correlation, and per-depth-bin means (10 bins of layer / max layer index)."""
    if heads.empty:
        raise ValueError("heads: the table is empty")
    n_layers = n_layers or int(heads["layer"].max()) + 1
    depth = heads["layer"] / max(n_layers - 1, 1)
    bins = np.minimum((depth * 10).astype(int), 9)
    ratio = (heads["alpha_k"].abs() / heads["alpha_q"].abs()).replace([np.inf, -np.inf], np.nan)
    summary: dict[str, object] = {
        "n_heads": int(len(heads)),
        "pc0_class_share": {c: float((heads["pc0_class"] == c).mean()) for c in PC0_CLASSES},
        "mean_bias_strength": float(heads["bias_strength"].mean()),
        "mean_abs_alpha_k": float(heads["alpha_k"].abs().mean()),
        "mean_abs_r_k_a": float(heads["r_k_a"].abs().mean()),
        "mean_abs_r_q_a": float(heads["r_q_a"].abs().mean()),
        "mean_separation_strength": float(heads["separation_strength"].mean()),
        "mean_plane_var_fraction": float(heads["plane_var_fraction"].mean()),
        "median_alpha_k_over_alpha_q": float(ratio.median()),
        "fraction_bias_positive": float((heads["bias_strength"] > 0).mean()),
        "fraction_mu_q_a_positive": float((heads["mu_q_a"] > 0).mean()),
        "bias_vs_separation_r": float(heads["bias_strength"].corr(heads["separation_strength"])) if len(heads) > 2 else float("nan"),
        "max_residual_pos_r": float(heads["residual_pos_r"].max()),
    }
    per_bin = heads.assign(depth_bin=bins).groupby("depth_bin")[["bias_strength", "alpha_k", "pc0_r_q", "pc0_r_k",
                                                                  "plane_var_fraction"]].mean()
    summary["depth_bins"] = {int(b): {k: float(v) for k, v in row.items()} for b, row in per_bin.iterrows()}
    return summary
