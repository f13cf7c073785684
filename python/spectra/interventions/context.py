"""Interventions on single heads inside the model's own forward pass.

``with spectra.intervene(model, ScaleQuery(12, 0, 1.5)):`` routes the model's attention through
Spectra (see ``spectra.capture.attention_switch``) and hands every targeted layer's post-QK-norm,
post-RoPE ``q (B, H, T, D)`` and ``k (B, Hkv, T, D)`` to native actions that return scaled copies,
and every targeted head's output ``(B, T, H, D)`` — before heads are merged and ``o_proj`` applied —
to actions that zero, mean or patch it. The model then runs on: effects reach later layers and the
logits (the seed's "interventions" rescaled Q in an offline recomputation of one layer; see docs/concepts.md, 'What the original code got wrong').

Placement: after QK-norm, so a per-head RMSNorm cannot undo the scale; after RoPE,
which is linear, so the scale is the same before or after it. On soft-capped models (Gemma2) a
scale multiplies the logits *before* the cap. GQA: query head h reads KV head ``h // (H / Hkv)``
(never the seed code's ``h % Hkv``), so scaling a KV head changes the logits of its whole group.

Interventions compose with ``Probe``: inside both contexts the probe observes the intervened
forward, whatever order the contexts were entered in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from spectra.capture.attention_switch import (
    INTERVENTION_ORDER,
    AttentionClient,
    AttentionSwitch,
    switch_for,
)
from spectra.capture.forward import run_model
from spectra.interventions.specs import (
    INTERVENTION_TYPES,
    AblateHead,
    HeadOutputs,
    Intervention,
    PatchHead,
    ScaleKey,
    ScaleLogits,
    ScaleQuery,
    _check_head,
    _check_layer,
    _index,
    kv_group,
)
from spectra.models import adapter_for
from spectra.ops import HookRegistry, PositionSampler

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


class _RegistryClient(AttentionClient):
    """Shared plumbing: a HookRegistry attached to the model's attention switch for a ``with`` block."""

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

    def __init__(
        self, model: nn.Module, interventions: Iterable[Intervention], *, require_reached: bool = True
    ) -> None:
        super().__init__(model)
        self.interventions: tuple[Intervention, ...] = tuple(interventions)
        if not self.interventions:
            raise ValueError(
                "interventions: none given; pass ScaleQuery, ScaleKey, ScaleLogits, AblateHead or PatchHead"
            )
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

    def __init__(
        self, model: nn.Module, layers: Iterable[int] | None = None, heads: Sequence[int] | None = None
    ) -> None:
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
    with OutputRecorder(model, layers, heads) as recorder:
        run_model(model, inputs)
    return recorder.head_outputs()
