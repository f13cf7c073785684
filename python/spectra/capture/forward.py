"""The one forward runner: a model's own forward pass on token ids or a mapping of model inputs,
under ``no_grad``, with the inputs on the model's input device."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import nn

from spectra.models.devices import to_input_device

__all__ = ["model_inputs", "padded_position_ids", "run_model", "takes_use_cache"]


def model_inputs(inputs) -> dict:
    """``inputs`` as keyword arguments of a forward: ``{"input_ids": inputs}`` for a (batch, seq_len) tensor of
    token ids, a plain dict for a mapping (e.g. a tokenizer's BatchEncoding)."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() != 2:
            raise ValueError(f"inputs: expected input ids of shape (batch, seq_len); got {tuple(inputs.shape)}")
        return {"input_ids": inputs}
    if isinstance(inputs, Mapping):
        return dict(inputs)
    raise TypeError(
        "inputs: expected a (batch, seq_len) tensor of input ids or a mapping of model inputs "
        f"(e.g. a tokenizer's BatchEncoding); got {type(inputs).__name__}"
    )


def padded_position_ids(attention_mask: torch.Tensor, seq_len: int | None = None) -> torch.Tensor:
    """Position ids from a 2D attention mask: each token's index among the real tokens of its row
    (``cumsum(mask) - 1``), pads 1 (as transformers' ``generate`` does; their rows are masked anyway).

    The same text then gets the same positions (and RoPE angles) left-padded, right-padded or alone.
    With a mask longer than ``seq_len`` (a KV cache before the new tokens), the last ``seq_len`` columns.
    """
    mask = attention_mask.to(torch.long)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return positions if seq_len is None else positions[:, -seq_len:]


def _has_leading_padding(attention_mask: torch.Tensor) -> bool:
    """Whether some row has a pad before a real token (left or inner padding): only then do the default
    position ids (``arange``) differ from ``padded_position_ids`` on the real tokens."""
    mask = attention_mask.to(torch.bool)
    return bool((~mask[:, :-1] & mask[:, 1:]).any())


def with_position_ids(module: nn.Module, kwargs: dict) -> dict:
    """``kwargs`` with ``position_ids`` derived from a 2D ``attention_mask`` that has leading pads, when
    the caller gave none and ``module.forward`` takes them; otherwise unchanged."""
    mask, ids = kwargs.get("attention_mask"), kwargs.get("input_ids")
    if (
        kwargs.get("position_ids") is not None
        or not isinstance(mask, torch.Tensor)
        or mask.dim() != 2
        or not isinstance(ids, torch.Tensor)
        or not _has_leading_padding(mask)
        or "position_ids" not in inspect.signature(module.forward).parameters
    ):
        return kwargs
    return {**kwargs, "position_ids": padded_position_ids(mask, ids.shape[-1]).to(mask.device)}


def takes_use_cache(module: nn.Module) -> bool:
    """Whether ``module.forward`` accepts ``use_cache`` (HF backbones do; some wrappers do not)."""
    return "use_cache" in inspect.signature(module.forward).parameters


def vocab_size(model: nn.Module) -> int | None:
    """Rows of the model's input embedding (the token ids it can look up), else its config's
    ``vocab_size``; None when it names neither."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    rows = getattr(embedding, "num_embeddings", None)
    return int(rows) if rows is not None else getattr(getattr(model, "config", None), "vocab_size", None)


def check_token_ids(model: nn.Module, input_ids) -> None:
    """A ValueError naming ``input_ids``, the largest id and the model's vocabulary size when an id is
    out of range (negative, or >= the rows of its input embedding: a tokenizer larger than the model's
    embedding, or ids of another model), before any forward: the embedding lookup would otherwise fail
    with an index error deep in torch (or a device-side assert on a GPU).

    Example:
        >>> from spectra.models.random_init import tiny_model
        >>> check_token_ids(tiny_model("llama"), torch.tensor([[1, 2, 500]]))
        Traceback (most recent call last):
        ...
        ValueError: input_ids: token id 500 is out of range for the model's vocabulary of 97 tokens (ids 0..96); does the tokenizer belong to the model?
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.numel() == 0:
        return
    size = vocab_size(model)
    if size is None:
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise ValueError(
            f"input_ids: token id {bad} is out of range for the model's vocabulary of {size} tokens "
            f"(ids 0..{size - 1}); does the tokenizer belong to the model?"
        )


def run_model(model: nn.Module, inputs, *, backbone: bool = False, require_eval: bool = True):
    """``model(**inputs)`` (or ``model(input_ids=inputs)``) under ``no_grad``; returns the model's output.

    Input tensors go to ``spectra.models.devices.input_device(model)`` (the input embedding's device, also
    for a model spread over devices by a device map). With ``require_eval`` (the default) a model in
    training mode raises. With ``backbone=True`` the forward runs through ``model.base_model`` (no LM
    head), with ``use_cache=False`` where the backbone takes it — the analysis forward of the probes.

    Left padding: without ``position_ids`` in ``inputs``, a 2D ``attention_mask`` with a pad before a
    real token gives ``position_ids = padded_position_ids(mask)`` (index among the row's real tokens), so
    a left-padded text gets the positions it has alone (transformers' default would count the pads)."""
    if require_eval and model.training:
        raise ValueError("model: is in training mode (dropout makes forwards differ); call model.eval() first")
    module = getattr(model, "base_model", model) if backbone else model
    check_token_ids(model, model_inputs(inputs).get("input_ids"))
    kwargs = with_position_ids(module, to_input_device(model, model_inputs(inputs)))
    if backbone and takes_use_cache(module):
        kwargs["use_cache"] = False
    with torch.no_grad():
        return module(**kwargs)
