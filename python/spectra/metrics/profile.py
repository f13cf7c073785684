"""``spectra.profile``: per-token attention metrics of every (sample, layer, head, token), measured
inside the model's own forward pass without the T×T matrix.

One forward per batch: the Probe routes each layer's post-RoPE q and k to the native
``attn_row_stats`` kernel (the keys each query may see: causal, sliding window, padding) and to
``vec_stats`` for the norms. Definitions: docs/metrics.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn

from spectra.capture.forward import run_model
from spectra.capture.probe import Heads, Probe
from spectra.io.atomic import write_parquet_table
from spectra.models import resolve_ignore_first

#: Every metric profile can report, in column order.
METRICS: tuple[str, ...] = (
    "entropy",
    "entropy_normalized",
    "max_attn",
    "k_eff",
    "sink_mass",
    "sink_mass_n",
    "argmax",
    "n_visible",
    "q_norm",
    "k_norm",
)
DEFAULT_METRICS: tuple[str, ...] = ("entropy", "max_attn", "k_eff", "sink_mass", "q_norm", "k_norm")
#: Metrics of the attention row; NaN for tokens before ``ignore_first`` (see docs/metrics.md).
ROW_METRICS = frozenset(METRICS) - {"q_norm", "k_norm"}


class NonFiniteActivationError(FloatingPointError):
    """NaN or inf reached the attention of some heads; the message lists them."""


def check_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not names:
        raise ValueError(f"metrics: nothing requested; allowed metrics are {', '.join(METRICS)}")
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown {unknown}; allowed metrics are {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def check_threshold(threshold: float) -> float:
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold: {threshold!r} is outside (0, 1]")
    return float(threshold)


#: Heads a :class:`NonFiniteActivationError` names one by one; the rest are counted ("and N more").
LISTED_HEADS = 12


def check_padding_rows(attention_mask: torch.Tensor | None, sample_ids: Sequence[int] | None = None) -> None:
    """Rows of ``attention_mask`` without a real token (all padding) get no rows in a profile table:
    a ValueError when every row is such, naming them; a ``UserWarning`` naming them (as ``sample``
    ids where given, else batch rows) when only some are, which are then left out.

    Example:
        >>> check_padding_rows(torch.tensor([[0, 0], [0, 0]]))
        Traceback (most recent call last):
        ...
        ValueError: attention_mask: every row is padding (rows 0, 1 have no real token); nothing to profile
    """
    if attention_mask is None or attention_mask.dim() != 2:
        return
    empty = [int(i) for i in torch.nonzero(attention_mask.sum(dim=1) == 0).flatten().tolist()]
    if not empty:
        return
    if len(empty) == attention_mask.shape[0]:
        raise ValueError(
            f"attention_mask: every row is padding (rows {', '.join(map(str, empty))} have no real token); "
            "nothing to profile"
        )
    names = [int(sample_ids[i]) for i in empty] if sample_ids is not None else empty
    what = "sample(s)" if sample_ids is not None else "batch row(s)"
    warnings.warn(
        f"attention_mask: {what} {', '.join(map(str, names))} are all padding (no real token) and get no rows",
        UserWarning,
        stacklevel=3,
    )


def check_input_ids(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(
            f"input_ids: expected an integer tensor of token ids; got {type(input_ids).__name__}"
            f"{'' if not isinstance(input_ids, torch.Tensor) else ' of dtype ' + str(input_ids.dtype)}"
        )
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids: expected shape (batch, seq_len) or (seq_len,); got {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids: empty input (shape {tuple(input_ids.shape)})")
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit is not None and input_ids.shape[1] > limit:
        raise ValueError(
            f"input_ids: sequence length {input_ids.shape[1]} exceeds the model's max_position_embeddings ({limit})"
        )
    return input_ids


def run_backbone(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None = None,
) -> None:
    """One analysis forward through the backbone (no LM head), without a KV cache where supported.

    Without ``position_ids``, a left-padded ``attention_mask`` gets them from the mask (see
    ``spectra.capture.forward.run_model``)."""
    inputs = {"input_ids": input_ids}
    if attention_mask is not None:
        inputs["attention_mask"] = attention_mask
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    run_model(model, inputs, backbone=True, require_eval=False)


def rows_to_frame(columns: dict[str, np.ndarray], metrics: Sequence[str], ignore_first: int) -> pd.DataFrame:
    """The profile table from the probe's drained columns, sorted by (sample, layer, head, token)."""
    frame = pd.DataFrame(
        {
            "sample": columns["example_id"].astype(np.int64),
            "layer": columns["layer"].astype(np.int16),
            "head": columns["head"].astype(np.int16),
            "token": columns["position"].astype(np.int32),
        }
    )
    early = columns["position"] < ignore_first
    for name in metrics:
        values = columns[name].astype(np.float32)
        if name in ROW_METRICS and ignore_first > 0:
            values = np.where(early, np.float32(np.nan), values)
        frame[name] = values
    return frame.sort_values(["sample", "layer", "head", "token"], kind="stable", ignore_index=True)


