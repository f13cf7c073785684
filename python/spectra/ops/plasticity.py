"""Typed front ends of the native attention-plasticity kernels: ``torch.ops.spectra.plasticity_pairwise``
and the ``spectra._core`` functions ``plasticity_head`` and ``key_orientation``.

Names and argument order are the native ones. The checked, documented analyses that use them are
:func:`spectra.plasticity.pairwise` and :func:`spectra.plasticity.analyze_head`. Definitions:
docs/plasticity.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from spectra.ops import _core
from spectra.ops.native import plasticity_pairwise
from spectra.ops.outputs import PairwisePlasticity

__all__ = ["PairwisePlasticity", "key_orientation", "plasticity_head", "plasticity_pairwise"]


def key_orientation(k: torch.Tensor, k_bucket: torch.Tensor) -> torch.Tensor:
    """Per dimension, the sign (+1/−1; 0 counts as +1) of the mean of the per-bucket key means of
    ``k (N, d)`` with buckets ``k_bucket (N,)`` int64."""
    return _core.key_orientation(k, k_bucket)


def plasticity_head(
    q: torch.Tensor,
    q_pos: torch.Tensor,
    q_bucket: torch.Tensor,
    k: torch.Tensor,
    k_pos: torch.Tensor,
    k_bucket: torch.Tensor,
    k_example: torch.Tensor,
    *,
    mode: str,
    pairs_per_cell: int,
    seed: int,
    lookback: int,
    bucket_size: int,
    grid_width: float,
    grid_midpoint: bool,
    min_queries: int,
    full_covariance: bool,
    noise_ks_dims: Sequence[int],
    sign: torch.Tensor | None = None,
    pairs: tuple | None = None,
) -> dict[str, Any]:
    """One head's query model, cells and key pairs: ``{"model": ..., "cells": ..., "pairs": ...}`` of
    tensors (the unchecked kernel behind :func:`spectra.plasticity.analyze_head`, which documents every
    argument)."""
    return _core.plasticity_head(
        q,
        q_pos,
        q_bucket,
        k,
        k_pos,
        k_bucket,
        k_example,
        mode=mode,
        pairs_per_cell=pairs_per_cell,
        seed=seed,
        lookback=lookback,
        bucket_size=bucket_size,
        grid_width=grid_width,
        grid_midpoint=grid_midpoint,
        min_queries=min_queries,
        full_covariance=full_covariance,
        noise_ks_dims=noise_ks_dims,
        sign=sign,
        pairs=pairs,
    )
