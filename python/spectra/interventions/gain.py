"""Gain of a head (exp2, exp2b; see docs/interventions.md, 'Gain'): the OLS slope of a metric's curve on ln α.

Input is a sweep table (``spectra.interventions.scale_sweep``): one row per (mode, kind, layer,
head, alpha, sample). The *curve* of a head is, per α, the mean across samples of the per-sample
means (the seed's v2 aggregation); NaN metric values are skipped. Decisions:

- ``gain_<m>`` is the slope of the curve on ln α with an intercept, exactly as
  ``scipy.stats.linregress`` computes it (``fit_gain`` calls it; ``gain_table`` uses the same
  closed-form sums, vectorised over every head). ``r_squared`` is r²: the seed stored r under
  that name ("r2" = −0.8969 for a decreasing fit). A flat curve has r² and standard error
  NaN, as linregress gives.
- Monotonicity is non-strict along ascending α: entropy and k_eff non-increasing, max_attn
  non-decreasing. ``baseline_<m>`` is the curve at α = 1, else at the middle α of the grid.
- The seed fitted 5 points of one sample with no uncertainty. ``ci_low/ci_high`` are a
  percentile bootstrap over samples: whole samples are drawn with replacement, the across-sample
  mean curve is recomputed and refitted. The OLS slope is a linear functional of the curve and the
  curve is a mean over samples, so every replicate of every head is one matrix product of the
  per-sample slopes with the (replicates × samples) draw-count matrix, never a (heads × α ×
  replicates × samples) array. (Heads with missing cells take a slower masked route.)
- Because the target head's logits scale exactly as αs, entropy and max are functions of α:
  ``dH/d ln α = −α²·Var_p(s)`` (≤ 0: entropy never rises with α, for any head) and
  ``d p_max/d ln α = α·p_max·(s_max − E_p[s]) = p_max·(H + ln p_max)``. The sweep's
  ``entropy_slope``/``max_attn_slope`` columns hold these closed forms per α, and
  ``closed_form_gain_<m>`` is their curve averaged over the α grid: the average derivative, which
  the OLS slope approximates. It is a cross-check, not an identity (OLS weighs the grid's ends more
  and the curve is not linear in ln α). Gain is thus a functional of the baseline logit
  distribution, not evidence of "head-specific exploitation".
- Categories (exp2b) use |gain_max_attn| against pandas' linear p10/p90 quantiles. The seed's v2
  entry point used |gain_entropy| instead while v1 used |gain_max_attn| (different heads
  were selected depending on the entry point), so ``by`` makes the choice explicit. exp3b's
  hard-coded "medium" head L14H8 measured 0.134, i.e. *low*: ``select_heads`` picks the
  heads from the measured map instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "METRICS",
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
#: As α rises (see docs/interventions.md, 'Gain'): entropy and k_eff fall, max_attn rises.
MONOTONIC_DIRECTION: dict[str, str] = {"entropy": "decreasing", "max_attn": "increasing", "k_eff": "decreasing"}
GROUP_COLUMNS: tuple[str, ...] = ("mode", "kind", "layer", "head")
CLOSED_FORMS: tuple[str, ...] = ("entropy", "max_attn")
GAIN_BY: tuple[str, ...] = ("max_attn", "entropy")
Direction = Literal["decreasing", "increasing"]


class GainFit(NamedTuple):
    """OLS of a metric on ln α: slope (the gain), intercept, r², the slope's standard error, and
    whether the values are monotonic (non-strict) in the requested direction along ascending α."""

    slope: float
    intercept: float
    r_squared: float
    std_error: float
    monotonic: bool


# --------------------------------------------------------------------------------------------
# Validation and vectorised helpers
# --------------------------------------------------------------------------------------------


def _check_alphas(alphas: np.ndarray, name: str = "alphas") -> None:
    if not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"{name}: every scale must be a finite number > 0; got {alphas.tolist()}")
    if np.unique(alphas).size < 2:
        raise ValueError(f"{name}: a gain needs at least 2 distinct scales; got {alphas.tolist()}")


def _check_direction(direction: str) -> None:
    if direction not in ("decreasing", "increasing"):
        raise ValueError(f"direction: {direction!r}; allowed are 'decreasing', 'increasing'")


def _check_by(by: str) -> None:
    if by not in GAIN_BY:
        raise ValueError(f"by: {by!r}; allowed are 'max_attn', 'entropy'")


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slope, intercept, r², slope standard error of each row of ``y`` (..., n) on ``x`` (n,),
    NaN points of a row left out, with linregress's conventions (r NaN for a flat row, standard
    error 0 for two points). Rows with fewer than 2 points or one distinct x give NaN."""
    y = np.asarray(y, dtype=np.float64)
    mask = np.isfinite(y)
    n = mask.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_mean = np.where(mask, x, 0.0).sum(-1) / n
        y_mean = np.where(mask, y, 0.0).sum(-1) / n
        xc = np.where(mask, x - x_mean[..., None], 0.0)
        yc = np.where(mask, y - y_mean[..., None], 0.0)
        sxx, sxy, syy = (xc * xc).sum(-1), (xc * yc).sum(-1), (yc * yc).sum(-1)
        slope = sxy / sxx
        intercept = y_mean - slope * x_mean
        r = np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0)
        r = np.where(syy == 0, np.where(sxy == 0, np.nan, 0.0), r)
        stderr = np.where(n == 2, 0.0, np.sqrt((1 - r * r) * syy / sxx / (n - 2)))
    bad = (n < 2) | ~(sxx > 0)
    return tuple(np.where(bad, np.nan, v) for v in (slope, intercept, r * r, stderr))  # type: ignore[return-value]


