"""Llama: q_proj/k_proj/v_proj → RoPE → attention; no QK-norm, causal, no sliding window."""

from spectra.models.base import Adapter


class LlamaAdapter(Adapter):
    family = "llama"
    model_types = ("llama",)
    stages = "pre_rope: q_proj/k_proj/v_proj outputs; post_rope: after RoPE"
