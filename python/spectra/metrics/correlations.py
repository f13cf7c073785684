"""Token-level correlations between attention metrics (exp0; see docs/concepts.md, 'Token-level correlations'), vectorised over heads.

The input is a per-token frame as written by ``spectra.profile``: one row per (sample, layer,
head, token) with float metric columns, NaN where undefined. Every statistic here follows the
decisions:

- pairs with a NaN (or ±inf) in either variable are dropped pairwise, never ranked;
- Spearman ρ is Pearson r on tie-averaged ranks (``scipy.stats.rankdata(method="average")``);
- p-values are two-sided from Student's t with ``n − 2`` degrees of freedom (``n − 3`` for the
  partial correlation), never the normal approximation (as the seed code did, see docs/concepts.md, 'What the original code got wrong'; that gives p = 0.034 instead of
  0.124 at n = 5, r = √0.6);
- fewer than 4 complete pairs, or a constant variable, gives NaN for r and p;
- a head is *significant* when its Pearson r is finite, ``|r| ≥ 0.5`` and ``p < 0.01``.

Note that the p-values treat tokens as independent, which they are not (neighbouring tokens of a
sequence are autocorrelated); read them as a ranking device, not as calibrated error rates. The
position confound (entropy's ceiling ln(t+1) grows with t) is addressed by ``position_control``.

Group-wise statistics are computed without Python loops over groups or tokens: rows are sorted by
group once (not at all if already grouped), each group is centred on its own mean (two-pass, with
the usual correction term) and per-group sums are ``np.add.reduceat`` over the group boundaries.
Ranks and within-group shuffles use a (groups × tokens) matrix, one row per group. About 4 s for
the correlation table of 10M rows on 2 cores, and 0.25 s per permutation of the control.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "Correlation",
    "consistency",
    "layer_statistics",
    "pearson",
    "qnorm_entropy_correlations",
    "randomization_control",
    "spearman",
]

MIN_PAIRS = 4
SIGNIFICANCE_R = 0.5
SIGNIFICANCE_P = 0.01
# A variable whose centred sum of squares is below n·(TOL·|mean|)² is constant up to rounding.
_CONSTANT_TOL = 64 * np.finfo(np.float64).eps

Scope = Literal["pooled", "per_sample"]


class Correlation(NamedTuple):
    """A correlation coefficient, its two-sided p-value and the number of complete pairs."""

    r: float
    p: float
    n: int


# --------------------------------------------------------------------------------------------
# Scalar helpers
# --------------------------------------------------------------------------------------------


def _p_from_r(r: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided p of H0: ρ = 0 from ``t = r·√(df/(1−r²))`` on Student's t with ``df`` dof."""
    r = np.clip(np.asarray(r, dtype=np.float64), -1.0, 1.0)
    df = np.asarray(df, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(r) * np.sqrt(df / ((1.0 - r) * (1.0 + r)))
        p = 2.0 * stats.t.sf(t, np.where(df > 0, df, np.nan))
    return np.where(np.isfinite(r) & (df > 0), p, np.nan)


def _complete_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _pearson_complete(x: np.ndarray, y: np.ndarray) -> Correlation:
    n = int(x.size)
    if n < MIN_PAIRS:
        return Correlation(np.nan, np.nan, n)
    mx, my = x.mean(), y.mean()
    xc, yc = x - mx, y - my
    sxx = xc @ xc - xc.sum() ** 2 / n
    syy = yc @ yc - yc.sum() ** 2 / n
    sxy = xc @ yc - xc.sum() * yc.sum() / n
    if sxx <= n * (_CONSTANT_TOL * mx) ** 2 or syy <= n * (_CONSTANT_TOL * my) ** 2 or sxx <= 0 or syy <= 0:
        return Correlation(np.nan, np.nan, n)
    r = float(np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0))
    return Correlation(r, float(_p_from_r(r, n - 2)), n)


