"""Per-model and per-checkpoint aggregates of a geometry head table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spectra.geometry.rotation_model import PC0_CLASSES
from spectra.io.tables import check_frame


def depth_bins(layers: pd.Series, n_layers: int | None = None, n_bins: int = 10) -> np.ndarray:
    """Depth = layer / max layer index in ``n_bins`` equal bins, depth 1.0 in the last;
    the max layer index is ``n_layers - 1``, or the largest layer given. Integer arithmetic, because
    layer / max · n_bins in floats can land just below a bin edge.

    Example:
        >>> depth_bins(pd.Series([0, 3, 9]), n_layers=10).tolist()
        [0, 3, 9]
    """
    layer = np.asarray(layers, dtype=np.int64)
    last = (n_layers - 1) if n_layers else int(layer.max())
    return np.minimum(layer * n_bins // max(last, 1), n_bins - 1)


def checkpoint_order(table: pd.DataFrame) -> list:
    """Checkpoint labels of a series table by step; a stable sort, so checkpoints without a step
    (or a table without a ``step`` column) keep their order of appearance, after the stepped ones.

    Example:
        >>> checkpoint_order(pd.DataFrame({"checkpoint": ["b", "a", "c"], "step": [10, 0, None]}))
        ['a', 'b', 'c']
    """
    if "step" not in table:
        return list(table["checkpoint"].drop_duplicates())
    steps = pd.to_numeric(table["step"], errors="coerce").groupby(table["checkpoint"], sort=False).min()
    return list(steps.sort_values(kind="stable", na_position="last").index)


def summarize(heads: pd.DataFrame, n_layers: int | None = None) -> dict[str, object]:
    """Per-model aggregates of a head table: class shares, means and medians
    of the rotation metrics, the median |α_K|/|α_Q|, the fraction of heads with positive bias and
    mu_q_a, the bias–separation correlation, axis b's variance beating axis a's, and per-depth-bin
    means (10 bins of layer / max layer index); RoPE-only / NoPE-only means when the capture says
    which layers use RoPE.

    Example:
        >>> heads = pd.DataFrame({"layer": [0, 1, 1], "pc0_class": ["mixed"] * 3, "bias_strength": [1.0, 2.0, -1.0],
        ...     "mu_q_a": [1.0, 1.0, -1.0], "alpha_q": [1.0, 1.0, 1.0], "alpha_k": [1.0, 2.0, 1.0],
        ...     "r_q_a": [0.5] * 3, "r_k_a": [0.9] * 3, "separation_strength": [0.3, 0.2, 0.1],
        ...     "plane_var_fraction": [0.4] * 3, "var_frac_a": [0.1] * 3, "var_frac_b": [0.3] * 3,
        ...     "residual_pos_r": [0.0] * 3, "pc0_r_q": [0.8] * 3, "pc0_r_k": [0.5] * 3, "p_q": [0.2] * 3,
        ...     "p_k": [0.1] * 3, "pc0_explained_variance": [0.3] * 3, "accuracy_pc01": [1.0] * 3})
        >>> s = summarize(heads)
        >>> s["fraction_bias_positive"], s["median_alpha_k_over_alpha_q"]
        (0.6666666666666666, 1.0)
    """
    check_frame(
        heads,
        [
            "layer",
            "pc0_class",
            "bias_strength",
            "mu_q_a",
            "alpha_q",
            "alpha_k",
            "r_q_a",
            "r_k_a",
            "separation_strength",
            "plane_var_fraction",
            "var_frac_a",
            "var_frac_b",
            "residual_pos_r",
        ],
        "heads",
    )
    if heads.empty:
        raise ValueError("heads: the table is empty")
    ratio = (heads["alpha_k"].abs() / heads["alpha_q"].abs()).replace([np.inf, -np.inf], np.nan)
    summary: dict[str, object] = {
        "n_heads": int(len(heads)),
        "pc0_class_share": {c: float((heads["pc0_class"] == c).mean()) for c in PC0_CLASSES},
        **_means(heads),
        "median_bias_strength": float(heads["bias_strength"].median()),
        "median_alpha_k_over_alpha_q": float(ratio.median()),
        "fraction_bias_positive": float((heads["bias_strength"] > 0).mean()),
        "fraction_mu_q_a_positive": float((heads["mu_q_a"] > 0).mean()),
        "fraction_b_variance_above_a": float((heads["var_frac_b"] > heads["var_frac_a"]).mean()),
        "bias_vs_separation_r": _corr(heads["bias_strength"], heads["separation_strength"]),
        "max_residual_pos_r": float(heads["residual_pos_r"].max()),
    }
    columns = [
        c for c in ("bias_strength", "alpha_k", "mu_q_a", "pc0_r_q", "pc0_r_k", "plane_var_fraction") if c in heads
    ]
    per_bin = heads.assign(depth_bin=depth_bins(heads["layer"], n_layers)).groupby("depth_bin")[columns].mean()
    summary["depth_bins"] = {int(b): {k: float(v) for k, v in row.items()} for b, row in per_bin.iterrows()}
    if "uses_rope" in heads:
        for name, part in (("rope", heads[heads["uses_rope"]]), ("nope", heads[~heads["uses_rope"].astype(bool)])):
            summary[f"{name}_heads"] = int(len(part))
            if len(part):
                summary[f"{name}_means"] = _means(part)
    return summary


def _corr(x: pd.Series, y: pd.Series) -> float:
    return float(x.corr(y)) if len(x) > 2 else float("nan")


def _means(heads: pd.DataFrame) -> dict[str, float]:
    """The per-model means (and the PCA means) of a head table."""
    out = {
        "mean_bias_strength": float(heads["bias_strength"].mean()),
        "mean_mu_q_a": float(heads["mu_q_a"].mean()),
        "mean_alpha_k": float(heads["alpha_k"].mean()),
        "mean_abs_alpha_k": float(heads["alpha_k"].abs().mean()),
        "mean_abs_alpha_q": float(heads["alpha_q"].abs().mean()),
        "mean_abs_r_k_a": float(heads["r_k_a"].abs().mean()),
        "mean_abs_r_q_a": float(heads["r_q_a"].abs().mean()),
        "mean_separation_strength": float(heads["separation_strength"].mean()),
        "mean_plane_var_fraction": float(heads["plane_var_fraction"].mean()),
    }
    for column in (
        "pc0_r_q",
        "pc0_r_k",
        "pc0_explained_variance",
        "p_q",
        "p_k",
        "fisher_pc0",
        "accuracy_pc01",
        "n_active_planes",
        "active_var_fraction",
    ):
        if column in heads:
            out[f"mean_{column}"] = float(heads[column].mean())
    return out


def summarize_series(heads: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint of a :func:`series` head table, in step order: the class shares
    (``share_<class>``), the means of :func:`summarize` and the bias decomposition's interquartile
    ranges (``mu_q_a_q25`` … ``bias_strength_q75``) — the thesis's training-trajectory table.

    Example:
        >>> heads = pd.DataFrame({"checkpoint": ["b", "b", "a"], "step": [10, 10, 0], "layer": 0,
        ...     "pc0_class": ["mixed", "Q-positional", "mixed"], "bias_strength": [1.0, 3.0, 0.5],
        ...     "mu_q_a": 1.0, "alpha_q": 1.0, "alpha_k": 1.0, "r_q_a": 0.5, "r_k_a": 0.9,
        ...     "separation_strength": 0.3, "plane_var_fraction": 0.4})
        >>> summarize_series(heads)[["checkpoint", "n_heads", "mean_bias_strength", "share_mixed"]].values.tolist()
        [['a', 1, 0.5, 1.0], ['b', 2, 2.0, 0.5]]
    """
    check_frame(heads, ["checkpoint", "step", "pc0_class", "bias_strength", "mu_q_a", "alpha_k"], "heads")
    rows = []
    for label in checkpoint_order(heads):
        part = heads[heads["checkpoint"] == label]
        row = {"checkpoint": label, "step": part["step"].iloc[0], "n_heads": len(part)}
        row.update({f"share_{c}": float((part["pc0_class"] == c).mean()) for c in PC0_CLASSES})
        row.update(_means(part))
        for column in ("mu_q_a", "alpha_k", "bias_strength"):
            row[f"{column}_q25"], row[f"{column}_q75"] = (float(v) for v in part[column].quantile([0.25, 0.75]))
        rows.append(row)
    return pd.DataFrame(rows)


def family_correlations(heads: pd.DataFrame, by: str = "family") -> pd.DataFrame:
    """Pearson r of bias_strength vs separation_strength pooled and within each group (``family`` or
    ``checkpoint``): the thesis's Simpson's-paradox check.

    Example:
        >>> heads = pd.DataFrame({"family": ["a"] * 3 + ["b"] * 3, "bias_strength": [1, 2, 3, 10, 11, 12],
        ...                       "separation_strength": [3, 2, 1, 13, 12, 11]})
        >>> family_correlations(heads)["r"].round(2).tolist()
        [0.94, -1.0, -1.0]
    """
    check_frame(heads, [by, "bias_strength", "separation_strength"], "heads")
    rows = [{by: "(pooled)", "n_heads": len(heads), "r": _corr(heads["bias_strength"], heads["separation_strength"])}]
    for name, part in heads.groupby(by, sort=False):
        rows.append({by: name, "n_heads": len(part), "r": _corr(part["bias_strength"], part["separation_strength"])})
    return pd.DataFrame(rows)
