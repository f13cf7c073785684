"""Configurations of the zoo's models.

Sizes are set by two budgets: all committed float16 weights (both models plus the tiny-qwen3
checkpoints) stay under ~30 MB, and each training run fits in 15 minutes on two CPU cores. At
that compute the models are far from saturated, so training tokens buy more than width: the
models are narrow, with just enough layers for multi-layer circuits. ``head_dim`` is
deliberately *not* ``hidden_size / num_attention_heads``: 32 dimensions give 16 RoPE frequency
pairs for the position analyses, and it keeps code honest about reading ``head_dim`` from the
config.
"""

from __future__ import annotations

from transformers import LlamaConfig, PretrainedConfig, Qwen3Config

MODEL_NAMES: tuple[str, ...] = ("tiny-llama", "tiny-qwen3")


def _shared(vocab_size: int, eot_id: int) -> dict[str, object]:
    return dict(
        vocab_size=vocab_size,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        num_hidden_layers=4,
        max_position_embeddings=2048,  # trained at 256; room for the long-context analyses
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        tie_word_embeddings=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
    )


def model_config(name: str, vocab_size: int, eot_id: int) -> PretrainedConfig:
    """The untrained configuration of zoo model ``name``.

    >>> model_config("tiny-llama", 4096, 0).num_key_value_heads
    2
    """
    if name == "tiny-llama":
        return LlamaConfig(hidden_size=192, intermediate_size=512, **_shared(vocab_size, eot_id))
    if name == "tiny-qwen3":
        return Qwen3Config(hidden_size=128, intermediate_size=384, **_shared(vocab_size, eot_id))
    raise ValueError(f"name must be one of {MODEL_NAMES}, got {name!r}")
