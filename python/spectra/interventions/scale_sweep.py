"""Scale sweeps (exp1, exp2b, exp3, exp3b): a head's entropy, max_attn and k_eff as its logits are
scaled by α, in two modes.

``local`` — one baseline forward per batch; at every targeted layer the native ``attn_row_stats``
kernel re-reads the layer's own post-RoPE q and k with the logit scale multiplied by each α. Scaling
``q_h`` by α, ``k_{g(h)}`` by α or both by √α multiplies head h's logits by α exactly, so this *is*
head h's attention under each of those interventions (up to the rounding of α·x) — for every head of
the layer at once, with the model's real masks, scaling, soft cap and RoPE. It says nothing about
other heads or later layers; the kinds coincide by construction (see docs/interventions.md, 'Q vs K'). The closed-form slopes
``dH/d ln α = −Var_p(logits)`` and ``d max_attn/d ln α = max_attn·(H + ln max_attn)`` come with it.

``propagated`` — a real forward pass per (head, kind, α) with the intervention applied inside the
model (``spectra.interventions.context``), the target head's metrics measured by a Probe in that same pass, and
what the intervention did elsewhere: the other heads of the GQA group, the later layers, and the
logits (KL to baseline, change in next-token loss). α = 1 reuses the baseline forward, which
``check_baseline`` proves bitwise identical.

Both return the long table described in docs/interventions.md: one row per
(mode, kind, layer, head, alpha, sample), metrics averaged over the sample's real tokens with
position >= ``ignore_first``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from spectra.capture.attention_switch import AttentionClient, attached, layer_attention
from spectra.capture.forward import run_model
from spectra.capture.probe import Probe
from spectra.interventions.checks import hidden_change, token_logit_effect
from spectra.interventions.context import intervene
from spectra.interventions.specs import ScaleKey, ScaleLogits, ScaleQuery
from spectra.metrics.profile import check_input_ids, check_threshold
from spectra.models import Adapter, adapter_for, resolve_ignore_first
from spectra.ops.native import attn_row_stats

__all__ = ["DEFAULT_ALPHAS", "KINDS", "MODES", "check_alphas", "check_targets", "scale_sweep"]

#: The seed's default grid (config ``alphas.default``).
DEFAULT_ALPHAS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
KINDS: tuple[str, ...] = ("q", "k", "logits")
MODES: tuple[str, ...] = ("local", "propagated")
METRIC_COLUMNS: tuple[str, ...] = ("entropy", "max_attn", "k_eff")

Targets = None | str | Iterable[tuple[int, int]]


def check_alphas(alphas: Iterable[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated α grid; every α a finite number > 0."""
    try:
        values = [float(a) for a in alphas]
    except (TypeError, ValueError):
        raise TypeError(f"alphas: expected a list of numbers; got {alphas!r}") from None
    bad = [a for a in values if not (math.isfinite(a) and a > 0)]
    if bad or not values:
        raise ValueError(f"alphas: every scale must be a finite number > 0 (at least one); got {list(alphas)!r}")
    return tuple(sorted(set(values)))


def check_targets(model: nn.Module, heads: Targets) -> list[tuple[int, int]]:
    """``None``/``"all"`` (every head of every layer) or (layer, head) pairs, checked against the model."""
    a = adapter_for(model)
    if heads is None or heads == "all":
        return [(layer, h) for layer in range(a.n_layers) for h in range(a.n_heads)]
    out = []
    for pair in heads:
        try:
            layer, head = (int(x) for x in pair)
        except (TypeError, ValueError):
            raise ValueError(f"heads: expected (layer, head) pairs or 'all'; got {pair!r}") from None
        if not 0 <= layer < a.n_layers:
            raise ValueError(
                f"heads: layer {layer} is not a layer of this model; allowed layers are 0..{a.n_layers - 1}"
            )
        if not 0 <= head < a.n_heads:
            raise ValueError(
                f"heads: head {head} (layer {layer}) is not a query head; allowed heads are 0..{a.n_heads - 1}"
            )
        out.append((layer, head))
    if not out:
        raise ValueError("heads: no (layer, head) given")
    return list(dict.fromkeys(out))


def _check_kinds(kinds: str | Iterable[str]) -> tuple[str, ...]:
    items = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in items if k not in KINDS]
    if bad or not items:
        raise ValueError(f"kinds: {list(items)!r}; allowed are {', '.join(KINDS)} (at least one)")
    return tuple(dict.fromkeys(items))


