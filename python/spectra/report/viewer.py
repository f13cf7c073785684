"""The report's model parts: the run's model and held-out windows, the per-head taxonomy classes, and
the attention viewer's data (post-RoPE q/k and each layer's attention settings, embedded as base64
floats; :func:`attention_weights` recomputes a head's attention from them as the page does)."""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from spectra.capture.attention_switch import OBSERVER_ORDER, attached, layer_attention
from spectra.capture.forward import run_model
from spectra.capture.probe import Probe
from spectra.data.windows import load_windows
from spectra.heads.stats import head_stats
from spectra.heads.taxonomy import classify
from spectra.models import adapter_for
from spectra.models.loading import load_model
from spectra.report.results import HeadTable

CLASS_SHORT = {
    "static_sink": "sink",
    "induction": "ind",
    "previous_token": "prev",
    "positional": "pos",
    "gatherer": "gath",
    "semantic_retriever": "sem",
    "unclassified": "·",
    "non_finite": "NaN",
}

#: Embedded q/k floats above which the viewer keeps fewer windows / tokens (4 bytes each, base64).
MAX_VIEWER_VALUES = 6_000_000


# ---- the model: classes and attention -------------------------------------------------------


@dataclass
class LoadedModel:
    """The run's model, or why it is not available."""

    name: str | None
    model: Any = None
    tokenizer: Any = None
    reason: str = ""


def load_run_model(
    reference: str | None, *, dtype: Any = None, device: Any = None, attn_implementation: str | None = None
) -> LoadedModel:
    """Loads ``reference`` (zoo name or local folder) with ``spectra.models.loading.load_model`` (in
    ``dtype``, default float32, on ``device``, default the CPU, with ``attn_implementation``, default
    sdpa, eager where the architecture refuses it); on failure the returned object says
    why (a report is still written, without the viewer).

    Example:
        >>> load_run_model("/no/such/model").reason  # doctest: +ELLIPSIS
        "model '/no/such/model' could not be loaded (ValueError: model: '/no/such/model' is neither a zoo model ...)"
    """
    if not reference:
        return LoadedModel(None, reason="the result folder names no model")
    try:
        model, tokenizer = load_model(reference, dtype=dtype, device=device, attn_implementation=attn_implementation)
    except Exception as error:  # any loading failure only removes the model-based parts of the report
        return LoadedModel(
            reference, reason=f"model {reference!r} could not be loaded ({type(error).__name__}: {error})"
        )
    return LoadedModel(reference, model, tokenizer)


def viewer_windows(
    model: Any, tokenizer: Any, *, n_samples: int = 2, max_tokens: int = 64, add_special_tokens: bool = True
):
    """The first ``n_samples`` held-out windows of ``min(max_tokens, max_position_embeddings)`` tokens,
    with the tokenizer's special tokens unless ``add_special_tokens=False`` (as the run was made).

    Example:
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> viewer_windows(model, tok, n_samples=3, max_tokens=16).shape
        torch.Size([3, 16])
    """
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    length = min(max_tokens, int(limit)) if limit else max_tokens
    return load_windows(None, tokenizer, length, n_samples, add_special_tokens=add_special_tokens)


