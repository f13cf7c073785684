"""Embedded default models: tiny causal LMs trained by this package on the King James Bible.

They exist so that demos, notebooks and tests have real learned attention heads (sinks,
previous-token, induction) without any download. See ``spectra/assets/README.md`` for how they
were trained and how well they do.

>>> from spectra import zoo
>>> model, tokenizer = zoo.load("tiny-llama")
>>> model(**tokenizer("In the beginning", return_tensors="pt")).logits.shape[-1]
4096
"""

from __future__ import annotations

from spectra.models.zoo.architectures import MODEL_NAMES
from spectra.models.zoo.corpus import heldout_text, train_text
from spectra.models.zoo.loading import checkpoint_paths, load, model_path
from spectra.models.zoo.minilm import load_minilm, minilm_path

__all__ = [
    "MODEL_NAMES",
    "checkpoint_paths",
    "heldout_text",
    "load",
    "load_minilm",
    "minilm_path",
    "model_path",
    "train_text",
]
