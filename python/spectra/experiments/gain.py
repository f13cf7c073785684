"""Gain of a head (spec M11, exp2, exp2b): the OLS slope of a metric's curve on ln α.

The curve of a head is, per α, the mean across samples of the per-sample means (as the seed's v2
pipeline aggregated). ``gain_<m>`` is the slope of that curve on ln α with an intercept
(``scipy.stats.linregress``, vectorised here over all heads), with ``r_squared`` = r² (the seed
stored r under that name, bug B5) and the slope's standard error. A percentile bootstrap over
samples (whole samples resampled, the curve recomputed, the slope refitted) gives a CI — the seed
fitted 5 points of one sample with no uncertainty at all (§7.9).

Because the target head's logits scale exactly as αs, entropy and max are functions of α with
``dH/d ln α = −α²·Var_p(s)`` (non-positive: entropy never rises with α, for any head) and
``d p_max/d ln α = p_max·(H + ln p_max)·…``; the sweep's ``entropy_slope``/``max_attn_slope``
columns hold these closed forms, and ``closed_form_gain_<m>`` is their mean over the α grid — the
average derivative, which the OLS slope approximates (a cross-check, not an identity: OLS weighs
the grid's ends more). Gain is thus a functional of the baseline logit distribution, not evidence
of "head-specific exploitation".

Categories (exp2b) use |gain_max_attn| against pandas' linear p10/p90 quantiles; the seed's v2
entry point used |gain_entropy| instead (bug B9), so both are offered via ``by``. Its hard-coded
"medium" head L14H8 actually measured *low* (bug B8): :func:`select_heads` picks from data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "MONOTONIC_DIRECTION",
    "GainFit",
    "curves",
    "fit_gain",
    "gain_categories",
    "gain_ratio_verdict",
    "gain_table",
    "select_heads",
]

METRICS: tuple[str, ...] = ("entropy", "max_attn", "k_eff")
#: As α rises: entropy and k_eff fall, max_attn rises (the seed's expected directions).
MONOTONIC_DIRECTION: dict[str, str] = {"entropy": "decreasing", "max_attn": "increasing", "k_eff": "decreasing"}
GROUP_COLUMNS: tuple[str, ...] = ("mode", "kind", "layer", "head")


class GainFit(NamedTuple):
    slope: float
    intercept: float
    r_squared: float
    std_error: float
    monotonic: bool


def _check_alphas(alphas: np.ndarray) -> None:
    if alphas.size and (not np.all(np.isfinite(alphas)) or np.any(alphas <= 0)):
        raise ValueError(f"alphas: every scale must be a finite number > 0; got {alphas.tolist()}")
    if np.unique(alphas).size < 2:
        raise ValueError(f"alphas: a gain needs at least 2 distinct scales; got {alphas.tolist()}")


def _is_monotonic(values: np.ndarray, direction: str, tol: float = 0.0) -> bool:
    steps = np.diff(values)
    return bool(np.all(steps <= tol)) if direction == "decreasing" else bool(np.all(steps >= -tol))


def fit_gain(alphas: Sequence[float], values: Sequence[float], direction: Literal["decreasing", "increasing"] = "decreasing") -> GainFit:
    """OLS of ``values`` on ln(``alphas``): slope (the gain), intercept, r², the slope's standard
    error, and whether the values are monotonic in ``direction`` along the sorted α.

    Example (golden case G5):
        >>> import numpy as np
        >>> a = np.array([0.5, 0.75, 1.0, 1.25, 1.5])
        >>> fit = fit_gain(a, 2 - 0.8 * np.log(a))
        >>> round(fit.slope, 9), round(fit.intercept, 9), round(fit.r_squared, 9), fit.monotonic
        (-0.8, 2.0, 1.0, True)
    """
    x = np.asarray(alphas, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"values: expected one value per alpha; got {y.shape} values for {x.shape} alphas")
    _check_alphas(x)
    if direction not in ("decreasing", "increasing"):
        raise ValueError(f"direction: {direction!r}; allowed are 'decreasing', 'increasing'")
    fit = stats.linregress(np.log(x), y)
    order = np.argsort(x)
    return GainFit(float(fit.slope), float(fit.intercept), float(fit.rvalue**2), float(fit.stderr),
                   _is_monotonic(y[order], direction))


def _groups(frame: pd.DataFrame) -> list[str]:
    return [c for c in GROUP_COLUMNS if c in frame.columns]


def _check_sweep(sweep: pd.DataFrame, metrics: Sequence[str]) -> None:
    if not isinstance(sweep, pd.DataFrame) or sweep.empty:
        raise ValueError("sweep: expected a non-empty sweep table (spectra.experiments.scale_sweep)")
    missing = [c for c in ("layer", "head", "alpha", "sample", *metrics) if c not in sweep.columns]
    if missing:
        raise KeyError(f"sweep: missing column(s) {missing}; it has {list(sweep.columns)}")
    _check_alphas(np.unique(sweep["alpha"].to_numpy(dtype=np.float64)))


def curves(sweep: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Per (mode, kind, layer, head, alpha): the mean across samples of each metric (and of the
    closed-form slopes when present), with ``n_samples``.

    Example:
        >>> sweep = pd.DataFrame({"layer": 0, "head": 0, "alpha": [0.5, 0.5, 1.0, 1.0], "sample": [0, 1, 0, 1],
        ...                       "entropy": [2.0, 4.0, 1.0, 3.0], "max_attn": 0.5, "k_eff": 2.0})
        >>> curves(sweep)["entropy"].tolist()
        [3.0, 2.0]
    """
    _check_sweep(sweep, metrics)
    keys = [*_groups(sweep), "alpha"]
    columns = [*metrics, *[c for c in ("entropy_slope", "max_attn_slope") if c in sweep.columns]]
    grouped = sweep.groupby(keys, sort=True)
    out = grouped[columns].mean()
    out["n_samples"] = grouped["sample"].nunique()
    return out.reset_index()


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slope, intercept, r², slope standard error of y (..., n) on x (n,), as linregress."""
    n = x.size
    xc = x - x.mean()
    sxx = float((xc**2).sum())
    ym = y.mean(-1, keepdims=True)
    yc = y - ym
    sxy = (yc * xc).sum(-1)
    syy = (yc**2).sum(-1)
    slope = sxy / sxx
    intercept = ym[..., 0] - slope * x.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(syy > 0, sxy / np.sqrt(sxx * syy), 0.0)
        r = np.clip(r, -1.0, 1.0)
        stderr = np.sqrt(np.maximum((1 - r**2) * syy, 0.0) / (n - 2) / sxx) if n > 2 else np.full_like(slope, np.nan)
    return slope, intercept, r**2, stderr


def gain_table(
    sweep: pd.DataFrame,
    metrics: Sequence[str] = METRICS,
    *,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 42,
) -> pd.DataFrame:
    """One row per (mode, kind, layer, head): for each metric m, ``gain_<m>``, ``intercept_<m>``,
    ``r_squared_<m>``, ``std_error_<m>``, ``monotonic_<m>``, ``baseline_<m>`` (the curve at α = 1,
    else at the middle α), ``ci_low_<m>``/``ci_high_<m>`` (percentile bootstrap over samples; NaN
    with fewer than 2 samples); ``n_samples``, ``n_alphas``; and ``closed_form_gain_<m>`` when the
    sweep carries the closed-form slopes.

    Every head must have the same α grid and the same samples.

    Example:
        >>> a = [0.5, 0.75, 1.0, 1.25, 1.5]
        >>> sweep = pd.DataFrame({"layer": 0, "head": 0, "alpha": a, "sample": 0,
        ...                       "entropy": [2 - 0.8 * np.log(x) for x in a], "max_attn": a, "k_eff": 3.0})
        >>> row = gain_table(sweep, n_bootstrap=0).iloc[0]
        >>> round(float(row["gain_entropy"]), 6), float(row["r_squared_entropy"]), float(row["baseline_entropy"])
        (-0.8, 1.0, 2.0)
    """
    if not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap: expected an int >= 0; got {n_bootstrap!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci: expected a level in (0, 1); got {ci!r}")
    _check_sweep(sweep, metrics)
    groups = _groups(sweep)
    alphas = np.unique(sweep["alpha"].to_numpy(dtype=np.float64))
    samples = np.unique(sweep["sample"].to_numpy())
    # A dense (head, alpha, sample) cube per metric.
    index = pd.MultiIndex.from_frame(sweep[groups].drop_duplicates().sort_values(groups))
    full = pd.MultiIndex.from_product([range(len(index)), alphas, samples], names=["_g", "alpha", "sample"])
    position = pd.Series(range(len(index)), index=index)
    keyed = sweep.assign(_g=position.reindex(pd.MultiIndex.from_frame(sweep[groups])).to_numpy())
    keyed = keyed.set_index(["_g", "alpha", "sample"])
    if keyed.index.has_duplicates:
        raise ValueError("sweep: more than one row per (mode, kind, layer, head, alpha, sample)")
    keyed = keyed.reindex(full)
    shape = (len(index), alphas.size, samples.size)
    x = np.log(alphas)
    out = index.to_frame(index=False)
    out["n_samples"] = samples.size
    out["n_alphas"] = alphas.size
    base_at = int(np.flatnonzero(alphas == 1.0)[0]) if np.any(alphas == 1.0) else alphas.size // 2
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, samples.size, size=(n_bootstrap, samples.size)) if samples.size >= 2 else None
    for m in metrics:
        cube = keyed[m].to_numpy(dtype=np.float64).reshape(shape)
        curve = np.nanmean(cube, axis=-1) if samples.size > 1 else cube[..., 0]
        slope, intercept, r2, stderr = _ols(x, curve)
        out[f"gain_{m}"] = slope
        out[f"intercept_{m}"] = intercept
        out[f"r_squared_{m}"] = r2
        out[f"std_error_{m}"] = stderr
        steps = np.diff(curve, axis=-1)
        out[f"monotonic_{m}"] = (steps <= 0).all(-1) if MONOTONIC_DIRECTION.get(m) == "decreasing" else (steps >= 0).all(-1)
        out[f"baseline_{m}"] = curve[:, base_at]
        if draws is not None and n_bootstrap > 0:
            # (heads, alphas, draws): the curve of every replicate, then its slope — all one matmul.
            replicate_curves = cube[:, :, draws].mean(-1)  # (G, A, n_bootstrap)
            weights = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
            slopes = np.einsum("gab,a->gb", replicate_curves, weights)
            lo, hi = np.nanquantile(slopes, [(1 - ci) / 2, (1 + ci) / 2], axis=-1)
            out[f"ci_low_{m}"], out[f"ci_high_{m}"] = lo, hi
        else:
            out[f"ci_low_{m}"] = out[f"ci_high_{m}"] = np.nan
    for m in ("entropy", "max_attn"):
        column = f"{m}_slope"
        if column in sweep.columns:
            cube = keyed[column].to_numpy(dtype=np.float64).reshape(shape)
            finite = np.isfinite(cube)
            total = np.where(finite, cube, 0.0).sum(axis=(1, 2))
            count = finite.sum(axis=(1, 2))
            # NaN where the sweep has no closed form (propagated mode, soft-capped models).
            out[f"closed_form_gain_{m}"] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def gain_categories(
    gains: pd.DataFrame, *, by: Literal["max_attn", "entropy"] = "max_attn", low: float = 0.10, high: float = 0.90
) -> pd.DataFrame:
    """Adds ``category`` (high if |gain| >= the ``high`` quantile, low if <= the ``low`` quantile,
    else medium; pandas linear quantiles, within each (mode, kind)) and the thresholds ``p_low``,
    ``p_high``.

    Example:
        >>> g = pd.DataFrame({"layer": 0, "head": range(20), "gain_max_attn": np.linspace(0.05, 1.0, 20)})
        >>> gain_categories(g)["category"].value_counts().sort_index().to_dict()
        {'high': 2, 'low': 2, 'medium': 16}
    """
    if by not in ("max_attn", "entropy"):
        raise ValueError(f"by: {by!r}; allowed are 'max_attn', 'entropy'")
    if not 0 <= low < high <= 1:
        raise ValueError(f"low/high: expected 0 <= low < high <= 1; got {low}, {high}")
    column = f"gain_{by}"
    if column not in gains.columns:
        raise KeyError(f"gains: missing column {column!r}; it has {list(gains.columns)}")
    out = gains.copy()
    keys = [c for c in ("mode", "kind") if c in out.columns]
    magnitude = out[column].abs()
    grouped = magnitude.groupby([out[k] for k in keys]) if keys else None
    out["p_low"] = grouped.transform(lambda s: s.quantile(low)) if keys else magnitude.quantile(low)
    out["p_high"] = grouped.transform(lambda s: s.quantile(high)) if keys else magnitude.quantile(high)
    out["category"] = np.where(magnitude >= out["p_high"], "high", np.where(magnitude <= out["p_low"], "low", "medium"))
    return out


def select_heads(gains: pd.DataFrame, *, by: Literal["max_attn", "entropy"] = "max_attn") -> pd.DataFrame:
    """exp2b's choice for exp3b: the heads of largest |gain|, of |gain| nearest the median, and of
    smallest |gain| (``role`` high / medium / low), from the measured map.

    Example:
        >>> g = pd.DataFrame({"layer": 0, "head": range(5), "gain_max_attn": [0.1, 0.5, 0.9, 0.3, 0.02]})
        >>> select_heads(g)[["role", "head"]].values.tolist()
        [['high', 2], ['medium', 3], ['low', 4]]
    """
    if by not in ("max_attn", "entropy"):
        raise ValueError(f"by: {by!r}; allowed are 'max_attn', 'entropy'")
    column = f"gain_{by}"
    if column not in gains.columns or gains.empty:
        raise KeyError(f"gains: needs a non-empty column {column!r}; it has {list(gains.columns)}")
    magnitude = gains[column].abs()
    picks = {"high": magnitude.idxmax(), "medium": (magnitude - magnitude.median()).abs().idxmin(), "low": magnitude.idxmin()}
    frame = pd.concat([gains.loc[[i]].assign(role=role) for role, i in picks.items()], ignore_index=True)
    front = ["role", "layer", "head", column]
    return frame[front + [c for c in frame.columns if c not in front]]


def gain_ratio_verdict(target_gain: float, control_gain: float) -> str:
    """exp2's decision rule on target/control gain: |ratio − 1| < 0.1 "no distinction", ≥ 2.0
    "strong evidence", ≥ 1.5 "higher sensitivity", otherwise "minor".

    Example:
        >>> gain_ratio_verdict(0.119282, 0.103962)  # the seed's L12H0 / L12H15: ratio 1.147
        'minor'
    """
    if control_gain == 0:
        return "strong evidence" if target_gain != 0 else "no distinction"
    ratio = target_gain / control_gain
    if abs(ratio - 1) < 0.1:
        return "no distinction"
    if ratio >= 2.0:
        return "strong evidence"
    if ratio >= 1.5:
        return "higher sensitivity"
    return "minor"
