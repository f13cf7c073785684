"""The one forward runner: a model's own forward pass on token ids or a mapping of model inputs,
under ``no_grad``, with the inputs on the model's input device."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from spectra.models.devices import to_input_device


def _model_inputs(inputs) -> dict:
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


def run_model(model: nn.Module, inputs):
    """``model(**inputs)`` (or ``model(input_ids=inputs)``) under ``no_grad``; the model must be in eval mode.

    Input tensors go to ``spectra.models.devices.input_device(model)`` (the input embedding's device, also
    for a model spread over devices by a device map)."""
    if model.training:
        raise ValueError("model: is in training mode (dropout makes forwards differ); call model.eval() first")
    with torch.no_grad():
        return model(**to_input_device(model, _model_inputs(inputs)))
