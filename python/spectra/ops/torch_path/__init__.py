"""The torch path: every native tensor op in plain torch, on any device.

Where this build links no validated kernel for a device (CUDA today, MPS, ...) or under
``SPECTRA_BACKEND=torch``, :func:`spectra.attn_row_stats`, :func:`spectra.vec_stats` and
:func:`spectra.plasticity.pairwise` run these instead. They compute the native kernels'
definitions in the kernels' precision (float32 logits for 16-bit inputs, float64 sums where the
kernels sum in float64) in O(block · T) memory; tests hold them to the same float64 truth and the
same 2× error rule as the kernels. :mod:`spectra.ops.torch_path.registration` also makes them the
``torch.ops.spectra`` ops' CUDA implementation wherever no CUDA kernel is linked.

Example:
    >>> import torch
    >>> from spectra.ops import torch_path
    >>> torch_path.vec_stats(torch.ones(2, 4)).participation_ratio.tolist()
    [4.0, 4.0]
"""

from spectra.ops.torch_path.attn_row_stats import attn_row_stats
from spectra.ops.torch_path.plasticity_pairwise import plasticity_pairwise
from spectra.ops.torch_path.vec_stats import vec_stats

__all__ = ["attn_row_stats", "plasticity_pairwise", "vec_stats"]
