"""GPT-NeoX (Pythia): one fused query_key_value projection laid out per head as [q | k | v]
(view (B, T, H, 3D) then chunk), partial rotary on the first rotary_ndims dims."""

from spectra.models.base import Adapter, HeadsByKind, StageHook


class GPTNeoXAdapter(Adapter):
    family = "gpt_neox"
    model_types = ("gpt_neox",)
    stages = "pre_rope: chunks of the fused query_key_value output; post_rope: after partial RoPE"
    head_dim_attr = "head_size"

    def attention_modules(self, backbone):
        return [layer.attention for layer in backbone.layers]

    def rotary_dim(self, layer: int) -> int:
        return int(self.attention[layer].rotary_ndims)

    def stage_hooks(self, layer: int) -> list[StageHook]:
        attn, d = self.attention[layer], self.head_dim

        def read(out) -> HeadsByKind:
            q, k, v = out.view(*out.shape[:-1], -1, 3 * d).transpose(1, 2).chunk(3, dim=-1)
            return {"q": q, "k": k, "v": v}

        return [StageHook(attn.query_key_value, read)]
