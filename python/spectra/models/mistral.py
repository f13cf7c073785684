"""Mistral: Llama's layout; one sliding window (config.sliding_window) on every layer when set."""

from spectra.models.base import Adapter


class MistralAdapter(Adapter):
    family = "mistral"
    model_types = ("mistral",)
    stages = "pre_rope: q_proj/k_proj/v_proj outputs; post_rope: after RoPE"

    def sliding_window(self, layer: int) -> int | None:
        window = getattr(self.config, "sliding_window", None)
        return int(window) if window else None
