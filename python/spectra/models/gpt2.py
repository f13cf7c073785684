"""GPT-2: fused Conv1D c_attn (weight (in, out)) split into q, k, v; learned absolute positions, so
there is no RoPE and both stages are the same vectors. The model passes no ``scaling``: eager
divides by sqrt(D) if scale_attn_weights and by (layer + 1) if scale_attn_by_inverse_layer_idx."""

from typing import Any

from spectra.models.base import Adapter, HeadsByKind, StageHook, split_heads


class GPT2Adapter(Adapter):
    family = "gpt2"
    model_types = ("gpt2",)
    stages = "pre_rope = post_rope: the split c_attn output (no RoPE)"
    has_rope = False

    def attention_modules(self, backbone):
        return [block.attn for block in backbone.h]

    def scaling(self, layer: int) -> float:
        attn = self.attention[layer]
        scale = self.head_dim**-0.5 if attn.scale_attn_weights else 1.0
        if attn.scale_attn_by_inverse_layer_idx:
            scale /= float(layer + 1)
        return scale

    def stage_hooks(self, layer: int) -> list[StageHook]:
        attn, d = self.attention[layer], self.head_dim

        def read(out) -> HeadsByKind:
            q, k, v = out.split(attn.split_size, dim=2)
            return {"q": split_heads(q, d), "k": split_heads(k, d), "v": split_heads(v, d)}

        return [StageHook(attn.c_attn, read)]

    def delegate_override(self, original: str, module) -> Any:
        # Under eager, GPT-2 with reorder_and_upcast_attn bypasses the interface with its own
        # upcast path; keep doing exactly that so logits do not change.
        if original == "eager" and module.reorder_and_upcast_attn:
            return lambda m, q, k, v, mask, **kwargs: m._upcast_and_reordered_attn(q, k, v, mask)
        return None
