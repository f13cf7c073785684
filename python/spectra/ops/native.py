"""Python front ends of the ``torch.ops.spectra`` ops, (their fake kernels for torch.compile are in :mod:`spectra.ops.fakes`).

Each front end checks its arguments (the native checks, word for word: :mod:`spectra.ops.torch_path.checks`)
and runs the implementation :func:`spectra.ops.backend.resolve` picks for the tensors' device: the
native kernel (one ``torch.ops.spectra`` call) or the torch path. The readable definition of what
each computes is its float64 twin in :mod:`spectra.ops.reference`.
"""

from __future__ import annotations

import torch

from spectra.ops.backend import resolve
from spectra.ops.outputs import AttnRowStats, PairwisePlasticity, VecStats
from spectra.ops.torch_path.checks import check_attn_row_stats, check_plasticity_pairwise, check_vec_stats

__all__ = ["AttnRowStats", "PairwisePlasticity", "VecStats", "attn_row_stats", "plasticity_pairwise", "vec_stats"]


@torch.compiler.assume_constant_result
def _overload(op: str, device_type: str) -> str:
    # The torch path runs through its own dispatcher entry (spectra::<op>.torch, with the op's
    # schema and fake kernel), so a front end is one opaque op either way and torch.compile traces
    # it with fullgraph=True; the choice itself is made once, at trace time.
    return "torch" if resolve(op, device_type) == "torch" else "default"


def vec_stats(x: torch.Tensor) -> VecStats:
    """L2 norm, max |x_d| and participation ratio over the last dimension of ``x (..., D)``.

    ``participation_ratio = (Σx²)² / Σx⁴`` lies in [1, D]: D for equal magnitudes, 1 for a one-hot
    vector, NaN for the zero vector. Outputs are float64 for float64 input and float32 otherwise
    (float16/bfloat16 inputs are accumulated in float64, so Σx⁴ cannot overflow). A NaN in a row
    makes that row's three outputs NaN. Strided (e.g. transposed) inputs are read in place. Runs on
    any device (see :mod:`spectra.ops.backend`).

    Example:
        >>> import torch, spectra
        >>> s = spectra.vec_stats(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
        >>> s.norm.tolist(), s.max_abs.tolist()
        ([5.0, 1.0], [4.0, 1.0])
        >>> round(s.participation_ratio[0].item(), 6)  # 625/337
        1.854599
    """
    check_vec_stats(x)
    op = getattr(torch.ops.spectra.vec_stats, _overload("vec_stats", x.device.type))
    return VecStats(*op(x))


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
    sinks: torch.Tensor | None = None,
    visible: torch.Tensor | None = None,
) -> AttnRowStats:
    """Entropy, max weight, argmax, k_eff(θ) and sink mass of every attention row, without the T×T matrix.

    ``q`` is ``(B, H, Tq, D)`` and ``k`` is ``(B, Hkv, Tk, D)`` (any strides, float16/bfloat16/
    float32/float64); query head h reads KV head ``h // (H // Hkv)`` — K is never repeated. Logits
    ``scaling · q·k`` (default ``D**-0.5``; Gemma2's ``softcap`` optional) are computed in float32
    (float64 for float64 inputs). Query row t sits at key index ``t + query_offset`` (default
    ``Tk − Tq``); ``causal`` hides later keys, ``sliding_window`` keys ``>= window`` behind, and
    ``key_valid (B, Tk)`` padding keys. ``logit_var`` is the variance of the (scaled, capped) logits
    under the row's attention, so ``dH/d ln α = −logit_var`` when every logit is scaled by α
    (the closed form of docs/interventions.md, 'Gain'). The native kernel needs O(T) memory per
    thread; the torch path (any device without a validated kernel, or ``SPECTRA_BACKEND=torch``)
    O(block · T), never the T×T matrix — see :mod:`spectra.ops.backend`. The readable definition is
    :func:`spectra.reference.attn_row_stats`.

    ``sinks (H,)``, learned attention-sink logits (gpt-oss's ``s_aux``), adds one more outcome to
    every row's softmax with that logit, which takes mass from the keys: entropy, k_eff and
    ``logit_var`` are then of the whole distribution (the sink counted as one outcome), ``sink_mass``
    and ``sink_mass_n`` include the sink's mass, ``max_attn`` and ``argmax`` stay on the keys, and
    ``entropy_normalized`` divides by ``ln(n_visible + 1)`` (docs/metrics.md, "Learned attention
    sinks"). ``visible (B or 1, H or 1, Tq, Tk)`` bool, a custom mask (chunked attention, document
    masks, per-head masks: what a model's 4-D mask says), hides every key it marks False on top of
    the other rules; ``n_visible`` counts the keys left. The CUDA kernel takes neither: such a call
    runs the torch path there.

    Example:
        >>> import torch, spectra
        >>> q = torch.zeros(1, 1, 4, 8)  # all logits equal: uniform causal rows
        >>> s = spectra.attn_row_stats(q, torch.randn(1, 1, 4, 8))
        >>> [round(v, 4) for v in s.entropy[0, 0].tolist()], s.k_eff[0, 0].tolist()
        ([0.0, 0.6931, 1.0986, 1.3863], [1, 2, 3, 4])
        >>> sink = torch.zeros(1)  # a sink logit equal to the keys': one more equal outcome
        >>> s = spectra.attn_row_stats(q, torch.randn(1, 1, 4, 8), sinks=sink)
        >>> [round(v, 4) for v in s.entropy[0, 0].tolist()], [round(v, 4) for v in s.sink_mass[0, 0].tolist()]
        ([0.6931, 1.0986, 1.3863, 1.6094], [1.0, 0.6667, 0.5, 0.4])
    """
    if scaling is None:
        scaling = q.shape[-1] ** -0.5
    window, cap = int(sliding_window or 0), float(softcap or 0.0)
    check_attn_row_stats(q, k, float(scaling), key_valid, window, float(threshold), int(n_sink), cap, sinks, visible)
    implementation = _overload("attn_row_stats", q.device.type)
    if (sinks is not None or visible is not None) and q.device.type != "cpu":
        implementation = "torch"  # only the CPU kernel takes learned sinks and custom masks
    op = getattr(torch.ops.spectra.attn_row_stats, implementation)
    return AttnRowStats(
        *op(
            q,
            k,
            float(scaling),
            key_valid,
            causal,
            window,
            query_offset,
            float(threshold),
            int(n_sink),
            cap,
            sinks,
            visible,
        )
    )


def plasticity_pairwise(w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> PairwisePlasticity:
    """Logit-gap moments ``m = wᵀμ``, ``v = wᵀΣw``, ``p = Φ(m/√v)`` and ``PP = 4p(1−p)`` of each key
    difference ``w (P, d)`` under a Gaussian query of mean ``(d,)`` or ``(P, d)`` and diagonal ``(d,)``
    or full ``(d, d)`` covariance; four ``(P,)`` float64 tensors on ``w``'s device (see
    :func:`spectra.plasticity.pairwise`, which also accepts other layouts).

    Example:
        >>> import torch
        >>> from spectra.ops.native import plasticity_pairwise
        >>> plasticity_pairwise(torch.tensor([[1.0, 0.0]]), torch.zeros(2), torch.ones(2)).pp.tolist()
        [1.0]
    """
    check_plasticity_pairwise(w, mean, var)
    op = getattr(torch.ops.spectra.plasticity_pairwise, _overload("plasticity_pairwise", w.device.type))
    return PairwisePlasticity(*op(w, mean, var))
