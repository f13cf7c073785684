"""Qwen3: per-head RMSNorm q_norm/k_norm on (B, T, H, D), before the transpose and before RoPE."""

from spectra.models.base import QKNormAdapter


class Qwen3Adapter(QKNormAdapter):
    family = "qwen3"
    model_types = ("qwen3",)
    stages = "pre_rope: q_norm/k_norm outputs (after QK-norm), v_proj; post_rope: after RoPE"
    norm_before_transpose = True
