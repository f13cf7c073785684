"""spectra.interventions.gain on synthetic sweep tables: a hand-computed fit, the vectorised OLS against linregress,
r² not r, bootstrap CIs against a naive loop, categories (p10/p90, by max_attn or entropy), head selection, exp2's verdict, closed-form cross-check, speed, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from spectra.interventions.gain import (
    _ols,
    curves,
    fit_gain,
    gain_categories,
    gain_ratio_verdict,
    gain_table,
    select_heads,
)

ALPHAS = np.array([0.5, 0.75, 1.0, 1.25, 1.5])


def make_sweep(slopes, n_samples=1, noise=0.0, seed=0, alphas=ALPHAS, **keys) -> pd.DataFrame:
    """One row per (head, alpha, sample): entropy = 3 + slope·ln α (+ noise), max_attn rising."""
    rng = np.random.default_rng(seed)
    slopes = np.asarray(slopes, dtype=float)
    h, a, s = np.meshgrid(np.arange(slopes.size), alphas, np.arange(n_samples), indexing="ij")
    x = np.log(a)
    return pd.DataFrame(
        {
            **keys,
            "layer": 0,
            "head": h.ravel(),
            "alpha": a.ravel(),
            "sample": s.ravel(),
            "entropy": (3 + slopes[h] * x + noise * rng.standard_normal(h.shape)).ravel(),
            "max_attn": (0.3 - 0.1 * slopes[h] * x).ravel(),
            "k_eff": (50 + 10 * slopes[h] * x).ravel(),
        }
    )


def test_g5_exact():
    fit = fit_gain(ALPHAS, 2 - 0.8 * np.log(ALPHAS))
    assert fit.slope == pytest.approx(-0.8, abs=1e-9)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-9)
    assert fit.intercept == pytest.approx(2.0, abs=1e-9)
    assert fit.monotonic
    sweep = pd.DataFrame(
        {
            "layer": 0,
            "head": 0,
            "alpha": ALPHAS,
            "sample": 0,
            "entropy": 2 - 0.8 * np.log(ALPHAS),
            "max_attn": 0.1,
            "k_eff": 1.0,
        }
    )
    row = gain_table(sweep, metrics=("entropy",)).iloc[0]
    assert row["gain_entropy"] == pytest.approx(-0.8, abs=1e-9)
    assert row["r_squared_entropy"] == pytest.approx(1.0, abs=1e-9)
    assert row["intercept_entropy"] == pytest.approx(2.0, abs=1e-9)
    assert row["baseline_entropy"] == pytest.approx(2.0, abs=1e-9) and bool(row["monotonic_entropy"])


def test_vectorised_ols_equals_linregress():
    rng = np.random.default_rng(7)
    x = np.log(rng.uniform(0.2, 3.0, 7))
    y = rng.normal(size=(50, 7)) + rng.normal(size=(50, 1)) * x
    y[::5, 2] = np.nan  # masked points are left out
    slope, intercept, r2, stderr = _ols(x, y)
    for i in range(len(y)):
        keep = np.isfinite(y[i])
        ref = stats.linregress(x[keep], y[i, keep])
        np.testing.assert_allclose(
            [slope[i], intercept[i], r2[i], stderr[i]],
            [ref.slope, ref.intercept, ref.rvalue**2, ref.stderr],
            rtol=1e-10,
            atol=1e-12,
        )
    # Through gain_table: the curve (mean over samples) fitted for every head.
    sweep = make_sweep(rng.uniform(-3, 0, 6), n_samples=4, noise=0.3, seed=1)
    table = gain_table(sweep, n_bootstrap=0)
    curve = curves(sweep)
    for _, row in table.iterrows():
        c = curve[curve["head"] == row["head"]]
        ref = stats.linregress(np.log(c["alpha"]), c["entropy"])
        np.testing.assert_allclose(
            [row["gain_entropy"], row["intercept_entropy"], row["r_squared_entropy"], row["std_error_entropy"]],
            [ref.slope, ref.intercept, ref.rvalue**2, ref.stderr],
            rtol=1e-10,
            atol=1e-12,
        )
        assert fit_gain(c["alpha"], c["entropy"]).slope == pytest.approx(row["gain_entropy"], rel=1e-12)


def test_flat_curve_and_two_points_follow_linregress():
    slope, _, r2, stderr = _ols(np.log(ALPHAS), np.full((1, 5), 2.0))
    assert slope[0] == 0 and np.isnan(r2[0]) and np.isnan(stderr[0])
    assert np.isnan(fit_gain(ALPHAS, np.full(5, 2.0)).r_squared)
    slope, _, r2, stderr = _ols(np.log([0.5, 2.0]), np.array([[1.0, 3.0]]))
    assert stderr[0] == 0.0 and r2[0] == pytest.approx(1.0)


def test_r_squared_is_r_squared_not_r():  # the seed code stored r as "r2"
    y = 2 - 0.8 * np.log(ALPHAS) + np.array([0.05, -0.04, 0.02, 0.03, -0.05])
    ref = stats.linregress(np.log(ALPHAS), y)
    assert ref.rvalue < 0
    fit = fit_gain(ALPHAS, y)
    assert fit.r_squared == pytest.approx(ref.rvalue**2) and 0 < fit.r_squared < 1
    row = gain_table(
        pd.DataFrame({"layer": 0, "head": 0, "alpha": ALPHAS, "sample": 0, "entropy": y}), metrics=("entropy",)
    ).iloc[0]
    assert row["r_squared_entropy"] == pytest.approx(ref.rvalue**2) and row["r_squared_entropy"] > 0


def test_bootstrap_ci_contains_true_slope_and_needs_two_samples():
    row = gain_table(make_sweep([-0.8], n_samples=40, noise=0.3, seed=1), n_bootstrap=2000).iloc[0]
    assert row["ci_low_entropy"] < -0.8 < row["ci_high_entropy"]
    assert row["ci_low_entropy"] < row["gain_entropy"] < row["ci_high_entropy"]
    assert row["ci_high_entropy"] - row["ci_low_entropy"] < 0.5
    one = gain_table(make_sweep([-0.8]), n_bootstrap=100).iloc[0]
    assert np.isnan(one["ci_low_entropy"]) and np.isnan(one["ci_high_entropy"])
    assert np.isnan(gain_table(make_sweep([-0.8], n_samples=5, noise=0.1), n_bootstrap=0)["ci_low_entropy"]).all()


def naive_ci(sweep: pd.DataFrame, head: int, n_bootstrap: int, seed: int, ci: float = 0.95) -> tuple[float, float]:
    """The bootstrap as a loop: the same draws, each replicate's curve refitted with linregress."""
    samples = np.unique(sweep["sample"])
    cube = (
        sweep[sweep["head"] == head].pivot(index="alpha", columns="sample", values="entropy").reindex(columns=samples)
    )
    draws = np.random.default_rng(seed).integers(0, samples.size, size=(n_bootstrap, samples.size))
    slopes = []
    for d in draws:
        curve = np.nanmean(cube.to_numpy()[:, d], axis=1)
        keep = np.isfinite(curve)
        slopes.append(stats.linregress(np.log(cube.index.to_numpy())[keep], curve[keep]).slope)
    return tuple(np.quantile(slopes, [(1 - ci) / 2, (1 + ci) / 2]))


