"""``plasticity_pairwise`` in plain torch.

The float64 twin (:func:`spectra.ops.reference.plasticity.pairwise`) already runs on any device in
O(P·d) memory with the kernel's definitions (Φ through ``erfc``, the ``v <= 0`` and NaN rules), so
the torch path is that function on contiguous float64 copies of its inputs.
"""

from __future__ import annotations

import torch

from spectra.ops.outputs import PairwisePlasticity
from spectra.ops.reference.plasticity import pairwise


def plasticity_pairwise(w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> PairwisePlasticity:
    """:func:`spectra.plasticity.pairwise` in plain torch, on ``w``'s own device; outputs ``(P,)`` float64.

    Example:
        >>> import torch
        >>> from spectra.ops import torch_path
        >>> out = torch_path.plasticity_pairwise(torch.tensor([[2.0]]), torch.tensor([1.0]), torch.tensor([1.0]))
        >>> round(out.pp.item(), 6)
        0.533935
    """
    # Contiguous copies: torch's reductions sum in an order that follows the strides, and a strided
    # view must give the same bits as its contiguous copy (as the kernel's do).
    return pairwise(*(t.to(torch.float64).contiguous() for t in (w, mean, var)))
