"""Q-vs-K scaling asymmetry (exp3, exp3b; see docs/interventions.md, 'Q vs K'), vectorised over heads.

Why the seed could not see an asymmetry: head h's logits are ``q_h·k_{g(h)}`` with
``g(h) = h // (H / Hkv)`` its KV head. Scaling ``q_h`` by α or ``k_{g(h)}`` by α gives head h the
*same* logits, ``(αq)·k = q·(αk)`` (before or after RoPE, which is linear). In the seed's
single-layer recomputation nothing else was computed, so Q and K curves could differ only by fp16
rounding of α·x (exp3: |ΔH| ≤ 2e-4, exactly 0 for α exact in binary). In a real forward pass
(``mode="propagated"``) a K scale also rescales the logits of the other r − 1 query heads of the
GQA group, and the two interventions then propagate differently to later layers and the output:
those are the only sources of a genuine asymmetry, so the table reports them next to the ratios
(``k_group_entropy_shift``, and KL / Δloss of the output for Q and for K).

exp3b's "query-dominant" readings were an artifact of a bug (see docs/concepts.md, 'What the original code got wrong'): its scripts scaled KV head
``h % Hkv`` instead of ``h // r``, so for heads 19, 8 and 23 (H=32, Hkv=8) they scaled KV heads
3, 0, 7 instead of 4, 2, 5. The target was untouched, its K curve flat, ``k_range = 0`` and
``asymmetry = inf``. With the correct mapping the curves coincide and every head reads "generic".

Decisions: curves are across-sample means per α (``gain.curves``); ranges and slopes skip NaN
points; ``asymmetry`` is +inf when only Q moves the metric and NaN when neither does;
``k_group_entropy_shift`` averages |shift| over α ≠ 1 because the shift changes sign across α = 1
(a signed mean would cancel), while KL (≥ 0) and Δloss are plain means over α ≠ 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from spectra.interventions.gain import _ols, curves

__all__ = ["INTERPRETATIONS", "ROLES", "asymmetry_table", "interpret"]

ROLES: tuple[str, ...] = ("high", "medium", "low")
SYMMETRIC = (0.8, 1.2)
#: exp3b's table: (role, Q differs from K) -> reading.
INTERPRETATIONS: dict[tuple[str, bool], str] = {
    ("high", True): "query-dominant control",
    ("high", False): "generic logit scaling",
    ("medium", True): "transitional",
    ("medium", False): "generic",
    ("low", True): "unexpected asymmetry",
    ("low", False): "negative control passed",
}
NO_EFFECT = "no effect of either scale"
# Real-forward side effects: column -> kinds reported (q scaling leaves the group untouched).
EFFECTS: dict[str, tuple[str, ...]] = {"kl_logits": ("q", "k"), "delta_loss": ("q", "k"), "group_entropy_shift": ("k",)}


def interpret(asymmetry: float, role: str | None = None) -> str:
    """The reading of a range ratio: exp3b's table for a head of ``role`` (high/medium/low), where
    Q≠K means not within [0.8, 1.2]; without a role, exp3's rule (> 1.2 "Q is the primary control
    signal", < 0.8 "K is the stronger control", else "generic softmax temperature"). NaN (neither
    scale moves the metric) reads "no effect of either scale".

    Example:
        >>> interpret(1.0, "high"), interpret(float("inf"), "high"), interpret(1.0)
        ('generic logit scaling', 'query-dominant control', 'generic softmax temperature')
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"roles: {role!r}; allowed are 'high', 'medium', 'low'")
    if np.isnan(asymmetry):
        return NO_EFFECT
    if role is not None:
        return INTERPRETATIONS[(role, not SYMMETRIC[0] <= asymmetry <= SYMMETRIC[1])]
    if asymmetry > SYMMETRIC[1]:
        return "Q is the primary control signal"
    if asymmetry < SYMMETRIC[0]:
        return "K is the stronger control"
    return "generic softmax temperature"


def _by_alpha(curve: pd.DataFrame, kind: str, column: str, keys: list[str]) -> pd.DataFrame:
    """(heads × alphas) frame of one kind's curve column."""
    return curve[curve["kind"] == kind].set_index([*keys, "alpha"])[column].unstack("alpha")


def _effects(sweep: pd.DataFrame, keys: list[str], index: pd.Index) -> dict[str, np.ndarray]:
    """Means over α ≠ 1 of the per-α across-sample means of the real-forward columns."""
    columns = [c for c in EFFECTS if c in sweep.columns]
    off = sweep[sweep["alpha"] != 1.0]
    if not columns:
        return {}
    per_alpha = off.groupby([*keys, "kind", "alpha"], sort=True)[columns].mean()
    if "group_entropy_shift" in columns:
        per_alpha["group_entropy_shift"] = per_alpha["group_entropy_shift"].abs()
    per_head = per_alpha.groupby([*keys, "kind"], sort=True).mean()
    out = {}
    for column in columns:
        for kind in EFFECTS[column]:
            values = (
                per_head.xs(kind, level="kind")[column] if kind in per_head.index.get_level_values("kind") else None
            )
            out[f"{kind}_{column}"] = (
                values.reindex(index).to_numpy(dtype=np.float64) if values is not None else np.full(len(index), np.nan)
            )
    return out