@pytest.mark.parametrize("holes", [False, True])
def test_vectorised_bootstrap_equals_a_loop(holes):
    sweep = make_sweep([-1.0, -0.2, 0.0], n_samples=6, noise=0.2, seed=3)
    if holes:  # the masked route: a missing cell and a missing alpha
        sweep = sweep.drop(sweep.index[(sweep["head"] == 1) & (sweep["sample"] == 2) & (sweep["alpha"] == 1.25)])
        sweep = sweep.drop(sweep.index[(sweep["head"] == 2) & (sweep["alpha"] == 0.75)])
    table = gain_table(sweep, n_bootstrap=300, ci=0.9, seed=11)
    for head in range(3):
        low, high = naive_ci(sweep, head, 300, 11, ci=0.9)
        row = table[table["head"] == head].iloc[0]
        assert row["ci_low_entropy"] == pytest.approx(low, abs=1e-10)
        assert row["ci_high_entropy"] == pytest.approx(high, abs=1e-10)
    assert table["n_alphas"].tolist() == ([5, 5, 4] if holes else [5, 5, 5])
    again = gain_table(sweep, n_bootstrap=300, ci=0.9, seed=11)
    pd.testing.assert_frame_equal(table, again)


def test_incomplete_head_is_fitted_on_its_own_grid():
    sweep = make_sweep([-1.0, -0.5], n_samples=2, noise=0.1, seed=2)
    sweep = sweep[~((sweep["head"] == 1) & (sweep["alpha"] == 1.0))]
    sweep = sweep[~((sweep["head"] == 1) & (sweep["sample"] == 1))]
    row = gain_table(sweep, n_bootstrap=0).set_index("head").loc[1]
    c = sweep[sweep["head"] == 1]
    ref = stats.linregress(np.log(c["alpha"]), c["entropy"])
    assert row["gain_entropy"] == pytest.approx(ref.slope, rel=1e-12)
    assert (row["n_alphas"], row["n_samples"]) == (4, 1)
    # No alpha = 1 in its grid [0.5, 0.75, 1.25, 1.5]: the middle alpha (1.25) is the baseline.
    assert row["baseline_entropy"] == pytest.approx(c.loc[c["alpha"] == 1.25, "entropy"].iloc[0])


