"""Per-head QK geometry: the native core vs a straightforward float64 NumPy implementation.

    python benchmarks/geometry.py [--rows 16384] [--dim 128] [--repeats 3]

One head with ``rows`` query rows and ``rows`` key rows of dimension ``dim`` (Gaussian with a
cluster offset and a positional drift). NumPy: the spec's formulas as written — full SVD of the
pooled centred matrix for the 10-component PCA, explicit projections, ``numpy.cov`` for the
eigen-b variant. Native: ``spectra._core.qk_geometry`` (both analyses, one pass). Prints the median
times, the ratio and the largest difference in the outputs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from spectra import _core


def numpy_geometry(q, tq, k, tk, n_components=10):
    x, t = np.concatenate([q, k]), np.concatenate([tq, tk])
    mean = x.mean(0)
    _, s, vh = np.linalg.svd(x - mean, full_matrices=False)
    ev = (s**2 / (s**2).sum())[:n_components]
    zq, zk = (q - mean) @ vh[:n_components].T, (k - mean) @ vh[:n_components].T
    r_q = np.array([np.corrcoef(zq[:, j], tq)[0, 1] for j in range(n_components)])
    r_k = np.array([np.corrcoef(zk[:, j], tk)[0, 1] for j in range(n_components)])
    sign = np.where(np.abs(r_q) < 0.05, np.sign(r_k), np.sign(r_q))
    r_q, r_k = r_q * sign, r_k * sign
    c = ((x - mean) * (t - t.mean())[:, None]).mean(0)
    a = c / np.linalg.norm(c)
    gap = q.mean(0) - k.mean(0)
    b = gap - a * (a @ gap)
    b /= np.linalg.norm(b)
    qa, ka = q @ a, k @ a
    alpha_k = np.polyfit(tk, ka, 1)[0]
    # the complement's directions and their correlation with position
    plane = np.eye(len(a)) - np.outer(a, a) - np.outer(b, b)
    xp = (x - mean) @ plane
    _, sp, vp = np.linalg.svd(xp, full_matrices=False)
    keep = sp > 1e-6 * sp[0]
    proj = xp @ vp[keep].T
    residual = np.max(np.abs([np.corrcoef(proj[:, i], t)[0, 1] for i in range(proj.shape[1])]))
    return {"explained_variance": ev, "r_q": r_q, "r_k": r_k, "bias_strength": qa.mean() * alpha_k,
            "residual_pos_r": residual}


def native_geometry(q, tq, k, tk, n_components=10):
    pca, rot = _core.qk_geometry(q, tq, k, tk, n_components, "centroid")
    return {"explained_variance": pca["explained_variance"].numpy(), "r_q": pca["r_q"].numpy(),
            "r_k": pca["r_k"].numpy(), "bias_strength": rot["bias_strength"], "residual_pos_r": rot["residual_pos_r"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, d = args.rows, args.dim
    tq, tk = rng.integers(0, 4096, n).astype(np.float64), rng.integers(0, 4096, n).astype(np.float64)
    q = rng.standard_normal((n, d)) + 3.0
    k = rng.standard_normal((n, d)) - 3.0
    q[:, 1] += 1e-3 * tq
    k[:, 1] += 4e-3 * tk
    tensors = [torch.from_numpy(x) for x in (q, tq, k, tk)]
    native_geometry(*tensors)  # warm-up
    times = {"numpy": [], "native": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        want = numpy_geometry(q, tq, k, tk)
        times["numpy"].append(time.perf_counter() - start)
        start = time.perf_counter()
        got = native_geometry(*tensors)
        times["native"].append(time.perf_counter() - start)
    t_np, t_native = statistics.median(times["numpy"]), statistics.median(times["native"])
    print(f"one head: {n} Q rows + {n} K rows, d={d}, float64, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"numpy (SVD, explicit projections): {t_np * 1e3:9.1f} ms")
    print(f"spectra native (BLAS Gram + Eigen): {t_native * 1e3:8.1f} ms")
    print(f"speed-up: {t_np / t_native:.1f}x   (target >= 10x)")
    diffs = {key: float(np.max(np.abs(np.asarray(got[key]) - np.asarray(want[key])))) for key in
             ("explained_variance", "r_q", "r_k", "bias_strength")}
    print("max |native - numpy|: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
          + f"; residual_pos_r native {got['residual_pos_r']:.1e}, numpy {want['residual_pos_r']:.1e}")


if __name__ == "__main__":
    main()
