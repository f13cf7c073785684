"""Q-vs-K scaling asymmetry (spec M12, exp3, exp3b).

Within one layer, scaling query head h's q by α and scaling its KV head's k by α give head h the
*same* logits: ``(αq)·k = q·(αk)``. The seed's single-layer recomputation could therefore only
ever see fp16 rounding (exp3: |ΔH| ≤ 2e-4), and exp3b's flat K curves came from scaling the wrong
KV head (``h % Hkv`` instead of ``h // (H / Hkv)``, bug B1): the target was untouched, k_range = 0,
asymmetry = inf, and the "query-dominant" readings were artifacts. In a real forward pass a K
scale also rescales the logits of the other heads of the GQA group, and both scales propagate
downstream differently — those are the only sources of a genuine asymmetry, so this table reports
them next to the ratios (``k_group_entropy_shift``, KL and Δloss for Q and for K).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from spectra.experiments.gain import _ols, curves

__all__ = ["INTERPRETATIONS", "asymmetry_table", "interpret"]

#: exp3b's table: (role, Q differs from K) -> reading.
INTERPRETATIONS: dict[tuple[str, bool], str] = {
    ("high", True): "query-dominant control",
    ("high", False): "generic logit scaling",
    ("medium", True): "transitional",
    ("medium", False): "generic",
    ("low", True): "unexpected asymmetry",
    ("low", False): "negative control passed",
}


def interpret(asymmetry: float, role: str | None = None) -> str:
    """exp3b's reading for a head of ``role`` (high/medium/low); exp3's rule without a role.

    Example:
        >>> interpret(1.0, "high"), interpret(float("inf"), "high"), interpret(1.0)
        ('generic logit scaling', 'query-dominant control', 'generic softmax temperature')
    """
    if role is not None:
        if role not in ("high", "medium", "low"):
            raise ValueError(f"roles: {role!r}; allowed are high, medium, low")
        symmetric = 0.8 <= asymmetry <= 1.2
        return INTERPRETATIONS[(role, not symmetric)]
    if asymmetry > 1.2:
        return "Q is the primary control signal"
    if asymmetry < 0.8:
        return "K is the stronger control"
    return "generic softmax temperature"


def asymmetry_table(
    sweep: pd.DataFrame, metric: str = "entropy", roles: Mapping[tuple[int, int], str] | None = None
) -> pd.DataFrame:
    """Per (mode, layer, head) with both kinds q and k in ``sweep``: ``q_range``, ``k_range``,
    ``asymmetry`` = q_range / k_range (+inf if k_range = 0, NaN if both 0), ``is_q_dominant``
    (> 1.2), ``is_symmetric`` ([0.8, 1.2]), ``q_slope``/``k_slope`` (OLS on ln α), ``slope_ratio``,
    ``max_abs_delta`` (max over α of |Q curve − K curve|), the real-forward differences when the
    sweep has them (``q_kl_logits``, ``k_kl_logits``, ``q_delta_loss``, ``k_delta_loss``,
    ``k_group_entropy_shift``: means over α ≠ 1, the last one of absolute values), ``role`` and
    ``interpretation``.

    Example:
        >>> a = [0.5, 1.0, 1.5]
        >>> sweep = pd.DataFrame({"kind": ["q"] * 3 + ["k"] * 3, "layer": 0, "head": 0, "alpha": a * 2, "sample": 0,
        ...                       "entropy": [3.0, 2.0, 1.0] * 2, "max_attn": 0.5, "k_eff": 2.0})
        >>> row = asymmetry_table(sweep).iloc[0]
        >>> float(row["asymmetry"]), row["interpretation"]
        (1.0, 'generic softmax temperature')
    """
    if "kind" not in sweep.columns:
        raise KeyError(f"sweep: needs a 'kind' column with q and k rows; it has {list(sweep.columns)}")
    kinds = set(sweep["kind"].unique())
    if not {"q", "k"} <= kinds:
        raise ValueError(f"sweep: needs both q and k scaling rows for the same heads; it has kinds {sorted(kinds)}")
    curve = curves(sweep[sweep["kind"].isin(["q", "k"])], (metric,))
    keys = [c for c in ("mode", "layer", "head") if c in curve.columns]
    extra = [c for c in ("kl_logits", "delta_loss", "group_entropy_shift") if c in sweep.columns]
    rows = []
    for key, group in curve.groupby(keys, sort=True):
        q = group[group["kind"] == "q"].sort_values("alpha")
        k = group[group["kind"] == "k"].sort_values("alpha")
        if q.empty or k.empty or not np.array_equal(q["alpha"].to_numpy(), k["alpha"].to_numpy()):
            raise ValueError(f"sweep: head {dict(zip(keys, key))} lacks q or k rows on a common alpha grid")
        qv, kv = q[metric].to_numpy(), k[metric].to_numpy()
        x = np.log(q["alpha"].to_numpy())
        q_range, k_range = float(np.ptp(qv)), float(np.ptp(kv))
        if k_range == 0:
            asym = np.nan if q_range == 0 else np.inf
        else:
            asym = q_range / k_range
        q_slope = float(_ols(x, qv[None])[0][0]) if len(x) > 1 else np.nan
        k_slope = float(_ols(x, kv[None])[0][0]) if len(x) > 1 else np.nan
        row = dict(zip(keys, key))
        row.update(q_range=q_range, k_range=k_range, asymmetry=float(asym), is_q_dominant=bool(asym > 1.2),
                   is_symmetric=bool(0.8 <= asym <= 1.2), q_slope=q_slope, k_slope=k_slope,
                   slope_ratio=abs(q_slope) / abs(k_slope) if k_slope != 0 else np.inf,
                   max_abs_delta=float(np.max(np.abs(qv - kv))))
        mask = (sweep["layer"] == row["layer"]) & (sweep["head"] == row["head"]) & (sweep["alpha"] != 1.0)
        if "mode" in row:
            mask &= sweep["mode"] == row["mode"]
        for column in extra:
            for kind in ("q", "k"):
                if column == "group_entropy_shift" and kind == "q":
                    continue
                values = sweep.loc[mask & (sweep["kind"] == kind), column]
                # The group shift changes sign across alpha = 1; its size is what a K scale adds.
                row[f"{kind}_{column}"] = float(values.abs().mean() if column == "group_entropy_shift" else values.mean())
        role = roles.get((int(row["layer"]), int(row["head"]))) if roles else None
        row["role"] = role
        row["interpretation"] = interpret(asym, role) if not np.isnan(asym) else "no effect of either scale"
        rows.append(row)
    return pd.DataFrame(rows)
