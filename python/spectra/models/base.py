"""What Spectra needs to know about one model family, and the defaults most families share.

An adapter answers: where the attention modules are, how many query/KV heads and which head_dim
(always read from the config or the modules, never hidden/heads), whether a layer applies RoPE,
its sliding window and logit scaling, and where the pre-RoPE stage can be read (a hook on a
projection or on the QK-norm output, converted to (B, heads, T, D)).

Stages, as Spectra names them:

* ``post_rope`` — exactly what the model hands its attention implementation: after QK-norm,
  after RoPE (and any position-dependent query factor), before KV-head repetition and before the
  logit scaling. On layers without RoPE it is the (normed) projection.
* ``pre_rope`` — the same vectors just before RoPE: after QK-norm where the family has one, so
  that ``post_rope`` is exactly ``rope(pre_rope)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from spectra.models.devices import module_tensor

HeadsByKind = dict[str, torch.Tensor]


def split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, T, H*D) projection output -> (B, H, T, D) view, as the modeling code does."""
    return x.view(*x.shape[:-1], -1, head_dim).transpose(1, 2)


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    """The KV head that query head ``head`` reads under grouped-query attention: ``head // (n_heads // n_kv_heads)``
    (contiguous groups, as the modeling code's ``repeat_kv`` lays them out; never ``head % n_kv_heads``).

    Example:
        >>> kv_head_of(19, 32, 8)
        4
    """
    return head // (n_heads // n_kv_heads)


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


@dataclass(frozen=True)
class StageHook:
    """A module whose forward output carries pre-RoPE vectors, and how to read them.

    ``read(output)`` returns ``{kind: (B, heads, T, D)}`` for the kinds that output holds.
    """

    module: nn.Module
    read: Callable[[Any], HeadsByKind]


class Adapter:
    """Base for the per-family adapters in ``spectra.models``; one small subclass per family."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    #: One line for the docs' supported-models table: where each stage sits in this family.
    stages: ClassVar[str] = "pre_rope: q_proj/k_proj/v_proj outputs; post_rope: after RoPE"
    has_rope: ClassVar[bool] = True
    #: Attribute of the attention module holding head_dim.
    head_dim_attr: ClassVar[str] = "head_dim"

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.config = model.config
        self.backbone: nn.Module = model.base_model
        self.attention: list[nn.Module] = list(self.attention_modules(self.backbone))
        if not self.attention:
            raise ValueError(f"model: found no attention layers in {type(model).__name__} ({self.family} adapter)")

    # ---- structure ----
    def attention_modules(self, backbone: nn.Module) -> list[nn.Module]:
        return [layer.self_attn for layer in backbone.layers]

    @property
    def n_layers(self) -> int:
        return len(self.attention)

    @property
    def n_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def n_kv_heads(self) -> int:
        return int(getattr(self.config, "num_key_value_heads", None) or self.n_heads)

    @property
    def head_dim(self) -> int:
        return int(getattr(self.attention[0], self.head_dim_attr))

    # ---- GQA ----
    def kv_head(self, head: int) -> int:
        """The KV head query head ``head`` reads (see :func:`kv_head_of`)."""
        return kv_head_of(head, self.n_heads, self.n_kv_heads)

    def kv_heads(self) -> torch.Tensor:
        """``kv_heads()[h] == kv_head(h)`` for every query head, as an int64 tensor (to index per-KV-head
        values by query head)."""
        return torch.tensor([self.kv_head(head) for head in range(self.n_heads)], dtype=torch.long)

    def kv_group(self, kv_head: int) -> tuple[int, ...]:
        """The query heads that read ``kv_head`` (see :func:`kv_group`)."""
        return kv_group(self.n_heads, self.n_kv_heads, kv_head)

    @property
    def causal(self) -> bool:
        """Whether a token attends only to earlier ones (decoders) rather than both ways (encoders),
        read from the attention modules' own ``is_causal`` (what they pass to the attention call)."""
        return all(bool(getattr(module, "is_causal", True)) for module in self.attention)

    # ---- per layer ----
    def uses_rope(self, layer: int) -> bool:
        return self.has_rope

    def sliding_window(self, layer: int) -> int | None:
        window = getattr(self.attention[layer], "sliding_window", None)
        return int(window) if window else None

    def scaling(self, layer: int) -> float:
        """The factor the model multiplies q·k by (what it passes as ``scaling``)."""
        return float(self.attention[layer].scaling)

    def rotary_dim(self, layer: int) -> int:
        return self.head_dim

    @property
    def v_head_dim(self) -> int:
        """head_dim of the values: head_dim, except in multi-head latent attention (DeepSeek-V3)."""
        return self.head_dim

    #: Why ``Probe(pre_rope_route="inverse_rope")`` cannot give this model's pre-RoPE vectors, or None.
    inverse_rope_unavailable: ClassVar[str | None] = None

    def stage_hooks(self, layer: int) -> list[StageHook]:
        """Hooks that read pre-RoPE q, k and v of ``layer``."""
        attn, d = self.attention[layer], self.head_dim
        return [
            StageHook(attn.q_proj, lambda out: {"q": split_heads(out, d)}),
            StageHook(attn.k_proj, lambda out: {"k": split_heads(out, d)}),
            StageHook(attn.v_proj, lambda out: {"v": split_heads(out, d)}),
        ]

    # ---- QK-norm gain (the seeds' k_norm γ) ----
    def k_norm_module(self, layer: int) -> nn.Module | None:
        """The module that normalises keys per head (QK-norm), or None when the family has none."""
        return None

    def k_gain(self, layer: int) -> torch.Tensor | None:
        """The k_norm gain γ as the model applies it: (head_dim,) when shared by every head, (Hkv, head_dim)
        when per head; None without QK-norm."""
        module = self.k_norm_module(layer)
        weight = getattr(module, "weight", None) if module is not None else None
        if weight is None:
            return None
        gain = module_tensor(module, "weight").detach().float().cpu()  # offloaded by accelerate: read from its map
        return (
            gain.view(self.n_kv_heads, self.head_dim)
            if gain.numel() == self.n_kv_heads * self.head_dim and gain.numel() != self.head_dim
            else gain
        )

    # ---- delegation ----
    def eager_attention(self, module: nn.Module) -> Callable[..., Any]:
        """The family's own eager attention function (eager is not in AttentionInterface)."""
        return sys.modules[type(module).__module__].eager_attention_forward

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "model_type": getattr(self.config, "model_type", None),
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            # Multi-head latent attention only: its values' head_dim differs from q's and k's.
            **({"v_head_dim": self.v_head_dim} if self.v_head_dim != self.head_dim else {}),
            "uses_rope": [self.uses_rope(layer) for layer in range(self.n_layers)],
            "sliding_window": [self.sliding_window(layer) for layer in range(self.n_layers)],
        }


