"""The one forward runner: a model's own forward pass on token ids or a mapping of model inputs,
under ``no_grad``, with the inputs on the model's input device."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import nn

from spectra.models.devices import to_input_device

__all__ = ["model_inputs", "run_model", "takes_use_cache"]


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
    head), with ``use_cache=False`` where the backbone takes it — the analysis forward of the probes."""
    if require_eval and model.training:
        raise ValueError("model: is in training mode (dropout makes forwards differ); call model.eval() first")
    module = getattr(model, "base_model", model) if backbone else model
    check_token_ids(model, model_inputs(inputs).get("input_ids"))
    kwargs = to_input_device(model, model_inputs(inputs))
    if backbone and takes_use_cache(module):
        kwargs["use_cache"] = False
    with torch.no_grad():
        return module(**kwargs)
