"""Gemma3 (text): q_norm/k_norm ((1+w) RMSNorm) on (B, H, T, D), after the transpose; per-layer-type
RoPE (local vs global theta); scaling = query_pre_attn_scalar**-0.5."""

import torch

from spectra.models.base import QKNormAdapter


class Gemma3Adapter(QKNormAdapter):
    family = "gemma3"
    model_types = ("gemma3_text",)
    stages = "pre_rope: q_norm/k_norm outputs (after QK-norm), v_proj; post_rope: after RoPE (local/global theta per layer type)"
    norm_before_transpose = False

    def k_gain(self, layer: int) -> torch.Tensor | None:
        # Gemma's RMSNorm multiplies by (1 + weight): that is the gain the keys see.
        gain = super().k_gain(layer)
        return None if gain is None else 1.0 + gain
