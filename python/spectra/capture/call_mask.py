"""Which keys each query may see, read from the mask the model passes to its attention call.

Spectra's metrics never build their mask from a config value or an adapter's guess: a window that
sits only in the config, or one set on every layer while the model applies it to some, would give
silently wrong numbers. The attention call's own ``attention_mask`` is the source of truth:

* ``None``: no mask tensor; the backend attends causally when the module is causal (sdpa's
  ``is_causal``, which transformers uses only without padding and without a window that bites),
  else to every key.
* a 4-D tensor ``(B or 1, 1 or H, T_q, T_k)``, boolean (True: visible) or additive float (0:
  visible, the dtype's minimum or ``-inf``: hidden). Spectra reads its structure at the real
  queries: causal or not, and the sliding window (the largest visible query-key distance + 1), and
  checks that the tensor equals the mask those settings and the padding give, entry by entry.
* any other 4-D visibility (chunked attention, a document mask, different masks per head) is
  honoured exactly: :class:`MaskShape` then carries the mask itself as ``visible`` (B or 1, H or
  1, T_q, T_k) bool, which the metrics apply key by key (and ``causal``, where the mask never shows
  a later key, so the kernels still skip the upper triangle).
* an additive bias on visible keys (ALiBi as a mask) or a mask of another rank is refused with
  :class:`CustomMaskError` naming the layer, rather than measured with the wrong logits.

The structure of one mask tensor is read once: transformers builds one mask per layer type and
passes the same tensor to every layer of that type, so later layers reuse the result.

Example:
    >>> import torch
    >>> from spectra.capture.call_mask import mask_shape
    >>> i = torch.arange(6)
    >>> window = (i[:, None] >= i[None]) & (i[:, None] - i[None] < 3)  # causal, sliding window 3
    >>> mask_shape(window[None, None], None, causal=True, layer=0)
    MaskShape(causal=True, sliding_window=3, visible=None)
    >>> mask_shape(None, None, causal=True, layer=0)
    MaskShape(causal=True, sliding_window=None, visible=None)
    >>> chunked = (i[:, None] >= i[None]) & (i[:, None] // 4 == i[None] // 4)  # causal chunks of 4
    >>> shape = mask_shape(chunked[None, None], None, causal=True, layer=0)
    >>> shape.causal, shape.sliding_window, shape.visible.shape
    (True, None, torch.Size([1, 1, 6, 6]))
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch

__all__ = ["CustomMaskError", "MaskShape", "mask_shape"]


class CustomMaskError(ValueError):
    """The attention mask a layer received is not causal/bidirectional + sliding window + padding."""


class MaskShape(NamedTuple):
    """The keys a query sees: earlier ones only (``causal``), at most ``sliding_window`` back, and,
    for a mask of another structure, exactly those ``visible`` marks (B or 1, H or 1, T_q, T_k)."""

    causal: bool
    sliding_window: int | None
    visible: torch.Tensor | None = None


# id(mask tensor) -> (weak reference to it, id of the key_valid it was read with, its shape). A
# custom mask's shape is kept without its ``visible`` tensor (which may be the mask itself and would
# keep it alive): that is taken from the mask again on each call, a view or one comparison.
_cache: dict[int, tuple[weakref.ref, int, MaskShape, bool]] = {}


def _visible(mask: torch.Tensor, layer: int) -> torch.Tensor:
    """(B', H', T_q, T_k) bool: which keys the tensor lets each query see."""
    if mask.dim() != 4:
        raise CustomMaskError(
            f"layer {layer}: the attention call received a {mask.dim()}-D mask of shape {tuple(mask.shape)}; "
            "Spectra reads 4-D (batch, heads, queries, keys) masks"
        )
    if mask.dtype == torch.bool:
        visible = mask
    else:
        floor = torch.finfo(mask.dtype).min / 2 if mask.dtype.is_floating_point else 0
        visible = mask > floor
        if bool((mask.masked_select(visible) != 0).any()):
            raise CustomMaskError(
                f"layer {layer}: the attention mask adds a bias to visible logits (e.g. ALiBi), which Spectra's "
                "metrics do not reproduce; the metrics of this model are not available"
            )
    return visible


#: Mask entries per block of query rows the reader holds at once: a few of these booleans, never T×T
#: of them (at T = 8192 a padded batch of 8 would otherwise make several 512 MiB temporaries).
BLOCK_ELEMENTS = 1 << 24


def _band(lo: int, hi: int, n_k: int, offset: int, causal: bool, window: int | None, device) -> torch.Tensor:
    """(hi − lo, T_k) bool: the keys queries ``lo..hi`` (at positions ``i + offset``) may see, padding aside."""
    if not causal:
        return torch.ones(hi - lo, n_k, dtype=torch.bool, device=device)
    q = torch.arange(lo, hi, device=device)[:, None] + offset
    k = torch.arange(n_k, device=device)[None]
    band = k <= q
    return band if window is None else band & (q - k < window)


def _read(mask: torch.Tensor, key_valid: torch.Tensor | None, causal: bool, layer: int) -> MaskShape:
    mask4 = _visible(mask, layer)
    per_head = mask4.shape[1] != 1 and not bool((mask4 == mask4[:, :1]).all())
    visible_all = mask4.any(1) if per_head else mask4[:, 0]  # the union over heads for pass 1
    n_q, n_k = visible_all.shape[-2:]
    offset = n_k - n_q  # queries are the last n_q positions (0 without a KV cache)
    device = visible_all.device
    if key_valid is None:
        key_valid = torch.ones(visible_all.shape[0], n_k, dtype=torch.bool, device=device)
    key_valid = key_valid.to(device=device, dtype=torch.bool)
    batch = max(visible_all.shape[0], key_valid.shape[0])
    rows = max(1, BLOCK_ELEMENTS // (batch * n_k))
    blocks = [(lo, min(n_q, lo + rows)) for lo in range(0, n_q, rows)]
    first_real = key_valid.to(torch.uint8).argmax(-1)[:, None]  # each sample's first real key

    # Pass 1: causal or not, the widest visible distance, and the farthest a real key lies back.
    any_seen, is_causal, widest, farthest = False, True, 0, 0
    for lo, hi in blocks:
        visible, real_q = visible_all[:, lo:hi], key_valid[:, offset + lo : offset + hi]
        seen = visible & real_q[:, :, None] & key_valid[:, None, :]  # visible real keys of real queries
        if not bool(seen.any()):
            continue
        any_seen = True
        is_causal = is_causal and not bool((seen & ~_band(lo, hi, n_k, offset, True, None, device)).any())
        positions = torch.arange(lo, hi, device=device) + offset
        first_seen = seen.to(torch.uint8).argmax(-1)  # leftmost visible key of each query
        widest = max(widest, int((positions - first_seen).masked_select(seen.any(-1)).max()) + 1)
        reach = (positions - first_real).masked_select(real_q)
        if reach.numel():
            farthest = max(farthest, int(reach.max()) + 1)
    if not any_seen:
        return MaskShape(causal, None, mask4 if per_head else None)
    if per_head:  # different masks per head: honoured as given
        return MaskShape(is_causal, None, mask4)
    # A window shows only where some real query had a real key at its distance or farther.
    window = widest if is_causal and widest < farthest else None

    # Pass 2: the tensor must be exactly the mask these settings and the padding give.
    for lo, hi in blocks:
        visible, real_q = visible_all[:, lo:hi], key_valid[:, offset + lo : offset + hi]
        expected = key_valid[:, None, :] & _band(lo, hi, n_k, offset, is_causal, window, device)
        if bool(((visible != expected) & real_q[:, :, None]).any()):
            # Chunked, document or other masks: honoured key by key (causal still bounds the rows).
            return MaskShape(is_causal, None, mask4)
    return MaskShape(is_causal, window)


def mask_shape(
    attention_mask: torch.Tensor | None, key_valid: torch.Tensor | None, *, causal: bool, layer: int
) -> MaskShape:
    """The :class:`MaskShape` of the mask an attention call received.

    ``attention_mask``: what the model passed (None or a 4-D tensor); ``key_valid``: (B, T_k) real
    tokens (None: all real); ``causal``: whether the module attends causally when there is no mask
    (its ``is_causal``). Raises :class:`CustomMaskError` for an additive bias or a mask that is not 4-D.
    """
    if attention_mask is None:
        return MaskShape(causal, None)
    entry = _cache.get(id(attention_mask))
    valid_id = id(key_valid)
    if entry is not None and entry[0]() is attention_mask and entry[1] == valid_id:
        shape, custom = entry[2], entry[3]
        return shape._replace(visible=_visible(attention_mask.detach(), layer)) if custom else shape
    shape = _read(attention_mask.detach(), key_valid, causal, layer)
    for key in [k for k, (ref, *_) in _cache.items() if ref() is None]:  # forget freed masks
        del _cache[key]
    custom = shape.visible is not None
    _cache[id(attention_mask)] = (weakref.ref(attention_mask), valid_id, shape._replace(visible=None), custom)
    return shape
