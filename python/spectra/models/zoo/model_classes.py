"""Which transformers class a model folder is loaded as: its own trained parts, never a random head.

A decoder loads as a causal LM (``AutoModelForCausalLM``; ``AutoModel`` when its config names only a
headless architecture such as ``LlamaModel``). An encoder (BERT family) loads as the
bare encoder (``AutoModel``), or as a masked LM (``AutoModelForMaskedLM``) only when the folder's
weights hold that head: building ``BertLMHeadModel`` from a plain BERT checkpoint (what
``AutoModelForCausalLM`` does) adds a randomly initialised head whose "logits" mean nothing, and
every KL or loss read from them would be noise.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from spectra import defaults

#: model_type values of bidirectional encoders (config.json).
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "albert"})

# Weight-name prefixes of each encoder family's masked-LM head.
_MLM_HEADS = ("cls.predictions.", "lm_head.", "vocab_projector.", "generator_lm_head.", "predictions.")


def _config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def is_encoder(folder: str | Path) -> bool:
    """Whether the model in ``folder`` is a bidirectional encoder (by its config.json's model_type).

    Example:
        >>> from spectra.models.zoo.minilm import minilm_path
        >>> is_encoder(minilm_path())
        True
    """
    return _config(folder).get("model_type") in ENCODER_TYPES


def default_ignore_first(folder: str | Path) -> int:
    """``spectra.models.default_ignore_first`` for a model folder, without loading it (the run kinds
    plan from config.json): 0 for an encoder, ``spectra.defaults.IGNORE_FIRST`` for a decoder.

    Example:
        >>> from spectra.models.zoo.minilm import minilm_path
        >>> default_ignore_first(minilm_path())
        0
    """
    return 0 if is_encoder(folder) else defaults.IGNORE_FIRST


def weight_names(folder: str | Path) -> set[str]:
    """Names of the tensors stored in ``folder`` (safetensors, sharded or not; PyTorch bins via their index)."""
    folder = Path(folder)
    names: set[str] = set()
    for index in (folder / "model.safetensors.index.json", folder / "pytorch_model.bin.index.json"):
        if index.is_file():
            names |= set(json.loads(index.read_text()).get("weight_map", {}))
    single = folder / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            names |= set(f.keys())
    return names


def has_mlm_head(folder: str | Path) -> bool:
    """Whether ``folder``'s weights include a trained masked-LM head.

    Example:
        >>> from spectra.models.zoo.minilm import minilm_path
        >>> has_mlm_head(minilm_path())  # a sentence-embedding checkpoint: encoder only
        False
    """
    return any(name.startswith(prefix) for name in weight_names(folder) for prefix in _MLM_HEADS)


def model_class(folder: str | Path):
    """The ``transformers`` auto class to load ``folder`` with (see the module docstring).

    Example:
        >>> from spectra.models.zoo.minilm import minilm_path
        >>> model_class(minilm_path()).__name__
        'AutoModel'
    """
    config = _config(folder)
    if config.get("model_type") in ENCODER_TYPES:
        return AutoModelForMaskedLM if has_mlm_head(folder) else AutoModel
    # A decoder saved without its LM head (architectures "LlamaModel", say) loads bare too.
    architectures = config.get("architectures") or []
    if architectures and all(a.endswith("Model") and not a.endswith("LMHeadModel") for a in architectures):
        return AutoModel
    return AutoModelForCausalLM
