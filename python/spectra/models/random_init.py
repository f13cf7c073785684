"""Tiny random-init models of every family Spectra supports, for tests (no download, a few ms each).

Each family gets the smallest configuration that still exercises what makes it different: GQA
wherever the config has ``num_key_value_heads``, ``head_dim`` unequal to hidden/heads where the
config reads it, sliding windows shorter than a test sequence, softcapping, QK-norm, partial
rotary, NoPE layers. Weights use a large ``initializer_range`` so attention is far from uniform,
and every parameter the initialiser sets to a constant (biases, norm weights) gets noise, so that
a recomputation which forgets a bias or a norm weight cannot agree by accident.

Example:
    >>> import torch
    >>> from spectra.models.random_init import tiny_model
    >>> model = tiny_model("llama", "sdpa")
    >>> model.config.head_dim, model.config.hidden_size // model.config.num_attention_heads
    (24, 16)
    >>> model(torch.tensor([[1, 2, 3]])).logits.shape
    torch.Size([1, 3, 97])
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM

VOCAB_SIZE = 97
_ROPE = {"rope_type": "default", "rope_theta": 10_000.0}


def _gqa(**extra: Any) -> dict[str, Any]:
    return dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, **extra)


#: config.model_type -> (config class name, keyword arguments).
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", _gqa(head_dim=24, num_hidden_layers=2, rope_parameters=_ROPE)),
    "mistral": ("MistralConfig", _gqa(head_dim=16, num_hidden_layers=2, sliding_window=8, rope_parameters=_ROPE)),
    "qwen2": (
        "Qwen2Config",
        _gqa(
            num_hidden_layers=3,
            use_sliding_window=True,
            sliding_window=8,
            layer_types=["full_attention", "sliding_attention", "full_attention"],
            rope_parameters=_ROPE,
        ),
    ),
    "qwen3": ("Qwen3Config", _gqa(head_dim=24, num_hidden_layers=2, rope_parameters=_ROPE)),
    "gemma2": (
        "Gemma2Config",
        _gqa(
            head_dim=16,
            num_hidden_layers=2,
            query_pre_attn_scalar=20,
            sliding_window=8,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=30.0,
            rope_parameters=_ROPE,
        ),
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        _gqa(
            head_dim=16,
            num_hidden_layers=2,
            query_pre_attn_scalar=20,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention"],
        ),
    ),
    "smollm3": ("SmolLM3Config", _gqa(num_hidden_layers=4, no_rope_layers=[1, 1, 1, 0], rope_parameters=_ROPE)),
    "phi": (
        "PhiConfig",
        _gqa(
            num_hidden_layers=2,
            rope_parameters={**_ROPE, "partial_rotary_factor": 0.5},
        ),
    ),
    "gpt_neox": (
        "GPTNeoXConfig",
        dict(
            hidden_size=64,
            intermediate_size=96,
            num_attention_heads=4,
            num_hidden_layers=2,
            rope_parameters={**_ROPE, "partial_rotary_factor": 0.25},
        ),
    ),
    "gpt2": ("GPT2Config", dict(n_embd=64, n_head=4, n_layer=2, n_positions=64)),
    "bert": (
        "BertConfig",
        dict(
            hidden_size=64, intermediate_size=96, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=64
        ),
    ),
    # RoBERTa's positions start after its padding index (pad_token_id 0: positions 2 ..).
    "roberta": (
        "RobertaConfig",
        dict(
            hidden_size=64, intermediate_size=96, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=72
        ),
    ),
}

#: Families built with ``AutoModel`` (encoders) rather than ``AutoModelForCausalLM``.
ENCODERS = frozenset({"bert", "roberta"})


def tiny_config(family: str, **overrides: Any):
    """The tiny configuration of ``family`` (a ``config.model_type``), with ``overrides`` applied."""
    if family not in TINY_CONFIGS:
        raise ValueError(f"family: no tiny config for {family!r}; known families are {', '.join(TINY_CONFIGS)}")
    class_name, kwargs = TINY_CONFIGS[family]
    kwargs = {
        "vocab_size": VOCAB_SIZE,
        "initializer_range": 0.2,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        **kwargs,
        **overrides,
    }
    return getattr(transformers, class_name)(**kwargs)


def tiny_model(
    family: str,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    *,
    seed: int = 0,
    **overrides: Any,
) -> nn.Module:
    """A random-init tiny model of ``family`` in eval mode (seeded: the same call gives the same weights)."""
    config = tiny_config(family, **overrides)
    auto = AutoModel if family in ENCODERS else AutoModelForCausalLM
    torch.manual_seed(seed)
    model = auto.from_config(config, attn_implementation=attn_implementation)
    with torch.no_grad():
        for param in model.parameters():
            if param.numel() > 1 and bool((param == param.flatten()[0]).all()):
                param.add_(0.2 * torch.randn_like(param))
    return model.to(dtype).eval()
