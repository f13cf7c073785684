"""Run configs of ``spectra run``: the job kinds, the keys every kind accepts, reading and checking a
config (each kind checks its own keys in ``spectra.jobs.<kind>.kind``)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from spectra import defaults
from spectra.io.parsing import parse_ints
from spectra.models.devices import check_device, placement_kwargs
from spectra.models.loading import DTYPE_NAMES

__all__ = [
    "COMMON_KEYS",
    "ENGINES",
    "KINDS",
    "as_list",
    "check_config",
    "int_list",
    "kind_module",
    "load_config",
    "positive_int",
]


#: Every job kind of ``spectra run``; kind ``k`` is implemented by the module ``spectra.jobs.k.kind``.
KINDS: tuple[str, ...] = ("profile", "capture", "sweep", "dynamics", "geometry", "plasticity")
ENGINES: tuple[str, ...] = ("local", "ray")
RUN_FILE = "run.json"
STAMP_FILE = "task.json"  # the stamp of a folder shard, written inside it before it is renamed into place
TASK_KEY = b"spectra.task"  # Parquet key-value metadata of a file shard: task id, fingerprint, model identity
MAX_STAGES = 8  # plan → execute rounds of one run (kinds with a later stage need two)

#: Keys every kind accepts, with their defaults; each kind adds its own (``spectra.jobs.<kind>.kind.KEYS``).
COMMON_KEYS: dict[str, Any] = {
    "kind": None,
    "models": None,
    "checkpoints": None,
    "out": None,
    "dtype": defaults.DTYPE,
    "attn_implementation": defaults.ATTN_IMPLEMENTATION,
    "device": defaults.DEVICE,
    "device_map": None,
    "max_memory": None,
    "offload_folder": None,
    "gpus_per_task": None,
}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """The YAML mapping of a ``spectra run`` config file (keys may use ``-`` or ``_``), not yet checked.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.yaml"
        >>> _ = path.write_text("kind: profile\\nmodels: [tiny-llama]\\ncontext-length: 32\\n")
        >>> load_config(path)
        {'kind': 'profile', 'models': ['tiny-llama'], 'context_length': 32}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"config: {path} is not valid YAML ({error})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"config: {path} must hold a mapping (kind: profile, models: [...], ...)")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def kind_module(kind: Any) -> ModuleType:
    """The module implementing a job kind (``spectra.jobs.<kind>.kind``).

    Example:
        >>> kind_module("profile").__name__
        'spectra.jobs.profile.kind'
    """
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not a job kind; allowed kinds are {', '.join(KINDS)}")
    return importlib.import_module(f"spectra.jobs.{kind}.kind")


