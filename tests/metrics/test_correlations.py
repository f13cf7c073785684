"""spectra.metrics.correlations against scipy and explicit per-group recomputation (docs/concepts.md, 'Token-level correlations')."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from spectra.metrics import correlations
from spectra.metrics.correlations import (
    consistency,
    layer_statistics,
    pearson,
    qnorm_entropy_correlations,
    randomization_control,
    spearman,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _finite_pairs(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _t_p(r, df):
    t = abs(r) * np.sqrt(df / (1 - r * r))
    return 2 * stats.t.sf(t, df)


def _profile_frame(sizes, *, seed=0, tie_decimals=None, nan_fraction=0.1, slope=0.5, shuffle_rows=True):
    """A profile-like frame: one block of tokens per (sample, layer, head) with the given sizes."""
    rng = np.random.default_rng(seed)
    blocks = []
    for (sample, layer, head), size in sizes.items():
        token = np.arange(size, dtype=np.int32)
        q = rng.normal(10.0, 2.0, size)
        h = slope * q + 0.01 * token + rng.normal(0.0, 1.0, size)
        if tie_decimals is not None:
            q, h = np.round(q, tie_decimals), np.round(h, tie_decimals)
        h[:2] = np.nan  # ignore_first = 2
        h[rng.random(size) < nan_fraction] = np.nan
        blocks.append(
            pd.DataFrame(
                {
                    "sample": np.int64(sample),
                    "layer": np.int16(layer),
                    "head": np.int16(head),
                    "token": token,
                    "q_norm": q.astype(np.float32),
                    "entropy": h.astype(np.float32),
                    "entropy_normalized": (h / np.log(np.maximum(token, 1) + 1.0)).astype(np.float32),
                }
            )
        )
    frame = pd.concat(blocks, ignore_index=True)
    if shuffle_rows:
        frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return frame


def _select(frame, row, keys):
    mask = np.ones(len(frame), dtype=bool)
    for key in keys:
        mask &= frame[key].to_numpy() == row[key]
    return frame[mask]


UNEQUAL_SIZES = {
    (s, layer, h): size
    for (s, layer, h), size in zip(
        [(s, layer, h) for s in range(3) for layer in range(2) for h in range(3)],
        [40, 3, 25, 60, 5, 30, 12, 44, 7, 50, 9, 33, 20, 2, 41, 6, 28, 37],
    )
}


@pytest.fixture(params=["padded", "global_sort"])
def route(request, monkeypatch):
    """Runs a test through both within-group sort/shuffle routes."""
    if request.param == "global_sort":
        monkeypatch.setattr(correlations, "_MAX_PADDING_FACTOR", 0)
    return request.param


# --------------------------------------------------------------------------------------------
# scalar helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tie_decimals", [None, 0, 1])
def test_helpers_match_scipy_with_nans_and_ties(seed, tie_decimals):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 200))
    x = rng.normal(size=n)
    y = 0.4 * x + rng.normal(size=n)
    if tie_decimals is not None:
        x, y = np.round(x, tie_decimals), np.round(y, tie_decimals)
    x[rng.random(n) < 0.15] = np.nan
    y[rng.random(n) < 0.15] = np.nan
    xf, yf = _finite_pairs(x, y)
    ref_p, ref_s = stats.pearsonr(xf, yf), stats.spearmanr(xf, yf)
    got_p, got_s = pearson(x, y), spearman(x, y)
    assert got_p.n == got_s.n == xf.size
    np.testing.assert_allclose([got_p.r, got_p.p], [ref_p.statistic, ref_p.pvalue], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose([got_s.r, got_s.p], [ref_s.statistic, ref_s.pvalue], rtol=1e-10, atol=1e-14)


def test_g9_p_value_uses_t_distribution_not_normal_approximation():
    # r = √0.6 at n = 5: t = 3/√2 on 3 dof. Normal approximation (Oculi, as the seed code did): p = 0.0339.
    r, p, n = pearson([1, 2, 3, 4, 5], [1, 3, 4, 3, 4])
    assert n == 5
    assert r == pytest.approx(np.sqrt(0.6), abs=1e-12)
    assert p == pytest.approx(0.1240270626575546, abs=1e-9)
    normal_p = 2 * stats.norm.sf(r * np.sqrt(3 / (1 - r * r)))
    assert normal_p == pytest.approx(0.0339, abs=1e-4)
    assert abs(p - normal_p) > 0.08


def test_spearman_averages_tied_ranks():
    x = [1.0, 2.0, 2.0, 3.0, 4.0]
    y = [10.0, 30.0, 20.0, 20.0, 50.0]
    # Hand ranks: x -> [1, 2.5, 2.5, 4, 5], y -> [1, 4, 2.5, 2.5, 5].
    expected = np.corrcoef([1, 2.5, 2.5, 4, 5], [1, 4, 2.5, 2.5, 5])[0, 1]
    assert spearman(x, y).r == pytest.approx(expected, abs=1e-12)
    # Ordinal ranks (ties broken by position), the seed code's behaviour, give another value.
    ordinal = np.corrcoef([1, 2, 3, 4, 5], [1, 4, 2, 3, 5])[0, 1]
    assert abs(spearman(x, y).r - ordinal) > 1e-3


def test_nans_are_dropped_pairwise_never_ranked():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0])
    y = np.array([2.0, 1.0, 100.0, 3.0, np.nan, 6.0, 5.0])
    keep = [0, 1, 3, 5, 6]
    assert spearman(x, y) == spearman(x[keep], y[keep])
    assert pearson(x, y) == pearson(x[keep], y[keep])
    assert spearman(x, y).n == 5
    # Ranking NaN as a value (as if it were +inf) changes the answer.
    as_values = stats.spearmanr(np.nan_to_num(x, nan=np.inf), np.nan_to_num(y, nan=np.inf)).statistic
    assert abs(spearman(x, y).r - as_values) > 1e-3


@pytest.mark.parametrize("func", [pearson, spearman])
def test_fewer_than_four_pairs_give_nan(func):
    r, p, n = func([1.0, 2.0, 3.0, np.nan], [1.0, 3.0, 2.0, 4.0])
    assert n == 3 and np.isnan(r) and np.isnan(p)
    r, p, n = func([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert n == 4 and np.isfinite(r) and np.isfinite(p)


@pytest.mark.parametrize("func", [pearson, spearman])
@pytest.mark.parametrize("constant", [0.0, 0.1, 1e8 + 0.1, -3.7])
def test_constant_input_gives_nan(func, constant):
    varying = [1.0, 2.0, 4.0, 3.0, 5.0, 7.0, 6.0, 9.0, 8.0, 10.0]
    flat = [constant] * len(varying)
    for a, b in ((varying, flat), (flat, varying)):
        r, p, n = func(a, b)
        assert n == 10 and np.isnan(r) and np.isnan(p)


def test_perfect_and_mismatched_inputs():
    r, p, _ = pearson([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert r == pytest.approx(1.0) and p == pytest.approx(0.0, abs=1e-12)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]).r == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in length"):
        pearson([1, 2, 3], [1, 2])


# --------------------------------------------------------------------------------------------
# grouped correlations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["pooled", "per_sample"])
@pytest.mark.parametrize("tie_decimals", [None, 0])
def test_grouped_correlations_match_scipy_per_group(scope, tie_decimals, route):
    frame = _profile_frame(UNEQUAL_SIZES, seed=3, tie_decimals=tie_decimals)
    table = qnorm_entropy_correlations(frame, scope=scope)
    keys = ["layer", "head"] if scope == "pooled" else ["sample", "layer", "head"]
    expected_groups = frame[keys].drop_duplicates().sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(table[keys], expected_groups)
    assert list(table.columns) == keys + [
        "r_pearson", "p_pearson", "r_spearman", "p_spearman", "n", "mean_x", "mean_y", "significant",
    ]  # fmt: skip
    assert table["n"].dtype == np.int64 and table["significant"].dtype == bool
    assert table["layer"].dtype == np.int16 and table["head"].dtype == np.int16
    n_checked = 0
    for _, row in table.iterrows():
        sub = _select(frame, row, keys)
        x, y = _finite_pairs(sub["q_norm"], sub["entropy"])
        assert row["n"] == x.size
        if x.size < 4:
            assert np.isnan(row[["r_pearson", "p_pearson", "r_spearman", "p_spearman"]].astype(float)).all()
            continue
        n_checked += 1
        ref_p, ref_s = stats.pearsonr(x, y), stats.spearmanr(x, y)
        np.testing.assert_allclose(
            row[["r_pearson", "p_pearson", "r_spearman", "p_spearman", "mean_x", "mean_y"]].astype(float),
            [ref_p.statistic, ref_p.pvalue, ref_s.statistic, ref_s.pvalue, x.mean(), y.mean()],
            rtol=1e-9,
            atol=1e-12,
        )
        assert row["significant"] == (abs(ref_p.statistic) >= 0.5 and ref_p.pvalue < 0.01)
    assert n_checked >= 5


def test_pooled_differs_from_per_sample_and_one_sample_agrees():
    sizes = {(s, 0, 0): 80 for s in range(4)}
    frame = _profile_frame(sizes, seed=5)
    # Shift each sample's q so pooling changes the answer.
    frame["q_norm"] += (frame["sample"] * 5.0).astype(np.float32)
    pooled = qnorm_entropy_correlations(frame, scope="pooled")
    per_sample = qnorm_entropy_correlations(frame, scope="per_sample")
    assert len(pooled) == 1 and len(per_sample) == 4
    assert pooled["n"].iloc[0] == per_sample["n"].sum()
    x, y = _finite_pairs(frame["q_norm"], frame["entropy"])
    assert pooled["r_pearson"].iloc[0] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert abs(pooled["r_pearson"].iloc[0] - per_sample["r_pearson"].mean()) > 0.05
    one = frame[frame["sample"] == 2]
    a = qnorm_entropy_correlations(one, scope="pooled")
    b = qnorm_entropy_correlations(one, scope="per_sample").drop(columns="sample")
    pd.testing.assert_frame_equal(a, b, check_like=False)


def test_row_order_does_not_matter():
    frame = _profile_frame(UNEQUAL_SIZES, seed=11, shuffle_rows=False)
    shuffled = frame.sample(frac=1.0, random_state=1)
    a = qnorm_entropy_correlations(frame, scope="per_sample", position_control=True)
    b = qnorm_entropy_correlations(shuffled, scope="per_sample", position_control=True)
    pd.testing.assert_frame_equal(a, b, rtol=1e-12, atol=1e-14)


def test_significance_rule():
    rng = np.random.default_rng(7)
    blocks = []

    def block(head, x, y):
        blocks.append(
            pd.DataFrame({"sample": 0, "layer": 0, "head": head, "token": np.arange(x.size), "q_norm": x, "entropy": y})
        )

    x = rng.normal(size=300)
    block(0, x, x + 0.3 * rng.normal(size=300))  # strong, many tokens: significant
    x = rng.normal(size=5000)
    block(1, x, 0.3 * x + rng.normal(size=5000))  # weak (|r| < 0.5) though p is tiny: not significant
    block(2, np.array([1.0, 2, 3, 4, 5]), np.array([1.0, 3, 4, 3, 4]))  # r = 0.77 but p = 0.124: not significant
    block(3, -x[:300], x[:300] + 0.3 * rng.normal(size=300))  # strong negative: significant
    table = qnorm_entropy_correlations(pd.concat(blocks, ignore_index=True))
    assert table["significant"].tolist() == [True, False, False, True]
    assert table["p_pearson"].iloc[1] < 1e-10 and abs(table["r_pearson"].iloc[1]) < 0.5


def test_partial_correlation_matches_explicit_residuals(route):
    frame = _profile_frame(UNEQUAL_SIZES, seed=13)
    table = qnorm_entropy_correlations(frame, scope="per_sample", position_control=True)
    keys = ["sample", "layer", "head"]
    checked = 0
    for _, row in table.iterrows():
        sub = _select(frame, row, keys)
        keep = np.isfinite(sub["q_norm"].to_numpy(float)) & np.isfinite(sub["entropy"].to_numpy(float))
        x = sub["q_norm"].to_numpy(float)[keep]
        y = sub["entropy"].to_numpy(float)[keep]
        t = sub["token"].to_numpy(float)[keep]
        if x.size < 4:
            assert np.isnan(row["r_partial"]) and np.isnan(row["p_partial"])
            continue
        design = np.column_stack([np.ones_like(t), t])
        rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
        ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        r = stats.pearsonr(rx, ry).statistic
        assert row["r_partial"] == pytest.approx(r, abs=1e-9)
        assert row["p_partial"] == pytest.approx(_t_p(r, x.size - 3), rel=1e-7, abs=1e-12)
        # entropy_normalized: plain correlation with its own complete pairs.
        xn, yn = _finite_pairs(sub["q_norm"], sub["entropy_normalized"])
        assert row["n_normalized"] == xn.size
        ref = stats.pearsonr(xn, yn)
        assert row["r_pearson_normalized"] == pytest.approx(ref.statistic, abs=1e-9)
        assert row["p_pearson_normalized"] == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)
        assert row["r_spearman_normalized"] == pytest.approx(stats.spearmanr(xn, yn).statistic, abs=1e-9)
        checked += 1
    assert checked >= 5


def test_position_control_removes_a_pure_position_confound():
    rng = np.random.default_rng(17)
    token = np.arange(2, 512)
    q = 10 + 0.01 * token + 0.05 * rng.normal(size=token.size)
    h = np.log1p(token) + 0.05 * rng.normal(size=token.size)  # both driven by position only
    frame = pd.DataFrame({"sample": 0, "layer": 0, "head": 0, "token": token, "q_norm": q, "entropy": h})
    table = qnorm_entropy_correlations(frame, position_control=True)
    assert table["r_pearson"].iloc[0] > 0.8 and table["significant"].iloc[0]
    assert abs(table["r_partial"].iloc[0]) < 0.6 * table["r_pearson"].iloc[0]
    assert "r_pearson_normalized" not in table.columns  # no entropy_normalized column in the frame


def test_position_control_columns_and_degenerate_groups():
    frame = pd.DataFrame(
        {
            "sample": 0,
            "layer": 0,
            "head": [0] * 6 + [1] * 6,
            "token": [5] * 6 + list(range(6)),  # head 0: a single position, cannot be controlled for
            "q_norm": [1.0, 2, 3, 4, 5, 6] + [5.0, 1, 4, 2, 6, 3],
            # head 1: entropy linear in token (residuals are rounding noise, must not be correlated)
            "entropy": [2.0, 1, 4, 3, 6, 5] + [0.3 * t + 1.7 for t in range(6)],
        }
    )
    table = qnorm_entropy_correlations(frame, position_control=True)
    assert list(table.columns[-2:]) == ["r_partial", "p_partial"]
    assert np.isfinite(table["r_pearson"]).all()
    assert np.isnan(table["r_partial"]).all()  # head 0: no position variance; head 1: residual of y is 0


def test_grouped_constant_and_small_groups():
    frame = pd.DataFrame(
        {
            "sample": 0,
            "layer": 0,
            "head": [0] * 8 + [1] * 8 + [2] * 3,
            "token": list(range(8)) * 2 + [0, 1, 2],
            "q_norm": [1.0, 2, 3, 4, 5, 6, 7, 8] * 2 + [1.0, 2, 3],
            "entropy": [0.1] * 8 + [1.0, 3, 2, 5, 4, 7, 6, 8] + [1.0, 2, 3],
        }
    )
    table = qnorm_entropy_correlations(frame)
    assert np.isnan(table.loc[0, ["r_pearson", "p_pearson", "r_spearman", "p_spearman"]].astype(float)).all()
    assert np.isfinite(table.loc[1, ["r_pearson", "r_spearman"]].astype(float)).all()
    assert table["n"].tolist() == [8, 8, 3] and np.isnan(table.loc[2, "r_pearson"])
    assert not table["significant"].iloc[[0, 2]].any()


def test_bad_arguments():
    frame = _profile_frame({(0, 0, 0): 10})
    with pytest.raises(ValueError, match="scope"):
        qnorm_entropy_correlations(frame, scope="per_head")
    with pytest.raises(KeyError, match="k_norm"):
        qnorm_entropy_correlations(frame, x="k_norm")
    with pytest.raises(KeyError, match="sample"):
        qnorm_entropy_correlations(frame.drop(columns="sample"), scope="per_sample")


def test_group_ranks_routes_agree_with_scipy(route):
    rng = np.random.default_rng(23)
    sizes = np.array([5, 0, 1, 17, 3, 40, 2])
    seg = correlations._Segments(sizes)
    values = np.round(rng.normal(size=sizes.sum()), 1)
    ranks = correlations._group_ranks(seg, values)
    start = 0
    for size in sizes:
        np.testing.assert_array_equal(ranks[start : start + size], stats.rankdata(values[start : start + size]))
        start += size


# --------------------------------------------------------------------------------------------
# randomization control
# --------------------------------------------------------------------------------------------


def _correlated_frame(seed=0, n_heads=4, n_tokens=400):
    rng = np.random.default_rng(seed)
    q = rng.normal(10.0, 2.0, n_heads * n_tokens)
    h = 0.4 * q + rng.normal(0.0, 0.5, q.size)
    h[np.tile(np.arange(n_tokens), n_heads) < 2] = np.nan
    return pd.DataFrame(
        {
            "sample": 0,
            "layer": np.int16(0),
            "head": np.repeat(np.arange(n_heads, dtype=np.int16), n_tokens),
            "token": np.tile(np.arange(n_tokens, dtype=np.int32), n_heads),
            "q_norm": q.astype(np.float32),
            "entropy": h.astype(np.float32),
        }
    )


def test_randomization_control_is_deterministic(route):
    frame = _correlated_frame()
    frame = frame.drop(index=[5, 6, 7])  # unequal head sizes
    a = randomization_control(frame, "q_norm", "entropy", n_permutations=25, seed=42)
    b = randomization_control(frame, "q_norm", "entropy", n_permutations=25, seed=42)
    c = randomization_control(frame, "q_norm", "entropy", n_permutations=25, seed=43)
    assert a == b
    assert a["mean"] != c["mean"]
    assert set(a) == {"mean", "std", "mean_abs", "max_abs", "n_permutations", "n_groups", "passes"}
    assert a["n_permutations"] == 25 and a["n_groups"] == 4


def test_correlated_frame_is_significant_and_its_shuffle_control_passes(route):
    frame = _correlated_frame(seed=1)
    table = qnorm_entropy_correlations(frame)
    assert table["significant"].all() and (table["r_pearson"] > 0.7).all()
    control = randomization_control(frame, n_permutations=200)
    assert control["passes"] and control["mean_abs"] < 0.1
    assert abs(control["mean"]) < 0.01
    # A shuffled r over n = 398 pairs has sd ≈ 1/√(n−1) ≈ 0.050.
    assert control["std"] == pytest.approx(1 / np.sqrt(397), rel=0.15)
    assert control["max_abs"] < 0.3


def test_control_fails_on_tiny_heads():
    frame = _correlated_frame(n_heads=30, n_tokens=6)  # 4 complete pairs per head: shuffled |r| is large
    control = randomization_control(frame, n_permutations=20)
    assert control["mean_abs"] > 0.2 and not control["passes"]


def test_nan_rows_never_move_in_the_shuffle(route):
    frame = _correlated_frame(seed=2)
    dense = frame.dropna(subset=["entropy"])
    assert len(dense) < len(frame)
    a = randomization_control(frame, n_permutations=15, seed=9)
    b = randomization_control(dense, n_permutations=15, seed=9)
    assert a == b


def test_shuffle_within_keeps_values_inside_their_group(route):
    rng = np.random.default_rng(0)
    sizes = np.array([4, 0, 9, 1, 30, 7])
    seg = correlations._Segments(sizes)
    values = rng.normal(size=sizes.sum())
    shuffled = correlations._shuffle_within(np.random.default_rng(1), seg, values)
    assert not np.array_equal(shuffled, values)
    start = 0
    for size in sizes:
        np.testing.assert_array_equal(np.sort(shuffled[start : start + size]), np.sort(values[start : start + size]))
        start += size


def test_randomization_rejects_zero_permutations():
    with pytest.raises(ValueError, match="n_permutations"):
        randomization_control(_correlated_frame(), n_permutations=0)


# --------------------------------------------------------------------------------------------
# consistency and layer statistics
# --------------------------------------------------------------------------------------------


def test_consistency_counts_and_threshold():
    table = pd.DataFrame(
        {
            "sample": list(range(10)) * 2,
            "layer": np.int16(3),
            "head": np.repeat(np.array([0, 1], dtype=np.int16), 10),
            "r_pearson": [0.6] * 3 + [0.1] * 6 + [np.nan] + [0.7] * 2 + [0.2] * 8,
            "significant": [True] * 3 + [False] * 7 + [True] * 2 + [False] * 8,
        }
    )
    out = consistency(table)
    assert list(out.columns) == ["layer", "head", "num_samples", "num_significant", "fraction", "consistent", "mean_r"]
    assert out["num_samples"].tolist() == [10, 10]
    assert out["num_significant"].tolist() == [3, 2]
    assert out["fraction"].tolist() == pytest.approx([0.3, 0.2])
    assert out["consistent"].tolist() == [True, False]  # exactly 30% counts
    assert out["mean_r"].iloc[0] == pytest.approx((0.6 * 3 + 0.1 * 6) / 9)
    assert consistency(table, min_fraction=0.15)["consistent"].tolist() == [True, True]
    with pytest.raises(ValueError, match="per-sample"):
        consistency(table.drop(columns="sample"))


def test_consistency_end_to_end():
    sizes = {(s, 0, h): 120 for s in range(5) for h in range(2)}
    frame = _profile_frame(sizes, seed=4, slope=1.0, nan_fraction=0.0)
    noise = frame["head"] == 1
    frame.loc[noise, "entropy"] = np.random.default_rng(0).normal(size=int(noise.sum())).astype(np.float32)
    out = consistency(qnorm_entropy_correlations(frame, scope="per_sample"))
    assert out["num_samples"].tolist() == [5, 5]
    assert out["consistent"].tolist() == [True, False]


def test_layer_statistics_against_numpy():
    rng = np.random.default_rng(8)
    table = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(3, dtype=np.int16), 6),
            "head": np.tile(np.arange(6, dtype=np.int16), 3),
            "r_pearson": rng.uniform(-1, 1, 18),
            "p_pearson": rng.uniform(0, 0.02, 18),
        }
    )
    table.loc[4, ["r_pearson", "p_pearson"]] = np.nan
    out = layer_statistics(table)
    assert list(out.columns) == ["layer", "mean_abs_r", "std_abs_r", "frac_p_lt_0_01", "mean_r", "n_rows", "n_finite"]
    for layer, row in out.set_index("layer").iterrows():
        sub = table[table["layer"] == layer]
        abs_r = np.abs(sub["r_pearson"].dropna().to_numpy())
        assert row["mean_abs_r"] == pytest.approx(abs_r.mean())
        assert row["std_abs_r"] == pytest.approx(abs_r.std(ddof=0))
        assert row["frac_p_lt_0_01"] == pytest.approx((sub["p_pearson"] < 0.01).sum() / len(sub))
        assert row["n_rows"] == 6 and row["n_finite"] == abs_r.size
    assert out["n_finite"].tolist() == [5, 6, 6]