def asymmetry_table(
    sweep: pd.DataFrame, metric: str = "entropy", roles: Mapping[tuple[int, int], str] | None = None
) -> pd.DataFrame:
    """Per (mode, layer, head) — ``mode`` when the sweep has it — Q scaling vs K scaling of
    ``metric`` (see docs/interventions.md, 'Q vs K'). The sweep must hold kind "q" and kind "k" rows for the same heads on
    the same α grid (other kinds are ignored).

    Columns: the keys; ``q_range``/``k_range`` (max − min of the across-sample mean curve);
    ``asymmetry`` = q_range / k_range (+inf if k_range = 0, NaN if both are 0);
    ``is_q_dominant`` (> 1.2); ``is_symmetric`` (in [0.8, 1.2]); ``q_slope``/``k_slope`` (OLS on
    ln α); ``slope_ratio`` = |q_slope| / |k_slope|; ``max_abs_delta`` (max over α of |Q curve − K
    curve|); when the sweep has them, the real-forward differences: ``q_kl_logits``,
    ``k_kl_logits``, ``q_delta_loss``, ``k_delta_loss`` (means over α ≠ 1) and
    ``k_group_entropy_shift`` (mean |shift| over α ≠ 1); ``role`` (from ``roles``, a mapping
    (layer, head) -> "high"/"medium"/"low", else None) and ``interpretation`` (:func:`interpret`).

    Example (identical curves, as the shared logits force for the target head):
        >>> a = [0.5, 1.0, 1.5]
        >>> sweep = pd.DataFrame({"kind": ["q"] * 3 + ["k"] * 3, "layer": 0, "head": 0, "alpha": a * 2, "sample": 0,
        ...                       "entropy": [3.0, 2.0, 1.0] * 2})
        >>> row = asymmetry_table(sweep, roles={(0, 0): "low"}).iloc[0]
        >>> float(row["asymmetry"]), bool(row["is_symmetric"]), row["interpretation"]
        (1.0, True, 'negative control passed')
    """
    if "kind" not in sweep.columns:
        raise KeyError(f"sweep: needs a 'kind' column with q and k rows; it has {list(sweep.columns)}")
    kinds = set(sweep["kind"].unique())
    if not {"q", "k"} <= kinds:
        raise ValueError(f"sweep: needs both q and k scaling rows for the same heads; it has kinds {sorted(kinds)}")
    roles = dict(roles or {})
    bad_roles = {key: role for key, role in roles.items() if role not in ROLES}
    if bad_roles:
        raise ValueError(f"roles: {bad_roles}; allowed roles are 'high', 'medium', 'low'")
    sub = sweep[sweep["kind"].isin(["q", "k"])]
    curve = curves(sub, (metric,))
    keys = [c for c in ("mode", "layer", "head") if c in curve.columns]
    present_q = _by_alpha(curve, "q", "n_samples", keys)
    present_k = _by_alpha(curve, "k", "n_samples", keys)
    index = present_q.index.union(present_k.index).sort_values()
    alphas = np.sort(curve["alpha"].unique())
    present_q = present_q.reindex(index=index, columns=alphas).notna().to_numpy()
    present_k = present_k.reindex(index=index, columns=alphas).notna().to_numpy()
    mismatch = (present_q != present_k).any(axis=1)
    if mismatch.any():
        heads = [dict(zip(keys, k if isinstance(k, tuple) else (k,))) for k in index[mismatch][:5]]
        raise ValueError(f"sweep: {int(mismatch.sum())} head(s) lack q or k rows on a common alpha grid, e.g. {heads}")
    q = _by_alpha(curve, "q", metric, keys).reindex(index=index, columns=alphas).to_numpy(dtype=np.float64)
    k = _by_alpha(curve, "k", metric, keys).reindex(index=index, columns=alphas).to_numpy(dtype=np.float64)
    x = np.log(alphas)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN heads stay NaN
        q_range = np.nanmax(q, axis=1) - np.nanmin(q, axis=1)
        k_range = np.nanmax(k, axis=1) - np.nanmin(k, axis=1)
        max_abs_delta = np.nanmax(np.abs(q - k), axis=1)
        asymmetry = q_range / k_range  # x/0 = +inf, 0/0 = NaN
        q_slope, k_slope = _ols(x, q)[0], _ols(x, k)[0]
        slope_ratio = np.abs(q_slope) / np.abs(k_slope)
    out = index.to_frame(index=False)
    out["q_range"], out["k_range"], out["asymmetry"] = q_range, k_range, asymmetry
    out["is_q_dominant"] = asymmetry > SYMMETRIC[1]
    out["is_symmetric"] = (asymmetry >= SYMMETRIC[0]) & (asymmetry <= SYMMETRIC[1])
    out["q_slope"], out["k_slope"], out["slope_ratio"] = q_slope, k_slope, slope_ratio
    out["max_abs_delta"] = max_abs_delta
    for name, values in _effects(sub, keys, index).items():
        out[name] = values
    out["role"] = [roles.get((int(layer), int(head))) for layer, head in zip(out["layer"], out["head"])]
    out["interpretation"] = [interpret(a, r) for a, r in zip(asymmetry, out["role"])]
    return out