def test_baseline_without_alpha_one_and_monotonicity():
    grid = np.array([0.25, 0.5, 2.0, 4.0, 8.0])
    sweep = make_sweep([-1.0], alphas=grid)
    row = gain_table(sweep, n_bootstrap=0).iloc[0]
    assert row["baseline_entropy"] == pytest.approx(3 - np.log(2.0))
    assert row["monotonic_entropy"] and row["monotonic_max_attn"] and row["monotonic_k_eff"]
    bumpy = sweep.assign(entropy=[3.0, 2.0, 2.5, 1.0, 0.5], max_attn=[0.1, 0.2, 0.2, 0.3, 0.4])
    row = gain_table(bumpy, n_bootstrap=0).iloc[0]
    assert not row["monotonic_entropy"] and row["monotonic_max_attn"]  # ties are allowed (non-strict)
    assert fit_gain(grid, [0.1, 0.2, 0.2, 0.3, 0.4], "increasing").monotonic
    assert not fit_gain(grid, [0.1, 0.2, 0.2, 0.3, 0.4], "decreasing").monotonic
    assert fit_gain(grid[::-1], [3.0, 2.0, 1.5, 1.0, 0.5], "increasing").monotonic  # checked along sorted alpha


def test_groups_and_curves():
    sweep = pd.concat(
        [
            make_sweep([-1.0, -2.0], n_samples=3, noise=0.1, mode="local", kind="q"),
            make_sweep([-0.5, -1.5], n_samples=3, noise=0.1, mode="propagated", kind="k"),
        ]
    )
    table = gain_table(sweep, n_bootstrap=10)
    assert table[["mode", "kind", "head"]].values.tolist() == [
        ["local", "q", 0],
        ["local", "q", 1],
        ["propagated", "k", 0],
        ["propagated", "k", 1],
    ]
    assert table["gain_entropy"].to_numpy() == pytest.approx([-1.0, -2.0, -0.5, -1.5], abs=0.2)
    assert (table["n_samples"] == 3).all() and (table["n_alphas"] == 5).all()
    curve = curves(sweep)
    assert list(curve.columns[:5]) == ["mode", "kind", "layer", "head", "alpha"] and len(curve) == 20
    local = sweep[(sweep["mode"] == "local") & (sweep["head"] == 0)]
    expected = local.groupby("alpha")["entropy"].mean().to_numpy()
    np.testing.assert_allclose(curve["entropy"].to_numpy()[:5], expected)
    assert (curve["n_samples"] == 3).all()
    plain = gain_table(make_sweep([-1.0]), n_bootstrap=0)
    assert "mode" not in plain.columns and "kind" not in plain.columns


