"""Gain fits (spec M11, G5, B5), bootstrap CIs, categories (G11's rule), head selection (B8) and
exp2's verdict, on synthetic sweep tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from spectra.experiments.gain import (
    curves,
    fit_gain,
    gain_categories,
    gain_ratio_verdict,
    gain_table,
    select_heads,
)

ALPHAS = np.array([0.5, 0.75, 1.0, 1.25, 1.5])


def synthetic_sweep(slopes, n_samples=1, noise=0.0, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for head, slope in enumerate(slopes):
        for sample in range(n_samples):
            for a in ALPHAS:
                e = 3 + slope * np.log(a) + noise * rng.standard_normal()
                rows.append({"mode": "local", "kind": "q", "layer": 0, "head": head, "alpha": a, "sample": sample,
                             "entropy": e, "max_attn": 0.3 - 0.5 * slope * np.log(a), "k_eff": 10 + 5 * slope * np.log(a)})
    return pd.DataFrame(rows)


def test_g5_exact_fit():
    fit = fit_gain(ALPHAS, 2 - 0.8 * np.log(ALPHAS))
    assert fit.slope == pytest.approx(-0.8, abs=1e-9)
    assert fit.intercept == pytest.approx(2.0, abs=1e-9)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-9)
    assert fit.monotonic
    row = gain_table(synthetic_sweep([-0.8]), n_bootstrap=0).iloc[0]
    assert row["gain_entropy"] == pytest.approx(-0.8, abs=1e-9) and row["intercept_entropy"] == pytest.approx(3.0)
    assert row["baseline_entropy"] == pytest.approx(3.0) and bool(row["monotonic_entropy"])


def test_vectorised_ols_equals_linregress_and_r_squared_is_r_squared():
    sweep = synthetic_sweep([-1.0, -0.3, 0.2], noise=0.2, seed=3)
    table = gain_table(sweep, n_bootstrap=0)
    for _, row in table.iterrows():
        head = sweep[sweep["head"] == row["head"]]
        ref = stats.linregress(np.log(head["alpha"]), head["entropy"])
        assert row["gain_entropy"] == pytest.approx(ref.slope, abs=1e-12)
        assert row["intercept_entropy"] == pytest.approx(ref.intercept, abs=1e-12)
        assert row["std_error_entropy"] == pytest.approx(ref.stderr, abs=1e-12)
        assert row["r_squared_entropy"] == pytest.approx(ref.rvalue**2, abs=1e-12)  # B5: never r itself
        assert row["r_squared_entropy"] >= 0


def test_bootstrap_ci_covers_the_true_slope_and_needs_two_samples():
    table = gain_table(synthetic_sweep([-0.8], n_samples=40, noise=0.3, seed=1), n_bootstrap=2000)
    row = table.iloc[0]
    assert row["ci_low_entropy"] < -0.8 < row["ci_high_entropy"]
    assert row["ci_high_entropy"] - row["ci_low_entropy"] < 0.5
    one = gain_table(synthetic_sweep([-0.8]), n_bootstrap=100).iloc[0]
    assert np.isnan(one["ci_low_entropy"]) and np.isnan(one["ci_high_entropy"])


def test_curves_average_per_sample_means():
    sweep = synthetic_sweep([-0.5], n_samples=3, noise=0.1)
    curve = curves(sweep)
    expected = sweep.groupby("alpha")["entropy"].mean().to_numpy()
    np.testing.assert_allclose(curve["entropy"].to_numpy(), expected)
    assert (curve["n_samples"] == 3).all()


def test_categories_use_pandas_linear_quantiles():
    gains = pd.DataFrame({"layer": 0, "head": range(20), "gain_max_attn": np.linspace(0.05, 1.0, 20)})
    out = gain_categories(gains)
    assert out["category"].value_counts().to_dict() == {"medium": 16, "high": 2, "low": 2}
    assert out["p_low"].iloc[0] == pytest.approx(np.quantile(np.abs(gains["gain_max_attn"]), 0.1, method="linear"))
    assert out["p_high"].iloc[0] == pytest.approx(np.quantile(np.abs(gains["gain_max_attn"]), 0.9, method="linear"))
    by_entropy = gain_categories(gains.assign(gain_entropy=-gains["gain_max_attn"][::-1].to_numpy()), by="entropy")
    assert by_entropy.loc[0, "category"] == "high"  # B9: the other entry point's column gives other heads


def test_select_heads_picks_from_data():
    gains = pd.DataFrame({"layer": [0, 0, 1, 1, 2], "head": [0, 1, 0, 1, 0],
                          "gain_max_attn": [0.017, 0.134, 0.513, 0.804, 0.60]})
    picked = select_heads(gains).set_index("role")
    assert tuple(picked.loc["high", ["layer", "head"]]) == (1, 1)
    assert tuple(picked.loc["medium", ["layer", "head"]]) == (1, 0)
    assert tuple(picked.loc["low", ["layer", "head"]]) == (0, 0)


def test_gain_ratio_verdict_bands():
    assert gain_ratio_verdict(0.119282, 0.103962) == "minor"  # the seed's 1.147
    assert gain_ratio_verdict(1.05, 1.0) == "no distinction"
    assert gain_ratio_verdict(1.6, 1.0) == "higher sensitivity"
    assert gain_ratio_verdict(2.0, 1.0) == "strong evidence"


def test_bad_input():
    with pytest.raises(ValueError, match="alphas"):
        fit_gain([0.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="alphas"):
        fit_gain([np.nan, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="alphas"):
        fit_gain([1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="values"):
        fit_gain([0.5, 1.0], [1.0])
    with pytest.raises(ValueError, match="by"):
        gain_categories(pd.DataFrame({"gain_max_attn": [1.0]}), by="k_eff")
    with pytest.raises(KeyError, match="entropy"):
        gain_table(pd.DataFrame({"layer": [0], "head": [0], "alpha": [1.0], "sample": [0]}))
    with pytest.raises(ValueError, match="sweep"):
        gain_table(pd.DataFrame())
    sweep = synthetic_sweep([-1.0])
    with pytest.raises(ValueError, match="more than one row"):
        gain_table(pd.concat([sweep, sweep]))


def test_g6_two_key_gain_matches_the_closed_forms():
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