def as_list(value: Any, key: str) -> list:
    """``value`` as a list: None → [], one name → [name]."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{key}: expected a name or a list of names; got {value!r}")


def int_list(value: Any, key: str) -> list[int] | None:
    """``"0,2,5-7"``, an integer or a list of integers as a list (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_ints(value)
        except ValueError:
            raise ValueError(f"{key}: expected e.g. '0,2,5-7' or a list of integers; got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [int(v) for v in value]
    raise ValueError(f"{key}: expected e.g. '0,2,5-7' or a list of integers; got {value!r}")


def positive_int(value: Any, key: str, *, optional: bool = False) -> int | None:
    """``value`` when it is an integer >= 1 (or None with ``optional``), else a ValueError naming ``key``."""
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key}: expected an integer >= 1; got {value!r}")
    return value


def check_config(config: Mapping[str, Any], *, out: str | os.PathLike | None = None) -> dict[str, Any]:
    """The config with every key checked and defaults filled in; ``out`` (``--out``) overrides the config's.

    Keys of every kind: ``kind`` (one of :data:`KINDS`), ``models`` (zoo names,
    ``all-minilm-l6-v2``, model folders or hub ids ``org/name[@revision]`` from the Hugging Face cache,
    each pinned to the commit it resolves to when the run is planned) and/or ``checkpoints`` (a zoo model with checkpoints,
    e.g. ``tiny-qwen3``, for all of them, or checkpoint folders), ``out``, ``dtype``,
    ``attn_implementation``; placement: ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``; the
    spelling is checked here, its presence where the task loads the model), ``device_map`` (``auto``
    and accelerate's other strategies, or a mapping of module names to devices: a model larger than
    one GPU, loaded through accelerate), with ``max_memory`` and ``offload_folder`` as in
    :func:`spectra.models.loading.load_model`, ``gpus_per_task`` (default 1 with ``device: cuda``, else
    0; what a Ray task requests). The kind's own keys are in ``spectra.jobs.<kind>.kind.KEYS`` (see its ``check``).

    Example:
        >>> check_config({"kind": "profile", "models": "tiny-llama", "context_length": 32, "out": "x"})["samples_per_shard"]
        8
        >>> check_config({"kind": "profile", "models": "tiny-llama", "context_length": 32, "out": "x", "alpha": 1})
        Traceback (most recent call last):
        ...
        ValueError: config: unknown key(s) alpha; allowed keys for kind profile are add_special_tokens, attn_implementation, checkpoints, context_length, data, device, device_map, dtype, gpus_per_task, heads, ignore_first, kind, layers, max_memory, metrics, models, n_permutations, n_samples, offload_folder, out, samples_per_shard, threshold
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config: expected a mapping; got {type(config).__name__}")
    config = {str(k).replace("-", "_"): v for k, v in config.items()}
    module = kind_module(config.get("kind"))
    keys = {**COMMON_KEYS, **module.KEYS}
    unknown = sorted(k for k in config if k not in keys)
    if unknown:
        raise ValueError(
            f"config: unknown key(s) {', '.join(unknown)}; allowed keys for kind {config['kind']} are "
            f"{', '.join(sorted(keys))}"
        )
    checked = {**keys, **config}
    if out is not None:
        checked["out"] = str(out)
    if checked["out"] is None:
        raise ValueError("out: the config has no 'out' folder; add one or pass --out")
    checked["out"] = str(Path(checked["out"]).absolute())  # workers may run elsewhere than the driver's cwd
    checked["models"] = [str(m) for m in as_list(checked["models"], "models")]
    checked["checkpoints"] = [str(m) for m in as_list(checked["checkpoints"], "checkpoints")]
    if not checked["models"] and not checked["checkpoints"]:
        raise ValueError("models: the config names no models and no checkpoints")
    if isinstance(checked["dtype"], str):  # bf16, fp16, fp32 -> the canonical name, so they hash alike
        checked["dtype"] = DTYPE_NAMES.get(checked["dtype"].strip().lower(), checked["dtype"])
    for key, allowed in (("dtype", defaults.DTYPES), ("attn_implementation", defaults.ATTN_IMPLEMENTATIONS)):
        if checked[key] not in allowed:
            raise ValueError(f"{key}: {checked[key]!r}; allowed values are {', '.join(map(str, allowed))}")
    # Only the spelling of the device is checked here: the tasks may run on other machines (Ray),
    # where load_model checks that the device exists. None means the default, the CPU.
    device = check_device(defaults.DEVICE if checked["device"] is None else checked["device"], available=False)
    checked["device"] = str(device)

    placement_kwargs(checked["device_map"], checked["max_memory"], checked["offload_folder"])  # checks all three
    if checked["offload_folder"] is not None:
        checked["offload_folder"] = str(Path(checked["offload_folder"]).absolute())
    gpus = checked["gpus_per_task"]
    if gpus is None:
        gpus = 1 if device.type == "cuda" else 0
    if not isinstance(gpus, (int, float)) or isinstance(gpus, bool) or gpus < 0:
        raise ValueError(f"gpus_per_task: expected a number >= 0; got {gpus!r}")
    checked["gpus_per_task"] = gpus
    return module.check(checked)
