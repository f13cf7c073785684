"""The generic adapter: any decoder whose attention modules call transformers' attention interface.

What makes it safe to take a model no one wrote an adapter for:

* post-RoPE q, k, v are what the attention call receives (the attention switch), whatever the
  module computes before: QK-norm of any shape, partial RoPE, position-dependent factors;
* the metrics read scaling and soft-cap from the call's arguments and causality and the window
  from the mask the call receives (``spectra.capture.call_mask``), never from the config;
* head counts and head_dim come from the config and the module (``head_dim``,
  ``num_key_value_groups``), never from ``hidden_size / heads``; a module that names no head_dim
  is refused;
* a module whose forward does not call the attention interface is refused, since Spectra would
  see none of its attention.

Pre-RoPE vectors are read from hooks: the module's QK-norm (``q_norm``/``k_norm`` or
``q_layernorm``/``k_layernorm``; per head or over all heads before the split), else its ``q_proj``
/ ``k_proj`` (or a fused ``qkv_proj``: q, then k, then v); a module with neither gives them through
``Probe(pre_rope_route="inverse_rope")`` (RoPE undone with the model's own cos/sin).

Multi-head latent attention (DeepSeek-V3 and its kind: ``kv_lora_rank``, q/k head_dim
``qk_nope_head_dim + qk_rope_head_dim`` against v's ``v_head_dim``) is read too: the call receives
q and k per head with the q/k head_dim, so the metrics, q/k captures and q/k interventions work as
for any model; pre-RoPE q is the split ``q_proj``/``q_b_proj`` output, pre-RoPE k the per-head
``kv_b_proj`` part joined to the shared rotary part of ``kv_a_proj_with_mqa``, and v the rest of
``kv_b_proj``'s output, with its own head_dim (``v_head_dim``). ``inverse_rope`` is refused (RoPE
there turns only the last ``qk_rope_head_dim`` dims of each head).

Example:
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> from spectra.models.generic import GenericAdapter
    >>> config = AutoConfig.for_model("olmo2", hidden_size=64, intermediate_size=96, num_attention_heads=4,
    ...                               num_key_value_heads=2, num_hidden_layers=2, vocab_size=97)
    >>> adapter = GenericAdapter(AutoModelForCausalLM.from_config(config))
    >>> adapter.family, adapter.n_layers, adapter.n_heads, adapter.n_kv_heads, adapter.head_dim
    ('generic', 2, 4, 2, 16)
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from typing import Any

import torch
from torch import nn

from spectra.models.base import Adapter, HeadsByKind, StageHook, split_heads

__all__ = ["GenericAdapter", "UnsupportedStructureError", "attention_modules_of"]

# Markers of a forward that dispatches through transformers' attention interface.
_INTERFACE_MARKERS = ("ALL_ATTENTION_FUNCTIONS", "eager_attention_forward", "attention_interface")
_NORMS = (("q_norm", "k_norm"), ("q_layernorm", "k_layernorm"), ("query_layernorm", "key_layernorm"))
_ROPE_CALL = "apply_rotary_pos_emb("
# A condition on RoPE that reads only the module's own attributes (``self.sliding_window is None or
# self.is_sliding``, ``self.is_local_attention``): safe to evaluate on the module.
_SELF_CONDITION = re.compile(r"^(?:\s|\(|\)|self\.\w+|None|True|False|is|not|or|and|==|!=)+$")


@functools.cache
def _forward_source(cls: type) -> str:
    """The source of ``cls.forward`` ("" where it cannot be read), read once per class: every layer of a
    model shares its attention class, and reading source is slow."""
    try:
        return inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return ""


@functools.cache
def _rope_condition(cls: type) -> str | None:
    """The condition under which ``cls.forward`` applies RoPE, when it applies it under one ``if`` on
    the module's own attributes (EXAONE 4 and Kolibri: only on sliding layers when a window is set;
    AFMoE: only on local layers); None when unconditional or not readable."""
    lines = _forward_source(cls).splitlines()
    at = next((i for i, line in enumerate(lines) if _ROPE_CALL in line), None)
    if at is None:
        return None
    indent = len(lines[at]) - len(lines[at].lstrip())
    for line in reversed(lines[:at]):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(line) - len(line.lstrip()) < indent:
            if stripped.startswith("if ") and stripped.endswith(":"):
                condition = stripped[3:-1].strip()
                return condition if _SELF_CONDITION.match(condition) else None
            return None
    return None


@functools.cache
def _called_after_rope(cls: type, name: str) -> bool:
    """Whether ``cls.forward`` calls ``self.<name>(`` only after it applies RoPE (QK-norm after RoPE:
    Hunyuan, nanochat), so the module's output is not a pre-RoPE vector."""
    source = _forward_source(cls)
    rope, call = source.find(_ROPE_CALL), source.find(f"self.{name}(")
    return rope >= 0 and call > rope


def _module_head_dim(module: nn.Module) -> int | None:
    """The head_dim an attention module names: ``head_dim``, or BERT-style ``attention_head_size``."""
    for name in ("head_dim", "attention_head_size"):
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class UnsupportedStructureError(ValueError):
    """The model's attention is not laid out as the generic adapter needs (the message says how)."""


def _calls_interface(module: nn.Module) -> bool:
    return any(marker in _forward_source(type(module)) for marker in _INTERFACE_MARKERS)


def attention_modules_of(backbone: nn.Module) -> list[nn.Module]:
    """The self-attention modules of ``backbone`` in layer order: modules that carry a ``layer_idx``
    and are named ``*Attention`` or call the attention interface themselves (``*MLA``);
    cross-attention modules are not self-attention and are left out: by class (``*Cross*``) or by
    where the layer keeps them (``encoder_attn`` in BART-style decoders, ``crossattention`` in
    BERT-style ones), since those decoders use one class for both."""

    def cross(name: str, module: nn.Module) -> bool:
        parts = name.lower().split(".")
        return "Cross" in type(module).__name__ or any("cross" in p or p == "encoder_attn" for p in parts)

    found = [
        m
        for name, m in backbone.named_modules()
        if hasattr(m, "layer_idx")
        and not cross(name, m)
        and (type(m).__name__.endswith("Attention") or _calls_interface(m))
    ]
    return sorted(found, key=lambda m: int(m.layer_idx))


def _entry(backbone: nn.Module, attention: list[nn.Module]) -> nn.Module:
    """The module whose forward receives the token ids and runs every attention layer: the backbone,
    or its one child that holds them all and takes ``input_ids`` (OPT's decoder, which the causal-LM
    head calls directly, bypassing the backbone's own forward)."""
    ids = {id(m) for m in attention}
    while True:
        holders = [c for c in backbone.children() if ids <= {id(m) for m in c.modules()}]
        if len(holders) != 1 or "input_ids" not in inspect.signature(holders[0].forward).parameters:
            return backbone
        backbone = holders[0]


class GenericAdapter(Adapter):
    """The adapter for any decoder without a hand-written one (see the module docstring)."""

    family = "generic"
    model_types = ()
    stages = (
        "pre_rope: q_norm/k_norm outputs where the module has them, else q_proj/k_proj (or the split qkv_proj); "
        "post_rope: what the attention call receives"
    )

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.config = text
        self.backbone = _entry(self.backbone, self.attention)
        layers = [int(m.layer_idx) for m in self.attention]
        if len(set(layers)) != len(layers):
            raise UnsupportedStructureError(
                f"model: {type(model).__name__} has several self-attention modules per layer "
                f"({', '.join(sorted({type(m).__name__ for m in self.attention}))})"
            )
        outside = sorted({type(m).__name__ for m in self.attention if not _calls_interface(m)})
        if outside:
            raise UnsupportedStructureError(
                f"model: the attention of {type(model).__name__} ({', '.join(outside)}) does not call transformers' "
                "attention interface, so Spectra cannot see its queries and keys"
            )
        first = self.attention[0]
        qk_dim, v_dim = getattr(first, "qk_head_dim", None), getattr(first, "v_head_dim", None)
        #: Multi-head latent attention (see the module docstring).
        self.mla = getattr(first, "kv_lora_rank", None) is not None or bool(qk_dim and v_dim and qk_dim != v_dim)
        if self.mla and not (qk_dim and v_dim):
            raise UnsupportedStructureError(
                f"model: {type(first).__name__} is multi-head latent attention without qk_head_dim and v_head_dim "
                "attributes, which Spectra needs to read its heads"
            )
        if not self.mla and _module_head_dim(first) is None and getattr(text, "head_dim", None) is None:
            raise UnsupportedStructureError(
                f"model: {type(first).__name__} names no head_dim (neither the module nor the config)"
            )

    def attention_modules(self, backbone: nn.Module) -> list[nn.Module]:
        return attention_modules_of(backbone)

    @property
    def n_heads(self) -> int:
        heads = getattr(self.attention[0], "num_heads", None) or getattr(self.config, "num_attention_heads", None)
        return int(heads)

    @property
    def n_kv_heads(self) -> int:
        # From the module (its key projection's width, or its GQA group size): a config may carry a
        # num_key_value_heads its architecture never reads.
        attn = self.attention[0]
        if self.mla:  # kv_b_proj gives every query head its own key
            return self.n_heads
        k_proj = getattr(attn, "k_proj", None)
        if isinstance(k_proj, nn.Linear) and k_proj.out_features % self.head_dim == 0:
            return k_proj.out_features // self.head_dim
        groups = getattr(attn, "num_key_value_groups", None)
        if groups:
            return self.n_heads // int(groups)
        return int(getattr(self.config, "num_key_value_heads", None) or self.n_heads)

    @property
    def half_split_rope(self) -> bool:
        """Whether the model rotates the two halves of each head (``rotate_half``), the layout
        ``inverse_rope`` undoes; interleaved RoPE (Cohere, GLM) is not."""
        modeling = sys.modules.get(type(self.attention[0]).__module__)
        rotate = getattr(modeling, "rotate_half", None)
        try:
            source = inspect.getsource(rotate) if rotate is not None else ""
        except (OSError, TypeError):
            return False
        return "x.shape[-1] // 2" in source and "::2" not in source

    @property
    def head_dim(self) -> int:
        # MLA: the q/k head_dim the call receives (its config's head_dim is the rotary part only).
        if self.mla:
            return int(self.attention[0].qk_head_dim)
        value = _module_head_dim(self.attention[0])
        return int(value if value is not None else self.config.head_dim)

    @property
    def v_head_dim(self) -> int:
        return int(self.attention[0].v_head_dim) if self.mla else self.head_dim

    @property
    def inverse_rope_unavailable(self) -> str | None:  # type: ignore[override]
        late = [
            name
            for pair in _NORMS
            for name in pair
            if isinstance(getattr(self.attention[0], name, None), nn.Module)
            and _called_after_rope(type(self.attention[0]), name)
        ]
        if late:
            return (
                f"this model applies its QK-norm ({', '.join(late)}) after RoPE, which 'inverse_rope' does not undo; "
                "use pre_rope_route='hook'"
            )
        if self.mla:
            return (
                "MLA rotates only the last qk_rope_head_dim dims of each head, which 'inverse_rope' does not undo; "
                "use pre_rope_route='hook'"
            )
        if not self.half_split_rope:
            return (
                "'inverse_rope' undoes half-split RoPE, and this model rotates another layout (interleaved); use "
                "pre_rope_route='hook'"
            )
        return None

    @property
    def has_rope(self) -> bool:  # type: ignore[override]
        # GPT-J and CodeGen name only their rotary_dim.
        return (
            getattr(self.config, "rope_parameters", None) is not None
            or hasattr(self.config, "rope_theta")
            or isinstance(getattr(self.config, "rotary_dim", None), int)
        )

    def uses_rope(self, layer: int) -> bool:
        nope = getattr(self.config, "no_rope_layers", None)  # 1 = RoPE layer, 0 = NoPE (SmolLM3, Llama 4)
        if isinstance(nope, (list, tuple)) and layer < len(nope):
            return bool(nope[layer])
        attn = self.attention[layer]
        condition = _rope_condition(type(attn)) if self.has_rope else None
        if condition is not None:  # the module's own rule, on its own attributes
            try:
                return bool(eval(condition, {"__builtins__": {}}, {"self": attn}))  # noqa: S307 (see _SELF_CONDITION)
            except Exception:  # noqa: BLE001 - a condition that reads something else: the config's answer
                return self.has_rope
        return self.has_rope

    def rotary_dim(self, layer: int) -> int:
        if isinstance(getattr(self.config, "rotary_dim", None), int):
            return int(self.config.rotary_dim)
        params = getattr(self.config, "rope_parameters", None) or {}
        factor = params.get("partial_rotary_factor", getattr(self.config, "partial_rotary_factor", 1.0)) or 1.0
        return int(self.head_dim * float(factor))

    def scaling(self, layer: int) -> float:
        scaling = getattr(self.attention[layer], "scaling", None)
        return float(scaling) if scaling is not None else self.head_dim**-0.5

    def k_norm_module(self, layer: int) -> nn.Module | None:
        attn = self.attention[layer]
        for _, k_name in _NORMS:
            module = getattr(attn, k_name, None)
            if isinstance(module, nn.Module):
                return module
        return None

    def stage_hooks(self, layer: int) -> list[StageHook]:
        if self.mla:
            return self._latent_stage_hooks(layer)
        attn, d = self.attention[layer], self.head_dim
        heads = {"q": self.n_heads, "k": self.n_kv_heads, "v": self.n_kv_heads}

        def heads_first(kind: str):
            def read(out: Any) -> HeadsByKind:
                x = out[0] if isinstance(out, tuple) else out
                if x.dim() == 3:  # (B, T, H*D): a norm over all heads before the split (OLMo 2), or a projection
                    return {kind: split_heads(x, d)}
                # (B, T, H, D), the usual place of QK-norm (before the transpose), or (B, H, T, D) after it
                after = x.shape[1] == heads[kind] and x.shape[2] != heads[kind]
                return {kind: x if after else x.transpose(1, 2)}

            return read

        hooks: list[StageHook] = []
        covered: set[str] = set()
        norms = next(
            (
                (getattr(attn, q), getattr(attn, k))
                for q, k in _NORMS
                if isinstance(getattr(attn, q, None), nn.Module) and not _called_after_rope(type(attn), q)
            ),
            None,
        )
        if norms is not None:
            hooks += [StageHook(norms[0], heads_first("q")), StageHook(norms[1], heads_first("k"))]
            covered |= {"q", "k"}
        else:
            # q_proj/k_proj/v_proj, or BERT-style query/key/value
            for names in (("q_proj", "k_proj", "v_proj"), ("query", "key", "value")):
                if all(isinstance(getattr(attn, name, None), nn.Linear) for name in names[:2]):
                    hooks += [StageHook(getattr(attn, names[0]), heads_first("q"))]
                    hooks += [StageHook(getattr(attn, names[1]), heads_first("k"))]
                    covered |= {"q", "k"}
                    if isinstance(getattr(attn, names[2], None), nn.Linear):
                        hooks.append(StageHook(getattr(attn, names[2]), heads_first("v")))
                        covered.add("v")
                    break
        if "v" not in covered and isinstance(getattr(attn, "v_proj", None), nn.Module):
            hooks.append(StageHook(attn.v_proj, heads_first("v")))
            covered.add("v")
        fused = getattr(attn, "qkv_proj", None)
        sizes = [self.n_heads * d, self.n_kv_heads * d, self.n_kv_heads * d]
        if isinstance(fused, nn.Linear) and fused.out_features == sum(sizes) and covered != {"q", "k", "v"}:
            wanted = tuple(kind for kind in ("q", "k", "v") if kind not in covered)
            covered |= set(wanted)

            def split(out: Any) -> HeadsByKind:
                out = out[0] if isinstance(out, tuple) else out
                parts = dict(zip(("q", "k", "v"), out.split(sizes, dim=-1), strict=True))
                return {kind: split_heads(parts[kind], d) for kind in wanted}

            hooks.append(StageHook(fused, split))
        if not {"q", "k"} <= covered:
            raise UnsupportedStructureError(
                f"layer {layer}: {type(attn).__name__} has no q/k projections or QK-norm modules to read pre-RoPE "
                "vectors from; use Probe(pre_rope_route='inverse_rope')"
            )
        return hooks

    def _latent_stage_hooks(self, layer: int) -> list[StageHook]:
        """Pre-RoPE q, k and v of multi-head latent attention: q is the split query projection; k joins
        each head's ``kv_b_proj`` part (its first qk_nope_head_dim dims) to the rotary part shared by
        all heads, the last qk_rope_head_dim dims of ``kv_a_proj_with_mqa``'s output, which runs first
        in the same forward; v is the rest of each head's ``kv_b_proj`` part."""
        attn, d = self.attention[layer], self.head_dim
        nope, rope, rank = int(attn.qk_nope_head_dim), int(attn.qk_rope_head_dim), int(attn.kv_lora_rank)
        q_module = getattr(attn, "q_proj", None) or getattr(attn, "q_b_proj", None)
        if not all(isinstance(m, nn.Module) for m in (q_module, getattr(attn, "kv_a_proj_with_mqa", None))) or not (
            isinstance(getattr(attn, "kv_b_proj", None), nn.Module)
        ):
            raise UnsupportedStructureError(
                f"layer {layer}: {type(attn).__name__} (multi-head latent attention) has no q_proj/q_b_proj, "
                "kv_a_proj_with_mqa and kv_b_proj to read pre-RoPE vectors from"
            )
        # LongCat-Flash multiplies the projected query by this before RoPE (its latent keys are scaled
        # before kv_b_proj, so kv_b_proj's output already carries theirs).
        q_factor = float(getattr(attn, "mla_scale_q_lora", 1.0))
        shared: dict[str, torch.Tensor] = {}

        def read_q(out: torch.Tensor) -> HeadsByKind:
            return {"q": split_heads(out * q_factor if q_factor != 1.0 else out, d)}

        def keep_rotary(out: torch.Tensor) -> HeadsByKind:
            shared["k_rot"] = out[..., rank : rank + rope]  # (B, T, rope), before RoPE
            return {}

        def read_k_v(out: torch.Tensor) -> HeadsByKind:
            k_rot = shared.pop("k_rot")
            # (B, T, H, nope + v): kv_b_proj may see the latent as (B, 1, T, rank) (DeepSeek-V3's cache layout).
            heads = out.reshape(*k_rot.shape[:-1], -1, nope + self.v_head_dim)
            per_head, v = heads[..., :nope], heads[..., nope:]
            k = torch.cat([per_head, k_rot.unsqueeze(-2).expand(*per_head.shape[:-1], rope)], dim=-1)
            return {"k": k.transpose(1, 2), "v": v.transpose(1, 2)}

        return [
            StageHook(q_module, read_q),
            StageHook(attn.kv_a_proj_with_mqa, keep_rotary),
            StageHook(attn.kv_b_proj, read_k_v),
        ]
