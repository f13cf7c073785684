"""Phi: q_proj/k_proj/v_proj (output projection named dense); optional q_layernorm/k_layernorm on
(B, H, T, D); partial rotary (the first rotary_ndims dims of each head)."""

from spectra.models.base import Adapter, StageHook, split_heads


class PhiAdapter(Adapter):
    family = "phi"
    model_types = ("phi",)
    stages = "pre_rope: q_layernorm/k_layernorm outputs if qk_layernorm else q_proj/k_proj, v_proj; post_rope: after partial RoPE"

    def rotary_dim(self, layer: int) -> int:
        return int(self.attention[layer].rotary_ndims)

    def k_norm_module(self, layer: int):
        attn = self.attention[layer]
        return attn.k_layernorm if attn.qk_layernorm else None

    def stage_hooks(self, layer: int) -> list[StageHook]:
        attn, d = self.attention[layer], self.head_dim
        if not attn.qk_layernorm:
            return super().stage_hooks(layer)
        return [
            StageHook(attn.q_layernorm, lambda out: {"q": out}),
            StageHook(attn.k_layernorm, lambda out: {"k": out}),
            StageHook(attn.v_proj, lambda out: {"v": split_heads(out, d)}),
        ]
