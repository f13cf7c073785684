"""Qwen2: Llama's layout with q/k/v biases; sliding windows on layers typed sliding_attention."""

from spectra.models.base import Adapter


class Qwen2Adapter(Adapter):
    family = "qwen2"
    model_types = ("qwen2",)
    stages = "pre_rope: q_proj/k_proj/v_proj outputs (with bias); post_rope: after RoPE"
