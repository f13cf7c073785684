"""The published attention-plasticity tool (viktor-shcherb/attention-plasticity @ 23e1d60), re-implemented.

This module re-implements, from the published method (see docs/plasticity.md), the per-head
analysis of the published tool: orientation from key bucket means, the per-dimension position
regression, the Householder rotation that puts the query drift on coordinate 1, the query
diagnostics, and the bucket-pair attention plasticity (AP) with its same-example key pairs.

It exists for two reasons only:

* it is the **oracle** for Spectra's native ``published`` plasticity mode in the tests (the cell
  values must agree to 1e-12 when both sides are given the same injected key pairs, which takes RNG
  streams out of the comparison);
* it is the **baseline** that ``benchmarks/plasticity.py`` times.

It is not used by Spectra's own analysis path. Because it is a baseline, it deliberately keeps the
original's cost structure: one Python iteration per drawn key pair with ``rng.integers``,
``np.searchsorted``, ``rng.choice(group, 2, replace=False)`` and a scalar ``scipy.stats.norm.cdf``,
a dense ``X @ H`` and one KS test per sampled dimension. Do not vectorise it: a faster baseline
would make the benchmark's speed-up meaningless. Everything is float64.

Data come in as arrays rather than Hugging Face datasets; the published tool's loading layer
(``datasets.load_dataset``, ``to_pandas``) is not reproduced.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import kstest, kurtosis, norm, skew

__all__ = [
    "NUM_PAIRS_PER_BUCKET",
    "analyze_head",
    "bucket_window_limits",
    "compute_attention_plasticity",
    "compute_first_component_residual_stats",
    "compute_noise_normality_stats",
    "compute_scalar_position_predictability",
    "fit_multioutput_linear_regressor",
    "make_pos_rotation",
    "orientation_from_keys",
    "subsample_index",
]

NUM_PAIRS_PER_BUCKET = 256

HEAD_COLUMNS = (
    "layer", "q_head", "k_head", "n_q_tokens", "n_k_tokens", "d_model",
    "q_R2_pos", "q_beta_norm", "q_R2_scalar", "q_mae_baseline", "q_mae_proj", "q_mae_ratio",
    "q_resid0_skew", "q_resid0_kurt", "q_resid0_ks_p",
    "q_noise_med_abs_skew", "q_noise_med_abs_kurt", "q_noise_med_ks_p", "q_noise_frac_ks_p_lt_alpha",
    "ap_overall",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Statistics (the published method's steps 4–8)
# --------------------------------------------------------------------------------------------


def fit_multioutput_linear_regressor(t, X):
    """Per-dimension OLS ``X[:, j] ≈ α_j + β_j t``; returns ``(alpha, beta, r2_components, r2_overall)``.

    ``R²_j = 1 − SS_res/max(SS_tot, 1e-12)``, clipped above at 1; ``r2_overall`` is their nanmean.
    A constant ``t`` gives ``β = 0``, ``α = mean`` and ``R² = 0``.
    """
    t = np.asarray(t, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    t_bar = t.mean()
    dt = t - t_bar
    s_tt = float(np.sum(dt * dt))
    if s_tt <= 0:
        # No spread in position: nothing to regress on.
        d = X.shape[1]
        return X.mean(axis=0), np.zeros(d), np.zeros(d), 0.0
    beta = np.sum(dt[:, None] * X, axis=0) / s_tt
    alpha = X.mean(axis=0) - beta * t_bar
    resid = X - (alpha[None, :] + t[:, None] * beta[None, :])
    ss_res = np.sum(resid * resid, axis=0)
    centred = X - X.mean(axis=0)
    ss_tot = np.sum(centred * centred, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - ss_res / np.maximum(ss_tot, 1e-12)
    r2 = np.minimum(r2, 1.0)
    return alpha, beta, r2, float(np.nanmean(r2))


def make_pos_rotation(beta, eps: float = 1e-12):
    """Householder ``H`` (d×d, symmetric, orthogonal) with ``H e₁ = β/‖β‖``; rotate rows as ``X @ H``.

    Returns the identity when ``‖β‖ < eps`` or ``β/‖β‖`` is already within ``eps`` of ``e₁``.
    """
    beta = np.asarray(beta, dtype=np.float64)
    d = beta.shape[0]
    eye = np.eye(d, dtype=np.float64)
    length = np.linalg.norm(beta)
    if length < eps:
        return eye
    e1 = np.zeros(d)
    e1[0] = 1.0
    v = beta / length - e1
    v_len = np.linalg.norm(v)
    if v_len < eps:
        return eye
    v = v / v_len
    return eye - 2.0 * np.outer(v, v)


def compute_first_component_residual_stats(p, X_rot):
    """Skew (bias-corrected), excess kurtosis and KS p-value vs N(0, 1) of the z-scored residual of
    ``X_rot[:, 0]`` regressed on ``p``; ``(0, 0, 1)`` when the residual has zero spread."""
    t = np.asarray(p, dtype=np.float64)
    y = np.asarray(X_rot, dtype=np.float64)[:, 0]
    dt = t - t.mean()
    s_tt = float(np.sum(dt * dt))
    if s_tt > 0:
        slope = np.sum(dt * y) / s_tt
        intercept = y.mean() - slope * t.mean()
        resid = y - (intercept + slope * t)
    else:
        # Constant positions: the fit is just the mean.
        resid = y - y.mean()
    sd = resid.std(ddof=1)
    if not sd > 0:
        return 0.0, 0.0, 1.0
    z = (resid - resid.mean()) / sd
    return (
        float(skew(z, bias=False)),
        float(kurtosis(z, fisher=True, bias=False)),
        float(kstest(z, "norm").pvalue),
    )


def compute_noise_normality_stats(X_rot, max_dims: int = 64, alpha: float = 0.01, seed: int = 0):
    """Normality of coordinates 2..d of ``X_rot``: ``(med |skew|, med |kurt|, med KS p, frac KS p < alpha)``.

    KS tests run on ``min(max_dims, d−1)`` coordinates drawn by ``default_rng(seed)`` without
    replacement. Returns ``(0, 0, 1, 0)`` when ``d−1 = 0`` or there are fewer than 3 rows.
    """
    Y = np.asarray(X_rot, dtype=np.float64)[:, 1:]
    n, d = Y.shape
    if d == 0 or n < 3:
        return 0.0, 0.0, 1.0, 0.0
    sd = Y.std(axis=0, ddof=1)
    sd[sd == 0] = 1.0  # a constant coordinate stays all-zero rather than becoming NaN
    Z = (Y - Y.mean(axis=0)) / sd
    med_abs_skew = float(np.median(np.abs(skew(Z, axis=0, bias=False))))
    med_abs_kurt = float(np.median(np.abs(kurtosis(Z, axis=0, fisher=True, bias=False))))
    dims = np.random.default_rng(seed).choice(d, size=min(max_dims, d), replace=False)
    # One KS test per sampled coordinate, as in the original.
    pvals = np.array([kstest(Z[:, j], "norm").pvalue for j in dims], dtype=np.float64)
    return med_abs_skew, med_abs_kurt, float(np.median(pvals)), float(np.mean(pvals < alpha))


def compute_scalar_position_predictability(p, X, beta):
    """OLS of ``y = log2(p+1)`` on ``s = X β/‖β‖``; returns ``(R²_scalar, MAE_baseline, MAE_proj)``.

    Without a usable projection (``β = 0`` or constant ``s``) it returns ``(0, MAE_baseline, MAE_baseline)``.
    """
    y = np.log2(np.asarray(p, dtype=np.float64) + 1.0)
    X = np.asarray(X, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    mae_baseline = float(np.mean(np.abs(y - y.mean())))
    length = np.linalg.norm(beta)
    if length <= 0:
        return 0.0, mae_baseline, mae_baseline
    s = X @ (beta / length)
    ds = s - s.mean()
    s_ss = float(np.sum(ds * ds))
    if s_ss <= 0:
        return 0.0, mae_baseline, mae_baseline
    slope = np.sum(ds * y) / s_ss
    y_hat = (y.mean() - slope * s.mean()) + slope * s
    mae_proj = float(np.mean(np.abs(y - y_hat)))
    ss_res = float(np.sum((y - y_hat) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 0.0 if ss_tot <= 0 else 1.0 - ss_res / ss_tot
    return float(r2), mae_baseline, mae_proj


# --------------------------------------------------------------------------------------------
# Orientation, subsampling, windows (the published method's steps 2–3 and its window units)
# --------------------------------------------------------------------------------------------


def orientation_from_keys(k_vectors, k_buckets):
    """Per-dimension sign ``s`` of the equal-weight mean of the per-bucket key means (0 → +1)."""
    K = np.asarray(k_vectors, dtype=np.float64)
    b = np.asarray(k_buckets)
    # Each bucket counts once, however many keys it holds.
    bucket_means = np.vstack([K[b == c].mean(axis=0) for c in np.unique(b)])
    s = np.sign(bucket_means.mean(axis=0))
    s[s == 0] = 1.0
    return s


def subsample_index(n: int, max_tokens: int | None, seed: int = 0):
    """Row selection of the published subsampling: ``default_rng(seed).choice(n, max_tokens, replace=False)``
    when ``n > max_tokens`` (rows keep the drawn, unsorted order), else ``None`` (keep all rows)."""
    if max_tokens is None or n <= max_tokens:
        return None
    return np.random.default_rng(seed).choice(n, size=max_tokens, replace=False)


def bucket_window_limits(q_sliding, q_buckets, bucket_size=None):
    """``{q_bucket: lookback}`` from the Q rows' ``sliding_window`` values, or ``None`` for no limit.

    The window W must be unique over the rows (else ``ValueError``); NaN/None or ``W <= 0`` means no
    limit. ``bucket_size=None`` is the published rule ``lookback = max(1, floor(W))`` (W read as a
    number of buckets ⚠); with ``bucket_size = B`` it is Spectra's corrected
    ``lookback = max(1, ceil(W / B))``.
    """
    values = np.asarray(q_sliding if q_sliding is not None else [], dtype=np.float64).ravel()
    if values.size == 0:
        return None
    unique = np.unique(values)  # NaNs collapse to one entry
    if unique.size > 1:
        raise ValueError(f"Mixed sliding_window values in the query rows: {unique.tolist()}")
    w = float(unique[0])
    if math.isnan(w) or w <= 0:
        return None
    if bucket_size is None:
        lookback = max(1, int(math.floor(w)))
    else:
        if bucket_size <= 0:
            raise ValueError(f"bucket_size must be positive, got {bucket_size}")
        lookback = max(1, int(math.ceil(w / bucket_size)))
    buckets = np.unique(np.asarray(q_buckets).astype(int))
    if buckets.size == 0:
        return None
    return {int(j): lookback for j in buckets}


# --------------------------------------------------------------------------------------------
# Attention plasticity (the published method's step 9)
# --------------------------------------------------------------------------------------------


def _same_example_groups(b_k_int, e_k):
    """``{key bucket: [index array per example with ≥ 2 keys]}``: groups in ascending example id,
    indices in ascending row order."""
    out = {}
    for c in np.unique(b_k_int):
        rows = np.flatnonzero(b_k_int == c)
        ex = e_k[rows]
        out[int(c)] = [rows[ex == e] for e in np.unique(ex) if np.count_nonzero(ex == e) >= 2]
    return out


def _pair_pp(mu, sigma2_safe, X_k_rot, i1, i2):
    """PP of one key pair, or ``None`` when ``v <= 0`` (the draw is skipped)."""
    w = X_k_rot[i1] - X_k_rot[i2]
    m = float(mu @ w)
    v = float((sigma2_safe * (w * w)).sum())
    if v <= 0:
        return None
    p = norm.cdf(m / np.sqrt(v))  # scalar call, as in the original
    return 4.0 * p * (1.0 - p)


def compute_attention_plasticity(
    p_q,
    b_q,
    alpha_rot,
    beta_rot,
    resid_var,
    b_k,
    e_k,
    X_k_rot,
    num_pairs_per_bucket: int = NUM_PAIRS_PER_BUCKET,
    seed: int = 0,
    bucket_window_limits=None,
    pairs=None,
):
    """Bucket-pair AP of one head: returns ``(ap_overall, cells)`` with ``cells = {(j, c): mean PP}``.

    Cells are every query bucket ``j ≥ 1`` crossed with every key bucket ``c < j`` present among
    the keys (and ``c ≥ j − lookback`` when ``bucket_window_limits`` has ``j``). Pairs are ordered
    same-example pairs within bucket c, drawn with replacement across draws from
    ``default_rng(seed)``; ``m = (α + β τ_j)·w``, ``v = Σ σ²_safe w²``, ``PP = 4Φ(z)(1−Φ(z))``.
    A cell without same-example groups, or whose draws were all skipped (``v <= 0``), is NaN;
    ``ap_overall`` is the unweighted mean of the non-NaN cells.

    ``pairs = {(j, c): [(i1, i2), ...]}`` injects K-row index pairs (used as given, with the same
    ``v <= 0`` skip, no RNG consumed); with ``pairs`` set, cells not in it are NaN. A key of
    ``pairs`` that is not an evaluated cell raises ``ValueError``.

    Example (the published tool's expected-value cell: τ = 1, μ = 1, keys ±1, σ² = 1, so z = ±1):
        >>> import numpy as np
        >>> ap, cells = compute_attention_plasticity(
        ...     p_q=np.array([0.0, 1.0, 1.0]), b_q=np.array([0, 1, 1]),
        ...     alpha_rot=np.array([0.0]), beta_rot=np.array([1.0]), resid_var=np.array([1.0]),
        ...     b_k=np.array([0, 0]), e_k=np.array([0, 0]), X_k_rot=np.array([[1.0], [-1.0]]),
        ...     num_pairs_per_bucket=1, seed=0)
        >>> list(cells), round(cells[(1, 0)], 6), ap == cells[(1, 0)]
        ([(1, 0)], 0.533935, True)
    """
    p_q = np.asarray(p_q, dtype=np.float64)
    b_q_int = np.asarray(b_q).astype(int)
    b_k_int = np.asarray(b_k).astype(int)
    e_k = np.asarray(e_k)
    X_k_rot = np.asarray(X_k_rot, dtype=np.float64)
    alpha_rot = np.asarray(alpha_rot, dtype=np.float64)
    beta_rot = np.asarray(beta_rot, dtype=np.float64)
    sigma2 = np.asarray(resid_var, dtype=np.float64)
    if p_q.shape[0] != b_q_int.shape[0]:
        raise ValueError(f"p_q and b_q differ in length: {p_q.shape[0]} vs {b_q_int.shape[0]}")
    if not (b_k_int.shape[0] == e_k.shape[0] == X_k_rot.shape[0]):
        raise ValueError(
            f"b_k, e_k and X_k_rot differ in length: {b_k_int.shape[0]}, {e_k.shape[0]}, {X_k_rot.shape[0]}"
        )
    # A zero/negative residual variance would make v vanish for pairs differing only there.
    sigma2_safe = np.where(sigma2 <= 0, 1e-12, sigma2)

    rng = np.random.default_rng(seed)
    groups_by_bucket = _same_example_groups(b_k_int, e_k)
    key_buckets = sorted(groups_by_bucket)
    injected = None if pairs is None else {(int(j), int(c)): list(v) for (j, c), v in pairs.items()}

    cells = {}
    for j in np.unique(b_q_int):
        j = int(j)
        if j <= 0:
            continue  # the first bucket has no earlier keys
        tau = float(p_q[b_q_int == j].mean())
        mu = alpha_rot + beta_rot * tau
        lo = None
        if bucket_window_limits and j in bucket_window_limits:
            lo = j - max(int(bucket_window_limits[j]), 1)
        for c in key_buckets:
            if c >= j or (lo is not None and c < lo):
                continue
            pp_vals = []
            if injected is not None:
                for i1, i2 in injected.get((j, c), ()):
                    pp = _pair_pp(mu, sigma2_safe, X_k_rot, int(i1), int(i2))
                    if pp is not None:
                        pp_vals.append(pp)
            else:
                groups = groups_by_bucket[c]
                if not groups:
                    cells[(j, c)] = float("nan")
                    continue
                sizes = np.array([len(g) for g in groups], dtype=np.int64)
                n_pairs = sizes * (sizes - 1) // 2
                cum = np.cumsum(n_pairs)
                total = int(cum[-1])
                # One Python iteration per draw: the cost profile the benchmark measures.
                for _ in range(min(num_pairs_per_bucket, total)):
                    r = rng.integers(total)
                    g = int(np.searchsorted(cum, r, side="right"))  # P(group) ∝ C(n_g, 2)
                    i1, i2 = rng.choice(groups[g], 2, replace=False)
                    pp = _pair_pp(mu, sigma2_safe, X_k_rot, i1, i2)
                    if pp is not None:
                        pp_vals.append(pp)
            cells[(j, c)] = float(np.mean(pp_vals)) if pp_vals else float("nan")

    if injected is not None:
        unknown = sorted(set(injected) - set(cells))
        if unknown:
            raise ValueError(f"pairs names cells that are not evaluated: {unknown}")
    finite = [v for v in cells.values() if not math.isnan(v)]
    ap_overall = float(np.mean(finite)) if finite else float("nan")
    return ap_overall, cells


# --------------------------------------------------------------------------------------------
# One head end to end (the published method's steps 2–11)
# --------------------------------------------------------------------------------------------


def analyze_head(
    q_vectors,
    q_positions,
    q_buckets,
    q_sliding,
    k_vectors,
    k_positions,
    k_buckets,
    k_examples,
    *,
    layer: int,
    q_head: int,
    k_head: int,
    max_tokens_per_head: int = 50000,
    normality_max_dims: int = 64,
    p_alpha: float = 0.01,
    seed: int = 0,
    num_pairs_per_bucket: int = NUM_PAIRS_PER_BUCKET,
    pairs=None,
    bucket_size=None,
):
    """The published per-head analysis on arrays; returns ``(row, cell_rows, component_rows)``.

    ``row`` has the ``head_metrics.csv`` columns, ``cell_rows`` one dict per
    evaluated (q_bucket, k_bucket) cell (NaN included), ``component_rows`` one dict per native
    dimension with ``component_r2`` = R²_j of the oriented original basis and ``component_weight`` =
    ``max(R²_j, 0) / Σ max(R², 0)`` (``1/d`` each when that sum is ≤ 0). ``q_sliding=None`` means no
    window; ``bucket_size`` switches the window to the corrected units (see ``bucket_window_limits``);
    ``pairs`` is passed to ``compute_attention_plasticity``, indexing the (subsampled) K rows.
    """
    Xq_all = np.asarray(q_vectors, dtype=np.float64)
    Xk_all = np.asarray(k_vectors, dtype=np.float64)
    if Xq_all.ndim != 2 or Xk_all.ndim != 2:
        raise ValueError("q_vectors and k_vectors must be 2-D (rows, d)")
    if Xq_all.shape[1] != Xk_all.shape[1]:
        raise ValueError(
            f"q/k dimension mismatch at layer {layer}, q_head {q_head}, k_head {k_head}: "
            f"d_q={Xq_all.shape[1]}, d_k={Xk_all.shape[1]}"
        )
    n_q_all, n_k_all = Xq_all.shape[0], Xk_all.shape[0]
    tq_all = np.asarray(q_positions, dtype=np.float64)
    bq_all = np.asarray(q_buckets, dtype=np.float64)
    sq_all = np.zeros(n_q_all) if q_sliding is None else np.asarray(q_sliding, dtype=np.float64)
    tk_all = np.asarray(k_positions, dtype=np.float64)
    bk_all = np.asarray(k_buckets, dtype=np.float64)
    ek_all = np.asarray(k_examples)
    if not (tq_all.shape[0] == bq_all.shape[0] == sq_all.shape[0] == n_q_all):
        raise ValueError("q_positions, q_buckets and q_sliding must have one entry per Q row")
    if not (tk_all.shape[0] == bk_all.shape[0] == ek_all.shape[0] == n_k_all):
        raise ValueError("k_positions, k_buckets and k_examples must have one entry per K row")

    # Orientation comes from every K row, before subsampling.
    s = orientation_from_keys(Xk_all, bk_all)

    # Q and K are subsampled independently, each with a fresh RNG on the same seed.
    idx_q = subsample_index(n_q_all, max_tokens_per_head, seed)
    idx_k = subsample_index(n_k_all, max_tokens_per_head, seed)
    if idx_q is None:
        p_q, b_q, X_q, sliding = tq_all, bq_all, Xq_all * s[None, :], sq_all
    else:
        p_q, b_q, X_q, sliding = tq_all[idx_q], bq_all[idx_q], Xq_all[idx_q] * s[None, :], sq_all[idx_q]
    if idx_k is None:
        b_k, e_k, X_k = bk_all, ek_all, Xk_all * s[None, :]
    else:
        b_k, e_k, X_k = bk_all[idx_k], ek_all[idx_k], Xk_all[idx_k] * s[None, :]

    limits = bucket_window_limits(sliding, b_q.astype(int), bucket_size=bucket_size)

    n_q, d = X_q.shape
    n_k = X_k.shape[0]

    # Positional regression in the oriented original basis.
    _, beta_q, r2_components, r2_pos = fit_multioutput_linear_regressor(p_q, X_q)
    beta_norm = float(np.linalg.norm(beta_q))
    r2_scalar, mae_baseline, mae_proj = compute_scalar_position_predictability(p_q, X_q, beta_q)
    mae_ratio = mae_proj / mae_baseline if mae_baseline > 0 else 1.0

    # Rotate so that the drift sits on coordinate 1 (dense product, as in the original).
    H = make_pos_rotation(beta_q)
    X_q_rot = X_q @ H
    X_k_rot = X_k @ H

    alpha_rot, beta_rot, _, _ = fit_multioutput_linear_regressor(p_q, X_q_rot)
    R = X_q_rot - (alpha_rot[None, :] + p_q[:, None] * beta_rot[None, :])
    resid_var = np.ones(d) if n_q < 2 else R.var(axis=0, ddof=1)

    resid0 = compute_first_component_residual_stats(p_q, X_q_rot)
    noise = compute_noise_normality_stats(X_q_rot, max_dims=normality_max_dims, alpha=p_alpha, seed=seed)

    ap_overall, cells = compute_attention_plasticity(
        p_q=p_q,
        b_q=b_q,
        alpha_rot=alpha_rot,
        beta_rot=beta_rot,
        resid_var=resid_var,
        b_k=b_k,
        e_k=e_k,
        X_k_rot=X_k_rot,
        num_pairs_per_bucket=num_pairs_per_bucket,
        seed=seed + 10007 * layer + 379 * q_head,
        bucket_window_limits=limits,
        pairs=pairs,
    )

    values = (
        layer, q_head, k_head, n_q, n_k, d,
        r2_pos, beta_norm, r2_scalar, mae_baseline, mae_proj, mae_ratio,
        *resid0, *noise, ap_overall,
    )  # fmt: skip
    row = dict(zip(HEAD_COLUMNS, values, strict=True))

    head = {"layer": layer, "q_head": q_head, "k_head": k_head}
    cell_rows = [{**head, "q_bucket": j, "k_bucket": c, "ap_bucket": v} for (j, c), v in sorted(cells.items())]

    r2_plus = np.clip(r2_components, 0.0, None)
    total = float(r2_plus.sum())
    weights = r2_plus / total if total > 0 else np.full(d, 1.0 / d)
    component_rows = [
        {**head, "component": j, "component_r2": float(r2_components[j]), "component_weight": float(weights[j])}
        for j in range(d)
    ]
    return row, cell_rows, component_rows