def _masked_means(values: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Means over the last axis of (B, H, T) values where mask (B, 1, T) holds; and the counts."""
    m = mask.expand_as(values)
    count = m.to(torch.float64).sum(-1)
    total = torch.where(m, values.double(), torch.zeros((), dtype=torch.float64)).sum(-1)  # NaN on a used token stays
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))
    return mean.numpy(), count.expand_as(mean).numpy().astype(np.int64)


class _LocalSweep(AttentionClient):
    """Observer that re-reads each targeted layer's q, k at every α with the native kernel."""

    def __init__(self, model, heads_by_layer, alphas, threshold, ignore_first) -> None:
        self.adapter = adapter_for(model)
        self.heads_by_layer = heads_by_layer
        self.alphas, self.threshold, self.ignore_first = alphas, threshold, ignore_first
        self.sample_offset = 0
        self.parts: list[dict[str, np.ndarray]] = []
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def begin_batch(self, positions, valid) -> None:
        self._batch = (positions, valid)

    def end_batch(self, failed: bool) -> None:
        self._batch = None

    def on_attention(self, layer, module, q, k, v, attention_mask, kwargs):
        heads = self.heads_by_layer.get(layer)
        if heads is None or self._batch is None:
            return q, k, v
        positions, valid = self._batch
        qd, kd = q.detach(), k.detach()
        key_valid = valid.to(qd.device) if kd.shape[2] == valid.shape[1] else None
        how = layer_attention(self.adapter, layer, module, kwargs, attention_mask, key_valid)
        scaling, softcap, causal, window, sinks = how.scaling, how.softcap, how.causal, how.sliding_window, how.sinks
        # The closed forms: entropy_slope = −logit_var holds with learned sinks too (the op defines
        # logit_var so); max_attn_slope = p_max·(H + ln p_max) only without a sink or a soft-cap.
        max_slope_known = not softcap and sinks is None
        tokens = (valid & (positions >= self.ignore_first))[:, None, :]
        index = torch.tensor(heads, dtype=torch.long)
        batch = q.shape[0]
        for alpha in self.alphas:
            s = attn_row_stats(
                qd,
                kd,
                scaling * alpha,
                key_valid=key_valid,
                causal=causal,
                sliding_window=window,
                threshold=self.threshold,
                softcap=softcap,
                sinks=sinks,
                visible=how.visible,
            )
            entropy = s.entropy.cpu().index_select(1, index)
            max_attn = s.max_attn.cpu().index_select(1, index)
            columns = {
                "entropy": entropy,
                "max_attn": max_attn,
                "k_eff": s.k_eff.cpu().index_select(1, index).double(),
                "entropy_slope": -s.logit_var.cpu().index_select(1, index)
                if not softcap
                else torch.full_like(entropy, math.nan),
                "max_attn_slope": (
                    max_attn.double() * (entropy.double() + max_attn.double().log())
                    if max_slope_known
                    else torch.full_like(entropy, math.nan)
                ),
            }
            part: dict[str, np.ndarray] = {}
            for name, values in columns.items():
                part[name], count = _masked_means(values, tokens)
            part["n_tokens"] = count
            part["sample"] = np.repeat(np.arange(batch) + self.sample_offset, len(heads)).reshape(batch, len(heads))
            part["head"] = np.tile(np.asarray(heads), (batch, 1))
            part["layer"] = np.full((batch, len(heads)), layer)
            part["alpha"] = np.full((batch, len(heads)), alpha)
            self.parts.append({name: x.reshape(-1) for name, x in part.items()})
        return q, k, v


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def _forward(model, ids, mask, positions=None):
    inputs = {"input_ids": ids}
    if mask is not None:
        inputs["attention_mask"] = mask
    if positions is not None:
        inputs["position_ids"] = positions
    return run_model(model, inputs)


def _rows(position_ids, start, end):
    """Rows start:end of (N, T) position ids; (T,) ones (shared by every row) as they are."""
    if position_ids is None or position_ids.dim() == 1:
        return position_ids
    return position_ids[start:end]


def _local(
    model,
    input_ids,
    attention_mask,
    targets,
    alphas,
    kinds,
    threshold,
    ignore_first,
    batch_size,
    progress,
    position_ids=None,
):
    heads_by_layer: dict[int, list[int]] = {}
    for layer, head in targets:
        heads_by_layer.setdefault(layer, []).append(head)
    client = _LocalSweep(model, heads_by_layer, alphas, threshold, ignore_first)
    with attached(model, client):
        for start, end in tqdm(
            list(_batches(len(input_ids), batch_size)), desc="scale sweep (local)", disable=not progress
        ):
            client.sample_offset = start
            _forward(
                model.base_model,
                input_ids[start:end],
                None if attention_mask is None else attention_mask[start:end],
                _rows(position_ids, start, end),
            )
    table = pd.DataFrame({name: np.concatenate([p[name] for p in client.parts]) for name in client.parts[0]})
    frames = [table.assign(mode="local", kind=kind) for kind in kinds]
    return pd.concat(frames, ignore_index=True)


def _head_means(columns: dict[str, np.ndarray], ignore_first: int) -> pd.DataFrame:
    frame = pd.DataFrame({name: columns[name] for name in ("example_id", "layer", "head", "position", *METRIC_COLUMNS)})
    frame = frame[frame["position"] >= ignore_first]
    grouped = frame.groupby(["example_id", "layer", "head"])
    means = grouped[list(METRIC_COLUMNS)].mean()
    means["n_tokens"] = grouped.size()
    return means


def _per_sample_logit_effect(
    base: torch.Tensor, new: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, causal: bool
):
    """Per sample: mean KL over its real tokens and its change in next-token loss."""
    kl_tokens, nll_base, nll_new, pairs = token_logit_effect(base, new, ids, valid, causal)
    v = valid.to(torch.float64)
    kl = (kl_tokens * v).sum(-1) / v.sum(-1).clamp(min=1)
    if pairs is None:
        return kl.numpy(), np.full(len(kl), math.nan)
    weight = pairs.to(torch.float64)
    n = weight.sum(-1)
    delta = ((nll_new - nll_base) * weight).sum(-1) / n.clamp(min=1)
    return kl.numpy(), torch.where(n > 0, delta, torch.full_like(delta, math.nan)).numpy()


def _make(kind: str, layer: int, head: int, alpha: float, a: Adapter):
    if kind == "q":
        return ScaleQuery(layer, head, alpha)
    if kind == "k":
        return ScaleKey(layer, a.kv_head(head), alpha)
    return ScaleLogits(layer, head, alpha)


def _propagated(
    model,
    input_ids,
    attention_mask,
    targets,
    alphas,
    kinds,
    threshold,
    ignore_first,
    batch_size,
    progress,
    position_ids=None,
):
    a = adapter_for(model)
    causal_lm = a.family != "bert"
    rows: list[pd.DataFrame] = []
    batches = list(_batches(len(input_ids), batch_size))
    total = len(batches) * len(targets) * len(kinds) * len(alphas)
    with tqdm(total=total, desc="scale sweep (propagated)", disable=not progress) as bar:
        for start, end in batches:
            ids = input_ids[start:end]
            mask = None if attention_mask is None else attention_mask[start:end]
            positions = _rows(position_ids, start, end)
            valid = torch.ones(ids.shape, dtype=torch.bool) if mask is None else mask.to(torch.bool).cpu()
            samples = list(range(start, end))
            probe = Probe(model, capture=(), row_stats=True, threshold=threshold)
            probe.set_example_ids(samples)
            with probe:
                base_out = _forward(model, ids, mask, positions)
            base = _head_means(probe.drain_row_stats(), ignore_first)
            base_logits = getattr(base_out, "logits", None)
            base_hidden = getattr(base_out, "last_hidden_state", None) if base_logits is None else None
            for layer, head in targets:
                group = [h for h in a.kv_group(a.kv_head(head)) if h != head]
                for kind in kinds:
                    for alpha in alphas:
                        if alpha == 1.0:
                            means, logits, hidden = base, base_logits, base_hidden
                        else:
                            probe = Probe(
                                model, layers=range(layer, a.n_layers), capture=(), row_stats=True, threshold=threshold
                            )
                            probe.set_example_ids(samples)
                            with intervene(model, _make(kind, layer, head, alpha, a)), probe:
                                out = _forward(model, ids, mask, positions)
                            means, logits, hidden = (
                                _head_means(probe.drain_row_stats(), ignore_first),
                                getattr(out, "logits", None),
                                getattr(out, "last_hidden_state", None),
                            )
                        rows.append(_propagated_rows(means, base, samples, layer, head, group, kind, alpha, a.n_layers))
                        if logits is not None and base_logits is not None:
                            kl, dloss = _per_sample_logit_effect(base_logits, logits, ids, valid, causal_lm)
                        else:
                            kl = dloss = np.full(len(samples), math.nan)
                        rows[-1]["kl_logits"], rows[-1]["delta_loss"] = kl, dloss
                        # A bare encoder has no distribution to take a KL of (kl_logits and delta_loss
                        # stay NaN): its last hidden state's relative change per real token, under its
                        # own name. Models with logits get no such column.
                        if base_hidden is not None and hidden is not None:
                            rows[-1]["hidden_change"] = hidden_change(base_hidden, hidden, valid).numpy()
                        bar.update(1)
    return pd.concat(rows, ignore_index=True)


def _propagated_rows(means, base, samples, layer, head, group, kind, alpha, n_layers) -> pd.DataFrame:
    target = means.xs((layer, head), level=("layer", "head")).reindex(samples)
    out = pd.DataFrame(
        {
            "mode": "propagated",
            "kind": kind,
            "layer": layer,
            "head": head,
            "alpha": alpha,
            "sample": samples,
            "entropy": target["entropy"].to_numpy(),
            "max_attn": target["max_attn"].to_numpy(),
            "k_eff": target["k_eff"].to_numpy(),
            "n_tokens": target["n_tokens"].to_numpy(),
            "entropy_slope": math.nan,
            "max_attn_slope": math.nan,
        }
    )
    shift = (means["entropy"] - base["entropy"].reindex(means.index)).rename("shift").reset_index()
    if group:
        same = shift[(shift["layer"] == layer) & shift["head"].isin(group)]
        out["group_entropy_shift"] = same.groupby("example_id")["shift"].mean().reindex(samples).to_numpy()
    else:
        out["group_entropy_shift"] = math.nan
    later = shift[shift["layer"] > layer]
    if len(later):
        out["downstream_entropy_shift"] = (
            later.assign(shift=later["shift"].abs()).groupby("example_id")["shift"].mean().reindex(samples).to_numpy()
        )
    else:
        out["downstream_entropy_shift"] = math.nan
    return out


def scale_sweep(
    model: nn.Module,
    input_ids: torch.Tensor,
    heads: Targets = "all",
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    *,
    mode: Literal["local", "propagated"] = "local",
    kinds: str | Sequence[str] = ("q",),
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    threshold: float = 0.9,
    ignore_first: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> pd.DataFrame:
    """The sweep table of ``heads`` ((layer, head) pairs, or ``"all"``) over ``alphas``.

    ``kinds``: ``"q"`` (ScaleQuery), ``"k"`` (ScaleKey on the head's KV head), ``"logits"``
    (ScaleLogits). ``mode="local"`` costs one forward per batch for every head and α;
    ``mode="propagated"`` one forward per (batch, head, kind, α ≠ 1). See the module docstring.

    ``position_ids`` ((N, T) or (T,)) go to every forward as they are; without them a left-padded
    ``attention_mask`` gives each token its index among its row's real tokens (``ignore_first``
    counts real tokens), so left, right and no padding sweep the same text alike. ``ignore_first``
    defaults to 2 for a decoder and 0 for an encoder (:func:`spectra.models.default_ignore_first`).

    Example:
        >>> import spectra
        >>> from spectra import zoo
        >>> from spectra.interventions import scale_sweep
        >>> model, tok = zoo.load("tiny-llama")
        >>> ids = tok(["In the beginning God created the heaven and the earth."], return_tensors="pt").input_ids
        >>> table = scale_sweep(model, ids, heads=[(1, 0)], alphas=[0.5, 1.0, 2.0])
        >>> table[["alpha", "entropy"]].round(3).values.tolist()  # doctest: +SKIP
        >>> bool(table["entropy"].is_monotonic_decreasing), list(table["mode"].unique())
        (True, ['local'])
    """
    input_ids = check_input_ids(model, input_ids)
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask: shape {tuple(attention_mask.shape)} differs from input_ids {tuple(input_ids.shape)}"
        )
    if mode not in MODES:
        raise ValueError(f"mode: unknown mode {mode!r}; allowed are {', '.join(MODES)}")
    ignore_first = resolve_ignore_first(model, ignore_first)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1; got {batch_size!r}")
    if model.training:
        raise ValueError("model: is in training mode; call model.eval() first")
    grid = check_alphas(alphas)
    targets = check_targets(model, heads)
    kinds = _check_kinds(kinds)
    threshold = check_threshold(threshold)
    run = _local if mode == "local" else _propagated
    if position_ids is not None and (position_ids.dim() not in (1, 2) or position_ids.shape[-1] != input_ids.shape[1]):
        raise ValueError(
            f"position_ids: shape {tuple(position_ids.shape)} does not fit input_ids' {tuple(input_ids.shape)}"
        )
    table = run(
        model,
        input_ids,
        attention_mask,
        targets,
        grid,
        kinds,
        threshold,
        ignore_first,
        batch_size,
        progress,
        position_ids=position_ids,
    )
    order = ["mode", "kind", "layer", "head", "alpha", "sample"]
    table = table.sort_values(order, kind="stable", ignore_index=True)
    first = [*order, *METRIC_COLUMNS, "n_tokens", "entropy_slope", "max_attn_slope"]
    table = table[first + [c for c in table.columns if c not in first]]
    return table.astype(
        {"layer": np.int64, "head": np.int64, "sample": np.int64, "n_tokens": np.int64, "alpha": np.float64}
    )
