"""spectra.geometry against a plain NumPy / scikit-learn / SciPy implementation of the
formulas of docs/geometry.md: the combined PCA, the published per-kind PCA, the
Q/K discriminant accuracy, the planar rotation and its complement planes, and the batch path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from spectra import _core, geometry


def clusters_and_drift(n=3000, d=16, seed=0, key_drift=0.02, query_drift=0.002):
    """Two clusters (Q at +20, K at −20 on dim 0), queries' separation growing with position (the
    PC0 confound), keys drifting faster along dim 1."""
    rng = np.random.default_rng(seed)
    tq = (np.arange(n) % 512).astype(np.float64)
    tk = ((7 * np.arange(n)) % 512).astype(np.float64)
    q, k = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    q[:, 0] += 20 + 0.02 * tq
    k[:, 0] -= 20
    q[:, 1] += query_drift * tq
    k[:, 1] += key_drift * tk
    return q, tq, k, tk


def numpy_combined_pca(q, tq, k, tk, n_components):
    """sklearn's PCA on the pooled rows, Pearson r per kind, the notes' sign rule."""
    x = np.concatenate([q, k])
    pca = PCA(n_components=n_components, svd_solver="full").fit(x)
    zq, zk = pca.transform(q), pca.transform(k)
    r_q = np.array([stats.pearsonr(zq[:, j], tq)[0] for j in range(n_components)])
    r_k = np.array([stats.pearsonr(zk[:, j], tk)[0] for j in range(n_components)])
    sign = np.where(np.abs(r_q) < 0.05, np.where(r_k < 0, -1.0, 1.0), np.where(r_q < 0, -1.0, 1.0))
    z0q, z0k = zq[:, 0] * sign[0], zk[:, 0] * sign[0]
    fisher = (z0q.mean() - z0k.mean()) ** 2 / (z0q.var() + z0k.var())
    lda = LinearDiscriminantAnalysis(solver="lsqr", priors=[0.5, 0.5])
    z = np.concatenate([zq[:, :2], zk[:, :2]])
    labels = np.r_[np.ones(len(q)), np.zeros(len(k))]
    accuracy = lda.fit(z, labels).score(z, labels)
    return {
        "components": pca.components_ * sign[:, None],
        "explained_variance": pca.explained_variance_ratio_,
        "r_q": r_q * sign,
        "r_k": r_k * sign,
        "fisher_pc0": fisher,
        "accuracy_pc01": accuracy,
        "p_q": float((pca.explained_variance_ratio_ * (r_q**2)).sum()),
        "p_k": float((pca.explained_variance_ratio_ * (r_k**2)).sum()),
    }


def numpy_rotation(q, tq, k, tk):
    x, t = np.concatenate([q, k]), np.concatenate([tq, tk])
    xc = x - x.mean(0)
    c = xc.T @ (t - t.mean()) / len(x)
    a = c / np.linalg.norm(c)
    gap = q.mean(0) - k.mean(0)
    b = gap - a * (a @ gap)
    b /= np.linalg.norm(b)
    qa, ka = q @ a, k @ a
    alpha_q, alpha_k = stats.linregress(tq, qa).slope, stats.linregress(tk, ka).slope
    total = (xc**2).sum() / len(x)
    plane = np.eye(len(a)) - np.outer(a, a) - np.outer(b, b)
    rest = xc @ plane
    return {
        "a": a,
        "b": b,
        "mu_q_a": qa.mean(),
        "alpha_q": alpha_q,
        "alpha_k": alpha_k,
        "bias_strength": qa.mean() * alpha_k,
        "r_q_a": stats.pearsonr(qa, tq)[0],
        "r_k_a": stats.pearsonr(ka, tk)[0],
        "var_frac_a": ((xc @ a) ** 2).mean() / total,
        "var_frac_b": ((xc @ b) ** 2).mean() / total,
        "complement_var_fraction": (rest**2).sum() / len(x) / total,
    }


def as_tensors(*arrays):
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


@pytest.mark.parametrize("seed", [0, 1])
def test_combined_pca_agrees_with_scikit_learn(seed):
    q, tq, k, tk = clusters_and_drift(seed=seed)
    want = numpy_combined_pca(q, tq, k, tk, 6)
    got = _core.combined_pca(*as_tensors(q, tq, k, tk), 6)
    np.testing.assert_allclose(got["explained_variance"].numpy(), want["explained_variance"], rtol=1e-9)
    np.testing.assert_allclose(got["r_q"].numpy(), want["r_q"], atol=1e-9)
    np.testing.assert_allclose(got["r_k"].numpy(), want["r_k"], atol=1e-9)
    # Components beyond PC1 of isotropic noise are not identified; PC0 and PC1 are.
    np.testing.assert_allclose(got["components"].numpy()[:2], want["components"][:2], atol=1e-6)
    for key in ("fisher_pc0", "accuracy_pc01", "p_q", "p_k"):
        assert got[key] == pytest.approx(want[key], rel=1e-9), key


def test_the_pc0_confound_and_the_drift_axis():
    # PCA's PC0 is the Q/K separation axis, on which queries (not keys) track position, so PCA says
    # r_q > r_k; the drift axis a shows keys drift faster.
    q, tq, k, tk = clusters_and_drift()
    pca = geometry.combined_pca(q, k, tq, tk)
    rot = geometry.rotation(q, k, tq, tk)
    assert pca["r_q"][0] > abs(pca["r_k"][0]) + 0.3
    assert abs(rot["r_k_a"]) > abs(rot["r_q_a"])
    assert pca.attrs["accuracy_pc01"] == 1.0  # clusters 40 units apart


def test_kind_pca_agrees_with_scikit_learn_and_pearsonr():
    rng = np.random.default_rng(3)
    t = rng.integers(0, 4096, 2000).astype(np.float64)
    x = rng.standard_normal((2000, 12)) * np.linspace(3, 0.5, 12)
    x[:, 4] += 1e-3 * t
    got = geometry.kind_pca(torch.from_numpy(x).float(), t, n_components=5)
    pca = PCA(n_components=5, svd_solver="full").fit(x.astype(np.float32).astype(np.float64))
    z = pca.transform(x.astype(np.float32).astype(np.float64))
    # scikit-learn's own sign rule (largest loading positive), not Spectra's r_q anchor.
    signs = np.sign(pca.components_[np.arange(5), np.abs(pca.components_).argmax(1)])
    want = [stats.pearsonr(z[:, j] * signs[j], t) for j in range(5)]
    np.testing.assert_allclose(got["explained_variance_ratio"], pca.explained_variance_ratio_, rtol=1e-7)
    np.testing.assert_allclose(got["correlation"], [w[0] for w in want], atol=1e-7)
    np.testing.assert_allclose(got["p_value"], [w[1] for w in want], rtol=1e-6, atol=1e-300)
    np.testing.assert_allclose(np.abs(got.attrs["components"]), np.abs(pca.components_), atol=1e-5)
    assert (got.attrs["components"][np.arange(5), np.abs(got.attrs["components"]).argmax(1)] > 0).all()
    constant = geometry.kind_pca(torch.from_numpy(x).float(), np.full(2000, 7.0), n_components=2)
    assert (constant["correlation"] == 0).all() and (constant["p_value"] == 1).all()  # the tool's (0, 1) rule


@pytest.mark.parametrize("seed", [0, 2])
def test_rotation_agrees_with_numpy(seed):
    q, tq, k, tk = clusters_and_drift(seed=seed, d=24)
    want = numpy_rotation(q, tq, k, tk)
    got = geometry.rotation(q, k, tq, tk)
    np.testing.assert_allclose(got["a"].numpy(), want["a"], atol=1e-10)
    np.testing.assert_allclose(got["b"].numpy(), want["b"], atol=1e-10)
    for key, value in want.items():
        if key not in ("a", "b"):
            assert got[key] == pytest.approx(value, rel=1e-8, abs=1e-12), key


def test_variance_fractions_sum_to_one_and_q_dot_k_decomposes():
    q, tq, k, tk = clusters_and_drift(d=20, seed=5)
    for axis_b in ("centroid", "eigen"):
        r = geometry.rotation(q, k, tq, tk, axis_b=axis_b)
        assert r["var_frac_a"] + r["var_frac_b"] + r["complement_var_fraction"] == pytest.approx(1.0, abs=1e-12)
        a, b = r["a"].numpy(), r["b"].numpy()
        assert abs(a @ b) < 1e-12
        qa, ka, qb, kb = q @ a, k @ a, q @ b, k @ b
        q_rest, k_rest = q - np.outer(qa, a) - np.outer(qb, b), k - np.outer(ka, a) - np.outer(kb, b)
        np.testing.assert_allclose((q * k).sum(1), qa * ka + qb * kb + (q_rest * k_rest).sum(1), rtol=1e-12, atol=1e-9)


def rotating_plane(n=4096, d=12, turns=3.0, radius=6.0, seed=0):
    """Queries and keys whose dims 2–3 turn ``turns`` times around a circle over the positions (a
    RoPE-like rotation plane), with unit noise elsewhere and a small drift on dim 1."""
    rng = np.random.default_rng(seed)
    t = rng.permutation(n).astype(np.float64)
    angle = 2 * np.pi * turns * t / n

    def rows(offset):
        x = rng.standard_normal((n, d))
        x[:, 0] += offset
        x[:, 1] += 2e-3 * t
        x[:, 2] += radius * np.cos(angle)
        x[:, 3] += radius * np.sin(angle)
        return x

    return rows(3.0), t, rows(-3.0), t.copy()


@pytest.mark.parametrize("turns", [3.0, 40.0])
def test_complement_planes_find_a_rotation_plane(turns):
    n = 4096
    q, tq, k, tk = rotating_plane(n=n, turns=turns)
    r = geometry.rotation(q, k, tq, tk, n_planes=4)
    planes = r["planes"]
    assert list(planes.columns) == ["plane", "var_fraction", "omega", "angle_r", "accuracy", "active"]
    assert (np.diff(planes["var_fraction"]) <= 1e-12).all() and planes["var_fraction"].sum() <= 1 + 1e-12
    top = planes.iloc[0]
    # The turning plane carries most complement variance; its angle turns at the planted rate.
    assert top["var_fraction"] > 0.5 and top["angle_r"] > 0.9 and top["active"]
    assert top["omega"] == pytest.approx(2 * np.pi * turns / n, rel=0.02)
    # Noise planes: coherence at the noise floor sqrt(ln M / n) ~ 0.05, not active.
    assert (planes["angle_r"].iloc[1:] < 0.1).all() and not planes["active"].iloc[1:].any()
    assert r["n_active_planes"] == 1 and r["active_var_fraction"] == pytest.approx(top["var_fraction"])
    # Q and K share the ring: a linear discriminant cannot tell them apart there.
    assert top["accuracy"] < 0.6
    assert r["residual_pos_r"] < 1e-10  # the turning plane carries no *linear* position signal


def test_phase_coherence_matches_a_direct_scan():
    q, tq, k, tk = rotating_plane(turns=2.3, seed=1, radius=1.5)  # a noisy rotation: coherence well below 1
    got = geometry.rotation(q, k, tq, tk, n_planes=1)
    a, b = got["a"].numpy(), got["b"].numpy()
    x, t = np.concatenate([q, k]), np.concatenate([tq, tk])
    xc = x - x.mean(0)
    plane = np.eye(x.shape[1]) - np.outer(a, a) - np.outer(b, b)
    _, _, vh = np.linalg.svd(xc @ plane, full_matrices=False)
    z = xc @ vh[:2].T
    u = np.exp(1j * np.arctan2(z[:, 1], z[:, 0]))
    u -= u.mean()
    # A brute-force scan of the low frequencies, both directions of turn (the plane's basis fixes which).
    omegas = np.linspace(1e-4, np.pi / 64, 8000)
    scan = np.maximum(np.abs(np.exp(-1j * np.outer(omegas, t)) @ u), np.abs(np.exp(1j * np.outer(omegas, t)) @ u))
    scan /= np.abs(u).sum()
    best = int(scan.argmax())
    top = got["planes"].iloc[0]
    assert 0.2 < top["angle_r"] < 0.9
    assert top["angle_r"] == pytest.approx(scan[best], abs=1e-4)
    assert top["omega"] == pytest.approx(omegas[best], abs=2 * (omegas[1] - omegas[0]))


def test_batch_equals_one_head_at_a_time_and_names_the_failing_head():
    heads = [as_tensors(*clusters_and_drift(n=500, d=8, seed=s)) for s in range(5)]
    inputs = [(q, tq, k, tk) for q, tq, k, tk in heads]
    batch = _core.qk_geometry_batch(inputs, 4, "eigen")
    for (q, tq, k, tk), (pca, rot) in zip(inputs, batch, strict=True):
        one_pca, one_rot = _core.qk_geometry(q, tq, k, tk, 4, "eigen")
        torch.testing.assert_close(pca["r_q"], one_pca["r_q"], rtol=0, atol=1e-12)
        for key, value in one_rot.items():
            torch.testing.assert_close(
                torch.as_tensor(rot[key]), torch.as_tensor(value), rtol=1e-10, atol=1e-12, equal_nan=True, msg=key
            )
    broken = inputs[:2] + [(inputs[2][0], inputs[2][1], inputs[2][2][:, :5], inputs[2][3])]
    with pytest.raises(ValueError, match=r"heads\[2\]: .*same head_dim"):
        _core.qk_geometry_batch(broken)


def test_bad_input_names_the_argument():
    q, tq, k, tk = clusters_and_drift(n=50, d=4)
    with pytest.raises(ValueError, match="n_planes"):
        geometry.rotation(q, k, tq, tk, n_planes=-1)
    with pytest.raises(ValueError, match="active_threshold"):
        geometry.rotation(q, k, tq, tk, active_threshold=2.0)
    with pytest.raises(ValueError, match="n_components"):
        geometry.kind_pca(q, tq, n_components=0)
    with pytest.raises(ValueError, match="one entry per row"):
        geometry.kind_pca(q, tq[:10])
    with pytest.raises(TypeError, match="x: expected floating"):
        geometry.kind_pca(torch.ones(5, 3, dtype=torch.int64), np.arange(5.0))
    with pytest.raises(ValueError, match="pos: positions must be finite"):
        geometry.kind_pca(q, np.full(50, np.nan))
