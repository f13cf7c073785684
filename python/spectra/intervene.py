"""Interventions on single heads inside the model's own forward pass.

``with spectra.intervene(model, ScaleQuery(12, 0, 1.5)):`` routes the model's attention through
Spectra (see ``spectra.attention_switch``) and hands every targeted layer's post-QK-norm,
post-RoPE ``q (B, H, T, D)`` and ``k (B, Hkv, T, D)`` to native actions that return scaled copies,
and every targeted head's output ``(B, T, H, D)`` — before heads are merged and ``o_proj`` applied —
to actions that zero, mean or patch it. The model then runs on: effects reach later layers and the
logits (the seed's "interventions" rescaled Q in an offline recomputation of one layer, bug B2).

Placement (spec §3.2): after QK-norm, so a per-head RMSNorm cannot undo the scale; after RoPE,
which is linear, so the scale is the same before or after it. On soft-capped models (Gemma2) a
scale multiplies the logits *before* the cap. GQA: query head h reads KV head ``h // (H / Hkv)``
(never ``h % Hkv``, bug B1), so scaling a KV head changes the logits of its whole group.

Interventions compose with ``Probe``: inside both contexts the probe observes the intervened
forward, whatever order the contexts were entered in.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np
import torch
from torch import nn

from spectra._core import HookRegistry, PositionSampler
from spectra.attention_switch import (
    INTERVENTION_ORDER,
    OBSERVER_ORDER,
    AttentionSwitch,
    switch_for,
)
from spectra.models import Adapter, adapter_for

__all__ = [
    "AblateHead",
    "HeadOutputs",
    "Intervention",
    "InterventionContext",
    "InterventionNotReachedError",
    "OutputRecorder",
    "PatchHead",
    "ScaleKey",
    "ScaleLogits",
    "ScaleQuery",
    "intervene",
    "kv_group",
    "record_head_outputs",
]


class InterventionNotReachedError(RuntimeError):
    """A forward pass finished without running an intervention's layer."""


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


