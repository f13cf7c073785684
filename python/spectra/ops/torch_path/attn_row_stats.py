"""``attn_row_stats`` in plain torch: runs wherever torch runs (CUDA without a validated Spectra kernel,
MPS, CPU under ``SPECTRA_BACKEND=torch``).

The native kernel's definitions, computed with torch ops over blocks of query rows so memory stays
O(block · T), never the (B, H, T, T) matrix the float64 reference materialises:

* logits ``scaling · q·k`` (then Gemma2's ``softcap · tanh(s / softcap)``) in float32, float64 for
  float64 inputs — 16-bit inputs are widened first, as the kernel does;
* GQA without repeating K: the block's queries are viewed as ``(B, Hkv, G, rows, D)`` and multiplied
  by the ``(B, Hkv, 1, D, keys)`` keys, so query head ``h`` reads KV head ``h // G``;
* each block reads only the keys some row of it may see (causal prefix, sliding window), like the
  kernel's per-block key range;
* entropy ``H = ln Z − E[s − max]``, ``max_attn = 1 / Z``, ``logit_var`` as a two-pass variance;
* ``k_eff``: the weights sorted in descending order, their running sum in float64 compared with
  ``(θ − 1e-6) · Z`` — the kernel's rule (the smallest count of the largest weights whose mass
  reaches the target), so the two differ only where rounding puts the sum within ~1e-7 of the
  target (the tie band the tests allow);
* a row with no visible key: NaN statistics, argmax −1, k_eff 0; a NaN logit makes its row NaN;
* a custom mask (``visible``, what a model's chunked or document mask says) hides more keys, block
  by block, before anything is computed from the row;
* learned sinks (``sinks``, one logit per head): the keys' weights are taken relative to the row's
  overall max ``M = max(max_j s_j, σ)`` and the sink adds ``e^(σ − M)`` to ``Z`` and its terms to the
  sums, in the kernel's definitions (the sink one outcome of the row; see :func:`spectra.attn_row_stats`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from spectra.ops.outputs import AttnRowStats

K_EFF_TOLERANCE = 1e-6

# Elements of one block's (B, H, rows, keys) logits. The block's temporaries (logits, weights, the
# sorted copy and its indices, float64 running sums) take ~30 bytes per element, so a block peaks
# near 30 × this many bytes: ~250 MB on the CPU, ~4 GB on a GPU (where larger blocks mean fewer,
# better-filled launches).
BLOCK_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 27}
DEFAULT_BLOCK_ELEMENTS = 1 << 23


def block_rows(device: torch.device, batch: int, heads: int, key_len: int) -> int:
    """Query rows per block so one block's logits hold about ``BLOCK_ELEMENTS[device.type]`` values."""
    budget = BLOCK_ELEMENTS.get(device.type, DEFAULT_BLOCK_ELEMENTS)
    return max(1, budget // max(1, batch * heads * key_len))


def _key_range(t0: int, t1: int, key_len: int, offset: int, causal: bool, window: int) -> tuple[int, int]:
    """[lo, hi) of the keys any of query rows t0 .. t1 − 1 may see (before padding)."""
    lo, hi = 0, key_len
    if causal:
        hi = min(key_len, t1 - 1 + offset + 1)
    if window > 0:
        lo = max(0, t0 + offset - window + 1)
        if not causal:
            hi = min(key_len, t1 - 1 + offset + window)
    return lo, max(lo, hi)


def _visible(t0: int, t1: int, lo: int, hi: int, offset: int, causal: bool, window: int, device) -> torch.Tensor:
    """(rows, keys) bool: which of keys lo .. hi − 1 each query row t0 .. t1 − 1 may see."""
    index = torch.arange(t0, t1, device=device)[:, None] + offset
    key = torch.arange(lo, hi, device=device)[None, :]
    visible = torch.ones(t1 - t0, hi - lo, dtype=torch.bool, device=device)
    if causal:
        visible &= key <= index
    if window > 0:
        visible &= (index - key < window) if causal else ((index - key).abs() < window)
    return visible


def _full_precision_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with float32 products in full float32: a user's ``set_float32_matmul_precision("high")``
    (TF32 on GPUs, bf16 passes on some CPUs) would otherwise cut the logits to ~10 mantissa bits."""
    precision = torch.get_float32_matmul_precision()
    if precision == "highest" or a.dtype != torch.float32:
        return a @ b
    torch.set_float32_matmul_precision("highest")
    try:
        return a @ b
    finally:
        torch.set_float32_matmul_precision(precision)


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_j a[..., j] · b[..., j] as a batched matrix-vector product (one pass, no product tensor)."""
    return _full_precision_matmul(a.unsqueeze(-2), b.unsqueeze(-1)).squeeze(-1).squeeze(-1)


def _k_eff(e: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smallest count of the largest weights ``e`` whose float64 sum reaches ``target`` (per row)."""
    ordered = e.sort(dim=-1, descending=True).values
    cumulative = ordered.to(torch.float64).cumsum_(-1)
    del ordered
    # Keys before the first running sum >= target, plus that key: a binary search per row.
    shape = cumulative.shape[:-1]
    flat = cumulative.reshape(-1, cumulative.shape[-1])
    return torch.searchsorted(flat, target.reshape(-1, 1).contiguous()).reshape(shape) + 1


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
    rows_per_block: int | None = None,
) -> AttnRowStats:
    """:func:`spectra.attn_row_stats` in plain torch, on the tensors' own device.

    Same arguments and outputs as the native op (``rows_per_block`` overrides the block size, for
    tests); arguments are not checked here — :func:`spectra.attn_row_stats` checks them before it
    picks an implementation.

    Example:
        >>> import torch
        >>> from spectra.ops import torch_path
        >>> s = torch_path.attn_row_stats(torch.zeros(1, 1, 4, 8), torch.randn(1, 1, 4, 8))
        >>> s.k_eff[0, 0].tolist(), [round(v, 4) for v in s.entropy[0, 0].tolist()]
        ([1, 2, 3, 4], [0.0, 0.6931, 1.0986, 1.3863])
    """
    batch, heads, query_len, dim = q.shape
    kv_heads, key_len = k.shape[1], k.shape[2]
    group = heads // kv_heads
    device = q.device
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    scaling = dim**-0.5 if scaling is None else float(scaling)
    softcap = float(softcap or 0.0)
    window = int(sliding_window or 0)
    offset = key_len - query_len if query_offset is None else int(query_offset)
    shape = (batch, heads, query_len)
    out = AttnRowStats(
        entropy=torch.full(shape, math.nan, dtype=acc, device=device),
        entropy_normalized=torch.full(shape, math.nan, dtype=acc, device=device),
        max_attn=torch.full(shape, math.nan, dtype=acc, device=device),
        argmax=torch.full(shape, -1, dtype=torch.long, device=device),
        k_eff=torch.zeros(shape, dtype=torch.long, device=device),
        sink_mass=torch.full(shape, math.nan, dtype=acc, device=device),
        sink_mass_n=torch.full(shape, math.nan, dtype=acc, device=device),
        n_visible=torch.zeros(shape, dtype=torch.long, device=device),
        logit_var=torch.full(shape, math.nan, dtype=acc, device=device),
    )
    if batch * heads * query_len == 0:
        return out
    keys = k.to(acc)  # widened once (16-bit inputs), read in place otherwise
    valid = None if key_valid is None else key_valid.to(device=device, dtype=torch.bool)
    custom = None if visible is None else visible.to(device=device, dtype=torch.bool)
    # (1, H, 1): the sink terms in float64 as in the kernel (float32 on MPS, which has no float64).
    wide = torch.float32 if device.type == "mps" else torch.float64
    sink = None if sinks is None else sinks.detach().to(device=device, dtype=wide).view(1, heads, 1)
    rule = _Rule(offset, causal, window, group, scaling, softcap, float(threshold), int(n_sink))
    rows = rows_per_block or block_rows(device, batch, heads, key_len)
    for t0 in range(0, query_len, rows):
        t1 = min(query_len, t0 + rows)
        lo, hi = _key_range(t0, t1, key_len, offset, causal, window)
        block_mask = None if custom is None else custom[:, :, t0:t1, lo:hi]
        _block(q, keys, valid, block_mask, sink, out, t0, t1, lo, hi, rule)
    return out


class _Rule(NamedTuple):
    """The call's settings every block shares."""

    offset: int
    causal: bool
    window: int
    group: int
    scaling: float
    softcap: float
    threshold: float
    n_sink: int


def _logits(q, keys, visible, t0, t1, lo, hi, rule: _Rule) -> torch.Tensor:
    """(B, H, rows, keys) logits of query rows t0 .. t1 − 1 against keys lo .. hi − 1: scaled,
    soft-capped, −inf where ``visible`` hides the key."""
    batch, heads, _, dim = q.shape
    qb = q[:, :, t0:t1].to(keys.dtype).reshape(batch, keys.shape[1], rule.group, t1 - t0, dim)
    kb = keys[:, :, lo:hi].unsqueeze(2).transpose(-1, -2)  # (B, Hkv, 1, D, keys)
    s = _full_precision_matmul(qb, kb).reshape(batch, heads, t1 - t0, hi - lo)
    del qb
    s.mul_(rule.scaling)
    if rule.softcap > 0.0:
        s.div_(rule.softcap).tanh_().mul_(rule.softcap)
    return s.masked_fill_(~visible, -math.inf)


def _store(out: AttnRowStats, t0: int, t1: int, good: torch.Tensor, values: dict[str, torch.Tensor]) -> None:
    """Writes each output's rows t0 .. t1 − 1: the value where ``good``, else the op's undefined value
    (NaN; argmax −1, k_eff 0)."""
    for name, value in values.items():
        target = getattr(out, name)
        undefined = -1 if name == "argmax" else 0 if name == "k_eff" else math.nan
        target[:, :, t0:t1] = torch.where(good, value, undefined).to(target.dtype)


def _block(q, keys, valid, custom, sink, out, t0, t1, lo, hi, rule: _Rule) -> None:
    """Fills rows t0 .. t1 − 1 of every output from the logits against keys lo .. hi − 1; ``custom``
    (B or 1, H or 1, rows, keys) is the block's part of a custom mask, ``sink`` (1, H, 1) the heads'
    learned sink logits (or None)."""
    batch, heads = q.shape[:2]
    visible = _visible(t0, t1, lo, hi, rule.offset, rule.causal, rule.window, q.device)[None, None]
    if valid is not None:
        visible = visible & valid[:, None, None, lo:hi]  # (B, 1, rows, keys)
    if custom is not None:
        visible = visible & custom  # (B or 1, H or 1, rows, keys)
    n_visible = visible.sum(-1).expand(batch, heads, t1 - t0)
    out.n_visible[:, :, t0:t1] = n_visible
    if hi <= lo:
        return
    s = _logits(q, keys, visible, t0, t1, lo, hi, rule)
    if sink is not None:
        _rows_with_sink(s, sink, n_visible, out, t0, t1, lo, rule)
        return
    n_sink = rule.n_sink
    m = s.amax(-1, keepdim=True)  # NaN when a NaN logit reached the row
    finite_max = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    d = s.sub_(finite_max)  # s − max, −inf for hidden keys (in place: s is not needed again)
    e = d.exp()
    z = e.sum(-1)
    # Distances clamped at −104 nats as in the kernel (a weight there is already 0 in float32), so
    # hidden keys contribute e · d = 0 · (−104), never 0 · (−inf). Row sums of products are batched
    # dot products: one fused pass, no temporary.
    dc = d.clamp_(min=-104.0)
    mean = _row_dot(e, dc) / z  # E[s − max]
    entropy = (torch.log(z) - mean).clamp_min(0.0)
    argmax = dc.argmax(-1) + lo  # the first maximal key: the max itself is exactly 0 here
    centred = dc.sub_(mean.unsqueeze(-1)).square_()
    logit_var = _row_dot(e, centred) / z  # Var_p(s), two-pass: no cancellation
    del centred, dc, d
    key0 = e[..., 0] / z if lo == 0 else torch.zeros_like(z)
    first = e[..., : max(0, n_sink - lo)].sum(-1) / z if n_sink > lo else torch.zeros_like(z)
    target = (rule.threshold - K_EFF_TOLERANCE) * z.to(torch.float64)
    k_eff = torch.minimum(_k_eff(e, target), n_visible)
    del e
    # Rows the kernel reports as undefined: nothing visible, or a NaN logit (z is NaN then).
    good = (n_visible > 0) & ~torch.isnan(z) & torch.isfinite(m.squeeze(-1))
    n_float = n_visible.to(z.dtype)
    normalized = torch.where(n_visible >= 2, entropy / torch.log(n_float.clamp_min(2.0)), math.nan)
    columns = {"entropy": entropy, "entropy_normalized": normalized, "max_attn": 1.0 / z, "sink_mass": key0}
    columns |= {"sink_mass_n": first, "logit_var": logit_var, "argmax": argmax, "k_eff": k_eff}
    _store(out, t0, t1, good, columns)


def _rows_with_sink(s, sink, n_visible, out, t0, t1, lo, rule: _Rule) -> None:
    """The statistics of a block's logits ``s`` when each head has a learned sink: sums in float64
    relative to ``M = max(max_j s_j, σ)``, the sink one more outcome of every row."""
    n_sink = rule.n_sink
    key_max = s.amax(-1)  # NaN when a NaN logit reached the row
    argmax = s.argmax(-1) + lo
    s = s.to(sink.dtype)
    top = torch.maximum(torch.where(torch.isfinite(key_max), key_max.to(sink.dtype), sink), sink)  # (B, H, rows)
    d = s.sub_(top.unsqueeze(-1))
    e = d.exp()
    d_sink = sink - top
    w = d_sink.exp()
    z = e.sum(-1) + w
    dc = d.clamp_(min=-745.0)  # e is exactly 0 below: 0 · (−745), never 0 · (−inf)
    mean = (_row_dot(e, dc) + w * d_sink) / z
    entropy = (torch.log(z) - mean).clamp_min(0.0)
    centred = dc.sub_(mean.unsqueeze(-1)).square_()
    variance = (_row_dot(e, centred) + w * (d_sink - mean).square()) / z
    del centred, dc, d
    p_sink = w / z
    logit_var = variance - sink * p_sink * (d_sink - mean)
    key0 = e[..., 0] / z if lo == 0 else torch.zeros_like(z)
    first = e[..., : max(0, n_sink - lo)].sum(-1) / z if n_sink > lo else torch.zeros_like(z)
    outcomes = torch.cat([e, w.unsqueeze(-1)], dim=-1)
    k_eff = torch.minimum(_k_eff(outcomes, (rule.threshold - K_EFF_TOLERANCE) * z), n_visible + 1)
    max_attn = e.amax(-1) / z
    del e, outcomes
    good = (n_visible > 0) & ~torch.isnan(z) & torch.isfinite(key_max)
    normalized = entropy / torch.log((n_visible + 1).to(z.dtype))
    columns = {"entropy": entropy, "entropy_normalized": normalized, "max_attn": max_attn, "sink_mass": key0 + p_sink}
    columns |= {"sink_mass_n": first + p_sink, "logit_var": logit_var, "argmax": argmax, "k_eff": k_eff}
    _store(out, t0, t1, good, columns)
