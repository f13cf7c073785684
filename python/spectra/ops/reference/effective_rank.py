"""Twin of ``spectra.SecondMoments``' effective ranks (the effective rank of K; see docs/concepts.md, 'Key-matrix ranks and ratios'), from the whole
matrix at once in float64."""

from __future__ import annotations

import torch


def effective_rank(x: torch.Tensor, centered: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(spectral_pr, entropy_rank), each (G,), of the vectors x (N, G, D) of every group.

    spectral_pr = (Σλ)² / Σλ² of the eigenvalues of the covariance (``centered``) or of xᵀx / N;
    entropy_rank = exp(−Σ σ̂ ln σ̂) with σ̂ = σ / Σσ, σ the singular values of the (centered) x.

    Example:
        >>> import torch
        >>> pr, er = effective_rank(torch.eye(3).repeat(2, 1)[:, None, :], centered=False)
        >>> [round(v, 6) for v in pr.tolist()], [round(v, 6) for v in er.tolist()]
        ([3.0], [3.0])
    """
    x = x.to(torch.float64).transpose(0, 1)  # (G, N, D)
    if centered:
        x = x - x.mean(1, keepdim=True)
    sigma = torch.linalg.svdvals(x)  # (G, min(N, D))
    lam = sigma**2 / x.shape[1]
    spectral_pr = lam.sum(-1) ** 2 / (lam**2).sum(-1)
    p = sigma / sigma.sum(-1, keepdim=True)
    plogp = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    entropy_rank = torch.exp(-plogp.sum(-1))
    return spectral_pr, entropy_rank
