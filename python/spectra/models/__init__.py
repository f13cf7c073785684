"""Architecture adapters: one small file per family, looked up by ``config.model_type``.

>>> from spectra import models, zoo
>>> model, _ = zoo.load("tiny-llama")
>>> adapter = models.adapter_for(model)
>>> adapter.family, adapter.n_heads, adapter.n_kv_heads, adapter.head_dim
('llama', 8, 2, 32)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from spectra import defaults
from spectra.models.base import Adapter, StageHook, inverse_rope, split_heads
from spectra.models.bert import BertAdapter
from spectra.models.gemma2 import Gemma2Adapter
from spectra.models.gemma3 import Gemma3Adapter
from spectra.models.generic import GenericAdapter, UnsupportedStructureError, attention_modules_of
from spectra.models.gpt2 import GPT2Adapter
from spectra.models.gpt_neox import GPTNeoXAdapter
from spectra.models.llama import LlamaAdapter
from spectra.models.mistral import MistralAdapter
from spectra.models.phi import PhiAdapter
from spectra.models.qwen2 import Qwen2Adapter
from spectra.models.qwen3 import Qwen3Adapter
from spectra.models.smollm3 import SmolLM3Adapter

ADAPTERS: tuple[type[Adapter], ...] = (
    LlamaAdapter,
    MistralAdapter,
    Qwen2Adapter,
    Qwen3Adapter,
    Gemma2Adapter,
    Gemma3Adapter,
    SmolLM3Adapter,
    PhiAdapter,
    GPTNeoXAdapter,
    GPT2Adapter,
    BertAdapter,
)
_BY_MODEL_TYPE = {model_type: adapter for adapter in ADAPTERS for model_type in adapter.model_types}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_BY_MODEL_TYPE)


class UnsupportedModelError(ValueError):
    """The model's architecture has no Spectra adapter."""


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter for a transformers model; raises naming the supported model types otherwise."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "base_model") or not isinstance(model, nn.Module):
        raise TypeError(
            f"model: expected a transformers PreTrainedModel (with .config and .base_model); got {type(model).__name__}"
        )
    model_type = getattr(config, "model_type", None)
    adapter = _BY_MODEL_TYPE.get(model_type)
    if adapter is None and attention_modules_of(model.base_model):
        # No hand-written adapter: the generic one, for attention that goes through transformers' interface.
        try:
            return GenericAdapter(model)
        except UnsupportedStructureError as error:
            raise UnsupportedModelError(
                f"model: architecture {model_type!r} ({type(model).__name__}) is not supported: {error}"
            ) from None
    if adapter is None:
        raise UnsupportedModelError(
            f"model: architecture {model_type!r} ({type(model).__name__}) is not supported; supported model types are "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}, and any decoder whose self-attention modules call transformers' "
            "attention interface (none found in this model)"
        )
    return adapter(model)


def default_ignore_first(model: nn.Module) -> int:
    """How many leading tokens' row metrics are NaN when the caller does not say (``ignore_first=None``):
    ``spectra.defaults.IGNORE_FIRST`` for a decoder, whose first tokens see almost nothing (a token at
    position 0 attends only to itself), and 0 for an encoder, whose every token sees the whole text.

    Example:
        >>> from spectra import models, zoo
        >>> models.default_ignore_first(zoo.load("tiny-llama")[0]), models.default_ignore_first(zoo.load("all-minilm-l6-v2")[0])
        (2, 0)
    """
    return defaults.IGNORE_FIRST if adapter_for(model).causal else 0


def check_ignore_first(ignore_first: Any) -> int | None:
    """``ignore_first`` checked: an integer >= 0, or None (``none`` in a config file) for the model's
    default. The one check behind the Python API, the run kinds' configs and sweep experiment files.

    Example:
        >>> from spectra.models import check_ignore_first
        >>> check_ignore_first(3), check_ignore_first(None)
        (3, None)
    """
    if ignore_first is not None and (
        isinstance(ignore_first, bool) or not isinstance(ignore_first, int) or ignore_first < 0
    ):
        raise ValueError(
            f"ignore_first: expected an integer >= 0, or None (none in a config file) for the model's default "
            f"({defaults.IGNORE_FIRST} for decoders, 0 for encoders); got {ignore_first!r}"
        )
    return ignore_first


def resolve_ignore_first(model: nn.Module, ignore_first: int | None) -> int:
    """``ignore_first`` as given (checked by :func:`check_ignore_first`), or the model's default for
    None (:func:`default_ignore_first`)."""
    checked = check_ignore_first(ignore_first)
    return default_ignore_first(model) if checked is None else checked


def supported_table() -> str:
    """The README's supported-architectures table (Markdown), rendered from the adapters.

    tests/capture/test_probe_families.py runs every family listed here, and tests/test_docs.py checks
    that README.md carries exactly this table.
    """
    lines = [
        "| family | `config.model_type` | RoPE | where the stages sit |",
        "|---|---|---|---|",
    ]
    for adapter in ADAPTERS:
        types = ", ".join(f"`{t}`" for t in adapter.model_types)
        rope = "yes" if adapter.has_rope else "no"
        lines.append(f"| {adapter.family} | {types} | {rope} | {adapter.stages} |")
    return "\n".join(lines)


__all__ = [
    "ADAPTERS",
    "SUPPORTED_MODEL_TYPES",
    "Adapter",
    "StageHook",
    "UnsupportedModelError",
    "adapter_for",
    "check_ignore_first",
    "default_ignore_first",
    "inverse_rope",
    "resolve_ignore_first",
    "split_heads",
    "supported_table",
]
