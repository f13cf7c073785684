"""The interventions Spectra applies to single heads, as values: what each one scales or replaces,
which query heads' logits it changes (its GQA side effects included), and how it installs itself
as native actions in a ``HookRegistry``. :func:`spectra.interventions.context` applies them to a model.

GQA: query head h reads KV head ``h // (H / Hkv)`` (never ``h % Hkv`` as the seed code did; see docs/concepts.md, 'What the original code got wrong'), so a
key scale changes the logits of the KV head's whole group.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from spectra.models import Adapter
from spectra.models.base import kv_group, kv_head_of
from spectra.ops import HookRegistry

__all__ = [
    "INTERVENTION_TYPES",
    "AblateHead",
    "HeadOutputs",
    "Intervention",
    "PatchHead",
    "ScaleKey",
    "ScaleLogits",
    "ScaleQuery",
    "kv_group",
]


def _index(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected a non-negative int; got {value!r}")
    return int(value)


def _alpha(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"alpha: expected a real number > 0; got {value!r}")
    alpha = float(value)
    if not math.isfinite(alpha) or alpha <= 0.0:
        raise ValueError(f"alpha: the scale must be a finite number > 0; got {value!r}")
    return alpha


def _check_layer(adapter: Adapter, layer: int, what: str) -> None:
    if layer >= adapter.n_layers:
        raise ValueError(
            f"layer: {what} targets layer {layer}, but the model has {adapter.n_layers} layers "
            f"(allowed 0..{adapter.n_layers - 1})"
        )


def _check_head(adapter: Adapter, head: int, what: str, kv: bool = False) -> None:
    limit = adapter.n_kv_heads if kv else adapter.n_heads
    if head >= limit:
        kind = "kv_head" if kv else "head"
        raise ValueError(
            f"{kind}: {what} targets {'KV' if kv else 'query'} head {head}, but the model has {limit} "
            f"(allowed 0..{limit - 1})"
        )


class _HeadIntervention:
    """What every intervention tells the context and the checks."""

    layer: int

    def q_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        """Query heads whose q is multiplied, and by what."""
        return {}

    def k_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        """KV heads whose k is multiplied, and by what."""
        return {}

    def logit_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        """Query heads whose attention logits are multiplied (before any soft cap), and by what."""
        out: dict[int, float] = {}
        for h, f in self.q_factors(n_heads, n_kv_heads).items():
            out[h] = out.get(h, 1.0) * f
        for g, f in self.k_factors(n_heads, n_kv_heads).items():
            for h in kv_group(n_heads, n_kv_heads, g):
                out[h] = out.get(h, 1.0) * f
        return out

    def output_heads(self) -> tuple[int, ...]:
        """Query heads whose attention output is replaced."""
        return ()

    def is_identity(self) -> bool:
        """True when the intervention cannot change anything (every factor 1)."""
        return getattr(self, "alpha", None) == 1.0

    def __post_init__(self) -> None:
        # The fields every intervention shares, validated (and normalised to plain numbers) once.
        for name in ("layer", "head", "kv_head"):
            if hasattr(self, name):
                object.__setattr__(self, name, _index(getattr(self, name), name))
        if hasattr(self, "alpha"):
            object.__setattr__(self, "alpha", _alpha(self.alpha))

    def check(self, adapter: Adapter) -> None:
        """Raises ValueError when the layer or head does not exist in the model."""
        _check_layer(adapter, self.layer, str(self))
        if hasattr(self, "kv_head"):
            _check_head(adapter, self.kv_head, str(self), kv=True)
        else:
            _check_head(adapter, self.head, str(self))

    def install(self, registry: HookRegistry) -> list:
        raise NotImplementedError


@dataclass(frozen=True)
class ScaleQuery(_HeadIntervention):
    """Multiplies query head ``head``'s q by ``alpha``: that head's logits scale by α, nothing else.

    Example:
        >>> ScaleQuery(layer=1, head=5, alpha=2.0).logit_factors(8, 2)
        {5: 2.0}
    """

    layer: int
    head: int
    alpha: float

    def q_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        return {self.head: self.alpha}

    def install(self, registry: HookRegistry) -> list:
        return [registry.add_scale(self.layer, "q", [self.head], self.alpha)]


@dataclass(frozen=True)
class ScaleKey(_HeadIntervention):
    """Multiplies KV head ``kv_head``'s k by ``alpha``: the logits of *every* query head of its GQA
    group scale by α (``affected_heads``).

    Example:
        >>> ScaleKey(layer=0, kv_head=1, alpha=0.5).affected_heads(8, 2)
        (4, 5, 6, 7)
    """

    layer: int
    kv_head: int
    alpha: float

    def affected_heads(self, n_heads: int, n_kv_heads: int) -> tuple[int, ...]:
        """The query heads whose logits this scales (the KV head's GQA group)."""
        return kv_group(n_heads, n_kv_heads, self.kv_head)

    def k_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        return {self.kv_head: self.alpha}

    def install(self, registry: HookRegistry) -> list:
        return [registry.add_scale(self.layer, "k", [self.kv_head], self.alpha)]


@dataclass(frozen=True)
class ScaleLogits(_HeadIntervention):
    """Multiplies head ``head``'s q and its KV head's k by √α each (the MATS/Oculi "Spectra" scaling):
    the head's logits scale by α and — the side effect — the other heads of its GQA group by √α.

    Example:
        >>> ScaleLogits(layer=0, head=1, alpha=4.0).logit_factors(4, 2)
        {1: 4.0, 0: 2.0}
    """

    layer: int
    head: int
    alpha: float

    def q_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        return {self.head: math.sqrt(self.alpha)}

    def k_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        return {kv_head_of(self.head, n_heads, n_kv_heads): math.sqrt(self.alpha)}

    def side_effect_heads(self, n_heads: int, n_kv_heads: int) -> tuple[int, ...]:
        """The other heads of the group, whose logits scale by √α."""
        return tuple(
            h for h in kv_group(n_heads, n_kv_heads, kv_head_of(self.head, n_heads, n_kv_heads)) if h != self.head
        )

    def install(self, registry: HookRegistry) -> list:
        root = math.sqrt(self.alpha)
        kv = registry.kv_head(self.head)
        return [registry.add_scale(self.layer, "q", [self.head], root), registry.add_scale(self.layer, "k", [kv], root)]


@dataclass(frozen=True)
class AblateHead(_HeadIntervention):
    """Replaces head ``head``'s attention output (before ``o_proj``) by zeros (``mode="zero"``) or by
    a mean (``mode="mean"``): the given ``mean`` vector (head_dim,), e.g. a dataset mean from
    :func:`record_head_outputs`, or else the mean over the current batch's real tokens.

    Example:
        >>> AblateHead(layer=1, head=3).output_heads()
        (3,)
    """

    layer: int
    head: int
    mode: Literal["zero", "mean"] = "zero"
    mean: torch.Tensor | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("zero", "mean"):
            raise ValueError(f"mode: unknown ablation {self.mode!r}; allowed are 'zero', 'mean'")
        if self.mean is not None:
            if self.mode != "mean":
                raise ValueError("mean: a mean vector only goes with mode='mean'")
            if not isinstance(self.mean, torch.Tensor) or self.mean.dim() != 1:
                raise ValueError(f"mean: expected a (head_dim,) tensor; got {getattr(self.mean, 'shape', self.mean)!r}")
            if not bool(torch.isfinite(self.mean).all()):
                raise ValueError("mean: the mean vector holds NaN or inf")

    def output_heads(self) -> tuple[int, ...]:
        return (self.head,)

    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        if self.mean is not None and self.mean.shape[0] != adapter.head_dim:
            raise ValueError(f"mean: has {self.mean.shape[0]} entries; the model's head_dim is {adapter.head_dim}")

    def install(self, registry: HookRegistry) -> list:
        return [registry.add_head_output(self.layer, self.head, self.mode, self.mean)]

    def __str__(self) -> str:
        return f"AblateHead(layer={self.layer}, head={self.head}, mode={self.mode!r})"


class HeadOutputs(Mapping):
    """Recorded attention outputs (before ``o_proj``): ``outputs[(layer, head)]`` is ``(B, T, D)``."""

    def __init__(self, tensors: dict[tuple[int, int], torch.Tensor]) -> None:
        self._tensors = tensors

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        try:
            return self._tensors[key]
        except KeyError:
            raise KeyError(
                f"(layer, head) {key!r} was not recorded; recorded are {sorted(self._tensors)[:8]}..."
            ) from None

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def mean(self, layer: int, head: int) -> torch.Tensor:
        """The head's mean output over every recorded token (for ``AblateHead(mode="mean")``)."""
        x = self[(layer, head)]
        return x.reshape(-1, x.shape[-1]).double().mean(0).to(x.dtype)


@dataclass(frozen=True)
class PatchHead(_HeadIntervention):
    """Replaces head ``head``'s attention output by ``source``: the same head's output from another
    run (a ``(B, T, D)`` or ``(T, D)`` tensor, or the :class:`HeadOutputs` of
    :func:`record_head_outputs`), at every token or only at token columns ``positions``.

    Example:
        >>> PatchHead(layer=0, head=2, source=torch.zeros(5, 32), positions=[4]).output_heads()
        (2,)
    """

    layer: int
    head: int
    source: torch.Tensor | HeadOutputs = field(compare=False)
    positions: Sequence[int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        source = self.source[(self.layer, self.head)] if isinstance(self.source, HeadOutputs) else self.source
        if not isinstance(source, torch.Tensor) or source.dim() not in (2, 3):
            raise ValueError(
                f"source: expected the head's output from another run, a (batch, seq_len, head_dim) or "
                f"(seq_len, head_dim) tensor or HeadOutputs; got {getattr(source, 'shape', type(source).__name__)}"
            )
        if not bool(torch.isfinite(source).all()):
            raise ValueError("source: the patch holds NaN or inf")
        object.__setattr__(self, "source", source)
        if self.positions is not None:
            positions = tuple(_index(p, "positions") for p in self.positions)
            if not positions:
                raise ValueError("positions: empty; pass None to patch every token")
            object.__setattr__(self, "positions", positions)

    def output_heads(self) -> tuple[int, ...]:
        return (self.head,)

    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        if self.source.shape[-1] != adapter.head_dim:
            raise ValueError(f"source: head_dim {self.source.shape[-1]}; the model's head_dim is {adapter.head_dim}")

    def install(self, registry: HookRegistry) -> list:
        columns = torch.tensor(self.positions, dtype=torch.long) if self.positions is not None else None
        return [registry.add_head_output(self.layer, self.head, "patch", self.source, columns)]

    def __str__(self) -> str:
        where = "" if self.positions is None else f", positions={list(self.positions)}"
        return f"PatchHead(layer={self.layer}, head={self.head}, source={tuple(self.source.shape)}{where})"


Intervention = ScaleQuery | ScaleKey | ScaleLogits | AblateHead | PatchHead
INTERVENTION_TYPES = (ScaleQuery, ScaleKey, ScaleLogits, AblateHead, PatchHead)