def pearson(x, y) -> Correlation:
    """Pearson r of two 1-D samples, NaN/inf pairs dropped pairwise, p from t with n−2 dof.

    Returns ``Correlation(r, p, n)`` where n counts the complete pairs; r and p are NaN when
    n < 4 or either variable is constant.

    Example (a hand-computed case; the seed code's normal approximation would give p = 0.034):
        >>> r, p, n = pearson([1, 2, 3, 4, 5, np.nan], [1, 3, 4, 3, 4, 7])
        >>> round(r**2, 12), round(p, 4), n
        (0.6, 0.124, 5)
        >>> pearson([1, 2, 3, 4], [5, 5, 5, 5])
        Correlation(r=nan, p=nan, n=4)
    """
    return _pearson_complete(*_complete_pairs(x, y))


def spearman(x, y) -> Correlation:
    """Spearman ρ: Pearson r of tie-averaged ranks of the complete pairs; p from t with n−2 dof.

    NaN/inf pairs are dropped before ranking (they are never ranked). Same NaN rules as
    :func:`pearson`.

    Example:
        >>> r, p, n = spearman([1, 2, 3, 4, 5], [1, 3, 4, 3, 4])
        >>> round(r, 6), round(p, 6), n
        (0.737865, 0.154619, 5)
    """
    x, y = _complete_pairs(x, y)
    if x.size < MIN_PAIRS:
        return Correlation(np.nan, np.nan, int(x.size))
    return _pearson_complete(stats.rankdata(x), stats.rankdata(y))


# --------------------------------------------------------------------------------------------
# Group machinery. Rows are laid out group after group ("segments"); every per-group sum is one
# np.add.reduceat over the segment starts, every per-group value is spread back with np.repeat.
# --------------------------------------------------------------------------------------------

# Within-group sorting and shuffling use a (groups × largest group) matrix padded at the end of
# each row while that costs at most this many times the number of values; otherwise one global sort.
_MAX_PADDING_FACTOR = 4


