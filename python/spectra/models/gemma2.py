"""Gemma2: Llama's layout; scaling = query_pre_attn_scalar**-0.5, logit soft-capping, alternating
sliding/full layers."""

from spectra.models.base import Adapter


class Gemma2Adapter(Adapter):
    family = "gemma2"
    model_types = ("gemma2",)
    stages = "pre_rope: q_proj/k_proj/v_proj outputs; post_rope: after RoPE (scaling = query_pre_attn_scalar**-0.5)"