def kv_group(n_heads: int, n_kv_heads: int, kv_head: int) -> tuple[int, ...]:
    """The query heads that read ``kv_head``: every h with ``h // (n_heads // n_kv_heads) == kv_head``.

    Example:
        >>> kv_group(32, 8, 4)  # heads 16..19 (the seed's head 19 reads KV head 4, not 19 % 8 = 3)
        (16, 17, 18, 19)
    """
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"n_heads ({n_heads}) must be a positive multiple of n_kv_heads ({n_kv_heads})")
    group = n_heads // n_kv_heads
    return tuple(range(kv_head * group, (kv_head + 1) * group))


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
        return False

    def check(self, adapter: Adapter) -> None:
        raise NotImplementedError

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", _index(self.layer, "layer"))
        object.__setattr__(self, "head", _index(self.head, "head"))
        object.__setattr__(self, "alpha", _alpha(self.alpha))

    def q_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        return {self.head: self.alpha}

    def is_identity(self) -> bool:
        return self.alpha == 1.0

    def check(self, adapter: Adapter) -> None:
        _check_layer(adapter, self.layer, str(self))
        _check_head(adapter, self.head, str(self))

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", _index(self.layer, "layer"))
        object.__setattr__(self, "kv_head", _index(self.kv_head, "kv_head"))
        object.__setattr__(self, "alpha", _alpha(self.alpha))

    def affected_heads(self, n_heads: int, n_kv_heads: int) -> tuple[int, ...]:
        """The query heads whose logits this scales (the KV head's GQA group)."""
        return kv_group(n_heads, n_kv_heads, self.kv_head)

    def k_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        return {self.kv_head: self.alpha}

    def is_identity(self) -> bool:
        return self.alpha == 1.0

    def check(self, adapter: Adapter) -> None:
        _check_layer(adapter, self.layer, str(self))
        _check_head(adapter, self.kv_head, str(self), kv=True)

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", _index(self.layer, "layer"))
        object.__setattr__(self, "head", _index(self.head, "head"))
        object.__setattr__(self, "alpha", _alpha(self.alpha))

    def q_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        return {self.head: math.sqrt(self.alpha)}

    def k_factors(self, n_heads: int, n_kv_heads: int) -> dict[int, float]:
        return {self.head // (n_heads // n_kv_heads): math.sqrt(self.alpha)}

    def side_effect_heads(self, n_heads: int, n_kv_heads: int) -> tuple[int, ...]:
        """The other heads of the group, whose logits scale by √α."""
        return tuple(h for h in kv_group(n_heads, n_kv_heads, self.head // (n_heads // n_kv_heads)) if h != self.head)

    def is_identity(self) -> bool:
        return self.alpha == 1.0

    def check(self, adapter: Adapter) -> None:
        _check_layer(adapter, self.layer, str(self))
        _check_head(adapter, self.head, str(self))

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
        object.__setattr__(self, "layer", _index(self.layer, "layer"))
        object.__setattr__(self, "head", _index(self.head, "head"))
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
        _check_layer(adapter, self.layer, str(self))
        _check_head(adapter, self.head, str(self))
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
            raise KeyError(f"(layer, head) {key!r} was not recorded; recorded are {sorted(self._tensors)[:8]}...") from None

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
        object.__setattr__(self, "layer", _index(self.layer, "layer"))
        object.__setattr__(self, "head", _index(self.head, "head"))
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
        _check_layer(adapter, self.layer, str(self))
        _check_head(adapter, self.head, str(self))
        if self.source.shape[-1] != adapter.head_dim:
            raise ValueError(f"source: head_dim {self.source.shape[-1]}; the model's head_dim is {adapter.head_dim}")

    def install(self, registry: HookRegistry) -> list:
        columns = torch.tensor(self.positions, dtype=torch.long) if self.positions is not None else None
        return [registry.add_head_output(self.layer, self.head, "patch", self.source, columns)]

    def __str__(self) -> str:
        where = "" if self.positions is None else f", positions={list(self.positions)}"
        return f"PatchHead(layer={self.layer}, head={self.head}, source={tuple(self.source.shape)}{where})"


Intervention = Union[ScaleQuery, ScaleKey, ScaleLogits, AblateHead, PatchHead]
INTERVENTION_TYPES = (ScaleQuery, ScaleKey, ScaleLogits, AblateHead, PatchHead)


class _RegistryClient:
    """Shared plumbing: a HookRegistry attached to the model's attention switch for a ``with`` block."""

    attention_order = OBSERVER_ORDER

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.adapter = adapter_for(model)
        a = self.adapter
        self.registry = HookRegistry(a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, PositionSampler("all"))
        self._attention_layers: frozenset[int] = frozenset()
        self._output_layers: frozenset[int] = frozenset()
        self._switch: AttentionSwitch | None = None
        self._entered = False

    def __enter__(self):
        if self._entered:
            raise RuntimeError(f"{type(self).__name__}: already used; create a new one for another block")
        self._entered = True
        self._switch = switch_for(self.model)
        self._switch.attach(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._switch is not None:
                self._switch.detach(self)
                self._switch = None
        finally:
            if self.registry.in_batch:
                self.registry.end_batch(discard=True)

    # ---- AttentionClient ----
    def begin_batch(self, positions: torch.Tensor, valid: torch.Tensor) -> None:
        self.registry.begin_batch(torch.arange(positions.shape[0]), positions, valid)

    def end_batch(self, failed: bool) -> None:
        if self.registry.in_batch:
            self.registry.end_batch(discard=failed)

    def on_attention(self, layer: int, module: nn.Module, q, k, v, attention_mask, kwargs: dict):
        if layer not in self._attention_layers:
            return q, k, v
        return self.registry.on_attention(layer, q, k, v, None)

    def wants_output(self, layer: int) -> bool:
        return layer in self._output_layers

    def on_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        return self.registry.on_output(layer, output)


class InterventionContext(_RegistryClient):
    """The context :func:`intervene` returns; see there."""

    attention_order = INTERVENTION_ORDER

    def __init__(self, model: nn.Module, interventions: Iterable[Intervention], *, require_reached: bool = True) -> None:
        super().__init__(model)
        self.interventions: tuple[Intervention, ...] = tuple(interventions)
        if not self.interventions:
            raise ValueError("interventions: none given; pass ScaleQuery, ScaleKey, ScaleLogits, AblateHead or PatchHead")
        for iv in self.interventions:
            if not isinstance(iv, INTERVENTION_TYPES):
                raise TypeError(
                    f"interventions: {iv!r} is not an intervention; allowed are ScaleQuery, ScaleKey, ScaleLogits, "
                    "AblateHead, PatchHead"
                )
            iv.check(self.adapter)
        self.require_reached = require_reached
        self._actions = [(iv, iv.install(self.registry)) for iv in self.interventions]
        self._attention_layers = frozenset(iv.layer for iv in self.interventions if not iv.output_heads())
        self._output_layers = frozenset(iv.layer for iv in self.interventions if iv.output_heads())

    def __enter__(self) -> InterventionContext:
        return super().__enter__()

    def end_batch(self, failed: bool) -> None:
        super().end_batch(failed)
        if failed or not self.require_reached:
            return
        missed = [iv for iv, actions in self._actions if any(a.applied_this_batch == 0 for a in actions)]
        if missed:
            raise InterventionNotReachedError(
                f"{', '.join(map(str, missed))}: the forward pass finished without running "
                f"{'this layer' if len(missed) == 1 else 'these layers'}' attention through Spectra; the intervention "
                "had no effect (was a layer skipped, or called outside the model's forward?)"
            )

    @property
    def applied(self) -> dict[str, int]:
        """How many attention calls each intervention changed so far."""
        return {str(iv): min(a.applied for a in actions) for iv, actions in self._actions}

    def affected_heads(self) -> dict[int, dict[int, float]]:
        """``{layer: {query head: logit factor}}`` of the scalings (the GQA side effects included)."""
        out: dict[int, dict[int, float]] = {}
        a = self.adapter
        for iv in self.interventions:
            layer = out.setdefault(iv.layer, {})
            for h, f in iv.logit_factors(a.n_heads, a.n_kv_heads).items():
                layer[h] = layer.get(h, 1.0) * f
        return out

    def describe(self) -> list[str]:
        """One line per intervention saying which heads it touches, GQA side effects included."""
        a = self.adapter
        lines = []
        for iv in self.interventions:
            factors = iv.logit_factors(a.n_heads, a.n_kv_heads)
            if factors:
                touched = ", ".join(f"H{h} x{f:g}" for h, f in sorted(factors.items()))
                lines.append(f"{iv}: layer {iv.layer} logits {touched}")
            else:
                lines.append(f"{iv}: layer {iv.layer} output of head {', '.join(map(str, iv.output_heads()))}")
        return lines


def intervene(model: nn.Module, *interventions: Intervention, require_reached: bool = True) -> InterventionContext:
    """Applies ``interventions`` inside every forward pass of ``model`` within the ``with`` block.

    ``ScaleQuery(layer, head, alpha)``, ``ScaleKey(layer, kv_head, alpha)``,
    ``ScaleLogits(layer, head, alpha)``, ``AblateHead(layer, head, mode)`` and
    ``PatchHead(layer, head, source)``, several at once (applied in the order given). Layers and
    heads are checked against the model up front. With ``require_reached`` a forward pass that never
    runs an intervention's layer raises :class:`InterventionNotReachedError`. Everything is undone
    on exit, also when the block raises.

    Example:
        >>> import torch, spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> ids = tok("In the beginning God created the heaven and the earth.", return_tensors="pt").input_ids
        >>> with torch.no_grad():
        ...     base = model(ids).logits
        ...     with spectra.intervene(model, spectra.ScaleKey(layer=1, kv_head=0, alpha=2.0)) as ctx:
        ...         scaled = model(ids).logits
        >>> ctx.describe()
        ['ScaleKey(layer=1, kv_head=0, alpha=2.0): layer 1 logits H0 x2, H1 x2, H2 x2, H3 x2']
        >>> bool((scaled != base).any())
        True
    """
    return InterventionContext(model, interventions, require_reached=require_reached)


class OutputRecorder(_RegistryClient):
    """Records attention outputs (before ``o_proj``) of some heads of some layers, forward by forward.

    Inside an :func:`intervene` block it records the intervened outputs.
    """

    def __init__(self, model: nn.Module, layers: Iterable[int] | None = None, heads: Sequence[int] | None = None) -> None:
        super().__init__(model)
        a = self.adapter
        chosen = list(range(a.n_layers)) if layers is None else [_index(layer, "layers") for layer in layers]
        for layer in chosen:
            _check_layer(a, layer, "OutputRecorder")
        hs = list(range(a.n_heads)) if heads is None else [_index(h, "heads") for h in heads]
        for h in hs:
            _check_head(a, h, "OutputRecorder")
        self.heads = tuple(hs)
        self._recorders = {layer: self.registry.add_head_output_recorder(layer, list(hs)) for layer in chosen}
        self._output_layers = frozenset(chosen)

    def output(self, layer: int) -> torch.Tensor:
        """``(N, T, len(heads), D)``: every recorded forward of ``layer``, concatenated over the batch."""
        outputs = self._recorders[layer].outputs
        if not outputs:
            raise RuntimeError(f"OutputRecorder: layer {layer} recorded nothing (no forward ran inside the block)")
        return torch.cat(list(outputs)) if len(outputs) > 1 else outputs[0]

    def head_outputs(self) -> HeadOutputs:
        out = {}
        for layer in self._recorders:
            x = self.output(layer)
            for column, head in enumerate(self.heads):
                out[(layer, head)] = x[:, :, column]
        return HeadOutputs(out)


def record_head_outputs(
    model: nn.Module, inputs, layers: Iterable[int] | None = None, heads: Sequence[int] | None = None
) -> HeadOutputs:
    """Runs ``model`` on ``inputs`` once and returns the heads' attention outputs, ``(B, T, D)`` each,
    as sources for :class:`PatchHead` (or means for ``AblateHead(mode="mean")``).

    Example:
        >>> import torch, spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> clean = tok("the heaven and the earth", return_tensors="pt").input_ids
        >>> outputs = spectra.record_head_outputs(model, clean, layers=[2])
        >>> tuple(outputs[(2, 5)].shape) == (1, clean.shape[1], 32)
        True
    """
    from spectra.intervention_checks import run_model

    with OutputRecorder(model, layers, heads) as recorder:
        run_model(model, inputs)
    return recorder.head_outputs()