class QKNormAdapter(Adapter):
    """Families whose pre-RoPE q/k are the outputs of per-head q_norm/k_norm modules."""

    q_norm_attr: ClassVar[str] = "q_norm"
    k_norm_attr: ClassVar[str] = "k_norm"
    #: Whether the norm runs on (B, T, H, D) (before the transpose) rather than (B, H, T, D).
    norm_before_transpose: ClassVar[bool] = True

    def k_norm_module(self, layer: int) -> nn.Module | None:
        return getattr(self.attention[layer], self.k_norm_attr)

    def stage_hooks(self, layer: int) -> list[StageHook]:
        attn, d = self.attention[layer], self.head_dim
        to_bhtd = (lambda x: x.transpose(1, 2)) if self.norm_before_transpose else (lambda x: x)
        return [
            StageHook(getattr(attn, self.q_norm_attr), lambda out: {"q": to_bhtd(out)}),
            StageHook(getattr(attn, self.k_norm_attr), lambda out: {"k": to_bhtd(out)}),
            StageHook(attn.v_proj, lambda out: {"v": split_heads(out, d)}),
        ]


def inverse_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Undo HF's half-split RoPE on the first ``cos.shape[-1]`` dims of x (B, H, T, D).

    ``x' = x·cos + rotate_half(x)·sin`` is a rotation scaled by ``cos² + sin²`` (1, or a YaRN
    attention factor squared), so ``x = (x'·cos − rotate_half(x')·sin) / (cos² + sin²)``. Computed in
    float64 and returned in x's dtype.
    """
    r = cos.shape[-1]
    cos64, sin64 = cos.unsqueeze(1).double(), sin.unsqueeze(1).double()
    rot, rest = x[..., :r].double(), x[..., r:]
    half = r // 2
    rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    restored = (rot * cos64 - rotated * sin64) / (cos64 * cos64 + sin64 * sin64)
    return torch.cat((restored.to(x.dtype), rest), dim=-1)