def nonfinite_heads(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """(layer, head, rows) where a visible attention row came out NaN, or a q/k norm is not finite."""
    bad = (
        ((columns["n_visible"] > 0) & np.isnan(columns["entropy"]))
        | ~np.isfinite(columns["q_norm"])
        | ~np.isfinite(columns["k_norm"])
    )
    if not bad.any():
        return pd.DataFrame(columns=["layer", "head", "rows"])
    found = pd.DataFrame({"layer": columns["layer"][bad], "head": columns["head"][bad]})
    return found.value_counts().rename("rows").reset_index().sort_values(["layer", "head"], ignore_index=True)


def profile(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    position_ids: torch.Tensor | None = None,
    layers: Iterable[int] | None = None,
    heads: Heads = None,
    metrics: str | Iterable[str] = DEFAULT_METRICS,
    threshold: float = 0.9,
    ignore_first: int | None = None,
    n_sink: int = 4,
    sample_ids: Sequence[int] | None = None,
    on_nonfinite: str = "raise",
) -> pd.DataFrame:
    """Per-token attention metrics of every (sample, layer, head, token), from one forward pass.

    Columns: ``sample, layer, head, token`` (token = the position id), then the requested
    ``metrics`` as float32 (see ``METRICS``): ``entropy`` (nats), ``entropy_normalized``
    (H / ln n_visible), ``max_attn``, ``k_eff`` (smallest number of keys holding ``threshold`` of
    the mass, compared at θ − 1e-6), ``sink_mass`` (weight on the first real key), ``sink_mass_n``
    (on the first n_sink real keys), ``argmax`` (key offset from the first real token), ``n_visible``,
    ``q_norm`` and ``k_norm`` (the head's KV-head key at the same token). Row metrics are NaN for
    tokens < ``ignore_first`` (default: 2 for a decoder, 0 for an encoder, whose every token sees
    the whole text; see :func:`spectra.models.default_ignore_first`). Logits are the model's own
    post-RoPE, post-QK-norm ones, in float32.

    Padding: padding tokens (mask 0) get no rows, and left, right or no padding give the same table
    for the same text. Without ``position_ids``, a left-padded ``attention_mask`` gives each token its
    index among its row's real tokens as position id (``cumsum(mask) - 1``), which the model's forward
    (RoPE) and the ``token`` column use; ``ignore_first`` counts real tokens. ``position_ids``
    (batch, seq_len), when given, go to the forward and the ``token`` column as they are.

    A row of ``attention_mask`` that is all padding is a warning naming it (it gets no rows); every row
    all padding is a ValueError (see :func:`check_padding_rows`). A token id outside the model's
    vocabulary is a ValueError naming ``input_ids`` before the forward.

    NaN or inf activations raise :class:`NonFiniteActivationError` naming the heads (the first 12,
    then how many more; or, with
    ``on_nonfinite="nan"``, stay NaN in the table).

    Example:
        >>> import torch, spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> ids = tok("In the beginning God created the heaven and the earth.", return_tensors="pt").input_ids
        >>> table = spectra.profile(model, ids, layers=[0, 1])
        >>> list(table.columns)
        ['sample', 'layer', 'head', 'token', 'entropy', 'max_attn', 'k_eff', 'sink_mass', 'q_norm', 'k_norm']
        >>> len(table) == 2 * model.config.num_attention_heads * ids.shape[1]
        True
    """
    metrics = check_metrics(metrics)
    threshold = check_threshold(threshold)
    ignore_first = resolve_ignore_first(model, ignore_first)
    if on_nonfinite not in ("raise", "nan"):
        raise ValueError(f"on_nonfinite: {on_nonfinite!r}; allowed values are 'raise', 'nan'")
    input_ids = check_input_ids(model, input_ids)
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask: shape {tuple(attention_mask.shape)} differs from input_ids' {tuple(input_ids.shape)}"
        )
    if position_ids is not None and tuple(position_ids.shape) not in (tuple(input_ids.shape), (input_ids.shape[1],)):
        raise ValueError(
            f"position_ids: shape {tuple(position_ids.shape)} differs from input_ids' {tuple(input_ids.shape)}"
        )
    check_padding_rows(attention_mask, sample_ids)
    probe = Probe(model, layers=layers, heads=heads, capture=(), row_stats=True, threshold=threshold, n_sink=n_sink)
    if sample_ids is not None:
        probe.set_example_ids(sample_ids)
    with probe:
        run_backbone(model, input_ids, attention_mask, position_ids)
    columns = probe.drain_row_stats()
    bad = nonfinite_heads(columns)
    if len(bad) and on_nonfinite == "raise":
        listed = ", ".join(f"L{r.layer}H{r.head} ({r.rows} rows)" for r in bad.head(LISTED_HEADS).itertuples())
        if len(bad) > LISTED_HEADS:
            listed += f" and {len(bad) - LISTED_HEADS} more"
        raise NonFiniteActivationError(
            f"NaN/inf activations reached the attention of {len(bad)} head(s): {listed}; pass on_nonfinite='nan' "
            "to keep them as NaN rows"
        )
    frame = rows_to_frame(columns, metrics, ignore_first)
    frame.attrs.update(
        {
            "threshold": threshold,
            "ignore_first": ignore_first,
            "n_sink": n_sink,
            "nonfinite_heads": bad.to_dict("records"),
        }
    )
    return frame


def write_profile_parquet(frame: pd.DataFrame, path, *, compression_level: int = 3) -> None:
    """Writes a profile table as Parquet, atomically (:mod:`spectra.io.atomic`: a hidden temporary, then rename).

    Id columns are dictionary/RLE-encoded (they repeat in long runs); float metric columns use
    BYTE_STREAM_SPLIT + zstd, which separates the float bytes so exponents and high mantissa bytes
    compress (about 35% smaller than dictionary + zstd on float32 metrics).
    """
    path = Path(path)
    ids = [c for c in ("sample", "layer", "head", "token") if c in frame.columns]
    floats = [c for c in frame.columns if c not in ids and frame[c].dtype.kind == "f"]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_parquet_table(
        path,
        table,
        compression="zstd",
        compression_level=compression_level,
        use_dictionary=ids,
        use_byte_stream_split=floats or False,
    )
