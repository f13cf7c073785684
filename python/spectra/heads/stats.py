"""Per-head statistics (seeds 003/004; see docs/concepts.md, 'Vector geometry' and 'Key-matrix ranks and ratios'): one row per
(layer, query head) of what the head's vectors look like and what its attention does.

Two passes, both through the model's own forward with the native kernels:

* **text** (the windows you pass): q/k geometry before RoPE, after QK-norm (``HeadGeometry``:
  norms, max |x_d|, one-hotness max|x_d|/‖x‖, participation ratio, and the effective ranks of each
  KV head's key matrix from native ``SecondMoments``), ‖Q‖/‖K‖ as a ratio of means (the ‖Q‖/‖K‖ ratio), and the
  attention rows' entropy, normalised entropy, max weight, k_eff and sink mass (``attn_row_stats``)
  over tokens at positions >= ``ignore_first``;
* **repeated random tokens** (``n_random`` sequences of a random block of distinct tokens, the
  block repeated twice): content-free attention scores. For query t and a target key j the weight
  is ``p_tj = max_attn_t · exp(s_tj − s_t,argmax)`` — exact, from the kernel's max weight and two
  logits, so no T×T matrix is formed:

  - ``previous_token_score``: mean over t >= 1 of p(t, t−1);
  - ``duplicate_token_score``: mean over the second copy of p(t, t − block) (the same token earlier);
  - ``induction_score``: mean over the second copy of p(t, t − block + 1) (the token *after* the
    earlier occurrence: token-aware, unlike Oculi's offset-only score, which mislabels heads);
  - ``positional_score``: over first-copy queries (pure position, no repeated content), the
    fraction of sequences sharing the most common argmax offset t − argmax, times the mean max
    weight: 1 for a head whose focus is set by position alone (sinks and previous-token heads
    included), near 0 for content-driven or diffuse heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from spectra.capture.attention_switch import AttentionClient, attached, layer_attention
from spectra.capture.forward import run_model
from spectra.heads.head_geometry import HeadGeometry
from spectra.metrics.profile import check_input_ids, check_threshold
from spectra.models import adapter_for, resolve_ignore_first
from spectra.ops.native import attn_row_stats

__all__ = ["ATTENTION_STATS", "SCORE_STATS", "head_stats", "repeated_random_tokens"]

ATTENTION_STATS = ("entropy_mean", "entropy_normalized_mean", "max_attn_mean", "k_eff_mean", "sink_mass_mean")
SCORE_STATS = ("previous_token_score", "duplicate_token_score", "induction_score", "positional_score")


def repeated_random_tokens(n: int, block: int, vocab_size: int, *, seed: int = 0, low: int = 1) -> torch.Tensor:
    """``(n, 2·block)`` ids: per row a block of distinct random tokens from ``[low, vocab_size)``, twice.

    Example:
        >>> ids = repeated_random_tokens(2, 5, 100)
        >>> ids.shape, bool((ids[:, :5] == ids[:, 5:]).all())
        (torch.Size([2, 10]), True)
    """
    if block < 2 or vocab_size - low < block:
        raise ValueError(
            f"random_block: {block} distinct tokens need 2 <= block <= vocab_size - {low} ({vocab_size - low})"
        )
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randperm(vocab_size - low, generator=gen)[:block] + low for _ in range(n)]
    first = torch.stack(rows)
    return torch.cat([first, first], dim=1)


class _AttentionScores(AttentionClient):
    """Observer that reads each layer's q, k and accumulates per-head attention statistics."""

    def __init__(self, model: nn.Module, mode: str, *, threshold: float, ignore_first: int, block: int = 0) -> None:
        self.adapter = adapter_for(model)
        self.mode, self.threshold, self.ignore_first, self.block = mode, threshold, ignore_first, block
        a = self.adapter
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.offsets: dict[int, list[torch.Tensor]] = {layer: [] for layer in range(a.n_layers)}
        self.focus: dict[int, list[torch.Tensor]] = {layer: [] for layer in range(a.n_layers)}
        self.kv_of_head = a.kv_heads()
        self._positions: torch.Tensor | None = None

    def begin_batch(self, positions, valid) -> None:
        self._positions = positions

    def end_batch(self, failed: bool) -> None:
        self._positions = None

    def _add(self, name: str, layer: int, values: torch.Tensor, mask: torch.Tensor) -> None:
        """Sums per head of values (B, H, T) where mask (B or 1, 1 or H, T) holds."""
        a = self.adapter
        m = mask.expand_as(values)
        total = torch.where(m, values.double(), torch.zeros((), dtype=torch.float64)).sum((0, 2))
        if name not in self.sums:
            self.sums[name] = np.zeros((a.n_layers, a.n_heads))
            self.counts[name] = np.zeros((a.n_layers, a.n_heads))
        self.sums[name][layer] += total.numpy()
        self.counts[name][layer] += m.sum((0, 2)).numpy()

    def on_attention(self, layer, module, q, k, v, attention_mask, kwargs):
        if self._positions is None:
            return q, k, v
        how = layer_attention(self.adapter, layer, module, kwargs, attention_mask)
        scaling, softcap, window = how.scaling, how.softcap, how.sliding_window
        qd, kd = q.detach(), k.detach()
        s = attn_row_stats(
            qd,
            kd,
            scaling,
            causal=how.causal,
            sliding_window=window,
            threshold=self.threshold,
            softcap=softcap,
            sinks=how.sinks,
            visible=how.visible,
        )
        positions = self._positions.to(torch.long)  # (B, T)
        seq = positions.shape[1]
        if self.mode == "text":
            late = (positions >= self.ignore_first)[:, None, :]
            for name, values in (
                ("entropy_mean", s.entropy),
                ("entropy_normalized_mean", s.entropy_normalized),
                ("max_attn_mean", s.max_attn),
                # k_eff is a count (0 for a NaN row): NaN where the row's weights are, as the other means are
                ("k_eff_mean", torch.where(torch.isnan(s.max_attn), math.nan, s.k_eff.double())),
                ("sink_mass_mean", s.sink_mass),
            ):
                self._add(name, layer, values.cpu(), late)
            return q, k, v
        # Repeated random tokens: exact weights on chosen keys from two logits and the max weight.
        qf = qd.float()
        keys = kd.float().index_select(1, self.kv_of_head.to(kd.device))  # (B, H, T, D)

        def logits_at(index: torch.Tensor) -> torch.Tensor:  # index (B, H, T) of keys
            picked = keys.gather(2, index.clamp(min=0).unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1]))
            logit = (qf * picked).sum(-1) * scaling
            return softcap * torch.tanh(logit / softcap) if softcap else logit

        argmax = s.argmax.to(qd.device)
        top = logits_at(argmax)
        t = torch.arange(seq, device=qd.device)

        # p_j = max_attn · e^(s_j − s_max) whatever the denominator holds (a learned sink included).
        def weight_on(offset: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Weight on key t − offset, and where that key exists and is visible (a sliding window hides it)."""
            index = (t - offset).expand_as(argmax)
            weight = (s.max_attn.to(qd.device) * torch.exp(logits_at(index) - top)).cpu()
            visible = window is None or offset < window
            exists = (t - offset >= 0).cpu()
            if how.visible is not None:  # a custom mask: that key, row by row, as the mask says
                seen = how.visible[:, :, t, (t - offset).clamp(min=0)].to(weight.device)  # (B or 1, H or 1, T)
                weight = weight * seen
            return (weight if visible else torch.zeros_like(weight)), exists

        block = self.block
        weight, ok = weight_on(1)
        self._add("previous_token_score", layer, weight, ok[None, None, :] & (t.cpu() >= 1)[None, None, :])
        second = (t.cpu() >= block)[None, None, :]
        weight, ok = weight_on(block)
        self._add("duplicate_token_score", layer, weight, second & ok[None, None, :])
        weight, ok = weight_on(block - 1)
        self._add("induction_score", layer, weight, second & ok[None, None, :])
        first = slice(self.ignore_first, block)
        self.offsets[layer].append((t.cpu() - s.argmax.cpu())[:, :, first])  # (B, H, T1)
        self.focus[layer].append(s.max_attn.cpu()[:, :, first])
        return q, k, v

    def means(self) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {name: self.sums[name] / self.counts[name] for name in self.sums}

    def positional(self) -> np.ndarray:
        a = self.adapter
        out = np.full((a.n_layers, a.n_heads), math.nan)
        for layer in range(a.n_layers):
            if not self.offsets[layer]:
                continue
            offsets = torch.cat(self.offsets[layer])  # (N, H, T1)
            focus = torch.cat(self.focus[layer]).double()
            n = offsets.shape[0]
            # Per (head, query position): how many sequences share the most common offset.
            shifted = offsets - offsets.min()
            counts = torch.zeros(*offsets.shape[1:], int(shifted.max()) + 1, dtype=torch.long)
            counts.scatter_add_(-1, shifted.permute(1, 2, 0), torch.ones_like(shifted.permute(1, 2, 0)))
            agreement = counts.max(-1).values.double() / n  # (H, T1)
            out[layer] = (agreement * focus.mean(0)).mean(-1).numpy()
        return out


def _run(model, client, batches) -> None:
    with attached(model, client):
        for batch in batches:
            run_model(model, batch)


def head_stats(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    n_random: int = 8,
    random_block: int = 32,
    seed: int = 0,
    batch_size: int = 8,
    threshold: float = 0.9,
    ignore_first: int | None = None,
    centered: bool = True,
    position_ids: torch.Tensor | None = None,
) -> pd.DataFrame:
    """One row per (layer, query head): geometry and attention statistics on ``input_ids`` (N, T)
    windows (unpadded), plus the content-free scores on ``n_random`` repeated random blocks.

    Columns: ``layer, head, kv_head``; ``q_/k_`` ``norm_mean, norm_std, max_abs_mean,
    participation_ratio_mean, one_hotness_mean`` (k_ of the head's KV head); ``k_spectral_pr,
    k_entropy_rank``; ``qk_norm_ratio``; ``entropy_mean, entropy_normalized_mean, max_attn_mean,
    k_eff_mean, sink_mass_mean``; ``previous_token_score, duplicate_token_score, induction_score,
    positional_score``; ``tokens``.

    ``position_ids`` ((N, T) or (T,)), when given, go to the forwards on ``input_ids`` (and
    ``ignore_first`` counts from them); the repeated random blocks always start at position 0.
    ``ignore_first`` defaults to 2 for a decoder and 0 for an encoder
    (:func:`spectra.models.default_ignore_first`).

    Example:
        >>> import spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-qwen3")
        >>> ids = tok(zoo.heldout_text()[:4000], return_tensors="pt").input_ids[:, :256].view(2, 128)
        >>> table = spectra.head_stats(model, ids, n_random=4, random_block=16)
        >>> len(table), bool(table["induction_score"].between(0, 1).all())
        (32, True)
    """
    input_ids = check_input_ids(model, input_ids)
    threshold = check_threshold(threshold)
    for name, value, low in (
        ("n_random", n_random, 1),
        ("random_block", random_block, 2),
        ("batch_size", batch_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}; got {value!r}")
    if model.training:
        raise ValueError("model: is in training mode; call model.eval() first")
    ignore_first = resolve_ignore_first(model, ignore_first)
    a = adapter_for(model)
    vocab = int(model.config.vocab_size)
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit is not None and 2 * random_block > limit:
        raise ValueError(
            f"random_block: 2 x {random_block} tokens exceed the model's max_position_embeddings ({limit})"
        )
    batches = [input_ids[i : i + batch_size] for i in range(0, len(input_ids), batch_size)]
    if position_ids is not None:
        if position_ids.shape[-1] != input_ids.shape[1] or position_ids.dim() not in (1, 2):
            raise ValueError(
                f"position_ids: shape {tuple(position_ids.shape)} does not fit input_ids' {tuple(input_ids.shape)}"
            )
        positions = position_ids.expand(input_ids.shape)
        batches = [
            {"input_ids": ids, "position_ids": positions[i : i + batch_size]}
            for ids, i in zip(batches, range(0, len(input_ids), batch_size), strict=True)
        ]

    text = _AttentionScores(model, "text", threshold=threshold, ignore_first=ignore_first)
    geometry = HeadGeometry(model, centered=centered)
    with geometry:
        _run(model, text, batches)
    table = geometry.table()

    random_ids = repeated_random_tokens(n_random, random_block, vocab, seed=seed)
    scores = _AttentionScores(model, "random", threshold=threshold, ignore_first=ignore_first, block=random_block)
    _run(model, scores, [random_ids[i : i + batch_size] for i in range(0, n_random, batch_size)])

    layer = table["layer"].to_numpy()
    head = table["head"].to_numpy()
    for name, values in {**text.means(), **scores.means()}.items():
        table[name] = values[layer, head]
    table["positional_score"] = scores.positional()[layer, head]
    first = ["layer", "head", "kv_head"]
    ordered = first + [c for c in table.columns if c not in first and c != "tokens"] + ["tokens"]
    table = table[ordered]
    table.attrs.update(
        n_layers=a.n_layers,
        n_heads=a.n_heads,
        n_kv_heads=a.n_kv_heads,
        random_block=random_block,
        n_random=n_random,
        centered=centered,
    )
    return table


def summarize(
    table: pd.DataFrame, columns: Sequence[str] = ("k_norm_mean", "entropy_mean", "sink_mass_mean")
) -> pd.DataFrame:
    """Per layer: mean, min and max over heads of ``columns`` (is a layer mean made of uniform heads?)."""
    return table.groupby("layer")[list(columns)].agg(["mean", "min", "max"])
