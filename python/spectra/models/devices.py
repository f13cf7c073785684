"""Where a model's inputs go, and how Spectra reads weights, when a model spans several devices.

A model loaded with ``device_map=...`` (through accelerate) may hold its layers on several GPUs, on
the CPU, or offloaded to disk; an offloaded module's parameters sit on the ``meta`` device between
forwards and accelerate's hooks (``module._hf_hook``) bring them in at forward time, moving each
module's inputs to its *execution device*. Spectra's rules:

* **Inputs** of a forward Spectra drives go to :func:`input_device`: the execution device of the
  input embedding (its hook's device when accelerate dispatched it, else the device of its
  weight), never "the device of the first parameter", which is ``meta`` for offloaded weights.
* **Per-layer tensors** Spectra makes inside a layer's attention (masks, positions, scales, patch
  values, row statistics) are made on, or moved to, the device of that layer's q/k.
* **Results gathered across layers** (captured rows, profile columns) go to the CPU.
* **Weights** are read for the fingerprint through :func:`state_dict_values`, which reads an
  offloaded tensor through accelerate's offload map, exactly the values accelerate would load.

Example:
    >>> from spectra import zoo
    >>> from spectra.models.devices import input_device
    >>> model, _ = zoo.load("tiny-llama")
    >>> input_device(model)
    device(type='cpu')
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: The named placement strategies ``device_map`` accepts (transformers/accelerate compute the map).
DEVICE_MAP_STRATEGIES: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE_NAME = re.compile(r"^(cpu|disk|meta|mps|xpu|npu|cuda(:\d+)?)$")
_ALLOWED = (
    "None, "
    + ", ".join(repr(s) for s in DEVICE_MAP_STRATEGIES)
    + ", or a dict module name -> device (an int GPU index, 'cpu', 'cuda', 'cuda:N', or 'disk')"
)


def check_device_map(device_map: Any) -> None | str | dict[str, int | str]:
    """``device_map`` as transformers' ``from_pretrained`` takes it, or a ValueError naming the
    allowed values.

    Example:
        >>> check_device_map("auto"), check_device_map({"model": 0, "lm_head": "cuda:1"})
        ('auto', {'model': 0, 'lm_head': 'cuda:1'})
        >>> check_device_map("gpu")
        Traceback (most recent call last):
        ...
        ValueError: device_map: 'gpu' is not allowed; allowed are None, 'auto', 'balanced', 'balanced_low_0', 'sequential', or a dict module name -> device (an int GPU index, 'cpu', 'cuda', 'cuda:N', or 'disk')
    """
    if device_map is None:
        return None
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise ValueError(f"device_map: {device_map!r} is not allowed; allowed are {_ALLOWED}")
        return device_map
    if not isinstance(device_map, Mapping):
        raise ValueError(f"device_map: got a {type(device_map).__name__}; allowed are {_ALLOWED}")
    if not device_map:
        raise ValueError(f"device_map: the dict is empty; allowed are {_ALLOWED}")
    checked: dict[str, int | str] = {}
    for name, device in device_map.items():
        if not isinstance(name, str):
            raise ValueError(f"device_map: key {name!r} is not a module name (a str such as 'model.layers.0')")
        if isinstance(device, torch.device):
            device = str(device)
        if isinstance(device, bool) or not isinstance(device, (int, str)):
            raise ValueError(f"device_map: {name!r} -> {device!r} is not a device; allowed are {_ALLOWED}")
        if isinstance(device, int) and device < 0:
            raise ValueError(f"device_map: {name!r} -> {device} is not a GPU index (expected an int >= 0)")
        if isinstance(device, str) and (not _DEVICE_NAME.match(device) or device == "meta"):
            raise ValueError(f"device_map: {name!r} -> {device!r} is not a device; allowed are {_ALLOWED}")
        checked[name] = device
    return checked


def require_accelerate(argument: str = "device_map") -> None:
    """RuntimeError naming ``argument`` when accelerate, which places a model over devices, is missing."""
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise RuntimeError(
            f"{argument}: loading a model with a device map needs the accelerate package; "
            "pip install accelerate (or pip install 'spectra-attention[multigpu]')"
        ) from None


def placement_kwargs(
    device_map: Any = None,
    max_memory: Mapping[Any, Any] | None = None,
    offload_folder: str | Path | None = None,
) -> dict[str, Any]:
    """The ``from_pretrained`` keywords for a placement (empty without a ``device_map``), checked.

    Example:
        >>> placement_kwargs()
        {}
        >>> placement_kwargs("auto", max_memory={0: "20GiB", "cpu": "60GiB"})
        {'device_map': 'auto', 'max_memory': {0: '20GiB', 'cpu': '60GiB'}}
    """
    device_map = check_device_map(device_map)
    if device_map is None:
        if max_memory is not None:
            raise ValueError("max_memory: only applies with a device_map (e.g. device_map='auto')")
        if offload_folder is not None:
            raise ValueError("offload_folder: only applies with a device_map that offloads to 'disk'")
        return {}
    if max_memory is not None and not isinstance(max_memory, Mapping):
        raise ValueError(
            f"max_memory: expected a dict device -> size (e.g. {{0: '20GiB', 'cpu': '60GiB'}}); got {max_memory!r}"
        )
    if isinstance(device_map, dict) and "disk" in device_map.values() and offload_folder is None:
        raise ValueError("offload_folder: device_map puts modules on 'disk'; name a folder for the offloaded weights")
    require_accelerate("device_map")
    kwargs: dict[str, Any] = {"device_map": device_map}
    if max_memory is not None:
        kwargs["max_memory"] = dict(max_memory)
    if offload_folder is not None:
        kwargs["offload_folder"] = str(offload_folder)
    return kwargs


#: The device types a whole model may be placed on with ``device=`` (a GPU index means ``cuda:N``).
DEVICE_TYPES: tuple[str, ...] = ("cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """The devices this torch can place a model on now: ``cpu``, then ``cuda`` and ``cuda:0`` ...
    ``cuda:N-1`` when CUDA GPUs are visible, then ``mps`` when Apple's backend is available.

    Example:
        >>> available_devices()[0]
        'cpu'
    """
    allowed = ["cpu"]
    if torch.cuda.is_available():
        allowed += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        allowed.append("mps")
    return allowed


def _no_cuda() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) has no CUDA"
    return f"this torch ({torch.__version__}, CUDA {torch.version.cuda}) sees no CUDA GPU"


def check_device(device: Any, *, available: bool = True) -> torch.device | None:
    """``device`` as a torch.device, or a ValueError naming ``device`` and the allowed values.

    ``device``: None (the model stays where it loads: the CPU), a str (``"cpu"``, ``"cuda"``,
    ``"cuda:1"``, ``"mps"``), an int GPU index (``1`` is ``cuda:1``) or a torch.device. With
    ``available`` (the default) the device must also exist here: ``cuda`` needs a torch with CUDA
    and a visible GPU, ``cuda:N`` at least N + 1 GPUs; without it only the spelling is checked (a
    run config checked on a machine other than the one its tasks run on).

    Example:
        >>> check_device(None), check_device("cpu"), check_device(1, available=False)
        (None, device(type='cpu'), device(type='cuda', index=1))
        >>> check_device("tpu9")
        Traceback (most recent call last):
        ...
        ValueError: device='tpu9': not a device; allowed: cpu, cuda, cuda:N, mps, or None (where the model loads: the CPU)
    """
    if device is None:
        return None
    spelled = ", ".join(DEVICE_TYPES[:2]) + ", cuda:N, " + ", ".join(DEVICE_TYPES[2:])
    bad = f"device={device!r}: not a device; allowed: {spelled}, or None (where the model loads: the CPU)"
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise ValueError(bad)
    if isinstance(device, int):
        if device < 0:
            raise ValueError(f"device={device!r}: a GPU index is an int >= 0; allowed: None, {spelled}")
        checked = torch.device("cuda", device)
    else:
        try:
            checked = torch.device(device.strip() if isinstance(device, str) else device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(bad) from None
    if checked.type not in DEVICE_TYPES:
        raise ValueError(bad)
    if not available:
        return checked
    allowed = ", ".join(available_devices())
    if checked.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: {_no_cuda()}; allowed: {allowed}")
        count = torch.cuda.device_count()
        if checked.index is not None and checked.index >= count:
            raise ValueError(
                f"device={device!r}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1}); "
                f"allowed: {allowed}"
            )
    if checked.type == "mps" and "mps" not in available_devices():
        raise ValueError(f"device={device!r}: Apple's MPS backend is not available here; allowed: {allowed}")
    return checked


# --------------------------------------------------------------------------------------------
# Where things run
# --------------------------------------------------------------------------------------------


def _as_device(device: int | str | torch.device) -> torch.device:
    """A torch.device from what accelerate stores: an int is a GPU index (of the machine's
    accelerator; ``cuda`` when torch cannot tell, e.g. on a CPU-only build)."""
    if isinstance(device, int) and not isinstance(device, bool):
        try:
            return torch.device(device)
        except RuntimeError:
            return torch.device("cuda", device)
    return torch.device(device)


def _hooks(module: nn.Module) -> list[Any]:
    """accelerate's hooks on ``module`` (a SequentialHook unpacked), outermost first."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", None) or [hook])


