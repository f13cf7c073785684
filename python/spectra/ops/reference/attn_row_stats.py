"""Twin of ``torch.ops.spectra.attn_row_stats``: the seed's materialise–softmax–sort–cumsum method,
with its bugs fixed (see docs/metrics.md and docs/concepts.md, 'What the original code got wrong'): exact entropy over p > 0 (no epsilon, masked
keys contribute nothing), k_eff compared against θ − 1e-6 and capped at the visible count (never the
argmax-of-False = 1 of the seed code), logits in the compute dtype (float32 by default, not the model's fp16),
the model's own scaling, padding and sliding windows honoured, GQA by ``h // (H // Hkv)``."""

from __future__ import annotations

import math

import torch

from spectra.ops.outputs import AttnRowStats

K_EFF_TOLERANCE = 1e-6


def visible_keys(
    query_len: int,
    key_len: int,
    *,
    causal: bool = True,
    sliding_window: int | None = None,
    query_offset: int | None = None,
    key_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B or 1, 1, Tq, Tk) bool: which keys each query row may see."""
    offset = key_len - query_len if query_offset is None else query_offset
    qi = torch.arange(query_len)[:, None] + offset
    kj = torch.arange(key_len)[None, :]
    visible = torch.ones(query_len, key_len, dtype=torch.bool)
    if causal:
        visible &= kj <= qi
    if sliding_window:
        visible &= (qi - kj < sliding_window) if causal else ((qi - kj).abs() < sliding_window)
    visible = visible[None, None]
    if key_valid is not None:
        visible = visible & key_valid.to(torch.bool)[:, None, None, :].cpu()
    return visible


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
    compute_dtype: torch.dtype | None = None,
) -> AttnRowStats:
    """Materialises the (B, H, Tq, Tk) attention in ``compute_dtype`` and reads the statistics off it.

    With learned sinks ``(H,)`` the softmax runs over the keys plus one more column holding the
    head's sink logit, as gpt-oss's eager attention does; the statistics are of that whole row
    (the sink one outcome), except ``max_attn``/``argmax`` (keys only); ``sink_mass`` adds the
    sink's weight; ``logit_var`` is ``−dH/d ln α`` with only the keys' logits scaled,
    ``Σ_keys p_j s_j (s_j − E_p[s])``. ``visible`` (B or 1, H or 1, Tq, Tk) bool, a custom mask,
    hides the keys it marks False on top of the other rules.

    Example:
        >>> import torch
        >>> from spectra import reference
        >>> logits = torch.tensor([2.0, 1.0, 0.0])  # a hand-computed case: one query, three keys
        >>> q, k = torch.tensor([[[[1.0]]]], dtype=torch.float64), logits.double().view(1, 1, 3, 1)
        >>> s = reference.attn_row_stats(q, k, 1.0, causal=False)
        >>> round(s.entropy.item(), 10), s.k_eff.item()
        (0.8323955818, 2)
    """
    out_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    cd = compute_dtype or out_dtype
    batch, heads, query_len, dim = q.shape
    kv_heads, key_len = k.shape[1], k.shape[2]
    if scaling is None:
        scaling = dim**-0.5
    keys = k.to(cd).repeat_interleave(heads // kv_heads, dim=1)  # query head h reads KV head h // group
    logits = q.to(cd) @ keys.transpose(-1, -2) * scaling
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    custom_mask = visible
    visible = visible_keys(
        query_len,
        key_len,
        causal=causal,
        sliding_window=sliding_window,
        query_offset=query_offset,
        key_valid=key_valid,
    ).to(logits.device)
    if custom_mask is not None:  # a custom mask (chunked, document, per head): hides more keys
        visible = visible & custom_mask.to(device=logits.device, dtype=torch.bool)
    logits = logits.masked_fill(~visible, -math.inf)
    n_visible = visible.expand(batch, heads, query_len, key_len).sum(-1)
    if sinks is None:
        p = torch.softmax(logits, dim=-1)  # rows with no visible key become NaN
        p_sink = torch.zeros_like(p[..., 0])
    else:
        sink_column = sinks.to(device=logits.device, dtype=cd).view(1, heads, 1, 1)
        both = torch.softmax(torch.cat([logits, sink_column.expand(batch, heads, query_len, 1)], -1), dim=-1)
        p, p_sink = both[..., :-1], both[..., -1]
    plogp = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    entropy = -plogp.sum(-1) - torch.where(p_sink > 0, p_sink * torch.log(p_sink), torch.zeros_like(p_sink))
    max_attn, argmax = p.max(dim=-1)
    outcomes = p if sinks is None else torch.cat([p, p_sink.unsqueeze(-1)], -1)
    ordered = outcomes.sort(dim=-1, descending=True).values
    cumulative = ordered.cumsum(dim=-1)
    k_eff = (cumulative < threshold - K_EFF_TOLERANCE).sum(-1) + 1
    n_outcomes = n_visible if sinks is None else n_visible + 1
    k_eff = torch.minimum(k_eff, n_outcomes)
    sink_mass = p[..., 0] + p_sink
    sink_mass_n = (p[..., :n_sink].sum(-1) if n_sink > 0 else torch.zeros_like(sink_mass)) + p_sink
    log_n = torch.log(n_outcomes.to(cd))
    entropy_normalized = torch.where(n_outcomes >= 2, entropy / log_n, torch.full_like(entropy, math.nan))
    finite_logits = torch.where(visible, logits, torch.zeros_like(logits))
    mean_logit = (p * finite_logits).sum(-1, keepdim=True)
    if sinks is None:
        logit_var = (p * (finite_logits - mean_logit) ** 2).sum(-1)
    else:
        mean_logit = mean_logit + (p_sink.unsqueeze(-1) * sink_column)
        logit_var = (p * finite_logits * (finite_logits - mean_logit)).sum(-1)
    empty = n_visible == 0
    nan = torch.full_like(entropy, math.nan)
    entropy, max_attn = torch.where(empty, nan, entropy), torch.where(empty, nan, max_attn)
    sink_mass, sink_mass_n = torch.where(empty, nan, sink_mass), torch.where(empty, nan, sink_mass_n)
    logit_var = torch.where(empty, nan, logit_var)
    argmax = torch.where(empty, torch.full_like(argmax, -1), argmax)
    k_eff = torch.where(empty, torch.zeros_like(k_eff), k_eff)
    return AttnRowStats(
        entropy.to(out_dtype),
        entropy_normalized.to(out_dtype),
        max_attn.to(out_dtype),
        argmax,
        k_eff,
        sink_mass.to(out_dtype),
        sink_mass_n.to(out_dtype),
        n_visible,
        logit_var.to(out_dtype),
    )
