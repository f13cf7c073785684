"""Identities and hashes that stamp results: canonical-JSON sha256, a model's config hash and
weights fingerprint, and the versions of the software that made a result."""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import numpy as np
import torch
import transformers

import spectra
from spectra import defaults
from spectra.models.devices import state_dict_values


def sha256_of(obj: Any) -> str:
    """sha256 of ``obj``'s canonical JSON (sorted keys; non-JSON values by ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def config_hash(model) -> str:
    """sha256 of the model's config dict (``json.dumps(..., sort_keys=True, default=str)``)."""
    return sha256_of(model.config.to_dict())


def weights_fingerprint(model, samples: int = 1024) -> str:
    """sha256 over every parameter's name, shape, dtype and up to ``samples`` evenly strided values:
    tells two checkpoints of one architecture apart without hashing every weight.

    The same weights give the same fingerprint wherever they live: on one device, spread over
    GPUs by a ``device_map``, or offloaded by accelerate (``meta`` parameters are read through its
    offload map, see ``spectra.models.devices.state_dict_values``)."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, entry, values in state_dict_values(model):
            flat = values.detach().reshape(-1)
            step = max(1, flat.numel() // samples)
            digest.update(f"{name}:{tuple(entry.shape)}:{entry.dtype}".encode())
            digest.update(flat[::step][:samples].to("cpu", torch.float64).numpy().tobytes())
    return digest.hexdigest()


def model_identity(model) -> dict[str, str]:
    """``class``, ``config_sha256``, ``weights_fingerprint`` and ``dtype`` of a model, as ``spectra profile``
    records them in meta.json, and ``attn_implementation`` (the attention backend it runs with) where it
    is not the default, sdpa (eager asked for, or fallen back to)."""
    return {
        "class": type(model).__name__,
        "config_sha256": config_hash(model),
        "weights_fingerprint": weights_fingerprint(model),
        "dtype": str(next(model.parameters()).dtype),
        **non_default_attn_implementation(attn_implementation(model)),
    }


def non_default_attn_implementation(name: str | None) -> dict[str, str]:
    """``{"attn_implementation": name}`` where ``name`` is a backend other than the default (sdpa), else
    ``{}``: meta.json names the backend only where it is not the default, as it does other settings."""
    return {"attn_implementation": name} if name and name != defaults.ATTN_IMPLEMENTATION else {}


def attn_implementation(model) -> str | None:
    """The attention backend ``model`` runs with (``sdpa``, ``eager``; None when it names none)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def versions() -> dict[str, str]:
    return {
        "spectra": spectra.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
    }


def digest_array(array: np.ndarray | None) -> str | None:
    """sha256 of an array's dtype, shape and bytes (C order); None for None."""
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    return hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()


def data_sha256(array) -> str:
    """sha256 of an array's raw bytes in C order (a NumPy array or a CPU tensor): the fingerprint of
    the token windows a result was computed on."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
