"""The attention-plasticity tool's own assertions, ported to the re-implementation in
``spectra.reference.plasticity_published``, plus the checks that make it usable as an oracle:
injected pairs, the literal RNG protocol and the corrected window units."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr

from spectra.ops.reference import plasticity_published as pub


def _pp(z: float) -> float:
    p = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return 4 * p * (1 - p)


# ---------------------------------------------------------------- statistics


def test_regression_with_constant_positions():
    t = np.ones(4)
    X = np.stack([np.linspace(0.0, 1.5, 4), np.linspace(-2.0, 2.0, 4)], axis=1)
    alpha, beta, r2, r2_overall = pub.fit_multioutput_linear_regressor(t, X)
    assert np.allclose(beta, 0.0)
    assert np.allclose(alpha, X.mean(axis=0))
    assert np.allclose(r2, 0.0)
    assert r2_overall == 0.0


def test_orientation_sign_of_mean_of_bucket_means_zero_is_plus():
    keys = np.array([[1.0, -2.0, 0.0], [2.0, -1.0, 0.0], [-3.0, 4.0, 0.0]])
    s = pub.orientation_from_keys(keys, np.array([0, 1, 1]))
    # Bucket means (1, −2, 0) and (−0.5, 1.5, 0) → mean (0.25, −0.25, 0): equal weight per bucket.
    assert s.tolist() == [1.0, -1.0, 1.0]


def test_householder_maps_e1_to_beta_direction():
    beta = np.array([0.0, 3.0, 4.0])
    H = pub.make_pos_rotation(beta)
    assert np.allclose(H @ np.array([1.0, 0.0, 0.0]), beta / 5.0)
    assert np.allclose(H.T @ H, np.eye(3), atol=1e-12)
    assert np.allclose(pub.make_pos_rotation(np.zeros(4)), np.eye(4))


def test_subsampling_is_deterministic_and_orientation_flips_dim_1():
    vectors = np.array([[i, -i] for i in range(6)], dtype=np.float64)
    buckets = np.arange(6) % 2
    s = pub.orientation_from_keys(vectors, buckets)
    assert s.tolist() == [1.0, -1.0]
    idx1 = pub.subsample_index(6, 3, seed=42)
    idx2 = pub.subsample_index(6, 3, seed=42)
    assert np.array_equal(idx1, idx2) and len(set(idx1.tolist())) == 3
    assert pub.subsample_index(6, 10, seed=42) is None
    X = vectors[idx1] * s
    assert np.allclose(X[:, 0], X[:, 1])


def test_scalar_predictability_on_linear_data():
    p = np.linspace(1.0, 5.0, 20)
    X = np.stack([p, 0.5 * p], axis=1)
    r2, mae_baseline, mae_proj = pub.compute_scalar_position_predictability(p, X, np.array([1.0, 0.5]))
    assert r2 > 0.95
    assert mae_proj < mae_baseline


def test_residual_stats_with_constant_positions():
    X_rot = np.stack([np.linspace(-1.0, 1.0, 5), np.zeros(5)], axis=1)
    sk, kt, pval = pub.compute_first_component_residual_stats(np.ones(5), X_rot)
    assert sk == pytest.approx(0.0, abs=1e-12)
    assert kt == pytest.approx(-1.2, abs=1e-12)
    assert pval == pytest.approx(1.0, abs=5e-4)


def test_noise_stats_with_two_rows_return_defaults():
    assert pub.compute_noise_normality_stats(np.ones((2, 5)), max_dims=3, alpha=0.05, seed=0) == (0.0, 0.0, 1.0, 0.0)


# ---------------------------------------------------------------- attention plasticity


def _ap(**kw):
    base = dict(num_pairs_per_bucket=1, seed=0)
    base.update(kw)
    return pub.compute_attention_plasticity(**base)


def test_ap_expected_value_cell():
    ap, cells = _ap(
        p_q=np.array([0.0, 1.0, 1.0]), b_q=np.array([0, 1, 1]),
        alpha_rot=np.array([0.0]), beta_rot=np.array([1.0]), resid_var=np.array([1.0]),
        b_k=np.array([0, 0]), e_k=np.array([0, 0]), X_k_rot=np.array([[1.0], [-1.0]]),
    )  # fmt: skip
    assert list(cells) == [(1, 0)]
    assert cells[(1, 0)] == pytest.approx(_pp(1.0), rel=1e-6)
    assert round(cells[(1, 0)], 6) == 0.533935
    assert ap == pytest.approx(cells[(1, 0)], rel=1e-6)


def test_ap_window_removes_cell():
    kw = dict(
        p_q=np.array([0.0, 1.0, 2.0]), b_q=np.array([0, 1, 2]),
        alpha_rot=np.array([0.0]), beta_rot=np.array([1.0]), resid_var=np.array([1.0]),
        b_k=np.array([0, 0, 1, 1]), e_k=np.array([0, 0, 1, 1]),
        X_k_rot=np.array([[1.0], [0.5], [2.0], [1.5]]),
    )  # fmt: skip
    _, full = _ap(**kw)
    assert not math.isnan(full[(2, 0)]) and not math.isnan(full[(2, 1)])
    _, constrained = _ap(**kw, bucket_window_limits={2: 1})
    assert (2, 0) not in constrained
    assert (2, 1) in constrained and not math.isnan(constrained[(2, 1)])


def test_ap_same_example_rule():
    # Example 0 holds keys 0 and 1; example 1 holds only key 100, so (0, 1) is the only pair.
    ap, cells = _ap(
        p_q=np.array([1.0]), b_q=np.array([1]),
        alpha_rot=np.array([1.0]), beta_rot=np.array([0.0]), resid_var=np.array([1.0]),
        b_k=np.zeros(3, dtype=int), e_k=np.array([0, 0, 1]), X_k_rot=np.array([[0.0], [1.0], [100.0]]),
        num_pairs_per_bucket=16,
    )  # fmt: skip
    assert cells[(1, 0)] == pytest.approx(_pp(-1.0), rel=1e-6)
    assert ap == pytest.approx(_pp(-1.0), rel=1e-6)


def test_ap_cell_without_same_example_pairs_is_nan():
    ap, cells = _ap(
        p_q=np.array([1.0]), b_q=np.array([1]),
        alpha_rot=np.array([1.0]), beta_rot=np.array([0.0]), resid_var=np.array([1.0]),
        b_k=np.zeros(2, dtype=int), e_k=np.array([0, 1]), X_k_rot=np.array([[0.0], [1.0]]),
    )  # fmt: skip
    assert list(cells) == [(1, 0)] and math.isnan(cells[(1, 0)]) and math.isnan(ap)


# Bucket 1 keys: rows 0–3 in example 5 (0, 1, 2) and 7 (3); bucket 0 keys: rows 4–6, example 5.
_INJ = dict(
    p_q=np.array([0.0, 1.0, 3.0, 9.0]), b_q=np.array([0, 2, 2, 3]),
    alpha_rot=np.array([0.5, 1.0, -1.0]), beta_rot=np.array([0.25, 0.0, 0.0]),
    resid_var=np.array([1.0, 0.25, -3.0]),
    b_k=np.array([1, 1, 1, 1, 0, 0, 0]), e_k=np.array([5, 5, 5, 7, 5, 5, 5]),
    X_k_rot=np.array([[1.0, 2.0, 0.0], [-1.0, 0.5, 0.0], [0.0, 0.0, 0.5], [3.0, 1.0, 1.0],
                      [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]),
)  # fmt: skip


def test_ap_injected_pairs_match_hand_computation():
    # Cell (2, 1): τ = 2 → μ = (1, 1, −1); σ²_safe = (1, 0.25, 1e-12).
    pairs = {(2, 1): [(0, 1), (2, 0), (1, 1)]}  # the last pair has w = 0 → v = 0 → skipped
    ap, cells = pub.compute_attention_plasticity(**_INJ, pairs=pairs, seed=123)
    # (0, 1): w = (2, 1.5, 0): m = 3.5, v = 4 + 0.5625 = 4.5625
    # (2, 0): w = (−1, −2, 0.5): m = −3.5, v = 1 + 1 + 0.25e-12
    z1 = 3.5 / math.sqrt(4.5625)
    z2 = -3.5 / math.sqrt(2.0 + 0.25e-12)
    pp1 = 4 * ndtr(z1) * (1 - ndtr(z1))
    pp2 = 4 * ndtr(z2) * (1 - ndtr(z2))
    assert abs(cells[(2, 1)] - (pp1 + pp2) / 2) < 1e-15
    # Every other cell gets no draws; the result does not depend on the seed.
    assert set(cells) == {(2, 0), (2, 1), (3, 0), (3, 1)}
    assert all(math.isnan(cells[k]) for k in cells if k != (2, 1))
    assert ap == cells[(2, 1)]
    _, again = pub.compute_attention_plasticity(**_INJ, pairs=pairs, seed=0)
    assert again[(2, 1)] == cells[(2, 1)]
    with pytest.raises(ValueError, match="not evaluated"):
        pub.compute_attention_plasticity(**_INJ, pairs={(1, 0): [(4, 5)]})


def test_ap_draws_follow_the_literal_rng_protocol():
    ap, cells = pub.compute_attention_plasticity(**_INJ, num_pairs_per_bucket=5, seed=11)
    rng = np.random.default_rng(11)
    mu = {2: np.array([1.0, 1.0, -1.0]), 3: np.array([2.75, 1.0, -1.0])}
    s2 = np.array([1.0, 0.25, 1e-12])
    groups = {0: [np.array([4, 5, 6])], 1: [np.array([0, 1, 2])]}  # example 7 has one key in bucket 1
    expected = {}
    for j in (2, 3):
        for c in (0, 1):
            cum = np.cumsum([len(g) * (len(g) - 1) // 2 for g in groups[c]])
            vals = []
            for _ in range(min(5, int(cum[-1]))):
                g = groups[c][int(np.searchsorted(cum, rng.integers(int(cum[-1])), side="right"))]
                i1, i2 = rng.choice(g, 2, replace=False)
                w = _INJ["X_k_rot"][i1] - _INJ["X_k_rot"][i2]
                p = ndtr(float(mu[j] @ w) / math.sqrt(float((s2 * w * w).sum())))
                vals.append(4 * p * (1 - p))
            expected[(j, c)] = float(np.mean(vals))
    assert list(cells) == list(expected)
    for k in expected:
        assert cells[k] == pytest.approx(expected[k], abs=1e-15)
    assert ap == pytest.approx(np.mean(list(expected.values())), abs=1e-15)


# ---------------------------------------------------------------- windows


def test_bucket_window_limits_published_and_corrected_units():
    b = np.array([0, 1, 2, 2])
    assert pub.bucket_window_limits([1, 1, 1, 1], b) == {0: 1, 1: 1, 2: 1}
    assert pub.bucket_window_limits([4096] * 4, b) == {0: 4096, 1: 4096, 2: 4096}
    assert pub.bucket_window_limits([0.5] * 4, b) == {0: 1, 1: 1, 2: 1}
    assert pub.bucket_window_limits([0] * 4, b) is None
    assert pub.bucket_window_limits([None] * 4, b) is None
    assert pub.bucket_window_limits([float("nan")] * 4, b) is None
    assert pub.bucket_window_limits([], []) is None
    with pytest.raises(ValueError, match="Mixed sliding_window"):
        pub.bucket_window_limits([0, 1, 1, 1], b)
    # Spectra's corrected units: ceil(W / B) buckets, at least 1.
    assert pub.bucket_window_limits([4096] * 4, b, bucket_size=1024) == {0: 4, 1: 4, 2: 4}
    assert pub.bucket_window_limits([4097] * 4, b, bucket_size=1024) == {0: 5, 1: 5, 2: 5}
    assert pub.bucket_window_limits([1] * 4, b, bucket_size=1024) == {0: 1, 1: 1, 2: 1}


# ---------------------------------------------------------------- analyze_head


def _head(q_pos, q_b, k_pos, k_b, k_ex, k_vectors=None, sliding=None, **kw):
    q_pos = np.asarray(q_pos, dtype=np.float64)
    k_pos = np.asarray(k_pos, dtype=np.float64)
    q_vec = np.stack([q_pos, -q_pos], axis=1)
    if k_vectors is None:
        k_vectors = np.stack([k_pos + 0.1, -(k_pos + 0.1)], axis=1)
    args = dict(layer=0, q_head=0, k_head=0, max_tokens_per_head=10, normality_max_dims=2, p_alpha=0.05, seed=0)
    args.update(kw)
    return pub.analyze_head(
        q_vec, q_pos, q_b, sliding, np.asarray(k_vectors, dtype=np.float64), k_pos, k_b, k_ex, **args
    )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # moments of round-off-sized residuals
def test_analyze_head_dummy_data():
    row, cell_rows, comp = _head([0, 1, 2, 3], [0, 0, 1, 1], [0, 0.5, 1.5, 2.5], [0, 0, 1, 1], [0, 0, 1, 1])
    assert list(row) == list(pub.HEAD_COLUMNS)
    assert (row["layer"], row["q_head"], row["k_head"], row["n_q_tokens"], row["d_model"]) == (0, 0, 0, 4, 2)
    assert row["q_R2_pos"] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= row["ap_overall"] <= 1.0
    assert {(r["q_bucket"], r["k_bucket"]) for r in cell_rows} == {(1, 0)}
    assert all(r["q_bucket"] > 0 and (r["layer"], r["q_head"], r["k_head"]) == (0, 0, 0) for r in cell_rows)
    assert len(comp) == 2
    assert sum(r["component_weight"] for r in comp) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_analyze_head_sliding_window_column():
    k_vectors = [[1.0, -1.0], [1.5, -1.5], [2.0, -2.0], [2.5, -2.5]]

    def cells(sliding, **kw):
        _, cell_rows, comp = _head(
            [0, 1, 2], [0, 1, 2], [0, 0.1, 1, 1.1], [0, 0, 1, 1], [0, 0, 1, 1], k_vectors, sliding, **kw
        )
        assert len(comp) == 2 and sum(r["component_weight"] for r in comp) == pytest.approx(1.0, rel=1e-6)
        return {(r["q_bucket"], r["k_bucket"]): r["ap_bucket"] for r in cell_rows}

    full = cells([0, 0, 0])
    assert (2, 0) in full and not math.isnan(full[(2, 0)])
    assert (2, 0) in cells(None)
    window = cells([1, 1, 1])
    assert (2, 0) not in window and (2, 1) in window
    # Corrected units: W = 1 token with B = 1024 is still one bucket back; W = 2048 is two.
    assert (2, 0) not in cells([1, 1, 1], bucket_size=1024)
    assert (2, 0) in cells([2048, 2048, 2048], bucket_size=1024)
    with pytest.raises(ValueError, match="Mixed sliding_window"):
        _head([0, 1], [0, 1], [0, 0.1], [0, 0], [0, 0], [[1.0, -1.0], [-1.0, 1.0]], [0, 1])


def test_analyze_head_rejects_d_mismatch():
    with pytest.raises(ValueError, match="d_q=2, d_k=3"):
        pub.analyze_head(
            np.zeros((3, 2)), np.arange(3.0), np.zeros(3), None,
            np.ones((3, 3)), np.arange(3.0), np.zeros(3), np.zeros(3),
            layer=0, q_head=0, k_head=0,
        )  # fmt: skip


def test_analyze_head_subsamples_and_injects_pairs():
    rng = np.random.default_rng(0)
    n, d = 400, 4
    t = rng.permutation(n).astype(np.float64)
    b = (t // 100).astype(int)
    ex = rng.integers(0, 3, n)
    k_vec = rng.normal(size=(n, d)) + 0.01 * t[:, None]
    q_vec = rng.normal(size=(n, d)) + 0.02 * t[:, None]
    args = (q_vec, t, b, None, k_vec, t, b, ex)
    kw = dict(layer=2, q_head=5, k_head=1, max_tokens_per_head=300, normality_max_dims=3, num_pairs_per_bucket=8)
    row, cell_rows, _ = pub.analyze_head(*args, **kw)
    row2, cell_rows2, _ = pub.analyze_head(*args, **kw)
    assert (row["n_q_tokens"], row["n_k_tokens"]) == (300, 300)
    assert row == row2 and cell_rows == cell_rows2  # deterministic
    assert {(r["q_bucket"], r["k_bucket"]) for r in cell_rows} == {(j, c) for j in (1, 2, 3) for c in range(j)}
    # Injected pairs index the subsampled K rows; only that cell gets a value.
    idx = pub.subsample_index(n, 300, seed=0)
    in_b0 = np.flatnonzero(b[idx] == 0)
    _, cell_rows3, _ = pub.analyze_head(*args, **kw, pairs={(3, 0): [(in_b0[0], in_b0[1])]})
    vals = {(r["q_bucket"], r["k_bucket"]): r["ap_bucket"] for r in cell_rows3}
    assert not math.isnan(vals[(3, 0)])
    assert all(math.isnan(v) for k, v in vals.items() if k != (3, 0))
