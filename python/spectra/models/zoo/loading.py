"""Finding and loading the committed zoo models, local folders and cached hub models, offline.

Zoo names are resolved to folders inside the installed package; other references (local folders,
hub ids ``org/name[@revision]`` found in the Hugging Face cache) by
:func:`spectra.models.zoo.references.resolve_model`. ``local_files_only=True`` makes a missing file
an error instead of a download attempt.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from spectra.models.devices import placement_kwargs
from spectra.models.zoo.architectures import MODEL_NAMES
from spectra.models.zoo.minilm import load_minilm
from spectra.models.zoo.model_classes import model_class
from spectra.models.zoo.paths import MODELS_DIR, check_tokenizer_files
from spectra.models.zoo.references import MINILM, ResolvedModel, resolve_model


def model_path(name: str) -> Path:
    """Folder of the committed zoo model ``name`` (one of ``MODEL_NAMES``).

    >>> model_path("tiny-llama").name
    'tiny-llama'
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"name must be one of {MODEL_NAMES}, got {name!r}")
    return MODELS_DIR / name


def checkpoint_paths(name: str) -> list[Path]:
    """Intermediate training checkpoints of zoo model ``name``, sorted by training step.

    Only tiny-qwen3 has them (step 0 is the random init); for other models the list is empty.

    >>> [p.name for p in checkpoint_paths("tiny-qwen3")][0]
    'step-000000'
    """
    folders = (model_path(name) / "checkpoints").glob("step-*")
    return sorted(folders, key=_step)


def _step(folder: Path) -> int:
    return int(folder.name.removeprefix("step-"))


def resolve(name_or_path: str | Path | ResolvedModel, checkpoint: int | None = None) -> Path:
    """Model folder for a model reference (zoo name, local folder, cached hub id ``org/name[@revision]``;
    see :func:`spectra.models.zoo.references.resolve_model`), optionally at a checkpoint step.

    >>> resolve("tiny-qwen3", checkpoint=0).name
    'step-000000'
    """
    resolved = name_or_path if isinstance(name_or_path, ResolvedModel) else resolve_model(name_or_path)
    # absolute: the model's config._name_or_path (captures' sidecars, config_sha256) names the folder
    # whatever the working directory
    folder = resolved.path
    if checkpoint is None:
        return folder
    steps = {_step(p): p for p in (folder / "checkpoints").glob("step-*")}
    if checkpoint not in steps:
        raise ValueError(f"checkpoint must be one of {sorted(steps)} for {folder}, got {checkpoint!r}")
    return steps[checkpoint]


def load(
    name_or_path: str | Path | ResolvedModel,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    checkpoint: int | None = None,
    device_map=None,
    max_memory=None,
    offload_folder=None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model and its tokenizer, in eval mode: a zoo model (``all-minilm-l6-v2`` included), a
    local folder or a hub id ``org/name[@revision]`` from the Hugging Face cache (see
    :func:`spectra.models.zoo.references.resolve_model`; a :class:`ResolvedModel` is taken as is).
    A decoder comes as ``AutoModelForCausalLM`` (``AutoModel`` when its checkpoint holds no LM head);
    an encoder (BERT family) as the bare ``AutoModel``, or as ``AutoModelForMaskedLM`` only when its
    weights hold a trained masked-LM head — never with a randomly initialised head
    (:func:`spectra.models.zoo.model_classes.model_class`).

    ``checkpoint`` is a training step (see :func:`checkpoint_paths`). Weights are stored in
    float16 and upcast to ``dtype``, float32 by default so analyses are not limited by storage.
    ``device_map``, ``max_memory`` and ``offload_folder`` place the model over devices through
    accelerate, as in transformers' ``from_pretrained`` (see ``spectra.models.devices``).

    >>> model, tokenizer = load("tiny-qwen3", checkpoint=0)
    >>> model.training, model.dtype
    (False, torch.float32)
    """

    placement = placement_kwargs(device_map, max_memory, offload_folder)
    given = name_or_path.reference if isinstance(name_or_path, ResolvedModel) else name_or_path
    if checkpoint is None and given == MINILM:
        return load_minilm(dtype=dtype, attn_implementation=attn_implementation, **placement)
    folder = resolve(name_or_path, checkpoint)
    check_tokenizer_files(folder)  # else an empty tokenizer: every text 0 tokens
    # A weight-loading progress bar for a few MB is noise in notebooks and CLI output; the
    # global switch is restored afterwards so the caller's own setting is untouched.
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = model_class(folder).from_pretrained(
            folder, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True, **placement
        )
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer
