"""Per-head QK geometry: the native core vs a straightforward NumPy / scikit-learn implementation.

    python benchmarks/geometry.py [--rows 16384] [--dim 128] [--heads 8] [--repeats 3]

Each head has ``rows`` query rows and ``rows`` key rows of dimension ``dim`` (Gaussian with a
cluster offset, a positional drift and a RoPE-like turning plane), positions in [0, 4096).
Baseline, per head, the formulas of docs/geometry.md as one would write them: scikit-learn's PCA (10
components) of the pooled rows, scipy's pearsonr per component and kind, scikit-learn's linear
discriminant on PC0–PC1, axis a/b and explicit projections with linregress, and the complement's
SVD with 30 rotation planes (numpy FFT for each plane's turning rate). Native:
``spectra._core.qk_geometry`` for one head and ``qk_geometry_batch`` (parallel over heads) for
``heads`` heads. Prints median times, ratios and the largest differences in the outputs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from spectra import _core


def coherence(theta, t):
    """Largest phase coherence of the angles with a rotation at one rate (FFT scan, as the native)."""
    u = np.exp(1j * theta)
    u -= u.mean()
    slot = np.rint(t - t.min()).astype(np.int64)
    m = 64
    while m < 2 * (slot.max() + 1):
        m *= 2
    spectrum = np.fft.fft(np.bincount(slot, u.real, m) + 1j * np.bincount(slot, u.imag, m))
    spectrum[0] = 0
    best = int(np.abs(spectrum).argmax())
    return 2 * np.pi * min(best, m - best) / m, np.abs(spectrum[best]) / np.abs(u).sum()


def numpy_geometry(q, tq, k, tk, n_components=10, n_planes=30):
    x, t = np.concatenate([q, k]), np.concatenate([tq, tk])
    pca = PCA(n_components=n_components, svd_solver="full").fit(x)
    zq, zk = pca.transform(q), pca.transform(k)
    r_q = np.array([stats.pearsonr(zq[:, j], tq)[0] for j in range(n_components)])
    r_k = np.array([stats.pearsonr(zk[:, j], tk)[0] for j in range(n_components)])
    sign = np.where(np.abs(r_q) < 0.05, np.sign(r_k), np.sign(r_q))
    z01 = np.concatenate([zq[:, :2], zk[:, :2]])
    labels = np.r_[np.ones(len(q)), np.zeros(len(k))]
    accuracy = LinearDiscriminantAnalysis(solver="lsqr", priors=[0.5, 0.5]).fit(z01, labels).score(z01, labels)
    xc = x - x.mean(0)
    c = xc.T @ (t - t.mean()) / len(x)
    a = c / np.linalg.norm(c)
    gap = q.mean(0) - k.mean(0)
    b = gap - a * (a @ gap)
    b /= np.linalg.norm(b)
    qa, ka = q @ a, k @ a
    alpha_q, alpha_k = stats.linregress(tq, qa).slope, stats.linregress(tk, ka).slope
    rest = xc - np.outer(xc @ a, a) - np.outer(xc @ b, b)
    _, sp, vp = np.linalg.svd(rest, full_matrices=False)
    keep = sp > 1e-6 * sp[0]
    proj = rest @ vp[keep].T
    residual = np.max(np.abs([stats.pearsonr(proj[:, i], t)[0] for i in range(proj.shape[1])]))
    planes = [
        coherence(np.arctan2(proj[:, 2 * i + 1], proj[:, 2 * i]), t) for i in range(min(n_planes, keep.sum() // 2))
    ]
    return {
        "explained_variance": pca.explained_variance_ratio_,
        "r_q": r_q * sign,
        "r_k": r_k * sign,
        "accuracy_pc01": accuracy,
        "bias_strength": qa.mean() * alpha_k,
        "alpha_q": alpha_q,
        "residual_pos_r": residual,
        "plane_angle_r": np.array([p[1] for p in planes]),
    }


def native_result(pca, rot):
    return {
        "explained_variance": pca["explained_variance"].numpy(),
        "r_q": pca["r_q"].numpy(),
        "r_k": pca["r_k"].numpy(),
        "accuracy_pc01": pca["accuracy_pc01"],
        "bias_strength": rot["bias_strength"],
        "alpha_q": rot["alpha_q"],
        "residual_pos_r": rot["residual_pos_r"],
        "plane_angle_r": rot["plane_angle_r"].numpy(),
    }


def make_head(rng, n, d):
    tq, tk = rng.integers(0, 4096, n).astype(np.float64), rng.integers(0, 4096, n).astype(np.float64)
    q = rng.standard_normal((n, d)) + 3.0
    k = rng.standard_normal((n, d)) - 3.0
    q[:, 1] += 1e-3 * tq
    k[:, 1] += 4e-3 * tk
    for x, t in ((q, tq), (k, tk)):  # a plane turning 5 times over the positions
        x[:, 2] += 3 * np.cos(2 * np.pi * 5 * t / 4096)
        x[:, 3] += 3 * np.sin(2 * np.pi * 5 * t / 4096)
    return q, tq, k, tk


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    heads = [make_head(rng, args.rows, args.dim) for _ in range(args.heads)]
    tensors = [tuple(torch.from_numpy(x) for x in head) for head in heads]
    _core.qk_geometry(*tensors[0])  # warm-up

    t_np, want = median_time(lambda: numpy_geometry(*heads[0]), args.repeats)
    t_native, got = median_time(lambda: native_result(*_core.qk_geometry(*tensors[0])), args.repeats)
    print(
        f"one head: {args.rows} Q rows + {args.rows} K rows, d={args.dim}, float64, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"numpy/scikit-learn: {t_np * 1e3:9.1f} ms")
    print(f"spectra native:     {t_native * 1e3:9.1f} ms")
    print(f"speed-up: {t_np / t_native:.1f}x   (target >= 10x)")
    diffs = {
        key: float(np.max(np.abs(np.asarray(got[key]) - np.asarray(want[key]))))
        for key in ("explained_variance", "r_q", "r_k", "accuracy_pc01", "bias_strength", "alpha_q", "plane_angle_r")
    }
    print(
        "max |native - numpy|: "
        + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
        + f"; residual_pos_r native {got['residual_pos_r']:.1e}, numpy {want['residual_pos_r']:.1e}"
    )

    t_np_all = t_np * args.heads  # the baseline has no batch path: one head after another
    t_batch, _ = median_time(lambda: _core.qk_geometry_batch(tensors), args.repeats)
    print(
        f"{args.heads} heads: numpy/scikit-learn {t_np_all * 1e3:.0f} ms (one head x {args.heads}), "
        f"native batch {t_batch * 1e3:.0f} ms; speed-up {t_np_all / t_batch:.1f}x"
    )


if __name__ == "__main__":
    main()