def _monotonic(curve: np.ndarray, direction: str) -> np.ndarray:
    """Per row of ``curve`` (..., n), NaN skipped: non-increasing ("decreasing") or non-decreasing
    ("increasing"); False with fewer than 2 finite points. A sequence is non-increasing iff every
    value is <= the minimum of the values before it."""
    v = curve if direction == "decreasing" else -curve
    prior_min = np.fmin.accumulate(v, axis=-1)[..., :-1]  # NaN only where nothing finite came before
    with np.errstate(invalid="ignore"):
        ok = ~np.isfinite(v[..., 1:]) | np.isnan(prior_min) | (v[..., 1:] <= prior_min)
    return ok.all(-1) & (np.isfinite(v).sum(-1) >= 2)


def _sample_mean(cube: np.ndarray) -> np.ndarray:
    """Mean over the last axis skipping NaN, NaN where nothing is finite (no warning)."""
    finite = np.isfinite(cube)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, cube, 0.0).sum(-1) / finite.sum(-1)


# --------------------------------------------------------------------------------------------
# Point fits
# --------------------------------------------------------------------------------------------


def fit_gain(alphas: Sequence[float], values: Sequence[float], direction: Direction = "decreasing") -> GainFit:
    """OLS of ``values`` on ln(``alphas``) with ``scipy.stats.linregress`` (see docs/interventions.md, 'Gain').

    ``r_squared`` is r² (never r, which the seed code stored under that name); ``monotonic`` is checked non-strictly on the values
    sorted by α, in ``direction`` ("decreasing": non-increasing, "increasing": non-decreasing).
    Raises ValueError for alphas that are not finite and > 0, fewer than 2 distinct alphas,
    lengths that differ, or non-finite values.

    Example (a hand-computed case):
        >>> a = np.array([0.5, 0.75, 1.0, 1.25, 1.5])
        >>> fit = fit_gain(a, 2 - 0.8 * np.log(a))
        >>> round(fit.slope, 9), round(fit.intercept, 9), round(fit.r_squared, 9), fit.monotonic
        (-0.8, 2.0, 1.0, True)
        >>> fit_gain(a, 0.1 + 0.3 * np.log(a), "increasing").monotonic
        True
    """
    x = np.asarray(alphas, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"alphas: expected a 1-D sequence; got shape {x.shape}")
    if y.shape != x.shape:
        raise ValueError(f"values: expected one value per alpha; got {y.shape} values for {x.shape} alphas")
    _check_alphas(x)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"values: every value must be finite; got {y.tolist()}")
    _check_direction(direction)
    fit = stats.linregress(np.log(x), y)
    order = np.argsort(x, kind="stable")
    return GainFit(
        float(fit.slope),
        float(fit.intercept),
        float(fit.rvalue**2),
        float(fit.stderr),
        bool(_monotonic(y[order], direction)),
    )


