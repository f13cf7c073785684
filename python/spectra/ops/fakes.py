"""Fake (meta) kernels of the ``torch.ops.spectra`` ops for torch.compile and FakeTensor tracing: output
shapes and dtypes only. Each serves the op and its ``.torch`` overload (the torch path inside the
dispatcher, :mod:`spectra.ops.torch_path.registration`), which share one schema."""

from __future__ import annotations

import torch

import spectra.ops.torch_path.registration  # noqa: F401  (defines the .torch overloads first)


def _register_fake(op: str):
    def register(fn):
        torch.library.register_fake(f"spectra::{op}")(fn)
        torch.library.register_fake(f"spectra::{op}.torch")(fn)
        return fn

    return register


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@_register_fake("vec_stats")
def _vec_stats_fake(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch._check(x.dim() >= 1, lambda: "vec_stats: x must have shape (..., D)")
    out = x.new_empty(x.shape[:-1], dtype=_stats_dtype(x.dtype))
    return out, torch.empty_like(out), torch.empty_like(out)


@_register_fake("attn_row_stats")
def _attn_row_stats_fake(
    q,
    k,
    scaling,
    key_valid=None,
    causal=True,
    sliding_window=0,
    query_offset=None,
    threshold=0.9,
    n_sink=4,
    softcap=0.0,
    sinks=None,
    visible=None,
):
    torch._check(q.dim() == 4 and k.dim() == 4, lambda: "attn_row_stats: q and k must be 4-D")
    shape = q.shape[:3]
    real = q.new_empty(shape, dtype=_stats_dtype(q.dtype))
    index = q.new_empty(shape, dtype=torch.long)
    return (
        real,
        torch.empty_like(real),
        torch.empty_like(real),
        index,
        torch.empty_like(index),
        torch.empty_like(real),
        torch.empty_like(real),
        torch.empty_like(index),
        torch.empty_like(real),
    )


@_register_fake("plasticity_pairwise")
def _plasticity_pairwise_fake(w, mean, var):
    torch._check(w.dim() == 2, lambda: "plasticity_pairwise: w must have shape (P, d)")
    out = w.new_empty(w.shape[:1], dtype=torch.float64)
    return out, torch.empty_like(out), torch.empty_like(out), torch.empty_like(out)
