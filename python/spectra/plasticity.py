"""Attention plasticity (spec qk-geometry-plasticity §5): how far a random future query can still
flip a head's preference between two keys it has already seen.

For a key difference ``w = k1 − k2`` and a query ``q ~ N(μ, Σ)``, the logit gap ``wᵀq`` is Gaussian
with mean ``m = wᵀμ`` and variance ``v = wᵀΣw``, so ``p = Pr(q·k1 > q·k2) = Φ(m/√v)`` and the pairwise
plasticity is ``PP = 4·p·(1−p)`` (1 for a coin flip, 0 for a settled preference).
"""

from __future__ import annotations

import torch

from spectra._ops import PairwisePlasticity

__all__ = ["PairwisePlasticity", "pairwise"]


def pairwise(w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> PairwisePlasticity:
    """Logit-gap moments ``m``, ``v``, ``p = Φ(m/√v)`` and ``PP = 4p(1−p)`` for each key difference.

    Args:
        w: ``(P, d)`` key differences ``k1 − k2``, one pair per row (any strides).
        mean: the query mean, ``(d,)`` shared by every pair or ``(P, d)`` one per pair.
        var: the query's diagonal variances ``(d,)``, or a full covariance ``(d, d)`` (then
            ``v = wᵀΣw``; only Σ's symmetric part matters). Variances must be ``>= 0``.

    Returns:
        :class:`PairwisePlasticity` of four ``(P,)`` float64 tensors ``m, v, p, pp``.

    Inputs may be float16, bfloat16, float32 or float64 (mixed dtypes are promoted); sums run in
    float64. ``PP`` is computed as ``4·Φ(−|z|)·(1 − Φ(−|z|))`` with ``Φ(−|z|) = ½·erfc(|z|/√2)``, so it
    stays accurate (tiny but positive) for large ``|z|``, where ``4p(1−p)`` would round to 0. When
    ``v <= 0`` (identical keys, or a zero-variance direction) ``p`` is 1, 0 or ½ for ``m`` > 0, < 0 or
    = 0, i.e. ``PP`` is 0, 0 or 1 (spec §5.1); NaN inputs give NaN. CPU only. The readable
    definition is :func:`spectra.reference.plasticity.pairwise`.

    Example:
        >>> import torch
        >>> from spectra import plasticity
        >>> # The reference tool's expected-value cell: μ(τ) = 1, keys ±1 (w = 2), σ² = 1, so z = 1.
        >>> out = plasticity.pairwise(torch.tensor([[2.0]]), torch.tensor([1.0]), torch.tensor([1.0]))
        >>> out.m.item(), out.v.item(), round(out.p.item(), 6), round(out.pp.item(), 6)
        (2.0, 4.0, 0.841345, 0.533935)
        >>> # Identical keys (w = 0): v = m = 0, so p = 1/2 and PP = 1.
        >>> plasticity.pairwise(torch.zeros(1, 3), torch.ones(3), torch.eye(3)).pp.tolist()
        [1.0]
    """
    return PairwisePlasticity(*torch.ops.spectra.plasticity_pairwise.default(w, mean, var))