def _group_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in GROUP_COLUMNS if c in frame.columns]


def _check_sweep(sweep: pd.DataFrame, metrics: Sequence[str], min_alphas: int) -> list[str]:
    if not isinstance(sweep, pd.DataFrame) or sweep.empty:
        raise ValueError("sweep: expected a non-empty sweep table (spectra.interventions.scale_sweep)")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics: expected at least one metric column")
    missing = [c for c in ("layer", "head", "alpha", "sample", *metrics) if c not in sweep.columns]
    if missing:
        raise KeyError(f"sweep: missing column(s) {missing}; it has {list(sweep.columns)}")
    alphas = np.unique(sweep["alpha"].to_numpy(dtype=np.float64))
    if min_alphas >= 2:
        _check_alphas(alphas, "sweep['alpha']")
    elif not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"sweep['alpha']: every scale must be a finite number > 0; got {alphas.tolist()}")
    return metrics


def curves(sweep: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Per (mode, kind, layer, head, alpha) — the group columns the sweep has — the mean across
    samples of each metric (NaN skipped), ``n_samples`` (distinct samples), and the mean of
    ``entropy_slope``/``max_attn_slope`` when the sweep has them. Sorted by the keys.

    Example:
        >>> sweep = pd.DataFrame({"layer": 0, "head": 0, "alpha": [0.5, 0.5, 1.0, 1.0], "sample": [0, 1, 0, 1],
        ...                       "entropy": [2.0, 4.0, 1.0, 3.0], "max_attn": 0.5, "k_eff": 2.0})
        >>> curves(sweep)[["alpha", "entropy", "n_samples"]].values.tolist()
        [[0.5, 3.0, 2.0], [1.0, 2.0, 2.0]]
    """
    metrics = _check_sweep(sweep, metrics, min_alphas=1)
    keys = [*_group_columns(sweep), "alpha"]
    if sweep.duplicated([*keys, "sample"]).any():
        raise ValueError(f"sweep: more than one row per ({', '.join(keys)}, sample)")
    columns = [*metrics, *[f"{m}_slope" for m in CLOSED_FORMS if f"{m}_slope" in sweep.columns]]
    grouped = sweep.groupby(keys, sort=True)
    out = grouped[list(dict.fromkeys(columns))].mean()
    out["n_samples"] = grouped["sample"].nunique().astype(np.int64)
    return out.reset_index()


# --------------------------------------------------------------------------------------------
# The gain table
# --------------------------------------------------------------------------------------------


class _Cube:
    """The sweep laid out as dense (heads, alphas, samples) arrays; absent cells are NaN."""

    def __init__(self, sweep: pd.DataFrame) -> None:
        self.groups = _group_columns(sweep)
        grouped = sweep.groupby(self.groups, sort=True)
        gid = grouped.ngroup().to_numpy(np.int64)
        if np.any(gid < 0):
            raise ValueError(f"sweep: missing values in the key column(s) {self.groups}")
        self.labels = grouped.size().index.to_frame(index=False)
        self.alphas, a_idx = np.unique(sweep["alpha"].to_numpy(dtype=np.float64), return_inverse=True)
        samples, s_idx = np.unique(sweep["sample"].to_numpy(), return_inverse=True)
        self.shape = (len(self.labels), self.alphas.size, samples.size)
        self.flat = (gid * self.shape[1] + a_idx) * self.shape[2] + s_idx
        counts = np.bincount(self.flat, minlength=int(np.prod(self.shape))).reshape(self.shape)
        if counts.max() > 1:
            raise ValueError(f"sweep: more than one row per ({', '.join(self.groups)}, alpha, sample)")
        self.present = counts > 0
        self.grid = self.present.any(-1)  # (heads, alphas): the α grid of each head
        self.n_samples = self.present.any(1).sum(-1)

    def values(self, sweep: pd.DataFrame, column: str) -> np.ndarray:
        cube = np.full(int(np.prod(self.shape)), np.nan)
        cube[self.flat] = sweep[column].to_numpy(dtype=np.float64)
        return cube.reshape(self.shape)


def _baseline_index(grid: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Per head, the α index of α = 1 if in its grid, else of the middle α of its sorted grid."""
    rank = np.cumsum(grid, axis=-1) - 1
    middle = np.argmax(grid & (rank == (grid.sum(-1) // 2)[:, None]), axis=-1)
    one = np.flatnonzero(alphas == 1.0)
    if one.size:
        return np.where(grid[:, one[0]], one[0], middle)
    return middle


def _draw_counts(rng: np.random.Generator, n_bootstrap: int, n_samples: int) -> np.ndarray:
    """(n_bootstrap, n_samples) matrix: how often each sample is drawn in each replicate."""
    draws = rng.integers(0, n_samples, size=(n_bootstrap, n_samples))
    rows = np.arange(n_bootstrap)[:, None] * n_samples
    return np.bincount((draws + rows).ravel(), minlength=n_bootstrap * n_samples).reshape(draws.shape).astype(float)


def _bootstrap_slopes(cube: np.ndarray, x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(heads, replicates) slopes of the resampled mean curves."""
    n_heads, n_alphas, n_samples = cube.shape
    finite = np.isfinite(cube)
    if finite.all():
        # Complete cube: slope(mean curve) = mean of the per-sample slopes, so one matmul.
        xc = x - x.mean()
        per_sample = np.einsum("gas,a->gs", cube, xc / (xc @ xc))
        return per_sample @ counts.T / n_samples
    # Missing cells: resampled curves (NaN where a cell got no draws), then a masked refit.
    total = np.where(finite, cube, 0.0).reshape(-1, n_samples) @ counts.T
    weight = finite.reshape(-1, n_samples).astype(float) @ counts.T
    with np.errstate(invalid="ignore", divide="ignore"):
        replicate = (total / weight).reshape(n_heads, n_alphas, -1)
    return _ols(x, replicate.transpose(0, 2, 1))[0]


def gain_table(
    sweep: pd.DataFrame,
    metrics: Sequence[str] = METRICS,
    *,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 42,
) -> pd.DataFrame:
    """One row per (mode, kind, layer, head) — the group columns the sweep has — with the gain
    fits of each metric's curve (exp2, exp2b; see docs/interventions.md, 'Gain').

    Columns: the group columns, ``n_samples`` (samples the head has), ``n_alphas`` (its α grid),
    then for each metric m: ``gain_<m>`` (OLS slope on ln α), ``intercept_<m>``, ``r_squared_<m>``
    (r², not r), ``std_error_<m>`` (the slope's), ``monotonic_<m>`` (entropy and k_eff
    non-increasing, max_attn non-decreasing, non-strict; other metrics non-decreasing),
    ``baseline_<m>`` (the curve at α = 1, else at the middle α), ``ci_low_<m>``/``ci_high_<m>``
    (percentile bootstrap CI of the slope at level ``ci``: ``n_bootstrap`` resamplings of whole
    samples, ``numpy.random.default_rng(seed)``; NaN with fewer than 2 samples or
    ``n_bootstrap=0``); and ``closed_form_gain_entropy``/``closed_form_gain_max_attn`` when the
    sweep has ``entropy_slope``/``max_attn_slope``: the mean over the α grid of their curves (a
    cross-check of the OLS slope, not an identity; NaN where the sweep has no closed form).

    A head may lack some α or samples: missing points are left out of its fit. One row per
    (group, alpha, sample) is required.

    Example (the hand-computed case on one sample; with one sample there is no CI):
        >>> a = [0.5, 0.75, 1.0, 1.25, 1.5]
        >>> sweep = pd.DataFrame({"layer": 0, "head": 0, "alpha": a, "sample": 0,
        ...                       "entropy": [2 - 0.8 * np.log(x) for x in a], "max_attn": a, "k_eff": 3.0})
        >>> row = gain_table(sweep).iloc[0]
        >>> [round(float(row[c]), 9) for c in ("gain_entropy", "r_squared_entropy", "baseline_entropy")]
        [-0.8, 1.0, 2.0]
        >>> float(row["ci_low_entropy"]), bool(row["monotonic_max_attn"]), float(row["r_squared_k_eff"])
        (nan, True, nan)
    """
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap: expected an int >= 0; got {n_bootstrap!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci: expected a level in (0, 1); got {ci!r}")
    metrics = _check_sweep(sweep, metrics, min_alphas=2)
    cube = _Cube(sweep)
    x = np.log(cube.alphas)
    out = cube.labels.copy()
    out["n_samples"] = cube.n_samples.astype(np.int64)
    out["n_alphas"] = cube.grid.sum(-1).astype(np.int64)
    base = _baseline_index(cube.grid, cube.alphas)
    heads = np.arange(len(out))
    counts = None
    if n_bootstrap > 0 and cube.shape[2] >= 2:
        counts = _draw_counts(np.random.default_rng(seed), int(n_bootstrap), cube.shape[2])
    for m in metrics:
        values = cube.values(sweep, m)
        curve = _sample_mean(values)
        slope, intercept, r2, stderr = _ols(x, curve)
        out[f"gain_{m}"], out[f"intercept_{m}"] = slope, intercept
        out[f"r_squared_{m}"], out[f"std_error_{m}"] = r2, stderr
        out[f"monotonic_{m}"] = _monotonic(curve, MONOTONIC_DIRECTION.get(m, "increasing"))
        out[f"baseline_{m}"] = curve[heads, base]
        low = high = np.full(len(out), np.nan)
        if counts is not None:
            slopes = _bootstrap_slopes(values, x, counts)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
                low, high = np.nanquantile(slopes, [(1 - ci) / 2, (1 + ci) / 2], axis=-1)
            enough = cube.n_samples >= 2
            low, high = np.where(enough, low, np.nan), np.where(enough, high, np.nan)
        out[f"ci_low_{m}"], out[f"ci_high_{m}"] = low, high
    for m in CLOSED_FORMS:
        if f"{m}_slope" in sweep.columns:
            out[f"closed_form_gain_{m}"] = _sample_mean(_sample_mean(cube.values(sweep, f"{m}_slope")))
    return out


# --------------------------------------------------------------------------------------------
# Categories, selection, verdict
# --------------------------------------------------------------------------------------------


def gain_categories(
    gains: pd.DataFrame, *, by: Literal["max_attn", "entropy"] = "max_attn", low: float = 0.10, high: float = 0.90
) -> pd.DataFrame:
    """A copy of ``gains`` with ``category`` ("high" if |gain_<by>| >= the ``high`` quantile,
    "low" if <= the ``low`` quantile, else "medium"; None where the gain is NaN) and the thresholds
    ``p_low``/``p_high`` (pandas linear quantiles of |gain_<by>|, NaN skipped), computed within each
    (mode, kind) group when those columns are present (exp2b: 103/818/103 on the seed's map).

    ``by`` is explicit because the seed's entry points disagreed (|gain_entropy| in v2,
    |gain_max_attn| in v1); an unqualified "gain" is gain_max_attn.

    Example:
        >>> g = pd.DataFrame({"layer": 0, "head": range(20), "gain_max_attn": np.linspace(0.05, 1.0, 20)})
        >>> gain_categories(g)["category"].value_counts().sort_index().to_dict()
        {'high': 2, 'low': 2, 'medium': 16}
    """
    _check_by(by)
    if not 0 <= low < high <= 1:
        raise ValueError(f"low/high: expected 0 <= low < high <= 1; got {low}, {high}")
    column = f"gain_{by}"
    if column not in gains.columns:
        raise KeyError(f"gains: missing column {column!r}; it has {list(gains.columns)}")
    out = gains.copy()
    magnitude = out[column].abs()
    keys = [out[k] for k in ("mode", "kind") if k in out.columns]
    if keys:
        grouped = magnitude.groupby(keys, sort=False)
        out["p_low"], out["p_high"] = grouped.transform("quantile", low), grouped.transform("quantile", high)
    else:
        out["p_low"], out["p_high"] = magnitude.quantile(low), magnitude.quantile(high)
    category = np.where(magnitude >= out["p_high"], "high", np.where(magnitude <= out["p_low"], "low", "medium"))
    out["category"] = pd.Series(category, index=out.index, dtype=object).where(magnitude.notna(), None)
    return out


def select_heads(gains: pd.DataFrame, *, by: Literal["max_attn", "entropy"] = "max_attn") -> pd.DataFrame:
    """exp2b's choice of heads for exp3b, from the measured map: ``role`` "high" (largest
    |gain_<by>|), "medium" (|gain| nearest the median |gain|) and "low" (smallest |gain|), first
    occurrence on ties, NaN gains ignored. Pass one (mode, kind) slice of a gain table.

    The seed hard-coded its heads instead, and its "medium" L14H8 (said to be ≈ 0.50) measured
    0.134, i.e. *low*; the heads actually nearest the median were L13H15 and L19H30.

    Example:
        >>> g = pd.DataFrame({"layer": 0, "head": range(5), "gain_max_attn": [0.1, 0.5, 0.9, 0.3, 0.02]})
        >>> select_heads(g)[["role", "head"]].values.tolist()
        [['high', 2], ['medium', 3], ['low', 4]]
    """
    _check_by(by)
    column = f"gain_{by}"
    if column not in gains.columns:
        raise KeyError(f"gains: missing column {column!r}; it has {list(gains.columns)}")
    magnitude = gains[column].abs()
    if magnitude.notna().sum() == 0:
        raise ValueError(f"gains: no finite {column!r} to select from")
    picks = {
        "high": magnitude.idxmax(),
        "medium": (magnitude - magnitude.median()).abs().idxmin(),
        "low": magnitude.idxmin(),
    }
    frame = pd.concat([gains.loc[[i]].assign(role=role) for role, i in picks.items()], ignore_index=True)
    front = ["role", "layer", "head", column]
    return frame[front + [c for c in frame.columns if c not in front]]


def gain_ratio_verdict(target_gain: float, control_gain: float) -> str:
    """exp2's decision rule on ratio = target_gain / control_gain: |ratio − 1| < 0.1 "no
    distinction"; ratio >= 2.0 "strong evidence"; >= 1.5 "higher sensitivity"; otherwise "minor".
    A zero control gain gives "strong evidence" (or "no distinction" if the target's is 0 too).

    Example (the seed's L12H0 / L12H15 gains: ratio 1.147):
        >>> gain_ratio_verdict(0.119282, 0.103962)
        'minor'
        >>> gain_ratio_verdict(1.05, 1.0), gain_ratio_verdict(1.5, 1.0), gain_ratio_verdict(2.0, 1.0)
        ('no distinction', 'higher sensitivity', 'strong evidence')
    """
    for name, value in (("target_gain", target_gain), ("control_gain", control_gain)):
        if not np.isfinite(value):
            raise ValueError(f"{name}: expected a finite gain; got {value!r}")
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
