"""The native ops' argument checks, in Python, with the native messages word for word.

:func:`spectra.attn_row_stats` and friends run these before they pick an implementation, so the
native kernels and the torch path refuse the same inputs with the same errors (ValueError for a bad
shape, value or device, TypeError for a bad dtype) — and a CUDA input is checked before anything is
launched.
"""

from __future__ import annotations

import math

import torch

SUPPORTED = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# c10's names, as the native checks print them.
_C10_NAMES = {
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
    torch.bool: "Bool",
    torch.uint8: "Byte",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def dtype_name(dtype: torch.dtype) -> str:
    return _C10_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _sizes(x: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in x.shape) + "]"


def check_float_dtype(x: torch.Tensor, op: str, arg: str) -> None:
    if x.dtype not in SUPPORTED:
        raise TypeError(
            f"{op}: {arg} has dtype {dtype_name(x.dtype)}; allowed dtypes are float16, bfloat16, float32, float64"
        )


def check_same_device(op: str, **tensors: torch.Tensor) -> None:
    """All tensors on one device (a CUDA op's tensors on the same GPU)."""
    devices = [t.device for t in tensors.values()]
    if any(d != devices[0] for d in devices):
        names = ", ".join(tensors)
        got = ", ".join(str(d) for d in devices)
        raise ValueError(f"{op}: {names} must be on the same device; got {got}")


def check_vec_stats(x: torch.Tensor) -> None:
    if x.dim() < 1:
        raise ValueError("vec_stats: x must have shape (..., D) with at least 1 dimension; got a 0-d tensor")
    check_float_dtype(x, "vec_stats", "x")
    if x.shape[-1] < 1:
        raise ValueError(f"vec_stats: x's last dimension D must be >= 1; got shape {_sizes(x)}")


def check_attn_row_stats(
    q: torch.Tensor,
    k: torch.Tensor,
    scaling: float,
    key_valid: torch.Tensor | None,
    sliding_window: int,
    threshold: float,
    n_sink: int,
    softcap: float,
    sinks: torch.Tensor | None = None,
    visible: torch.Tensor | None = None,
) -> None:
    op = "attn_row_stats"
    if q.dim() != 4:
        raise ValueError(f"{op}: q must have shape (batch, heads, query_len, head_dim); got {_sizes(q)}")
    if k.dim() != 4:
        raise ValueError(f"{op}: k must have shape (batch, kv_heads, key_len, head_dim); got {_sizes(k)}")
    check_float_dtype(q, op, "q")
    if k.dtype != q.dtype:
        raise TypeError(f"{op}: k has dtype {dtype_name(k.dtype)} but q has {dtype_name(q.dtype)}; they must match")
    check_same_device(op, q=q, k=k)
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"{op}: k has batch {k.shape[0]} but q has {q.shape[0]}")
    if k.shape[3] != q.shape[3]:
        raise ValueError(f"{op}: k has head_dim {k.shape[3]} but q has {q.shape[3]}")
    if q.shape[3] < 1:
        raise ValueError(f"{op}: head_dim must be >= 1")
    if k.shape[1] < 1 or q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"{op}: q's heads ({q.shape[1]}) must be a multiple of k's kv_heads ({k.shape[1]})")
    if not math.isfinite(scaling):
        raise ValueError(f"{op}: scaling must be finite; got {scaling}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"{op}: threshold must lie in (0, 1]; got {threshold}")
    if n_sink < 0:
        raise ValueError(f"{op}: n_sink must be >= 0; got {n_sink}")
    if sliding_window < 0:
        raise ValueError(f"{op}: sliding_window must be >= 0 (0: none); got {sliding_window}")
    if not (softcap >= 0.0 and math.isfinite(softcap)):
        raise ValueError(f"{op}: softcap must be >= 0 (0: none); got {softcap}")
    if key_valid is not None:
        if key_valid.dtype != torch.bool:
            raise TypeError(f"{op}: key_valid must be a bool tensor; got {dtype_name(key_valid.dtype)}")
        if key_valid.dim() != 2 or key_valid.shape[0] != k.shape[0] or key_valid.shape[1] != k.shape[2]:
            raise ValueError(
                f"{op}: key_valid must have shape (batch, key_len) = ({k.shape[0]}, {k.shape[2]}); "
                f"got {_sizes(key_valid)}"
            )
    if sinks is not None:
        check_float_dtype(sinks, op, "sinks")
        if sinks.dim() != 1 or sinks.shape[0] != q.shape[1]:
            raise ValueError(f"{op}: sinks must have shape (heads,) = ({q.shape[1]},); got {_sizes(sinks)}")
    if visible is not None:
        if visible.dtype != torch.bool:
            raise TypeError(f"{op}: visible must be a bool tensor; got {dtype_name(visible.dtype)}")
        b, h, tq, tk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
        if not (
            visible.dim() == 4
            and visible.shape[0] in (1, b)
            and visible.shape[1] in (1, h)
            and visible.shape[2] == tq
            and visible.shape[3] == tk
        ):
            raise ValueError(
                f"{op}: visible must have shape (batch or 1, heads or 1, query_len, key_len) = "
                f"({b} or 1, {h} or 1, {tq}, {tk}); got {_sizes(visible)}"
            )


def check_plasticity_pairwise(w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    op = "plasticity_pairwise"
    if w.dim() != 2:
        raise ValueError(f"{op}: w must have shape (P, d), one key difference k1 - k2 per row; got shape {_sizes(w)}")
    pairs, dim = w.shape
    if dim < 1:
        raise ValueError(f"{op}: w's dimension d must be >= 1; got shape {_sizes(w)}")
    check_float_dtype(w, op, "w")
    check_float_dtype(mean, op, "mean")
    check_float_dtype(var, op, "var")
    check_same_device(op, w=w, mean=mean, var=var)
    if not ((mean.dim() == 1 and mean.shape[0] == dim) or (mean.dim() == 2 and tuple(mean.shape) == (pairs, dim))):
        raise ValueError(
            f"{op}: mean must have shape (d,) = ({dim},) shared by all pairs or (P, d) = ({pairs}, {dim}) "
            f"one per pair; got shape {_sizes(mean)}"
        )
    if not ((var.dim() == 1 and var.shape[0] == dim) or (var.dim() == 2 and tuple(var.shape) == (dim, dim))):
        raise ValueError(
            f"{op}: var must have shape (d,) = ({dim},) for diagonal variances or (d, d) = ({dim}, {dim}) "
            f"for a full covariance; got shape {_sizes(var)}"
        )


def check_variances(var: torch.Tensor) -> None:
    """Every variance on ``var``'s diagonal >= 0 (a value check: the torch path runs it, the native kernels scan themselves)."""
    op = "plasticity_pairwise"
    diagonal = var if var.dim() == 1 else var.diagonal()
    negative = (diagonal < 0).nonzero()
    if negative.numel():
        bad = int(negative[0, 0])
        value = float(diagonal[bad])
        if var.dim() == 2:
            raise ValueError(
                f"{op}: var is a covariance with a negative variance {value:g} on its diagonal at ({bad}, {bad}); "
                "variances must be >= 0"
            )
        raise ValueError(f"{op}: var has a negative variance {value:g} at index {bad}; variances must be >= 0")
