"""Twin of ``torch.ops.spectra.plasticity_pairwise``."""

from __future__ import annotations

import math

import torch

from spectra.ops.outputs import PairwisePlasticity


def pairwise(w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> PairwisePlasticity:
    """``m = wᵀμ``, ``v = wᵀΣw``, ``p = Φ(m/√v)``, ``PP = 4p(1−p)`` per row of ``w (P, d)``, in float64.

    ``mean`` is ``(d,)`` or ``(P, d)``; ``var`` is diagonal ``(d,)`` or a full covariance ``(d, d)``.
    ``PP = 4·Φ(−|z|)·(1 − Φ(−|z|))`` (no cancellation for large ``|z|``); ``v <= 0`` gives
    ``p = 1, 0, ½`` for ``m > 0, < 0, = 0``; NaN in ``m`` or ``v`` gives NaN.

    Example:
        >>> import torch
        >>> from spectra import reference
        >>> out = reference.plasticity.pairwise(torch.tensor([[2.0]]), torch.tensor([1.0]), torch.tensor([1.0]))
        >>> round(out.pp.item(), 6)  # z = 1 (the published tool's expected-value cell)
        0.533935
    """
    w = w.to(torch.float64)
    mean = mean.to(torch.float64)
    var = var.to(torch.float64)
    m = (w * mean).sum(-1)
    v = (w * w * var).sum(-1) if var.dim() == 1 else torch.einsum("pi,ij,pj->p", w, var, w)
    z = m / v.clamp_min(0).sqrt()
    # Φ(z) = ½·erfc(−z/√2): torch.special.ndtr underflows to 0 already at z = −10 in float64.
    tail = 0.5 * torch.special.erfc(z.abs() / math.sqrt(2.0))
    p = 0.5 * torch.special.erfc(-z / math.sqrt(2.0))
    pp = 4 * tail * (1 - tail)
    # v <= 0: the sign of m decides (m = 0: a coin flip).
    degenerate_p = torch.where(m > 0, 1.0, torch.where(m < 0, 0.0, 0.5)).to(torch.float64)
    degenerate = v <= 0
    p = torch.where(degenerate, degenerate_p, p)
    pp = torch.where(degenerate, 4 * degenerate_p * (1 - degenerate_p), pp)
    undefined = m.isnan() | v.isnan()
    p = p.masked_fill(undefined, float("nan"))
    pp = pp.masked_fill(undefined, float("nan"))
    return PairwisePlasticity(m, v, p, pp)