def test_closed_form_gain_is_a_cross_check():
    # Two keys with logits [1, 0] scaled by alpha: H(alpha) and its exact derivative -alpha²·Var_p.
    grid = ALPHAS
    p = 1 / (1 + np.exp(-grid))
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    slope = -(grid**2) * p * (1 - p)
    max_slope = p * (entropy + np.log(p))
    sweep = pd.DataFrame(
        {
            "layer": 0,
            "head": 0,
            "alpha": grid,
            "sample": 0,
            "entropy": entropy,
            "max_attn": p,
            "k_eff": 1.0,
            "entropy_slope": slope,
            "max_attn_slope": max_slope,
        }
    )
    row = gain_table(sweep, n_bootstrap=0).iloc[0]
    assert row["closed_form_gain_entropy"] == pytest.approx(slope.mean(), rel=1e-12)
    assert row["closed_form_gain_max_attn"] == pytest.approx(max_slope.mean(), rel=1e-12)
    # Same sign and size as the OLS slope, not equal: here dH/d ln alpha runs from -0.06 to -0.34
    # over the grid, so the curve bends and the two averages weigh it differently (-0.197 vs -0.168).
    assert row["closed_form_gain_entropy"] == pytest.approx(row["gain_entropy"], rel=0.25)
    assert abs(row["closed_form_gain_entropy"] - row["gain_entropy"]) > 0.01
    assert row["closed_form_gain_max_attn"] == pytest.approx(row["gain_max_attn"], rel=0.25)
    soft = gain_table(sweep.assign(entropy_slope=np.nan), n_bootstrap=0).iloc[0]
    assert np.isnan(soft["closed_form_gain_entropy"])
    assert "closed_form_gain_entropy" not in gain_table(make_sweep([-1.0])).columns


def test_categories_with_pandas_linear_quantiles():
    gains = pd.DataFrame({"layer": 0, "head": range(20), "gain_max_attn": np.linspace(0.05, 1.0, 20)})
    out = gain_categories(gains)
    assert out["category"].value_counts().to_dict() == {"medium": 16, "high": 2, "low": 2}
    magnitude = np.abs(gains["gain_max_attn"])
    assert (out["p_low"] == np.quantile(magnitude, 0.1, method="linear")).all()
    assert (out["p_high"] == np.quantile(magnitude, 0.9, method="linear")).all()
    assert out.loc[out["category"] == "high", "head"].tolist() == [18, 19]
    # The seed's v2 entry point ranked by entropy: by="entropy" reads the other column and can pick other heads.
    by_entropy = gain_categories(gains.assign(gain_entropy=-gains["gain_max_attn"][::-1].to_numpy()), by="entropy")
    assert by_entropy.loc[by_entropy["category"] == "high", "head"].tolist() == [0, 1]
    # Within (mode, kind): each group gets its own thresholds.
    two = pd.concat(
        [
            gains.assign(mode="local", kind="q"),
            gains.assign(mode="local", kind="k", gain_max_attn=10 * gains["gain_max_attn"]),
        ]
    )
    out = gain_categories(two)
    assert out.groupby("kind")["category"].apply(lambda c: c.value_counts()["high"]).to_dict() == {"k": 2, "q": 2}
    assert out.loc[out["kind"] == "k", "p_high"].iloc[0] == pytest.approx(10 * np.quantile(magnitude, 0.9))
    with_nan = gain_categories(gains.assign(gain_max_attn=gains["gain_max_attn"].where(gains["head"] != 5)))
    assert with_nan.loc[5, "category"] is None


def test_select_heads_argmax_median_argmin():
    gains = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1, 2, 2],
            "head": [0, 1, 0, 1, 0, 1],
            "gain_max_attn": [0.017, 0.134, 0.513, 0.804, 0.60, -0.45],
            "gain_entropy": [-0.3, -3.0, -1.0, -4.5, -2.0, -0.2],
        }
    )
    picked = select_heads(gains).set_index("role")
    assert list(picked.index) == ["high", "medium", "low"]
    assert tuple(picked.loc["high", ["layer", "head"]]) == (1, 1)  # argmax |gain|
    assert tuple(picked.loc["medium", ["layer", "head"]]) == (1, 0)  # median |gain| 0.4815: 0.513 is nearest
    assert tuple(picked.loc["low", ["layer", "head"]]) == (0, 0)  # argmin |gain|
    by_entropy = select_heads(gains, by="entropy").set_index("role")
    assert tuple(by_entropy.loc["low", ["layer", "head"]]) == (2, 1)


