"""Loading a model by reference: a zoo name, ``all-minilm-l6-v2``, a local model folder (causal LM or
encoder) or a hub id ``org/name[@revision]`` from the Hugging Face cache (offline unless a download is
allowed; see :func:`resolve_model`), placed on one device or spread by a ``device_map``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from spectra import defaults
from spectra.models import zoo
from spectra.models.devices import check_device, placement_kwargs
from spectra.models.zoo.references import ResolvedModel, resolve_model

MINILM = "all-minilm-l6-v2"


class AttentionFallbackWarning(UserWarning):
    """A model loaded with ``eager`` attention because its architecture refused the backend asked for."""


#: Every spelling of a dtype :func:`load_model` takes -> its canonical name (a name of ``torch``).
DTYPE_NAMES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float64": "float64",
    "fp64": "float64",
    "double": "float64",
}
_ALLOWED_DTYPES = "float32 (fp32), bfloat16 (bf16), float16 (fp16), float64"


def check_dtype(dtype: Any, argument: str = "dtype") -> torch.dtype:
    """``dtype`` (a torch.dtype, or a name: ``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"``,
    ``"float32"``/``"fp32"``, ``"float64"``; ``"torch.bfloat16"`` too) as a floating torch.dtype, or
    a ValueError naming ``argument`` and the allowed values. None is the default, float32.

    Example:
        >>> check_dtype("bf16"), check_dtype(torch.float16), check_dtype(None)
        (torch.bfloat16, torch.float16, torch.float32)
        >>> check_dtype("int8")
        Traceback (most recent call last):
        ...
        ValueError: dtype='int8': not a model dtype; allowed: float32 (fp32), bfloat16 (bf16), float16 (fp16), float64
    """
    if dtype is None:
        return getattr(torch, defaults.DTYPE)
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            return dtype
    elif isinstance(dtype, str):
        name = DTYPE_NAMES.get(dtype.strip().lower().removeprefix("torch."))
        if name is not None:
            return getattr(torch, name)
    raise ValueError(f"{argument}={dtype!r}: not a model dtype; allowed: {_ALLOWED_DTYPES}")


def dtype_name(dtype: Any, argument: str = "dtype") -> str:
    """The canonical name of a dtype (see :func:`check_dtype`): what run configs and meta.json hold.

    Example:
        >>> dtype_name("bf16"), dtype_name(torch.float16)
        ('bfloat16', 'float16')
    """
    return str(check_dtype(dtype, argument)).removeprefix("torch.")


def load_model(
    name_or_path: str | Path | ResolvedModel,
    *,
    revision: str | None = None,
    allow_download: bool = False,
    dtype: torch.dtype | str | None = torch.float32,
    attn_implementation: str | None = defaults.ATTN_IMPLEMENTATION,
    device: str | int | torch.device | None = None,
    device_map: str | dict[str, int | str] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None,
):
    """A model and its tokenizer, in eval mode, from a reference: a zoo name, ``all-minilm-l6-v2``, a local
    model folder (causal LM or encoder) or a hub id ``org/name`` / ``org/name@revision`` found in the
    Hugging Face cache (see :func:`resolve_model`; a :class:`ResolvedModel` from it is taken as is).

    revision, allow_download: as in :func:`resolve_model`: the hub revision (as ``org/name@revision``),
        and whether a hub id missing from the cache may be downloaded (off by default; never while
        ``HF_HUB_OFFLINE`` is set).

    attn_implementation: the attention backend (``spectra.defaults.ATTN_IMPLEMENTATIONS``; None:
        sdpa). An architecture that refuses it (Gemma2 with sdpa) is loaded with ``eager`` instead,
        with a one-line warning; ``model.config._attn_implementation`` names the one used.

    dtype: the weights' dtype, a torch.dtype or a name (``"bfloat16"``/``"bf16"``,
        ``"float16"``/``"fp16"``, ``"float32"``/``"fp32"``, ``"float64"``; see :func:`check_dtype`).
        Spectra's metrics, captures and statistics come back in float32/float64 whatever it is.

    Placement:
        device: the one device the whole model goes to: a str (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
            ``"mps"``), an int GPU index or a torch.device; None leaves it where transformers loads
            it (the CPU). A device this machine lacks (``"cuda"`` on a torch without CUDA,
            ``"cuda:7"`` with fewer GPUs) is a ValueError naming the allowed ones, raised before
            anything loads. Used only without a ``device_map``.
        device_map: spread the model over devices through accelerate (``pip install accelerate``), for a
            model larger than one GPU: ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``,
            or a dict module name -> device (an int GPU index, ``"cpu"``, ``"cuda:N"``, ``"disk"``).
        max_memory: with a device_map, the most each device may hold, e.g. ``{0: "20GiB", "cpu": "60GiB"}``.
        offload_folder: with a device_map that offloads to ``"disk"``, where the offloaded weights go.

    Spectra's forwards send token ids to ``spectra.models.devices.input_device(model)`` and accelerate's
    hooks move every layer's inputs to that layer's device; see docs/multi-gpu.md.
    """
    dtype = check_dtype(dtype)
    attn_implementation = check_attn_implementation(attn_implementation)
    target = check_device(device)
    placement = placement_kwargs(device_map, max_memory, offload_folder)  # validates before any loading
    if isinstance(name_or_path, ResolvedModel):
        if revision is not None:
            raise ValueError("revision: goes to resolve_model, not with a ResolvedModel")
    else:
        name_or_path = resolve_model(name_or_path, revision=revision, allow_download=allow_download)
    try:
        model, tokenizer = _load(name_or_path, dtype, attn_implementation, placement)
    except ValueError as error:
        if attn_implementation == "eager" or not _refuses_backend(error):
            raise
        warnings.warn(
            f"{name_or_path}: its architecture does not support attn_implementation={attn_implementation!r}; "
            "loaded with 'eager' instead",
            AttentionFallbackWarning,
            stacklevel=2,
        )
        model, tokenizer = _load(name_or_path, dtype, "eager", placement)
    if target is not None and not placement:
        model = model.to(target)
    return model, tokenizer


def check_attn_implementation(value: str | None, argument: str = "attn_implementation") -> str:
    """``value`` if it is one of ``spectra.defaults.ATTN_IMPLEMENTATIONS`` (None: the default, sdpa),
    else a ValueError naming ``argument`` and the allowed values.

    Example:
        >>> check_attn_implementation(None), check_attn_implementation("eager")
        ('sdpa', 'eager')
        >>> check_attn_implementation("flash")
        Traceback (most recent call last):
        ...
        ValueError: attn_implementation='flash': allowed: sdpa, eager
    """
    if value is None:
        return defaults.ATTN_IMPLEMENTATION
    if value not in defaults.ATTN_IMPLEMENTATIONS:
        raise ValueError(f"{argument}={value!r}: allowed: {', '.join(defaults.ATTN_IMPLEMENTATIONS)}")
    return value


def _refuses_backend(error: ValueError) -> bool:
    """Whether transformers refused the attention backend (``... does not support an attention
    implementation through torch.nn.functional.scaled_dot_product_attention yet ...``)."""
    text = str(error)
    return "does not support" in text and ("attention implementation" in text or "attn_implementation" in text)


def _load(resolved: ResolvedModel, dtype: torch.dtype, attn_implementation: str, placement: dict[str, Any]):
    return zoo.load(resolved, dtype=dtype, attn_implementation=attn_implementation, **placement)
