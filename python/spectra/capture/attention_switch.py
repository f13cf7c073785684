"""Routes a model's attention through Spectra while at least one Spectra context is active.

Spectra registers one attention function per original implementation (``spectra_sdpa``,
``spectra_eager``, ...) with ``transformers.AttentionInterface`` and the original's mask builder
under the same name with ``AttentionMaskInterface`` (without the mask entry the model would build
no causal or padding mask at all), switches the model to that name, and delegates every call to
the implementation the model had, so outputs do not change. Clients (a Probe, later interventions)
see each layer's ``(q, k, v)`` first and may replace them.

Everything is undone on release: the model's implementation, the backbone hooks, and the global
registrations once no model uses them. Only Spectra's own entries and hooks are ever removed.
"""

from __future__ import annotations

import inspect
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from spectra.capture.call_mask import CustomMaskError, mask_shape
from spectra.models import Adapter, UnsupportedModelError, adapter_for

NAME_PREFIX = "spectra_"


#: Clients run in this order within a layer: interventions first, so that every observer (a
#: Probe, a recorder) sees the forward pass as the intervention made it.
INTERVENTION_ORDER = 0
OBSERVER_ORDER = 1


class AttentionClient(Protocol):
    """What an attached object receives: batch boundaries, every layer's attention inputs and, for the
    layers it asks for, the attention output.

    Subclass it to inherit the defaults: an observer (``attention_order = OBSERVER_ORDER``) that
    reads no attention output (``wants_output`` False, ``on_output`` the identity)."""

    #: Position among the model's clients within a layer (ascending; ties keep the order of attachment).
    attention_order: int = OBSERVER_ORDER

    def begin_batch(self, positions: torch.Tensor, valid: torch.Tensor) -> None: ...

    def end_batch(self, failed: bool) -> None: ...

    def on_attention(
        self,
        layer: int,
        module: nn.Module,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attention_mask: torch.Tensor | None,
        kwargs: dict,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def wants_output(self, layer: int) -> bool:
        """Whether :meth:`on_output` should see ``layer``'s attention output."""
        return False

    def on_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        """The attention output (B, T, H, D) of ``layer``, before the heads are merged; returns it, possibly changed."""
        return output


class LayerAttention(NamedTuple):
    """How a layer's attention turns q·k into weights, for a client that recomputes it."""

    scaling: float
    softcap: float | None
    causal: bool
    sliding_window: int | None
    #: Learned attention-sink logits (H,) that take part in the softmax (gpt-oss's ``s_aux``), or None.
    sinks: torch.Tensor | None = None
    #: (B or 1, H or 1, T_q, T_k) bool: a custom mask (chunked, document, per head) taken as given, or None.
    visible: torch.Tensor | None = None


#: Arguments of an attention call that carry learned sink logits (one per head).
SINK_ARGUMENTS = ("s_aux", "sinks")

#: Arguments of an attention call that change the weights and that the metrics do not reproduce yet:
#: refused rather than measured wrong.
UNREAD_ARGUMENTS = {
    "position_bias": "an additive position bias",
    "alibi": "an ALiBi bias",
}


def layer_attention(
    adapter: Adapter,
    layer: int,
    module: nn.Module,
    kwargs: dict,
    attention_mask: Any,
    key_valid: torch.Tensor | None = None,
) -> LayerAttention:
    """What the model passed to its attention function: scaling and soft-cap from the call's arguments
    (the adapter fills in a scaling the model leaves out, as GPT-2 does), causality and the sliding
    window from the mask the call received (:func:`spectra.capture.call_mask.mask_shape`; ``key_valid``
    (B, T) marks the real tokens), never from the config; learned sink logits from ``s_aux``/``sinks``.
    A mask Spectra cannot reproduce raises :class:`~spectra.capture.call_mask.CustomMaskError`
    naming the layer."""
    scaling = kwargs.get("scaling")
    sinks = next((kwargs[name] for name in SINK_ARGUMENTS if kwargs.get(name) is not None), None)
    if sinks is not None:
        sinks = sinks.detach().reshape(-1)
        if kwargs.get("softcap"):
            raise CustomMaskError(
                f"layer {layer}: the attention call passes both learned sinks and a soft-cap; Spectra's "
                "metrics define sinks for uncapped logits only"
            )
    unread = sorted(name for name in UNREAD_ARGUMENTS if kwargs.get(name) is not None)
    if unread:
        raise CustomMaskError(
            f"layer {layer}: the attention call passes {', '.join(unread)} ("
            + "; ".join(UNREAD_ARGUMENTS[name] for name in unread)
            + "), which takes part in the softmax and which Spectra's metrics do not count yet"
        )
    if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
        raise CustomMaskError(
            f"layer {layer}: the attention call received a {type(attention_mask).__name__} mask (flex attention), "
            "which Spectra does not read; load the model with attn_implementation='sdpa' or 'eager'"
        )
    shape = mask_shape(
        attention_mask,
        key_valid,
        causal=bool(kwargs.get("is_causal", getattr(module, "is_causal", True))),
        layer=layer,
    )
    return LayerAttention(
        adapter.scaling(layer) if scaling is None else float(scaling),
        kwargs.get("softcap"),
        shape.causal,
        shape.sliding_window,
        sinks,
        shape.visible,
    )


@contextmanager
def attached(model: nn.Module, client: AttentionClient) -> Iterator[AttentionSwitch]:
    """Routes ``model``'s attention to ``client`` for the block; detaches it even if the block raises."""
    switch = switch_for(model)
    switch.attach(client)
    try:
        yield switch
    finally:
        switch.detach(client)


_lock = threading.RLock()
_switches: dict[int, AttentionSwitch] = {}  # id(model) -> switch, while attached
_routes: dict[
    int, tuple[AttentionSwitch, int | None]
] = {}  # id(attention module) -> (switch, layer; None: passed through)
_name_users: Counter[str] = Counter()


def spectra_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The function Spectra registers: hands (q, k, v) to the model's clients, then delegates."""
    route = _routes.get(id(module))
    if route is None:
        raise RuntimeError(
            f"{type(module).__name__} runs Spectra's attention implementation but is not inside a Spectra context; "
            "set its attn_implementation back (model.set_attn_implementation('sdpa'))"
        )
    switch, layer = route
    if layer is None:  # attention Spectra does not measure (cross-attention): the model's own, untouched
        return switch._delegate(module)(module, query, key, value, attention_mask, **kwargs)
    return switch.attend(layer, module, query, key, value, attention_mask, kwargs)


def switch_for(model: nn.Module) -> AttentionSwitch:
    """The model's switch (created on first use; shared by every Spectra context on that model)."""
    with _lock:
        switch = _switches.get(id(model))
        if switch is None or switch.model is not model:
            switch = AttentionSwitch(model)
        return switch


class AttentionSwitch:
    def __init__(self, model: nn.Module) -> None:
        self.adapter: Adapter = adapter_for(model)
        self.model = model
        self.clients: list[AttentionClient] = []
        self.original: str | None = None
        self.name: str | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._delegates: dict[int, Callable[..., Any]] = {}
        self._signature = inspect.signature(self.adapter.backbone.forward)
        # Layers that have attended in the running forward (None outside one): a second call of a
        # layer in one forward is refused in attend().
        self._attended: set[int] | None = None

    # ---- attach / detach ----
    def attach(self, client: AttentionClient) -> None:
        with _lock:
            if not self.clients:
                self._switch_on()
            self.clients.append(client)
            self.clients.sort(key=lambda c: c.attention_order)  # stable

    def detach(self, client: AttentionClient) -> None:
        with _lock:
            self.clients = [c for c in self.clients if c is not client]
            if not self.clients:
                self._switch_off()

    def _switch_on(self) -> None:
        model, adapter = self.model, self.adapter
        original = model.config._attn_implementation or "eager"
        if original.startswith(NAME_PREFIX):
            raise RuntimeError(f"model already uses {original!r}, left behind by a Spectra context that did not exit")
        name = NAME_PREFIX + original
        try:
            if _name_users[name] == 0:
                AttentionInterface.register(name, spectra_attention)
                mask_function = AttentionMaskInterface._global_mapping.get(original)
                if mask_function is not None:
                    AttentionMaskInterface.register(name, mask_function)
            _name_users[name] += 1
            self.original, self.name = original, name
            for layer, module in enumerate(adapter.attention):
                _routes[id(module)] = (self, layer)
            measured = {id(m) for m in adapter.attention}
            for module in model.modules():  # other attention (cross-attention, a vision tower): passed through
                if type(module).__name__.endswith("Attention") and id(module) not in measured:
                    _routes.setdefault(id(module), (self, None))
            self._handles.append(
                adapter.backbone.register_forward_pre_hook(self._begin_batch, with_kwargs=True, prepend=True)
            )
            self._handles.append(adapter.backbone.register_forward_hook(self._end_batch, always_call=True))
            model.set_attn_implementation(name)
            if model.config._attn_implementation != name:
                raise RuntimeError(
                    f"model: {type(model).__name__} refused to switch its attention implementation to {name!r}; "
                    "Spectra needs a model that calls transformers' AttentionInterface"
                )
            _switches[id(model)] = self
        except BaseException:
            self._switch_off()
            raise

    def _switch_off(self) -> None:
        try:
            if self.original is not None and self.model.config._attn_implementation != self.original:
                self.model.set_attn_implementation(self.original)
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            for key in [key for key, (switch, _) in _routes.items() if switch is self]:
                del _routes[key]
            if _switches.get(id(self.model)) is self:
                del _switches[id(self.model)]
            if self.name is not None:
                _name_users[self.name] -= 1
                if _name_users[self.name] <= 0:
                    del _name_users[self.name]
                    AttentionInterface._global_mapping.pop(self.name, None)
                    AttentionMaskInterface._global_mapping.pop(self.name, None)
            self.original = self.name = None
            self._delegates.clear()

    # ---- forward ----
    def _begin_batch(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._attended = set()
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        positions, valid = batch_layout(bound)
        for client in self.clients:
            client.begin_batch(positions, valid)

    def _end_batch(self, module: nn.Module, args: tuple, output: Any) -> None:
        # always_call=True: also runs when the forward raised; clients then drop the partial batch.
        self._attended = None  # calls after the forward (checkpoint recomputation) are not counted
        failed = output is None
        error: BaseException | None = None
        for client in list(self.clients):  # every client ends its batch even if one of them raises
            try:
                client.end_batch(failed)
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the others
                error = error or e
        if error is not None:
            raise error

    def attend(self, layer: int, module: nn.Module, q, k, v, attention_mask, kwargs: dict):
        attended = self._attended
        if attended is not None:
            if layer in attended:
                # Differential attention (DiffLlama) and the like: two softmaxes combined by the module.
                # Spectra's metrics, captures and interventions take one call per layer and forward.
                raise UnsupportedModelError(
                    f"{type(self.model).__name__} is not supported: layer {layer} "
                    f"({type(module).__name__}) calls its attention function more than once per forward "
                    "(e.g. differential attention, which subtracts two softmaxes); Spectra reads one "
                    "attention call per layer"
                )
            attended.add(layer)
        for client in self.clients:
            q, k, v = client.on_attention(layer, module, q, k, v, attention_mask, kwargs)
        result = self._delegate(module)(module, q, k, v, attention_mask, **kwargs)
        # The attention output (B, T, H, D), before the module merges heads and applies o_proj.
        readers = [c for c in self.clients if c.wants_output(layer)]
        if not readers:
            return result
        output, *rest = result
        for client in readers:
            output = client.on_output(layer, output)
        return (output, *rest)

    def _delegate(self, module: nn.Module) -> Callable[..., Any]:
        fn = self._delegates.get(id(module))
        if fn is None:
            override = getattr(self.adapter, "delegate_override", None)
            fn = override(self.original, module) if override else None
            if fn is None:
                fn = (
                    self.adapter.eager_attention(module)
                    if self.original == "eager"
                    else ALL_ATTENTION_FUNCTIONS[self.original]
                )
            self._delegates[id(module)] = fn
        return fn


def batch_layout(bound: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions (B, T), valid (B, T)) from the backbone's call arguments.

    Positions are the position ids the model uses: ``position_ids`` when given, else
    ``cache_position``, else ``past_length + arange(T)`` — which, as in transformers, ignores left
    padding unless the caller passes position_ids. ``valid`` is the 2D attention mask (all True
    without one, or with a prepared 4D mask).
    """
    ids = bound.get("input_ids")
    embeds = bound.get("inputs_embeds")
    if ids is not None:
        batch_size, seq_len = ids.shape[0], ids.shape[1]
    elif embeds is not None:
        batch_size, seq_len = embeds.shape[0], embeds.shape[1]
    else:
        raise ValueError("input_ids: the model was called with neither input_ids nor inputs_embeds")
    if seq_len == 0:
        raise ValueError("input_ids: the sequence is empty (length 0)")
    mask = bound.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        valid = mask[:, -seq_len:].to(device="cpu", dtype=torch.bool)
    else:
        valid = torch.ones(batch_size, seq_len, dtype=torch.bool)
    position_ids = bound.get("position_ids")
    if position_ids is not None:
        positions = position_ids.to("cpu", torch.long).expand(batch_size, seq_len)
    else:
        cache_position = bound.get("cache_position")
        if cache_position is not None:
            base = cache_position.to("cpu", torch.long)
        else:
            cache = bound.get("past_key_values")
            past = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
            base = torch.arange(past, past + seq_len, dtype=torch.long)
        positions = base.expand(batch_size, seq_len)
    return positions.contiguous(), valid.contiguous()