def execution_device(module: nn.Module) -> torch.device | None:
    """The device ``module`` computes on: its accelerate hook's execution device when it has one,
    else the device of its first parameter or buffer that is not on ``meta``; None when unknown."""
    for hook in _hooks(module):
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return _as_device(device)
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return None


def input_device(model: nn.Module) -> torch.device:
    """Where the token ids of a forward of ``model`` must go.

    The execution device of the input embedding (accelerate's hook device when the model was
    dispatched with a device map — the weight itself may be on ``meta`` — else the weight's
    device); failing that, the execution device of the model's own hook, of the first device of
    ``hf_device_map`` that is not ``cpu``/``disk``, or of the first parameter not on ``meta``;
    ``cpu`` when nothing says otherwise.
    """
    embeddings = None
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        pass
    if isinstance(embeddings, nn.Module):
        device = execution_device(embeddings)
        if device is not None:
            return device
    for hook in _hooks(model):
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return _as_device(device)
    device_map = getattr(model, "hf_device_map", None)
    if isinstance(device_map, Mapping):
        for device in device_map.values():
            if device not in ("cpu", "disk"):
                return _as_device(device)
    for tensor in model.parameters():
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


def to_input_device(model: nn.Module, inputs: Any) -> Any:
    """``inputs`` (a tensor, or a mapping such as a tokenizer's BatchEncoding) with every tensor on
    :func:`input_device`; anything else unchanged. A mapping comes back as a plain dict."""
    device = input_device(model)
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    return inputs


