"""``vec_stats`` in plain torch: the native op's definitions, summed in float64 as the kernel does
(x⁴ of a float16 activation in the hundreds overflows float32 over a long head dimension)."""

from __future__ import annotations

import torch

from spectra.ops.outputs import VecStats


def vec_stats(x: torch.Tensor) -> VecStats:
    """:func:`spectra.vec_stats` in plain torch, on ``x``'s own device.

    Outputs are float64 for float64 input and float32 otherwise; a row with a NaN is NaN in all three.

    Example:
        >>> import torch
        >>> from spectra.ops import torch_path
        >>> torch_path.vec_stats(torch.tensor([[3.0, 4.0]])).norm.tolist()
        [5.0]
    """
    out = torch.float64 if x.dtype == torch.float64 else torch.float32
    # A contiguous copy: torch's reductions sum in an order that follows the strides, and a strided
    # view (a (B, H, T, D) view of a projection) must give the same bits as its contiguous copy.
    x64 = x.to(torch.float64).contiguous()
    sq = x64 * x64
    sum_sq = sq.sum(-1)
    # 0/0 -> NaN for the zero vector, by definition; NaN inputs propagate through the sums, and
    # amax propagates them too, so a row with a NaN is NaN in all three outputs.
    pr = sum_sq * sum_sq / (sq * sq).sum(-1)
    return VecStats(sum_sq.sqrt().to(out), x64.abs().amax(-1).to(out), pr.to(out))
