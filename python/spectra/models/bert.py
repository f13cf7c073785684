"""BERT (incl. all-MiniLM-L6-v2) and RoBERTa: bidirectional encoders; separate query/key/value Linear
layers, absolute position embeddings (no RoPE, so both stages are the same vectors). RoBERTa's
positions start after its padding index; the model computes them, Spectra reads only q/k/v."""

from spectra.models.base import Adapter, StageHook, split_heads


class BertAdapter(Adapter):
    family = "bert"
    model_types = ("bert", "roberta")
    stages = "pre_rope = post_rope: query/key/value outputs (no RoPE)"
    has_rope = False
    head_dim_attr = "attention_head_size"

    def attention_modules(self, backbone):
        return [layer.attention.self for layer in backbone.encoder.layer]

    def stage_hooks(self, layer: int) -> list[StageHook]:
        attn, d = self.attention[layer], self.head_dim
        return [
            StageHook(attn.query, lambda out: {"q": split_heads(out, d)}),
            StageHook(attn.key, lambda out: {"k": split_heads(out, d)}),
            StageHook(attn.value, lambda out: {"v": split_heads(out, d)}),
        ]
