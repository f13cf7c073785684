"""Twins of ``spectra._core.combined_pca`` and ``planar_rotation``: the formulas of
docs/geometry.md, 'Definitions', written out directly in float64 torch, with the full SVD of the
pooled centred matrix for PCA and explicit projections of every row."""

from __future__ import annotations

import math

import torch


def _pearson(x: torch.Tensor, t: torch.Tensor) -> float:
    xc, tc = x - x.mean(), t - t.mean()
    sxx, stt = float((xc * xc).sum()), float((tc * tc).sum())
    return float((xc * tc).sum()) / math.sqrt(sxx * stt) if sxx > 0 and stt > 0 else 0.0


def combined_pca(q, q_pos, k, k_pos, n_components: int = 10, anchor_tolerance: float = 0.05) -> dict:
    """Pooled, centred PCA of [Q; K] by SVD, with the notes' sign rule."""
    q, k = q.double(), k.double()
    tq, tk = q_pos.double(), k_pos.double()
    x = torch.cat([q, k])
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    n = min(n_components, x.shape[1], x.shape[0])
    ev = (s**2 / (s**2).sum())[:n]
    comps, r_q, r_k = [], [], []
    for j in range(n):
        v = vh[j]
        zq, zk = (q - mean) @ v, (k - mean) @ v
        rq, rk = _pearson(zq, tq), _pearson(zk, tk)
        if (rk < 0) if abs(rq) < anchor_tolerance else (rq < 0):
            v, zq, zk, rq, rk = -v, -zq, -zk, -rq, -rk
        if j == 0:
            gap = float(zq.mean() - zk.mean())
            fisher = gap * gap / float(zq.var(correction=0) + zk.var(correction=0))
        comps.append(v)
        r_q.append(rq)
        r_k.append(rk)
    r_q_t, r_k_t = torch.tensor(r_q, dtype=torch.float64), torch.tensor(r_k, dtype=torch.float64)
    return {
        "mean": mean,
        "components": torch.stack(comps),
        "explained_variance": ev,
        "r_q": r_q_t,
        "r_k": r_k_t,
        "p_q": float((ev * r_q_t**2).sum()),
        "p_k": float((ev * r_k_t**2).sum()),
        "fisher_pc0": fisher,
    }


def planar_rotation(q, q_pos, k, k_pos, axis_b: str = "centroid") -> dict:
    """Axis a = Cov(X, t)/‖·‖, axis b ⊥ a, and every per-head metric from explicit projections."""
    q, k = q.double(), k.double()
    tq, tk = q_pos.double(), k_pos.double()
    x, t = torch.cat([q, k]), torch.cat([tq, tk])
    c = ((x - x.mean(0)) * (t - t.mean())[:, None]).mean(0)
    a = c / c.norm()
    gap = q.mean(0) - k.mean(0)
    project = torch.eye(x.shape[1], dtype=torch.float64) - torch.outer(a, a)
    if axis_b == "centroid":
        b = project @ gap
    else:
        sq = torch.cov(q.T, correction=0)
        sk = torch.cov(k.T, correction=0)
        _, vecs = torch.linalg.eigh(project @ (sq + sk + torch.outer(gap, gap)) @ project)
        b = vecs[:, -1]
    b = b - a * (a @ b)
    b = b / b.norm()
    if float(b @ gap) < 0:
        b = -b
    qa, ka, qb, kb = q @ a, k @ a, q @ b, k @ b

    def slope(y, tt):
        tc = tt - tt.mean()
        return float((tc * (y - y.mean())).sum() / (tc * tc).sum())

    xc = x - x.mean(0)
    total = float((xc * xc).sum(1).mean())
    var_a, var_b = float(((xc @ a) ** 2).mean()), float(((xc @ b) ** 2).mean())
    delta = float(qb.var(correction=0) + kb.var(correction=0) + (qb.mean() - kb.mean()) ** 2)
    delta_total = float(torch.cov(q.T, correction=0).trace() + torch.cov(k.T, correction=0).trace() + gap @ gap)
    out = {
        "a": a,
        "b": b,
        "mu_q_a": float(qa.mean()),
        "mu_k_a": float(ka.mean()),
        "mu_q_b": float(qb.mean()),
        "mu_k_b": float(kb.mean()),
        "alpha_q": slope(qa, tq),
        "alpha_k": slope(ka, tk),
        "r_q_a": _pearson(qa, tq),
        "r_k_a": _pearson(ka, tk),
        "position_r": abs(_pearson(x @ a, t)),
        "var_frac_a": var_a / total,
        "var_frac_b": var_b / total,
        "content_var_b": 0.5 * float(qb.var(correction=0) + kb.var(correction=0)),
        "separation_strength": delta / delta_total,
    }
    out["bias_strength"] = out["mu_q_a"] * out["alpha_k"]
    out["plane_var_fraction"] = out["var_frac_a"] + out["var_frac_b"]
    out["intercept_q_a"] = out["mu_q_a"] - out["alpha_q"] * float(tq.mean())
    out["intercept_k_a"] = out["mu_k_a"] - out["alpha_k"] * float(tk.mean())
    return out