class _Segments:
    """Consecutive groups of sizes ``n`` (zeros allowed) laid end to end in a flat array."""

    def __init__(self, n: np.ndarray) -> None:
        self.n = np.asarray(n, dtype=np.int64)
        self.size = int(self.n.sum())
        self.nonempty = self.n > 0
        ends = np.cumsum(self.n)
        self.starts = (ends - self.n)[self.nonempty]

    def __len__(self) -> int:
        return self.n.size

    def sum(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros(self.n.size, dtype=np.float64)
        if self.starts.size:
            out[self.nonempty] = np.add.reduceat(values, self.starts)
        return out

    def mean(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sum(values) / self.n

    def spread(self, per_group: np.ndarray) -> np.ndarray:
        return np.repeat(per_group, self.n)

    def subset(self, keep: np.ndarray) -> _Segments:
        """The segments left after dropping the rows where ``keep`` is False."""
        kept = np.zeros(self.n.size, dtype=np.int64)
        if self.starts.size:
            kept[self.nonempty] = np.add.reduceat(keep.astype(np.int64), self.starts)
        return _Segments(kept)

    def padded_width(self) -> int | None:
        """Row width of the padded matrix layout, or None where padding would cost too much."""
        sizes = self.n[self.nonempty]
        if sizes.size == 0:
            return None
        width = int(sizes.max())
        return width if sizes.size * width <= _MAX_PADDING_FACTOR * self.size else None

    def to_padded(self, values: np.ndarray, width: int, fill) -> tuple[np.ndarray, np.ndarray | None]:
        """(nonempty groups × width) matrix of ``values``, each row padded with ``fill``, plus the
        mask of real entries (None when no row is padded)."""
        sizes = self.n[self.nonempty]
        if np.all(sizes == width):
            return values.reshape(-1, width), None
        valid = np.arange(width) < sizes[:, None]
        matrix = np.full(valid.shape, fill, dtype=values.dtype)
        matrix[valid] = values
        return matrix, valid


class _Groups:
    """A frame's rows in group order: the permutation (None if already in order), labels, sizes."""

    def __init__(self, frame: pd.DataFrame, keys: list[str]) -> None:
        missing = [k for k in keys if k not in frame.columns]
        if missing:
            raise KeyError(f"frame lacks the key column(s) {missing}")
        n_rows = len(frame)
        columns = [frame[k].to_numpy() for k in keys]
        code = np.zeros(n_rows, dtype=np.int64)
        span_product = 1
        for col in columns:
            c = col.astype(np.int64, copy=False)
            lo = int(c.min()) if n_rows else 0
            span = (int(c.max()) - lo + 1) if n_rows else 1
            span_product *= span
            if span_product >= 2**62:
                break
            code = code * span + (c - lo)
        if span_product >= 2**62:  # sparse huge ids: let pandas number the groups
            code = frame.groupby(keys, sort=True).ngroup().to_numpy(np.int64)
        if n_rows and bool(np.all(code[1:] >= code[:-1])):
            self.order = None  # already grouped (e.g. per-sample scope on profile's row order)
        else:
            self.order = np.argsort(code, kind="stable")
            code = code[self.order]
        new = np.ones(n_rows, dtype=bool)
        new[1:] = code[1:] != code[:-1]
        starts = np.flatnonzero(new)
        self.segments = _Segments(np.diff(np.append(starts, n_rows)))
        first_rows = starts if self.order is None else self.order[starts]
        self.labels = pd.DataFrame({k: col[first_rows] for k, col in zip(keys, columns)})

    def sorted_values(self, frame: pd.DataFrame, column: str) -> np.ndarray:
        if column not in frame.columns:
            raise KeyError(f"frame has no column {column!r}")
        values = frame[column].to_numpy(dtype=np.float64)
        return values if self.order is None else values[self.order]


def _degenerate(ss: np.ndarray, n: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """True where a centred sum of squares is zero up to rounding of values of size ``scale``."""
    return ~(ss > n * (_CONSTANT_TOL * scale) ** 2) | ~(ss > 0)


class _Pairs:
    """The complete (x, y) pairs of each group, centred on the group's own means."""

    def __init__(self, segments: _Segments, x: np.ndarray, y: np.ndarray) -> None:
        self.keep = np.isfinite(x) & np.isfinite(y)
        self.seg = segments.subset(self.keep)
        self.x, self.y = x[self.keep], y[self.keep]
        self.mean_x, self.mean_y = self.seg.mean(self.x), self.seg.mean(self.y)
        self.xc = self.x - self.seg.spread(self.mean_x)
        self.yc = self.y - self.seg.spread(self.mean_y)


def _corr_centred(seg: _Segments, xc, yc, scale_x, scale_y) -> np.ndarray:
    """Per-group Pearson r of group-centred values (corrected two-pass sums)."""
    n = seg.n
    with np.errstate(invalid="ignore", divide="ignore"):
        sx, sy = seg.sum(xc), seg.sum(yc)
        sxx = seg.sum(xc * xc) - sx * sx / n
        syy = seg.sum(yc * yc) - sy * sy / n
        sxy = seg.sum(xc * yc) - sx * sy / n
        r = np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0)
    bad = (n < MIN_PAIRS) | _degenerate(sxx, n, scale_x) | _degenerate(syy, n, scale_y)
    return np.where(bad, np.nan, r)


def _average_ranks_of_sorted(v: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Tie-averaged 1-based ranks of values sorted within each group, where ``column`` is each
    value's 0-based position inside its group (0 starts a group)."""
    ranks = column + 1.0
    tied = (v[1:] == v[:-1]) & (column[1:] != 0)  # element i+1 ties with element i
    if tied.any():
        k = np.flatnonzero(tied)
        begins_run = np.ones(k.size, dtype=bool)
        begins_run[1:] = k[1:] != k[:-1] + 1
        first = k[begins_run]
        last = k[np.append(begins_run[1:], True)] + 1
        length = last - first + 1
        offsets = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
        ranks[np.repeat(first, length) + offsets] = np.repeat((column[first] + column[last]) / 2.0 + 1.0, length)
    return ranks


def _group_ranks(seg: _Segments, values: np.ndarray) -> np.ndarray:
    """Tie-averaged ranks (1-based) of finite ``values`` within each segment."""
    if values.size == 0:
        return values.astype(np.float64)
    width = seg.padded_width()
    if width is not None:
        matrix, valid = seg.to_padded(values, width, np.inf)  # +inf pads sort after every value
        order = np.argsort(matrix, axis=1)
        v = np.take_along_axis(matrix, order, axis=1).ravel()
        column = np.tile(np.arange(width), matrix.shape[0])
        ranks = _average_ranks_of_sorted(v, column).reshape(matrix.shape)
        out = np.empty(matrix.shape, dtype=np.float64)
        np.put_along_axis(out, order, ranks, axis=1)
        return out.ravel() if valid is None else out[valid]
    # Global route: dense rank of every value, then one sort on (group, dense rank).
    by_value = np.argsort(values)
    step = np.zeros(values.size, dtype=np.int64)
    sorted_values = values[by_value]
    step[1:] = sorted_values[1:] != sorted_values[:-1]
    dense = np.empty(values.size, dtype=np.int64)
    dense[by_value] = np.cumsum(step)
    gid = seg.spread(np.arange(len(seg), dtype=np.int64))
    order = np.argsort(gid * (int(dense[by_value[-1]]) + 1) + dense)
    column = np.arange(values.size) - seg.spread(np.cumsum(seg.n) - seg.n)
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = _average_ranks_of_sorted(values[order], column)
    return ranks


def _pair_statistics(segments: _Segments, x, y, *, token=None) -> dict[str, np.ndarray]:
    """Pearson, Spearman and (if ``token`` is given) token-partial r/p per group."""
    c = _Pairs(segments, x, y)
    seg, n = c.seg, c.seg.n
    scale_x, scale_y = np.abs(c.mean_x), np.abs(c.mean_y)
    out: dict[str, np.ndarray] = {"n": n, "mean_x": c.mean_x, "mean_y": c.mean_y}
    r = _corr_centred(seg, c.xc, c.yc, scale_x, scale_y)
    out["r_pearson"], out["p_pearson"] = r, _p_from_r(r, n - 2)
    mid = seg.spread((n + 1) / 2.0)  # mean rank of a group, exactly
    rank_x, rank_y = _group_ranks(seg, c.x), _group_ranks(seg, c.y)
    rho = _corr_centred(seg, rank_x - mid, rank_y - mid, (n + 1) / 2.0, (n + 1) / 2.0)
    out["r_spearman"], out["p_spearman"] = rho, _p_from_r(rho, n - 2)
    if token is not None:
        t = token[c.keep]
        mean_t = seg.mean(t)
        tc = t - seg.spread(mean_t)
        with np.errstate(invalid="ignore", divide="ignore"):
            st = seg.sum(tc)
            stt = seg.sum(tc * tc) - st * st / n
            bx = (seg.sum(c.xc * tc) - st * seg.sum(c.xc) / n) / stt
            by = (seg.sum(c.yc * tc) - st * seg.sum(c.yc) / n) / stt
            rms_x, rms_y = np.sqrt(seg.sum(c.xc * c.xc) / n), np.sqrt(seg.sum(c.yc * c.yc) / n)
        no_position = _degenerate(stt, n, np.abs(mean_t))
        bx, by = np.where(no_position, np.nan, bx), np.where(no_position, np.nan, by)
        rx, ry = c.xc - seg.spread(bx) * tc, c.yc - seg.spread(by) * tc
        # Residuals count as constant when they are rounding noise next to the original values.
        rp = _corr_centred(seg, rx, ry, scale_x + rms_x, scale_y + rms_y)
        out["r_partial"], out["p_partial"] = rp, _p_from_r(rp, n - 3)
    return out


def _significant(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.isfinite(r) & np.isfinite(p) & (np.abs(r) >= SIGNIFICANCE_R) & (p < SIGNIFICANCE_P)


def _scope_keys(scope: str) -> list[str]:
    if scope == "pooled":
        return ["layer", "head"]
    if scope == "per_sample":
        return ["sample", "layer", "head"]
    raise ValueError(f"scope must be 'pooled' or 'per_sample', not {scope!r}")


# --------------------------------------------------------------------------------------------
# Public table functions
# --------------------------------------------------------------------------------------------


def qnorm_entropy_correlations(
    frame: pd.DataFrame,
    x: str = "q_norm",
    y: str = "entropy",
    *,
    scope: Scope = "pooled",
    position_control: bool = False,
) -> pd.DataFrame:
    """Per-head correlation of two metric columns across tokens (exp0).

    ``scope="pooled"`` gives one row per (layer, head), pooling the tokens of every sample (the v2
    pipeline); ``scope="per_sample"`` one row per (sample, layer, head) (the v1 notebook). Every
    group present in ``frame`` gets a row, with NaN statistics if it has fewer than 4 complete
    pairs.

    Columns: the key columns, then ``r_pearson, p_pearson, r_spearman, p_spearman, n, mean_x,
    mean_y, significant``; ``n`` counts complete (x, y) pairs and the means run over them;
    ``significant`` is ``|r_pearson| ≥ 0.5 and p_pearson < 0.01`` with finite r.

    With ``position_control=True`` two controls for the position confound are added:

    - ``r_partial, p_partial``: the partial correlation of x and y given the token position, i.e.
      the Pearson r of the residuals of x and y after a linear fit on ``token`` (with intercept)
      within each group; p from t with ``n − 3`` dof. NaN if the group has a single position, or
      if x or y is (up to rounding) a linear function of the position.
    - if the frame has an ``entropy_normalized`` column (and y is not that column):
      ``r_pearson_normalized, p_pearson_normalized, r_spearman_normalized, p_spearman_normalized,
      n_normalized``: the correlation of x with ``entropy_normalized`` (= H/ln(t+1)), on its own
      complete pairs.

    ``table.attrs`` records ``x``, ``y`` and ``scope``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> q = rng.normal(10.0, 2.0, 300)
        >>> frame = pd.DataFrame({"sample": 0, "layer": 0, "head": np.repeat([0, 1, 2], 100),
        ...                       "token": np.tile(np.arange(100), 3), "q_norm": q,
        ...                       "entropy": np.r_[0.5 * q[:100], -0.5 * q[100:200], rng.normal(size=100)]
        ...                                  + rng.normal(0, 0.3, 300)})
        >>> table = qnorm_entropy_correlations(frame)
        >>> table[["layer", "head", "n", "significant"]].values.tolist()
        [[0, 0, 100, True], [0, 1, 100, True], [0, 2, 100, False]]
        >>> bool(table.r_pearson[1] < -0.9)
        True
    """
    keys = _scope_keys(scope)
    groups = _Groups(frame, keys)
    xs, ys = groups.sorted_values(frame, x), groups.sorted_values(frame, y)
    token = groups.sorted_values(frame, "token") if position_control else None
    s = _pair_statistics(groups.segments, xs, ys, token=token)
    table = groups.labels.copy()
    for name in ("r_pearson", "p_pearson", "r_spearman", "p_spearman"):
        table[name] = s[name]
    table["n"] = s["n"].astype(np.int64)
    table["mean_x"], table["mean_y"] = s["mean_x"], s["mean_y"]
    table["significant"] = _significant(s["r_pearson"], s["p_pearson"])
    if position_control:
        table["r_partial"], table["p_partial"] = s["r_partial"], s["p_partial"]
        if "entropy_normalized" in frame.columns and y != "entropy_normalized":
            yn = groups.sorted_values(frame, "entropy_normalized")
            sn = _pair_statistics(groups.segments, xs, yn)
            for name in ("r_pearson", "p_pearson", "r_spearman", "p_spearman"):
                table[f"{name}_normalized"] = sn[name]
            table["n_normalized"] = sn["n"].astype(np.int64)
    table.attrs.update({"x": x, "y": y, "scope": scope})
    return table


def _shuffle_within(rng: np.random.Generator, seg: _Segments, values: np.ndarray) -> np.ndarray:
    """``values`` (finite) randomly permuted inside each segment; no value leaves its segment."""
    width = seg.padded_width()
    if width is not None:
        matrix, valid = seg.to_padded(values, width, np.nan)  # NaN marks the padding
        shuffled = rng.permuted(matrix, axis=1)
        return shuffled.ravel() if valid is None else shuffled[~np.isnan(shuffled)]
    gid = seg.spread(np.arange(len(seg), dtype=np.float64))
    return values[np.argsort(gid + rng.random(values.size))]


def randomization_control(
    frame: pd.DataFrame,
    x: str = "q_norm",
    y: str = "entropy",
    *,
    n_permutations: int = 100,
    seed: int = 42,
    scope: Scope = "pooled",
    threshold: float = 0.1,
) -> dict[str, float | int | bool]:
    """Shuffled-pairs control for :func:`qnorm_entropy_correlations` (see docs/concepts.md, 'Token-level correlations'; the seed's ``src/metrics.py``).

    For each permutation, the y values of each head (each group of ``scope``; complete pairs
    only, so NaNs never move) are shuffled among that head's rows and the Pearson r of every head
    is recomputed. The statistics run over all finite shuffled r of all heads and permutations:
    ``mean``, ``std`` (population), ``mean_abs``, ``max_abs``; plus ``n_permutations``,
    ``n_groups`` and ``passes = mean_abs < threshold`` (0.1 in the older pipeline). Deterministic
    for a given ``seed`` (``numpy.random.default_rng``).

    Example:
        >>> rng = np.random.default_rng(1)
        >>> q = rng.normal(size=400)
        >>> frame = pd.DataFrame({"sample": 0, "layer": 0, "head": np.repeat([0, 1], 200),
        ...                       "token": np.tile(np.arange(200), 2), "q_norm": q, "entropy": q})
        >>> control = randomization_control(frame, n_permutations=20)
        >>> control["passes"], control["n_groups"], control["max_abs"] < 0.3
        (True, 2, True)
    """
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1")
    groups = _Groups(frame, _scope_keys(scope))
    c = _Pairs(groups.segments, groups.sorted_values(frame, x), groups.sorted_values(frame, y))
    scale_x, scale_y = np.abs(c.mean_x), np.abs(c.mean_y)
    rng = np.random.default_rng(seed)
    shuffled = np.empty((n_permutations, len(c.seg)))
    for i in range(n_permutations):
        y_shuffled = _shuffle_within(rng, c.seg, c.yc)
        shuffled[i] = _corr_centred(c.seg, c.xc, y_shuffled, scale_x, scale_y)
    finite = shuffled[np.isfinite(shuffled)]
    if finite.size == 0:
        mean = std = mean_abs = max_abs = float("nan")
    else:
        mean, std = float(finite.mean()), float(finite.std())
        mean_abs, max_abs = float(np.abs(finite).mean()), float(np.abs(finite).max())
    return {
        "mean": mean,
        "std": std,
        "mean_abs": mean_abs,
        "max_abs": max_abs,
        "n_permutations": int(n_permutations),
        "n_groups": len(c.seg),
        "passes": bool(mean_abs < threshold),
    }


def consistency(per_sample_table: pd.DataFrame, min_fraction: float = 0.30) -> pd.DataFrame:
    """Per (layer, head): in how many samples the head is significant (the seed's v1 notebook; see docs/concepts.md, 'Token-level correlations').

    Takes a ``scope="per_sample"`` table of :func:`qnorm_entropy_correlations`. Columns:
    ``layer, head, num_samples`` (rows of that head, NaN r included), ``num_significant``,
    ``fraction = num_significant / num_samples``, ``consistent = fraction ≥ min_fraction``, and
    ``mean_r`` (mean Pearson r over the samples with finite r, to show the sign).

    Example:
        >>> table = pd.DataFrame({"sample": [0, 1, 2, 0, 1, 2], "layer": 0, "head": [0, 0, 0, 1, 1, 1],
        ...                       "r_pearson": [0.6, 0.7, 0.1, 0.2, 0.8, np.nan],
        ...                       "significant": [True, True, False, False, True, False]})
        >>> consistency(table, min_fraction=0.5)[["head", "num_significant", "consistent"]].values.tolist()
        [[0, 2, True], [1, 1, False]]
    """
    if "sample" not in per_sample_table.columns:
        raise ValueError("consistency needs a per-sample table (scope='per_sample')")
    grouped = per_sample_table.groupby(["layer", "head"], sort=True)
    out = grouped.agg(
        num_samples=("significant", "size"),
        num_significant=("significant", "sum"),
        mean_r=("r_pearson", "mean"),
    ).reset_index()
    out["num_samples"] = out["num_samples"].astype(np.int64)
    out["num_significant"] = out["num_significant"].astype(np.int64)
    out["fraction"] = out["num_significant"] / out["num_samples"]
    out["consistent"] = out["fraction"] >= min_fraction
    return out[["layer", "head", "num_samples", "num_significant", "fraction", "consistent", "mean_r"]]


def layer_statistics(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer: ``mean_abs_r`` and population ``std_abs_r`` (ddof=0) of |Pearson r| over the
    layer's rows with finite r, ``frac_p_lt_0_01`` (rows with p < 0.01 over all the layer's rows,
    p alone, as docs/concepts.md 'Token-level correlations' defines it), ``mean_r`` (signed), ``n_rows`` and ``n_finite``.

    Works on a pooled or a per-sample table of :func:`qnorm_entropy_correlations`.

    Example:
        >>> table = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1],
        ...                       "r_pearson": [0.2, -0.4, 0.6, np.nan], "p_pearson": [0.2, 0.001, 0.0, np.nan]})
        >>> layer_statistics(table)[["layer", "mean_abs_r", "std_abs_r", "frac_p_lt_0_01", "n_finite"]].round(6)
           layer  mean_abs_r  std_abs_r  frac_p_lt_0_01  n_finite
        0      0         0.3        0.1             0.5         2
        1      1         0.6        0.0             0.5         1
    """
    frame = pd.DataFrame(
        {
            "layer": table["layer"].to_numpy(),
            "abs_r": np.abs(table["r_pearson"].to_numpy(dtype=np.float64)),
            "r": table["r_pearson"].to_numpy(dtype=np.float64),
            "p_lt": table["p_pearson"].to_numpy(dtype=np.float64) < SIGNIFICANCE_P,
        }
    )
    grouped = frame.groupby("layer", sort=True)
    out = grouped.agg(
        mean_abs_r=("abs_r", "mean"),
        frac_p_lt_0_01=("p_lt", "mean"),
        mean_r=("r", "mean"),
        n_rows=("r", "size"),
        n_finite=("r", "count"),
    )
    out.insert(1, "std_abs_r", grouped["abs_r"].std(ddof=0))
    out["n_rows"] = out["n_rows"].astype(np.int64)
    out["n_finite"] = out["n_finite"].astype(np.int64)
    return out.reset_index()
