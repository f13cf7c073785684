"""Twin of ``torch.ops.spectra.vec_stats``."""

from __future__ import annotations

import torch

from spectra.ops.outputs import VecStats


def vec_stats(x: torch.Tensor, *, compute_dtype: torch.dtype | None = None) -> VecStats:
    """Norm, max |x_d| and participation ratio over the last dim, in ``compute_dtype``.

    ``compute_dtype`` defaults to the op's output dtype (float64 for float64 input, else float32);
    tests pass float64 to get the truth the kernel is measured against.

    Example:
        >>> import torch
        >>> from spectra import reference
        >>> round(reference.vec_stats(torch.tensor([3.0, 4.0])).participation_ratio.item(), 6)  # 625/337
        1.854599
    """
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xc = x.to(compute_dtype or out_dtype)
    sq = xc * xc
    sum_sq = sq.sum(-1)
    # 0/0 -> NaN for the zero vector, by definition; no epsilon. A NaN input propagates through
    # the sums and through amax, so a row with a NaN is NaN in all three outputs.
    pr = sum_sq * sum_sq / (sq * sq).sum(-1)
    max_abs = xc.abs().amax(-1)
    return VecStats(sum_sq.sqrt().to(out_dtype), max_abs.to(out_dtype), pr.to(out_dtype))
