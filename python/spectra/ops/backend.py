"""Which implementation of an op runs: the native kernel or the torch path.

``SPECTRA_BACKEND`` (environment) or :func:`backend` (a context manager, which wins) picks one of

* ``auto`` (the default): the native kernel where this build links one for the tensor's device
  (the CPU always; CUDA only for kernels validated on a GPU), else the torch path;
* ``native``: the native kernel, and a clear error where none is linked for the device;
* ``torch``: the torch path (:mod:`spectra.ops.torch_path`) on every device.

Every analysis therefore runs on a CUDA model with no user action: a CUDA tensor reaches a
validated CUDA kernel or the torch path, never an unvalidated kernel and never a
``NotImplementedError``. The definitions are in docs/backends.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

import torch

BACKENDS = ("auto", "native", "torch")
ENV = "SPECTRA_BACKEND"
OPS = ("attn_row_stats", "vec_stats", "plasticity_pairwise")

_override: ContextVar[str | None] = ContextVar("spectra_backend", default=None)


def _check(name: object, source: str) -> str:
    value = name.strip().lower() if isinstance(name, str) else name
    if value not in BACKENDS:
        raise ValueError(f"{source}={name!r}: allowed values are {', '.join(BACKENDS)}")
    return value


def current() -> str:
    """The selected backend: the innermost :func:`backend` block, else ``$SPECTRA_BACKEND``, else ``auto``.

    Example:
        >>> from spectra.ops.backend import backend, current
        >>> with backend("torch"):
        ...     current()
        'torch'
    """
    chosen = _override.get()
    if chosen is not None:
        return chosen
    return _check(os.environ.get(ENV) or "auto", ENV)


@contextlib.contextmanager
def backend(name: str) -> Iterator[str]:
    """Runs the block's ops with ``name`` (``"auto"``, ``"native"`` or ``"torch"``); thread- and task-local.

    Example:
        >>> import torch, spectra
        >>> with spectra.backend("torch"):
        ...     spectra.vec_stats(torch.tensor([[3.0, 4.0]])).norm.tolist()
        [5.0]
    """
    token = _override.set(_check(name, "backend"))
    try:
        yield name
    finally:
        _override.reset(token)


def _linked_cuda_kernels() -> frozenset[str]:
    # Read once, when spectra.ops loads and before it registers the torch path for the CUDA
    # dispatch key: only a kernel compiled into spectra._core is there at that moment.
    return frozenset(op for op in OPS if torch._C._dispatch_has_kernel_for_dispatch_key(f"spectra::{op}", "CUDA"))


LINKED_CUDA: frozenset[str] = _linked_cuda_kernels()


def native_kernels() -> dict[str, tuple[str, ...]]:
    """Device type → the ops this build runs natively there (every op on the CPU; validated CUDA kernels).

    Example:
        >>> from spectra.ops.backend import native_kernels
        >>> native_kernels()["cpu"]
        ('attn_row_stats', 'vec_stats', 'plasticity_pairwise')
    """
    return {"cpu": OPS, "cuda": tuple(op for op in OPS if op in LINKED_CUDA)}


def resolve(op: str, device: torch.device | str) -> str:
    """``"native"`` or ``"torch"``: the implementation of ``op`` that runs for tensors on ``device``.

    Raises ValueError under ``native`` when this build has no native ``op`` for the device.

    Example:
        >>> from spectra.ops.backend import resolve
        >>> resolve("attn_row_stats", "cpu")
        'native'
    """
    device_type = torch.device(device).type
    linked = op in native_kernels().get(device_type, ())
    mode = current()
    if mode == "torch" or (mode == "auto" and not linked):
        return "torch"
    if not linked:
        have = ", ".join(f"{kind}: {', '.join(ops) or 'none'}" for kind, ops in native_kernels().items())
        raise ValueError(
            f"{ENV}=native: this build links no native {op} kernel for {device_type} tensors "
            f"(native kernels — {have}); use SPECTRA_BACKEND=auto (the torch path where no kernel is linked) "
            "or torch"
        )
    return "native"
