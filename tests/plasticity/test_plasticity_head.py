"""Spectra's native per-head plasticity against a literal NumPy/SciPy port of the published tool
(spectra.reference.plasticity_published) on injected key pairs, and the thesis mode against an
independent NumPy computation (docs/plasticity.md)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm

from spectra import _core, plasticity
from spectra.ops.reference import plasticity_published as published


def synthetic_head(seed=0, n_examples=4, length=256, dim=8, drift=0.02, query_stride=1, key_offset=0):
    """Rows of a head with a linear position drift on a few dimensions, several examples."""
    rng = np.random.default_rng(seed)
    t = np.tile(np.arange(0, length, query_stride, dtype=np.float64), n_examples)
    example = np.repeat(np.arange(n_examples), len(t) // n_examples)
    direction = rng.normal(size=dim)
    q = rng.normal(size=(len(t), dim)) + 0.5 + drift * t[:, None] * direction
    tk = (t + key_offset) % length
    k = rng.normal(size=(len(t), dim)) * 1.5 - 0.3 + 0.5 * drift * tk[:, None] * direction
    return q, t, k, tk, example


def by_cell(pairs: pd.DataFrame, cells: pd.DataFrame) -> dict:
    """Injectable pairs {(q_bucket, k_bucket): [(k1, k2), ...]} of a native run."""
    keys = list(zip(cells["q_cell"].astype(int), cells["k_bucket"].astype(int)))
    return {
        keys[cell]: list(zip(part["first"].tolist(), part["second"].tolist())) for cell, part in pairs.groupby("cell")
    }


@pytest.mark.parametrize("window", [None, 40.0])
def test_published_mode_equals_the_published_port_on_injected_pairs(window):
    q, t, k, tk, example = synthetic_head()
    bucket = 32
    native = plasticity.analyze_head(
        q,
        t,
        k,
        tk,
        example,
        bucket_size=bucket,
        mode="published",
        layer=3,
        head=5,
        kv_head=1,
        sliding_window=window,
        keep_pairs=True,
        pairs_per_cell=64,
    )
    pairs = by_cell(native.pairs, native.cells)
    row, cell_rows, component_rows = published.analyze_head(
        q,
        t,
        t // bucket,
        None if window is None else np.full(len(t), window),
        k,
        tk,
        tk // bucket,
        example,
        layer=3,
        q_head=5,
        k_head=1,
        pairs=pairs,
        bucket_size=bucket,
    )
    port_cells = {(r["q_bucket"], r["k_bucket"]): r["ap_bucket"] for r in cell_rows}
    native_cells = {
        (int(j), int(c)): a for j, c, a in native.cells[["q_cell", "k_bucket", "ap"]].itertuples(index=False)
    }
    assert port_cells.keys() == native_cells.keys()
    if window is not None:  # ceil(40 / 32) = 2 buckets back
        assert all(j - c <= 2 for j, c in native_cells)
    assert max(abs(port_cells[key] - native_cells[key]) for key in port_cells) < 1e-12
    assert native.row["ap_overall"] == pytest.approx(row["ap_overall"], abs=1e-12)
    for column in published.HEAD_COLUMNS[3:-1]:
        assert native.row[column] == pytest.approx(row[column], rel=1e-9, abs=1e-12), column
    port_components = pd.DataFrame(component_rows)
    np.testing.assert_allclose(
        native.components["component_weight"], port_components["component_weight"], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(native.components["component_r2"], port_components["component_r2"], rtol=0, atol=1e-12)


def test_published_draws_come_from_one_example_inside_the_key_bucket():
    q, t, k, tk, example = synthetic_head(seed=1)
    out = plasticity.analyze_head(q, t, k, tk, example, bucket_size=32, mode="published", keep_pairs=True)
    pairs = out.pairs.merge(out.cells[["k_bucket"]].reset_index(names="cell"), on="cell")
    assert (example[pairs["first"]] == example[pairs["second"]]).all()
    assert (pairs["first"] != pairs["second"]).all()
    assert (tk[pairs["first"]] // 32 == pairs["k_bucket"]).all() and (
        tk[pairs["second"]] // 32 == pairs["k_bucket"]
    ).all()
    assert (out.cells["q_cell"] >= 1).all() and (out.cells["k_bucket"] < out.cells["q_cell"]).all()
    assert (out.cells["n_draws"] == 256).all()  # every cell has C(32, 2) * 4 > 256 pairs
    # ap_overall: the unweighted mean of the cells.
    assert out.row["ap_overall"] == pytest.approx(out.cells["ap"].mean(), abs=1e-15)


def test_draws_are_uniform_over_same_example_pairs():
    """Groups of 2, 3 and 5 keys: each of the 2 + 6 + 20 ordered pairs is equally likely. A cell draws
    min(256, 14) = 14 pairs, so the test pools 600 cells (query buckets 1..600, keys in bucket 0)."""
    k_example = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    k_pos = np.array([0, 1, 0, 1, 2, 0, 1, 2, 3, 4], dtype=float)
    k = np.random.default_rng(0).normal(size=(10, 4))
    q_pos = np.arange(8.0, 8.0 * 601, 8.0)
    q = np.random.default_rng(1).normal(size=(len(q_pos), 4))
    out = plasticity.analyze_head(q, q_pos, k, k_pos, k_example, bucket_size=8, mode="published", keep_pairs=True)
    assert (out.cells["n_draws"] == 14).all() and len(out.cells) == 600
    counts = out.pairs.groupby(["first", "second"]).size()
    assert len(counts) == 28
    expected = 600 * 14 / 28
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 70  # 27 degrees of freedom: P(chi2 > 70) < 1e-5


def test_thesis_pairs_are_eligible_and_feasible():
    q, t, k, tk, example = synthetic_head(seed=2, key_offset=7)
    out = plasticity.analyze_head(
        q, t, k, tk, example, bucket_size=32, mode="thesis", keep_pairs=True, pairs_per_cell=128
    )
    p = out.pairs
    assert (example[p["first"]] == example[p["second"]]).all()
    assert (p["k1_pos"] < p["tau"]).all() and (p["k2_pos"] < p["tau"]).all()
    # The 2D heatmap's feasible region: the key midpoint lies at least Δ/2 before the query.
    assert (p["query_distance"] >= p["key_distance"] / 2).all()
    assert np.allclose(out.cells["tau"], (out.cells["q_cell"] + 0.5) * 32)
    # The first grid cell is evaluable in thesis mode (keys before τ = 16).
    assert out.cells.loc[out.cells["q_cell"] == 0, "ap"].notna().all()
    heat = out.heatmap
    assert heat["n_pairs"].sum() == int(p["used"].sum())
    assert (heat["distance_bin"] * 32 + 32 > heat["delta_bin"] * 32 / 2).all()
    weighted = np.average(out.cells["ap"], weights=out.cells["n_queries"])
    assert out.row["ap_overall"] == pytest.approx(weighted, abs=1e-15)


def test_thesis_window_limits_keys_in_bucket_units():
    q, t, k, tk, example = synthetic_head(seed=3)
    out = plasticity.analyze_head(
        q, t, k, tk, example, bucket_size=32, mode="thesis", keep_pairs=True, sliding_window=33
    )  # ceil(33 / 32) = 2 buckets back
    p = out.pairs
    query_bucket = np.floor(p["tau"] / 32)
    assert (np.minimum(p["k1_pos"], p["k2_pos"]) // 32 >= query_bucket - 2).all()
    assert out.row["lookback_buckets"] == 2


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_thesis_moments_equal_an_independent_numpy_computation(covariance):
    q, t, k, tk, example = synthetic_head(seed=4, dim=6)
    width = 48.0
    out = plasticity.analyze_head(
        q,
        t,
        k,
        tk,
        example,
        bucket_size=32,
        mode="thesis",
        grid_width=width,
        covariance=covariance,
        keep_pairs=True,
        pairs_per_cell=32,
    )
    # Independent model: orientation, OLS, Householder, per-cell moments in the rotated basis.
    s = published.orientation_from_keys(k, tk // 32)
    xq, xk = q * s, k * s
    _, beta, _, _ = published.fit_multioutput_linear_regressor(t, xq)
    h = published.make_pos_rotation(beta)
    q_rot, k_rot = xq @ h, xk @ h
    alpha_rot, beta_rot, _, _ = published.fit_multioutput_linear_regressor(t, q_rot)
    resid_var = (q_rot - (alpha_rot + t[:, None] * beta_rot)).var(axis=0, ddof=1)
    cell_of = np.floor(t / width)
    worst = 0.0
    for row in out.pairs.itertuples():
        members = q_rot[cell_of == row.q_cell]
        mu = np.concatenate([[alpha_rot[0] + beta_rot[0] * row.tau], members[:, 1:].mean(axis=0)])
        w = k_rot[row.first] - k_rot[row.second]
        if covariance == "diagonal":
            sigma = np.diag(np.concatenate([[resid_var[0]], members[:, 1:].var(axis=0, ddof=1)]))
        else:
            sigma = np.zeros((6, 6))
            sigma[0, 0] = resid_var[0]
            sigma[1:, 1:] = np.cov(members[:, 1:], rowvar=False, ddof=1) + 1e-12 * np.eye(5)
        m, v = mu @ w, w @ sigma @ w
        pp = 4 * norm.cdf(m / math.sqrt(v)) * norm.sf(m / math.sqrt(v))
        worst = max(worst, abs(m - row.m) / (1 + abs(m)), abs(v - row.v) / v, abs(pp - row.pp))
    assert worst < 1e-10


def test_householder_model_properties():
    """H β̂ = e1, HᵀH = I, the refit slope is ‖β‖ e1, and q·k is preserved."""
    q, t, k, tk, example = synthetic_head(seed=5, dim=12)
    tensors = [torch.as_tensor(x) for x in (q, t, t // 32, k, tk, tk // 32, example)]
    out = _core.plasticity_head(
        *tensors,
        mode="thesis",
        pairs_per_cell=4,
        seed=0,
        lookback=0,
        bucket_size=32,
        grid_width=32.0,
        grid_midpoint=True,
        min_queries=2,
        full_covariance=False,
        noise_ks_dims=[0, 3],
    )
    model = {key: (value.numpy() if isinstance(value, torch.Tensor) else value) for key, value in out["model"].items()}
    v = model["householder"]
    h = np.eye(12) - 2 * np.outer(v, v)
    beta = model["beta"]
    e1 = np.eye(12)[0]
    np.testing.assert_allclose(h @ (beta / np.linalg.norm(beta)), e1, atol=1e-12)
    np.testing.assert_allclose(h.T @ h, np.eye(12), atol=1e-12)
    np.testing.assert_allclose(model["beta_rot"], np.linalg.norm(beta) * e1, atol=1e-12 * np.linalg.norm(beta) + 1e-15)
    s = model["sign"]
    qk = (q * s) @ h @ ((k * s) @ h).T
    np.testing.assert_allclose(qk, q @ k.T, rtol=1e-10, atol=1e-10)


def test_monte_carlo_agrees_with_the_closed_form():
    """Pr(q·k1 > q·k2) for Gaussian queries with a known drift equals Φ(m/√v) of the fitted model."""
    rng = np.random.default_rng(6)
    dim, n = 4, 200_000
    alpha = np.array([0.3, -0.2, 0.5, 0.1])
    beta = np.array([0.004, 0.0, -0.002, 0.001])
    sd = np.array([0.5, 1.0, 0.7, 1.3])
    t = rng.integers(0, 1024, size=n).astype(float)
    q = alpha + t[:, None] * beta + rng.normal(size=(n, dim)) * sd
    k = np.array([[1.0, 0.2, -0.5, 0.3], [0.1, 0.4, 0.6, -0.2]] * 2)
    k_pos, k_example = np.array([0.0, 1.0, 2.0, 3.0]), np.zeros(4, dtype=np.int64)
    tau = 900.0
    cells_pairs = ([0], [0], [1])
    out = plasticity.analyze_head(
        q,
        t,
        k,
        k_pos,
        k_example,
        bucket_size=1024,
        mode="published",
        max_tokens_per_head=None,
        keep_pairs=True,
        pairs=cells_pairs,
        q_bucket=np.where(t >= 0, 1, 0),
        k_bucket=np.zeros(4, dtype=np.int64),
    )
    row = out.pairs.iloc[0]
    # The model's p at the cell's τ (its mean query position) versus fresh draws at that τ.
    tau = float(out.cells["tau"].iloc[0])
    p_model = norm.cdf(row["m"] / math.sqrt(row["v"]))
    fresh = alpha + tau * beta + rng.normal(size=(1_000_000, dim)) * sd
    p_mc = float(np.mean(fresh @ k[0] > fresh @ k[1]))
    assert abs(p_model - p_mc) < 4 * math.sqrt(p_mc * (1 - p_mc) / 1_000_000) + 0.003


def test_identical_keys_are_skipped_in_published_mode_and_count_as_coin_flips_in_thesis_mode():
    k = np.array([[1.0, 2.0], [1.0, 2.0], [0.5, -1.0]])
    k_pos, k_example = np.array([0.0, 1.0, 2.0]), np.zeros(3, dtype=np.int64)
    q = np.random.default_rng(0).normal(size=(10, 2))
    q_pos = np.arange(10.0) + 8
    pub = plasticity.analyze_head(
        q, q_pos, k, k_pos, k_example, bucket_size=8, mode="published", pairs=([0], [0], [1]), keep_pairs=True
    )
    assert not pub.pairs["used"].iloc[0] and math.isnan(pub.row["ap_overall"])
    thesis = plasticity.analyze_head(
        q,
        q_pos,
        k,
        k_pos,
        k_example,
        bucket_size=8,
        grid_width=10.0,
        mode="thesis",
        pairs=([0], [0], [1]),
        keep_pairs=True,
    )
    assert thesis.pairs["used"].iloc[0] and thesis.pairs["pp"].iloc[0] == 1.0


def test_results_are_deterministic_and_depend_on_the_seed():
    q, t, k, tk, example = synthetic_head(seed=7)
    a = plasticity.analyze_head(q, t, k, tk, example, bucket_size=32, seed=3, layer=1, head=2)
    b = plasticity.analyze_head(q, t, k, tk, example, bucket_size=32, seed=3, layer=1, head=2)
    c = plasticity.analyze_head(q, t, k, tk, example, bucket_size=32, seed=4, layer=1, head=2)
    pd.testing.assert_frame_equal(a.cells, b.cells)
    assert not a.cells["ap"].equals(c.cells["ap"])


def test_bad_input_names_the_argument():
    q, t, k, tk, example = synthetic_head(seed=8)
    with pytest.raises(ValueError, match="^d:"):
        plasticity.analyze_head(q, t, k[:, :4], tk, example, bucket_size=32)
    with pytest.raises(ValueError, match="rows: a head needs at least 3 query rows"):
        plasticity.analyze_head(q[:2], t[:2], k, tk, example, bucket_size=32)
    with pytest.raises(ValueError, match="mode"):
        plasticity.analyze_head(q, t, k, tk, example, bucket_size=32, mode="bucket")
    with pytest.raises(ValueError, match="covariance"):
        plasticity.analyze_head(q, t, k, tk, example, bucket_size=32, covariance="dense")
    with pytest.raises(ValueError, match="k_example"):
        plasticity.analyze_head(q, t, k, tk, example[:-1], bucket_size=32)
    bad = q.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="q: contains NaN"):
        plasticity.analyze_head(bad, t, k, tk, example, bucket_size=32)
    with pytest.raises(ValueError, match="pairs: cell index"):
        plasticity.analyze_head(q, t, k, tk, example, bucket_size=32, pairs=([10_000], [0], [1]))
    with pytest.raises(ValueError, match="bucket_size"):
        plasticity.analyze_head(q, t, k, tk, example, bucket_size=0)
