"""Loading a model by name or folder, offline: a zoo name, ``all-minilm-l6-v2``, or a local model
folder (causal LM or encoder), placed on one device or spread by a ``device_map``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from spectra.models import zoo
from spectra.models.devices import check_device, placement_kwargs

MINILM = "all-minilm-l6-v2"


def load_model(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    device: str | int | torch.device | None = None,
    device_map: str | dict[str, int | str] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None,
):
    """A zoo name, ``all-minilm-l6-v2``, or a local model folder (causal LM or encoder), offline.

    Placement:
        device: the one device the whole model goes to (``"cuda"``, ``"cuda:1"``, ``"cpu"``);
            None leaves it where transformers loads it (the CPU). Used only without a ``device_map``.
        device_map: spread the model over devices through accelerate (``pip install accelerate``), for a
            model larger than one GPU: ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``,
            or a dict module name -> device (an int GPU index, ``"cpu"``, ``"cuda:N"``, ``"disk"``).
        max_memory: with a device_map, the most each device may hold, e.g. ``{0: "20GiB", "cpu": "60GiB"}``.
        offload_folder: with a device_map that offloads to ``"disk"``, where the offloaded weights go.

    Spectra's forwards send token ids to ``spectra.models.devices.input_device(model)`` and accelerate's
    hooks move every layer's inputs to that layer's device; see docs/multi-gpu.md.
    """
    target = check_device(device)
    placement = placement_kwargs(device_map, max_memory, offload_folder)  # validates before any loading
    if name_or_path == MINILM:
        model, tokenizer = zoo.load_minilm(dtype=dtype, attn_implementation=attn_implementation, **placement)
    elif name_or_path in zoo.MODEL_NAMES:
        model, tokenizer = zoo.load(name_or_path, dtype=dtype, attn_implementation=attn_implementation, **placement)
    else:
        model, tokenizer = _load_folder(name_or_path, dtype, attn_implementation, placement)
    if target is not None and not placement:
        model = model.to(target)
    return model, tokenizer


def _load_folder(name_or_path: str, dtype: torch.dtype, attn_implementation: str, placement: dict[str, Any]):
    folder = Path(name_or_path)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"model: {name_or_path!r} is neither a zoo model ({', '.join(zoo.MODEL_NAMES)}), {MINILM!r}, "
            "nor a local folder with a config.json"
        )
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    if any(a.endswith("ForCausalLM") for a in (config.architectures or [])):
        return zoo.load(folder, dtype=dtype, attn_implementation=attn_implementation, **placement)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(
            folder, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True, **placement
        ).eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)
