"""The torch path inside the dispatcher, so ``torch.ops.spectra.*`` and the native hook actions (which
call the ops through the dispatcher from C++) work on every device:

* ``spectra::<op>.torch`` — an overload with the op's schema, implemented by the torch path for every
  device (CompositeExplicitAutograd). The native row-statistics action calls it under
  ``SPECTRA_BACKEND=torch``.
* ``spectra::<op>`` for the CUDA dispatch key — the torch path, wherever this build links no
  validated CUDA kernel for the op (a CUDA tensor would otherwise raise ``NotImplementedError``).

Run once, by ``import spectra.ops``, after :mod:`spectra.ops.backend` has recorded which CUDA kernels
the build links.
"""

from __future__ import annotations

import torch

from spectra.ops.backend import LINKED_CUDA
from spectra.ops.torch_path.attn_row_stats import attn_row_stats
from spectra.ops.torch_path.checks import (
    check_attn_row_stats,
    check_plasticity_pairwise,
    check_variances,
    check_vec_stats,
)
from spectra.ops.torch_path.plasticity_pairwise import plasticity_pairwise
from spectra.ops.torch_path.vec_stats import vec_stats

SCHEMAS = {
    "vec_stats": "vec_stats.torch(Tensor x) -> (Tensor norm, Tensor max_abs, Tensor participation_ratio)",
    "attn_row_stats": (
        "attn_row_stats.torch(Tensor q, Tensor k, float scaling, Tensor? key_valid=None, bool causal=True, "
        "int sliding_window=0, int? query_offset=None, float threshold=0.9, int n_sink=4, float softcap=0.0, "
        "Tensor? sinks=None, Tensor? visible=None) -> (Tensor entropy, Tensor entropy_normalized, Tensor max_attn, Tensor argmax, Tensor k_eff, "
        "Tensor sink_mass, Tensor sink_mass_n, Tensor n_visible, Tensor logit_var)"
    ),
    "plasticity_pairwise": (
        "plasticity_pairwise.torch(Tensor w, Tensor mean, Tensor var) -> (Tensor m, Tensor v, Tensor p, Tensor pp)"
    ),
}


def vec_stats_kernel(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    check_vec_stats(x)
    return tuple(vec_stats(x))


def attn_row_stats_kernel(
    q: torch.Tensor,
    k: torch.Tensor,
    scaling: float,
    key_valid: torch.Tensor | None = None,
    causal: bool = True,
    sliding_window: int = 0,
    query_offset: int | None = None,
    threshold: float = 0.9,
    n_sink: int = 4,
    softcap: float = 0.0,
    sinks: torch.Tensor | None = None,
    visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    check_attn_row_stats(q, k, scaling, key_valid, sliding_window, threshold, n_sink, softcap, sinks, visible)
    out = attn_row_stats(
        q,
        k,
        scaling,
        key_valid=key_valid,
        causal=causal,
        sliding_window=sliding_window,
        query_offset=query_offset,
        threshold=threshold,
        n_sink=n_sink,
        softcap=softcap,
        sinks=sinks,
        visible=visible,
    )
    return tuple(out)


def plasticity_pairwise_kernel(w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, ...]:
    check_plasticity_pairwise(w, mean, var)
    check_variances(var)
    return tuple(plasticity_pairwise(w, mean, var))


KERNELS = {
    "vec_stats": vec_stats_kernel,
    "attn_row_stats": attn_row_stats_kernel,
    "plasticity_pairwise": plasticity_pairwise_kernel,
}

# Kept alive for the life of the process: a torch.library.Library deregisters its kernels when
# it is garbage-collected.
_library = torch.library.Library("spectra", "FRAGMENT")
CUDA_FALLBACKS: tuple[str, ...] = tuple(op for op in KERNELS if op not in LINKED_CUDA)
for _op, _kernel in KERNELS.items():
    _library.define(SCHEMAS[_op])
    _library.impl(f"{_op}.torch", _kernel, "CompositeExplicitAutograd")
    if _op in CUDA_FALLBACKS:
        _library.impl(_op, _kernel, "CUDA")