def is_dispatched(model: nn.Module) -> bool:
    """True when accelerate placed hooks on ``model`` or any of its modules (a device map with
    several devices or with offloading)."""
    return any(hasattr(module, "_hf_hook") for module in model.modules())


# --------------------------------------------------------------------------------------------
# Reading weights that may be offloaded
# --------------------------------------------------------------------------------------------


def _offloaded_value(model: nn.Module, name: str) -> torch.Tensor | None:
    """The value accelerate would load for state-dict entry ``name``: looked up in the offload map
    of the hook on the module that owns it, or else on the nearest ancestor whose hook has one."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        prefix, key = ".".join(parts[:cut]), ".".join(parts[cut:])
        try:
            module = model.get_submodule(prefix) if prefix else model
        except AttributeError:
            continue
        for hook in _hooks(module):
            weights = getattr(hook, "weights_map", None)
            if weights is None:
                continue
            try:
                return weights[key]
            except KeyError:
                continue
    return None


def module_tensor(module: nn.Module, name: str) -> torch.Tensor:
    """``module``'s parameter or buffer ``name`` (e.g. a norm's ``"weight"``) with its values: as is,
    or, when accelerate offloaded it to ``meta``, read through the offload map of the module's hook
    and cast to its dtype. Raises RuntimeError naming the tensor when no map holds it."""
    tensor = getattr(module, name)
    if tensor.device.type != "meta":
        return tensor
    for hook in _hooks(module):
        weights = getattr(hook, "weights_map", None)
        if weights is None:
            continue
        try:
            value = weights[name]
        except KeyError:
            continue
        return value.to(tensor.dtype)
    raise RuntimeError(
        f"{type(module).__name__}.{name} is on the meta device and no accelerate offload map holds its values"
    )


def state_dict_values(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, entry, values)`` for every entry of ``model.state_dict()``, in its order: ``entry``
    is the state-dict tensor (shape and dtype; on ``meta`` when accelerate offloaded it), ``values``
    a tensor holding its values, read through accelerate's offload map for ``meta`` entries and
    cast to the entry's dtype, as accelerate does when it loads them. One tensor at a time, so an
    offloaded model is never loaded whole.

    Raises RuntimeError naming the entry when a ``meta`` entry has no offloaded value to read.
    """
    for name, entry in model.state_dict().items():
        if entry.device.type != "meta":
            yield name, entry, entry
            continue
        value = _offloaded_value(model, name)
        if value is None:
            raise RuntimeError(
                f"{name} is on the meta device and no accelerate offload map holds its values; Spectra reads "
                "offloaded weights only from models dispatched by accelerate (from_pretrained(device_map=...))"
            )
        yield name, entry, value.to(entry.dtype) if value.dtype != entry.dtype else value