def test_gain_ratio_verdict_bands():
    assert gain_ratio_verdict(0.119282, 0.103962) == "minor"  # the seed's ratio 1.147
    assert gain_ratio_verdict(1.09, 1.0) == "no distinction"
    assert gain_ratio_verdict(0.91, 1.0) == "no distinction"
    assert gain_ratio_verdict(1.2, 1.0) == "minor"
    assert gain_ratio_verdict(0.5, 1.0) == "minor"
    assert gain_ratio_verdict(1.5, 1.0) == "higher sensitivity"
    assert gain_ratio_verdict(1.99, 1.0) == "higher sensitivity"
    assert gain_ratio_verdict(2.0, 1.0) == "strong evidence"
    assert gain_ratio_verdict(-2.0, -1.0) == "strong evidence"  # entropy gains are negative
    with pytest.raises(ValueError, match="control_gain"):
        gain_ratio_verdict(1.0, float("nan"))


def test_a_llama_8b_sized_gain_map():
    # 1024 heads x 5 alphas x 64 samples x 1000 replicates: the exp2b scale. (Speed is a benchmark's
    # business, not a test's; this only proves the full size runs and fills every CI.)
    rng = np.random.default_rng(0)
    sweep = make_sweep(rng.uniform(-4, -0.2, 1024), n_samples=64, noise=0.1)
    sweep["layer"], sweep["head"] = sweep["head"] // 32, sweep["head"] % 32
    sweep["entropy_slope"] = sweep["max_attn_slope"] = -1.0
    table = gain_table(sweep, n_bootstrap=1000)
    assert len(table) == 1024 and table["ci_low_entropy"].notna().all()


def test_bad_input():
    with pytest.raises(ValueError, match="alphas"):
        fit_gain([0.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="alphas"):
        fit_gain([-0.5, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="alphas"):
        fit_gain([np.nan, 1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="alphas"):
        fit_gain([1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="values"):
        fit_gain([0.5, 1.0], [1.0])
    with pytest.raises(ValueError, match="values"):
        fit_gain([0.5, 1.0], [1.0, np.nan])
    with pytest.raises(ValueError, match="direction"):
        fit_gain([0.5, 1.0], [1.0, 2.0], "up")
    sweep = make_sweep([-1.0], n_samples=2)
    with pytest.raises(ValueError, match="alpha"):
        gain_table(sweep.assign(alpha=sweep["alpha"] - 0.5))
    with pytest.raises(ValueError, match="alpha"):
        gain_table(sweep.assign(alpha=sweep["alpha"].where(sweep["alpha"] != 1.0)))
    with pytest.raises(ValueError, match="more than one row"):
        gain_table(pd.concat([sweep, sweep]))
    with pytest.raises(ValueError, match="more than one row"):
        curves(pd.concat([sweep, sweep]))
    with pytest.raises(ValueError, match="n_bootstrap"):
        gain_table(sweep, n_bootstrap=-1)
    with pytest.raises(ValueError, match="ci"):
        gain_table(sweep, ci=95)
    with pytest.raises(KeyError, match="k_eff"):
        gain_table(sweep.drop(columns="k_eff"))
    with pytest.raises(ValueError, match="sweep"):
        gain_table(pd.DataFrame())
    gains = gain_table(sweep, n_bootstrap=0)
    for function in (gain_categories, select_heads):
        with pytest.raises(ValueError, match="by"):
            function(gains, by="k_eff")


def test_g6_two_key_gain_matches_the_closed_forms_of_the_native_op():
    # Logits s = [1, 0]: OLS on a tight grid around alpha equals the closed-form derivatives there.
    import torch

    import spectra

    q = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    k = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 1, 2, 1)
    for alpha in (0.5, 1.0, 1.5):
        grid = alpha * np.exp(np.linspace(-1e-4, 1e-4, 5))
        rows = [spectra.attn_row_stats(q, k, float(a), causal=False) for a in grid]
        entropy = np.array([r.entropy.item() for r in rows])
        p_max = np.array([r.max_attn.item() for r in rows])
        p = 1 / (1 + np.exp(-alpha))  # weight of the key with logit alpha * 1
        variance = alpha**2 * p * (1 - p)  # Var_p(alpha s)
        assert fit_gain(grid, entropy).slope == pytest.approx(-variance, abs=1e-6)
        assert fit_gain(grid, p_max, "increasing").slope == pytest.approx(alpha * p * (1 - p), abs=1e-6)
        at = spectra.attn_row_stats(q, k, alpha, causal=False)
        assert -at.logit_var.item() == pytest.approx(-variance, abs=1e-12)