def computed_classes(model: Any, windows) -> pd.DataFrame:
    """``spectra.taxonomy.classify`` of ``spectra.head_stats`` on ``windows`` (the viewer's windows).

    Example:
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> classes = computed_classes(model, viewer_windows(model, tok, n_samples=1, max_tokens=32))
        >>> len(classes), set(classes["class"]) <= {"gatherer", "semantic_retriever", "unclassified", "positional",
        ...                                         "previous_token", "induction", "static_sink"}
        (32, True)
    """
    limit = getattr(model.config, "max_position_embeddings", None) or 64
    block = max(2, min(32, int(limit) // 2))
    return classify(head_stats(model, windows, random_block=block))


def _class_text(row: Mapping[str, Any]) -> str:
    score = row.get("score")
    return f"{row['class']}" + (f" (score {score:.2f})" if isinstance(score, float) and math.isfinite(score) else "")


def class_labels(
    table: HeadTable,
    n_layers: int,
    n_heads: int,
    *,
    taxonomy: pd.DataFrame | None,
    taxonomy_source: str,
    missing_reason: str,
) -> tuple[list[list[str]], list[list[str]]]:
    """Per (layer, head): the tooltip text naming its class(es), and a short label for the cell.

    ``taxonomy`` is a classify() table (or None, then every tooltip gives ``missing_reason``).

    Example:
        >>> table = HeadTable(pd.DataFrame({"layer": [0, 0], "head": [0, 1]}), "heads.csv")
        >>> tax = pd.DataFrame({"layer": [0], "head": [0], "class": ["gatherer"], "score": [0.9]})
        >>> texts, short = class_labels(table, 1, 2, taxonomy=tax, taxonomy_source="test", missing_reason="")
        >>> texts[0], short[0]
        (['taxonomy class: gatherer (score 0.90) [test]', 'no taxonomy class: head not in the taxonomy table (test)'], ['gath', ''])
    """
    texts = [["" for _ in range(n_heads)] for _ in range(n_layers)]
    short = [["" for _ in range(n_heads)] for _ in range(n_layers)]
    tax = {} if taxonomy is None else {(int(r["layer"]), int(r["head"])): r for r in taxonomy.to_dict("records")}
    pc0 = {}
    if table.classes is not None and "pc0_class" in table.classes.columns:
        pc0 = {(int(r.layer), int(r.head)): r.pc0_class for r in table.classes.itertuples()}
    for layer in range(n_layers):
        for head in range(n_heads):
            row = tax.get((layer, head))
            if row is not None:
                parts = [f"taxonomy class: {_class_text(row)} [{taxonomy_source}]"]
                short[layer][head] = CLASS_SHORT.get(row["class"], str(row["class"])[:4])
            elif taxonomy is None:
                parts = [f"no taxonomy class: {missing_reason}"]
            else:
                parts = [f"no taxonomy class: head not in the taxonomy table ({taxonomy_source})"]
            if (layer, head) in pc0:
                parts.append(f"PC0 class: {pc0[(layer, head)]} [heads.csv]")
                if not short[layer][head]:
                    short[layer][head] = str(pc0[(layer, head)])[:4]
            texts[layer][head] = "; ".join(parts)
    return texts, short


class _LayerAttentionRecorder:
    """Observer that notes each layer's scaling, soft-cap, causality and sliding window."""

    def __init__(self, model: Any) -> None:
        self.attention_order = OBSERVER_ORDER
        self.adapter = adapter_for(model)
        self.layers: dict[int, dict[str, Any]] = {}

    def begin_batch(self, positions, valid) -> None:
        pass

    def end_batch(self, failed: bool) -> None:
        pass

    def wants_output(self, layer: int) -> bool:
        return False

    def on_output(self, layer: int, output):
        return output

    def on_attention(self, layer, module, q, k, v, attention_mask, kwargs):
        how = layer_attention(self.adapter, layer, module, kwargs, attention_mask)
        self.layers[layer] = {
            "scaling": float(how.scaling),
            "softcap": float(how.softcap) if how.softcap else None,
            "causal": bool(how.causal),
            "window": int(how.sliding_window) if how.sliding_window else None,
            "sinks": None if how.sinks is None else [float(x) for x in how.sinks.float().cpu()],
            # A custom mask (chunked, document): (N, 1 or H, T, T) as packed bits; the page applies it.
            "visible": None if how.visible is None else _encode_bits(how.visible.expand(q.shape[0], -1, -1, -1)),
            "visible_heads": None if how.visible is None else int(how.visible.shape[1]),
        }
        return q, k, v


def _encode_bits(mask) -> str:
    """A bool tensor's entries in C order as bits, 8 per byte (first entry in the lowest bit), base64."""
    bits = np.packbits(mask.detach().cpu().numpy().astype(bool).reshape(-1), bitorder="little")
    return base64.b64encode(bits.tobytes()).decode("ascii")


@functools.lru_cache(maxsize=8)
def decode_bits(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`_encode_bits`: a read-only bool array of ``shape`` (cached)."""
    count = int(np.prod(shape))
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), bitorder="little")[:count]
    return bits.astype(bool).reshape(shape)


def _encode_floats(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


@functools.lru_cache(maxsize=4)
def decode_floats(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of the page's base64 float32 encoding (little-endian), as a read-only array of
    ``shape`` (cached: :func:`attention_weights` is called once per query)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape)


def _token_text(tokenizer: Any, token_id: int) -> str:
    if tokenizer is None:
        return f"#{int(token_id)}"
    text = tokenizer.decode([int(token_id)])
    return text if text else tokenizer.convert_ids_to_tokens(int(token_id))


def attention_data(
    model: Any, tokenizer: Any, windows, *, model_name: str = "", max_values: int = MAX_VIEWER_VALUES
) -> dict[str, Any]:
    """What the viewer embeds: tokens of ``windows`` (N, T), every head's post-RoPE q
    ``(L, H, N, T, D)`` and every KV head's k ``(L, Hkv, N, T, D)`` as base64 float32, and each
    layer's scaling / softcap / causal / window, captured with ``spectra.Probe`` in one forward.

    Windows and then tokens are cut so that q and k hold at most ``max_values`` floats. Without a
    ``tokenizer`` the tokens are shown as ``#id``.

    Example:
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> ids = tok("In the beginning God created", return_tensors="pt").input_ids
        >>> view = attention_data(model, tok, ids)
        >>> view["n_layers"], view["n_heads"], view["n_kv_heads"], view["head_dim"], view["n_tokens"] == ids.shape[1]
        (4, 8, 2, 32, True)
    """
    recorder = _LayerAttentionRecorder(model)
    a = recorder.adapter
    n_layers, n_heads, n_kv, dim = a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim
    per_token = n_layers * (n_heads + n_kv) * dim
    ids = torch.as_tensor(windows)[:, :]
    note = ""
    while ids.shape[0] > 1 and ids.numel() * per_token > max_values:
        ids = ids[:-1]
    if ids.numel() * per_token > max_values:
        ids = ids[:, : max(2, max_values // per_token)]
    if ids.shape != torch.as_tensor(windows).shape:
        note = (
            f"kept {ids.shape[0]} window(s) of {ids.shape[1]} tokens so that the page stays under "
            f"{max_values * 4 / 1e6:.0f} MB of q/k"
        )
    n, t = ids.shape
    probe = Probe(model, capture=("q", "k"), stage="post_rope", positions="all", keep_in_memory=True)
    with probe, attached(model, recorder):
        run_model(model, ids, require_eval=False)
    q = np.zeros((n_layers, n_heads, n, t, dim), dtype=np.float32)
    k = np.zeros((n_layers, n_kv, n, t, dim), dtype=np.float32)
    for layer in range(n_layers):
        for head, kind, target in [(h, "q", q) for h in range(n_heads)] + [(h, "k", k) for h in range(n_kv)]:
            rows = probe.captured(layer, head, kind, "post_rope")
            target[layer, head, rows.example_ids.long().numpy(), rows.positions.long().numpy()] = rows.vectors.numpy()
    return {
        "model": model_name,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_kv,
        "head_dim": dim,
        "kv_head": [probe.kv_head(h) for h in range(n_heads)],
        "layers": [recorder.layers[layer] for layer in range(n_layers)],
        "samples": [{"ids": [int(i) for i in row], "tokens": [_token_text(tokenizer, i) for i in row]} for row in ids],
        "n_tokens": t,
        "q": _encode_floats(q),
        "k": _encode_floats(k),
        "note": note,
    }


def attention_weights(view: Mapping[str, Any], layer: int, head: int, sample: int, query: int) -> np.ndarray:
    """The attention weights of ``query`` over all tokens of ``sample`` for one head, from the
    embedded q and k, exactly as the page's JavaScript computes them (float64 from the float32
    vectors): ``s_j = softcap·tanh(q_t·k_j·scaling / softcap)`` (without softcap: ``q_t·k_j·scaling``)
    over the visible keys j (``j <= t`` when causal, ``|t − j| < window`` with a sliding window, and
    only those a custom mask shows, for chunked or document attention),
    then ``exp(s_j − max s) / Σ exp(s − max s)``; 0 for hidden keys. A layer with learned sink
    logits (gpt-oss) adds ``exp(σ_h − max)`` to the denominator (its max taken over σ_h too), so its
    weights sum to 1 minus the sink's mass.

    Example:
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> view = attention_data(model, tok, tok("And God said, Let there be light", return_tensors="pt").input_ids)
        >>> w = attention_weights(view, 2, 5, 0, 3)
        >>> round(float(w.sum()), 12), bool((w[4:] == 0).all())
        (1.0, True)
    """
    n, t, dim = len(view["samples"]), view["n_tokens"], view["head_dim"]
    q = decode_floats(view["q"], (view["n_layers"], view["n_heads"], n, t, dim))
    k = decode_floats(view["k"], (view["n_layers"], view["n_kv_heads"], n, t, dim))
    how = view["layers"][layer]
    qt = q[layer, head, sample, query].astype(np.float64)
    keys = k[layer, view["kv_head"][head], sample].astype(np.float64)
    scores = (keys @ qt) * how["scaling"]
    if how["softcap"]:
        scores = how["softcap"] * np.tanh(scores / how["softcap"])
    j = np.arange(t)
    visible = j <= query if how["causal"] else np.ones(t, dtype=bool)
    if how["window"]:
        visible &= np.abs(query - j) < how["window"]
    if how.get("visible"):
        heads = how["visible_heads"]
        custom = decode_bits(how["visible"], (n, heads, t, t))
        visible &= custom[sample, head if heads > 1 else 0, query]
    weights = np.zeros(t)
    sinks = how.get("sinks")
    top = scores[visible].max() if sinks is None else max(scores[visible].max(), sinks[head])
    shifted = np.exp(scores[visible] - top)
    total = shifted.sum() + (0.0 if sinks is None else np.exp(sinks[head] - top))
    weights[visible] = shifted / total
    return weights
