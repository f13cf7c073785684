"""``plasticity_pairwise`` in plain torch: ``m = wᵀμ``, ``v = wᵀΣw``, ``p = Φ(m/√v)`` and
``PP = 4·Φ(−|z|)·(1 − Φ(−|z|))`` in float64, with the kernel's ``v <= 0`` and NaN rules.

Φ is ``½·erfc(−z/√2)``, as in the kernel: ``torch.special.ndtr`` underflows to 0 already at
z = −10 in float64 (the true tail is 7.6e-24), which would zero PP for every confident pair.
"""

from __future__ import annotations

import math

import torch

from spectra.ops.outputs import PairwisePlasticity


def normal_cdf(z: torch.Tensor) -> torch.Tensor:
    """Φ(z) = ½·erfc(−z/√2), full relative precision in the lower tail down to float64's underflow."""
    return 0.5 * torch.special.erfc(-z / math.sqrt(2.0))


def plasticity_pairwise(w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> PairwisePlasticity:
    """:func:`spectra.plasticity.pairwise` in plain torch, on ``w``'s own device; outputs ``(P,)`` float64.

    Example:
        >>> import torch
        >>> from spectra.ops import torch_path
        >>> out = torch_path.plasticity_pairwise(torch.tensor([[2.0]]), torch.tensor([1.0]), torch.tensor([1.0]))
        >>> round(out.pp.item(), 6)
        0.533935
    """
    # Contiguous float64 copies: torch's reductions sum in an order that follows the strides, and a
    # strided view must give the same bits as its contiguous copy (as the kernel's do).
    w, mean, var = (t.to(torch.float64).contiguous() for t in (w, mean, var))
    m = (w * mean).sum(-1)
    v = (w * w * var).sum(-1) if var.dim() == 1 else ((w @ var) * w).sum(-1)
    z = m / v.clamp_min(0).sqrt()
    tail = normal_cdf(-z.abs())
    p = normal_cdf(z)
    pp = 4 * tail * (1 - tail)
    # v <= 0: the sign of m decides (m = 0: a coin flip).
    sign_p = torch.where(m > 0, 1.0, torch.where(m < 0, 0.0, 0.5)).to(torch.float64)
    degenerate = v <= 0
    p = torch.where(degenerate, sign_p, p)
    pp = torch.where(degenerate, 4 * sign_p * (1 - sign_p), pp)
    undefined = m.isnan() | v.isnan()
    return PairwisePlasticity(m, v, p.masked_fill(undefined, math.nan), pp.masked_fill(undefined, math.nan))
