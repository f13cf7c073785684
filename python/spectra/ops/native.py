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


class AttnRowStats(NamedTuple):
    """Per-(batch, query head, query) statistics of an attention row over the keys it may see."""

    entropy: torch.Tensor  # nats
    entropy_normalized: torch.Tensor  # entropy / ln(n_visible); NaN when n_visible < 2
    max_attn: torch.Tensor
    argmax: torch.Tensor  # int64, first key of maximal weight; -1 when no key is visible
    k_eff: torch.Tensor  # int64, smallest count of keys whose mass reaches threshold - 1e-6
    sink_mass: torch.Tensor  # weight on key 0
    sink_mass_n: torch.Tensor  # weight on keys 0 .. n_sink - 1
    n_visible: torch.Tensor  # int64
    logit_var: (
        torch.Tensor
    )  # Var_p(logits) = -dH/d ln(alpha) when every logit is scaled by alpha (see docs/interventions.md, 'Gain')


def attn_row_stats(
    q: torch.Tensor,
    k: torch.Tensor,
    scaling: float | None = None,
    *,
    key_valid: torch.Tensor | None = None,
    causal: bool = True,
    sliding_window: int | None = None,
    query_offset: int | None = None,
    threshold: float = 0.9,
    n_sink: int = 4,
    softcap: float | None = None,
) -> AttnRowStats:
    """Entropy, max weight, argmax, k_eff(θ) and sink mass of every attention row, without the T×T matrix.

    ``q`` is ``(B, H, Tq, D)`` and ``k`` is ``(B, Hkv, Tk, D)`` (any strides, float16/bfloat16/
    float32/float64); query head h reads KV head ``h // (H // Hkv)`` — K is never repeated. Logits
    ``scaling · q·k`` (default ``D**-0.5``; Gemma2's ``softcap`` optional) are computed in float32
    (float64 for float64 inputs). Query row t sits at key index ``t + query_offset`` (default
    ``Tk − Tq``); ``causal`` hides later keys, ``sliding_window`` keys ``>= window`` behind, and
    ``key_valid (B, Tk)`` padding keys. ``logit_var`` is the variance of the (scaled, capped) logits
    under the row's attention, so ``dH/d ln α = −logit_var`` when every logit is scaled by α
    (the closed form of docs/interventions.md, 'Gain'). Memory is O(T) per thread. The readable definition is
    :func:`spectra.reference.attn_row_stats`.

    Example:
        >>> import torch, spectra
        >>> q = torch.zeros(1, 1, 4, 8)  # all logits equal: uniform causal rows
        >>> s = spectra.attn_row_stats(q, torch.randn(1, 1, 4, 8))
        >>> [round(v, 4) for v in s.entropy[0, 0].tolist()], s.k_eff[0, 0].tolist()
        ([0.0, 0.6931, 1.0986, 1.3863], [1, 2, 3, 4])
    """
    if scaling is None:
        scaling = q.shape[-1] ** -0.5
    return AttnRowStats(
        *torch.ops.spectra.attn_row_stats.default(
            q,
            k,
            float(scaling),
            key_valid,
            causal,
            int(sliding_window or 0),
            query_offset,
            float(threshold),
            int(n_sink),
            float(softcap or 0.0),
        )
    )


@torch.library.register_fake("spectra::attn_row_stats")
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


class PairwisePlasticity(NamedTuple):
    """Per-pair logit-gap moments and plasticity of key differences under a Gaussian query; all (P,) float64."""

    m: torch.Tensor  # wᵀμ, the mean of the logit gap q·k1 − q·k2
    v: torch.Tensor  # wᵀΣw, its variance
    p: torch.Tensor  # Pr(q·k1 > q·k2) = Φ(m/√v)
    pp: torch.Tensor  # 4·p·(1−p), in [0, 1]


@torch.library.register_fake("spectra::plasticity_pairwise")
def _plasticity_pairwise_fake(w, mean, var):
    torch._check(w.dim() == 2, lambda: "plasticity_pairwise: w must have shape (P, d)")
    out = w.new_empty(w.shape[:1], dtype=torch.float64)
    return out, torch.empty_like(out), torch.empty_like(out), torch.empty_like(out)
