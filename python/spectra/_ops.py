"""Python front-ends of the ``torch.ops.spectra`` ops, and their fake kernels for torch.compile.

Each op is one native call; the readable definition of what it computes is its twin in
:mod:`spectra.reference`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class VecStats(NamedTuple):
    """Per-vector geometry over the last dimension; shapes are the input's leading dims."""

    norm: torch.Tensor
    max_abs: torch.Tensor
    participation_ratio: torch.Tensor


def vec_stats(x: torch.Tensor) -> VecStats:
    """L2 norm, max |x_d| and participation ratio over the last dimension of ``x (..., D)``.

    ``participation_ratio = (Σx²)² / Σx⁴`` lies in [1, D]: D for equal magnitudes, 1 for a one-hot
    vector, NaN for the zero vector. Outputs are float64 for float64 input and float32 otherwise
    (float16/bfloat16 inputs are accumulated in float64, so Σx⁴ cannot overflow). A NaN in a row
    makes that row's three outputs NaN. Strided (e.g. transposed) inputs are read in place.

    Example:
        >>> import torch, spectra
        >>> s = spectra.vec_stats(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
        >>> s.norm.tolist(), s.max_abs.tolist()
        ([5.0, 1.0], [4.0, 1.0])
        >>> round(s.participation_ratio[0].item(), 6)  # 625/337
        1.854599
    """
    return VecStats(*torch.ops.spectra.vec_stats.default(x))


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.register_fake("spectra::vec_stats")
def _vec_stats_fake(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch._check(x.dim() >= 1, lambda: "vec_stats: x must have shape (..., D)")
    out = x.new_empty(x.shape[:-1], dtype=_stats_dtype(x.dtype))
    return out, torch.empty_like(out), torch.empty_like(out)
