"""SmolLM3: Llama's layout; ``config.no_rope_layers[i]`` is 1 for a RoPE layer and 0 for a NoPE
layer (despite its name), and on NoPE layers both stages are the raw projections."""

from spectra.models.base import Adapter


class SmolLM3Adapter(Adapter):
    family = "smollm3"
    model_types = ("smollm3",)
    stages = "pre_rope: q_proj/k_proj/v_proj outputs; post_rope: after RoPE, identical to pre_rope on NoPE layers"

    def uses_rope(self, layer: int) -> bool:
        return bool(self.config.no_rope_layers[layer])
