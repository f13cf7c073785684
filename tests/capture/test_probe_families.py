"""Probe on a tiny random-init model of every supported family, checked against recomputation.

Every expectation here is computed independently of Spectra: q/k/v from the attention module's
weights and the hidden states entering it (read with our own forward pre-hook), QK-norm and RoPE
re-implemented, attention weights from the captured vectors against ``output_attentions``, head
counts, head_dim, windows and scalings from the config. Each model is driven with a padded batch
(right padding, and left padding with explicit position ids) so that row selection and positions
are exercised too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

import spectra
from spectra.capture.store import capture_path, read_sidecar
from spectra.models.random_init import VOCAB_SIZE, tiny_model

B, T = 2, 12

#: test id -> (config.model_type, config overrides).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {}),
    "mistral": ("mistral", {}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "qwen3-sliding": (
        "qwen3",
        {"use_sliding_window": True, "sliding_window": 5, "layer_types": ["sliding_attention", "full_attention"]},
    ),
    "gemma2": ("gemma2", {}),
    "gemma3": ("gemma3_text", {}),
    "smollm3": ("smollm3", {}),
    # SmolLM3 slides on its NoPE layers when use_sliding_window is set.
    "smollm3-sliding": ("smollm3", {"use_sliding_window": True, "sliding_window": 5}),
    "phi": ("phi", {}),
    "phi-qk_layernorm": ("phi", {"qk_layernorm": True}),
    "gpt_neox": ("gpt_neox", {}),
    "gpt2": ("gpt2", {}),
    # The eager path that bypasses the interface, and a per-layer scaling.
    "gpt2-upcast": ("gpt2", {"reorder_and_upcast_attn": True, "scale_attn_by_inverse_layer_idx": True}),
    "bert": ("bert", {}),
    "roberta": ("roberta", {}),
}
#: transformers refuses sdpa for Gemma2 (its logit soft-capping needs eager).
EAGER_ONLY = {"gemma2"}
IMPLS = ("eager", "sdpa")
CASES = [
    pytest.param(variant, impl, id=f"{variant}-{impl}")
    for variant in VARIANTS
    for impl in IMPLS
    if not (impl != "eager" and VARIANTS[variant][0] in EAGER_ONLY)
]
EAGER_CASES = [case for case in CASES if case.values[1] == "eager"]
GQA_VARIANTS = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "smollm3", "phi"]
SLIDING_VARIANTS = ["mistral", "qwen2", "gemma2", "gemma3", "qwen3-sliding", "smollm3-sliding", "llama"]

F32 = dict(rtol=1e-5, atol=1e-6)


@cache
def model_for(variant: str, impl: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    family, overrides = VARIANTS[variant]
    return tiny_model(family, impl, dtype, **overrides)


def batch(padding: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(input_ids, attention_mask, position_ids): row 0 full, row 1 padded on the given side."""
    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(3, VOCAB_SIZE, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    if padding == "right":
        mask[1, 8:] = 0
        return ids, mask, None
    mask[1, :4] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def forward(model, ids, mask, position_ids, **kwargs):
    with torch.no_grad():
        out = model(ids, attention_mask=mask, position_ids=position_ids, **kwargs)
    return out


def main_output(out) -> torch.Tensor:
    """Logits of a causal LM, last_hidden_state of an encoder."""
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


# ---- what the config says, read without Spectra ----
def config_n_heads(cfg) -> int:
    return int(cfg.num_attention_heads)


def config_n_kv_heads(cfg) -> int:
    return int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)


def config_head_dim(cfg) -> int:
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def config_uses_rope(cfg, layer: int) -> bool:
    if cfg.model_type in ("gpt2", "bert", "roberta"):
        return False
    if cfg.model_type == "smollm3":
        return cfg.no_rope_layers[layer] == 1
    return True


def config_rotary_dim(cfg) -> int:
    factor = cfg.rope_parameters.get("partial_rotary_factor", 1.0) if cfg.model_type in ("phi", "gpt_neox") else 1.0
    return int(config_head_dim(cfg) * factor)


def config_window(cfg, layer: int) -> int | None:
    if cfg.model_type == "mistral":
        return cfg.sliding_window
    types = getattr(cfg, "layer_types", None)
    return cfg.sliding_window if types is not None and types[layer] == "sliding_attention" else None


def config_scaling(cfg, layer: int) -> float:
    if cfg.model_type in ("gemma2", "gemma3_text"):
        return cfg.query_pre_attn_scalar**-0.5
    scale = config_head_dim(cfg) ** -0.5
    if cfg.model_type == "gpt2":
        scale = scale if cfg.scale_attn_weights else 1.0
        if cfg.scale_attn_by_inverse_layer_idx:
            scale /= layer + 1
    return scale


def attention_modules(model) -> list[torch.nn.Module]:
    t = model.config.model_type
    if t == "gpt2":
        return [block.attn for block in model.transformer.h]
    if t == "gpt_neox":
        return [layer.attention for layer in model.gpt_neox.layers]
    if t in ("bert", "roberta"):
        return [layer.attention.self for layer in model.encoder.layer]
    return [layer.self_attn for layer in model.model.layers]


@contextmanager
def attention_inputs(model) -> Iterator[dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]]]:
    """{layer: (hidden_states entering the attention module, position_embeddings (cos, sin) or None)}."""
    seen: dict[int, Any] = {}

    def grab(layer: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            seen[layer] = (hidden.detach().clone(), kwargs.get("position_embeddings"))

        return hook

    handles = [m.register_forward_pre_hook(grab(i), with_kwargs=True) for i, m in enumerate(attention_modules(model))]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


# ---- independent recomputation ----
def to_heads(x: torch.Tensor, d: int) -> torch.Tensor:
    return x.reshape(*x.shape[:-1], -1, d).transpose(1, 2)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (offset + weight)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split RoPE on the first cos.shape[-1] dims of x; cos/sin broadcast against x[..., :r]."""
    r = cos.shape[-1]
    rot, rest = x[..., :r], x[..., r:]
    swapped = torch.cat((-rot[..., r // 2 :], rot[..., : r // 2]), dim=-1)
    return torch.cat((rot * cos + swapped * sin, rest), dim=-1)


def reference_qkv(model, layer: int, hidden: torch.Tensor, cos_sin) -> tuple[dict, dict]:
    """(pre_rope, post_rope): {kind: (B, heads, T, D)} recomputed from the module's weights."""
    cfg, attn = model.config, attention_modules(model)[layer]
    t, d = cfg.model_type, config_head_dim(cfg)
    if t == "gpt2":  # Conv1D: x @ W + b, W (in, out)
        q, k, v = (hidden @ attn.c_attn.weight + attn.c_attn.bias).split(cfg.hidden_size, dim=-1)
    elif t == "gpt_neox":  # per head [q | k | v]
        qkv = to_heads(F.linear(hidden, attn.query_key_value.weight, attn.query_key_value.bias), 3 * d)
        q, k, v = (x.transpose(1, 2).flatten(2) for x in qkv.split(d, dim=-1))
    elif t in ("bert", "roberta"):
        q, k, v = (F.linear(hidden, p.weight, p.bias) for p in (attn.query, attn.key, attn.value))
    else:
        q, k, v = (F.linear(hidden, p.weight, p.bias) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    q, k, v = to_heads(q, d), to_heads(k, d), to_heads(v, d)
    if t == "qwen3":
        q = rms_norm(q, attn.q_norm.weight, cfg.rms_norm_eps, 0.0)
        k = rms_norm(k, attn.k_norm.weight, cfg.rms_norm_eps, 0.0)
    elif t == "gemma3_text":
        q = rms_norm(q, attn.q_norm.weight, cfg.rms_norm_eps, 1.0)
        k = rms_norm(k, attn.k_norm.weight, cfg.rms_norm_eps, 1.0)
    elif t == "phi" and cfg.qk_layernorm:
        q = F.layer_norm(q, (d,), attn.q_layernorm.weight, attn.q_layernorm.bias, cfg.layer_norm_eps)
        k = F.layer_norm(k, (d,), attn.k_layernorm.weight, attn.k_layernorm.bias, cfg.layer_norm_eps)
    pre = {"q": q, "k": k, "v": v}
    if not config_uses_rope(cfg, layer):
        return pre, dict(pre)
    cos, sin = cos_sin
    assert cos.shape[-1] == config_rotary_dim(cfg)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return pre, {"q": rotate(q, cos, sin), "k": rotate(k, cos, sin), "v": v}


def rows(x: torch.Tensor, head: int, valid: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, D) -> (N, D): one head's valid tokens, batch-row-major, position ascending."""
    return x[:, head][valid].float()


def expected_kv_head(cfg, head: int) -> int:
    return head // (config_n_heads(cfg) // config_n_kv_heads(cfg))


def full_probe(model, **kwargs) -> spectra.Probe:
    return spectra.Probe(model, capture=("q", "k", "v"), stage=("pre_rope", "post_rope"), **kwargs)


# ---- 0. the adapter reads the structure from the config ----
@pytest.mark.parametrize("variant", VARIANTS)
def test_adapter_structure_matches_config(variant: str) -> None:
    model = model_for(variant, "eager")
    cfg, adapter = model.config, spectra.models.adapter_for(model)
    assert (adapter.n_layers, adapter.n_heads, adapter.n_kv_heads, adapter.head_dim) == (
        len(attention_modules(model)),
        config_n_heads(cfg),
        config_n_kv_heads(cfg),
        config_head_dim(cfg),
    )
    assert adapter.attention == attention_modules(model)
    for layer in range(adapter.n_layers):
        assert adapter.uses_rope(layer) == config_uses_rope(cfg, layer)
        assert adapter.scaling(layer) == pytest.approx(config_scaling(cfg, layer), rel=1e-12)
        assert adapter.sliding_window(layer) == config_window(cfg, layer)
        if config_uses_rope(cfg, layer):
            assert adapter.rotary_dim(layer) == config_rotary_dim(cfg)


def test_tiny_configs_exercise_what_they_claim() -> None:
    # head_dim must come from the config, not hidden/heads.
    for variant in ("llama", "qwen3"):
        cfg = model_for(variant, "eager").config
        assert cfg.head_dim != cfg.hidden_size // cfg.num_attention_heads
    for variant in GQA_VARIANTS:
        cfg = model_for(variant, "eager").config
        assert config_n_kv_heads(cfg) < config_n_heads(cfg), variant
    for variant in ("mistral", "qwen2", "gemma2", "gemma3", "qwen3-sliding", "smollm3-sliding"):
        cfg = model_for(variant, "eager").config
        windows = [config_window(cfg, layer) for layer in range(cfg.num_hidden_layers)]
        assert any(w is not None and w < T for w in windows), variant
    assert model_for("gemma2", "eager").config.attn_logit_softcapping is not None
    smollm3 = model_for("smollm3", "eager").config
    assert [config_uses_rope(smollm3, layer) for layer in range(4)] == [True, True, True, False]  # layer 3 is NoPE
    assert config_rotary_dim(model_for("phi", "eager").config) < config_head_dim(model_for("phi", "eager").config)
    assert config_rotary_dim(model_for("gpt_neox", "eager").config) < config_head_dim(
        model_for("gpt_neox", "eager").config
    )


# ---- 1. parity ----
@pytest.mark.parametrize("route", ["hook", "inverse_rope"])
@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize(("variant", "impl"), CASES)
def test_outputs_bitwise_unchanged(variant: str, impl: str, padding: str, route: str) -> None:
    model = model_for(variant, impl)
    ids, mask, position_ids = batch(padding)
    expected = main_output(forward(model, ids, mask, position_ids))
    probe = full_probe(model, pre_rope_route=route)
    with probe:
        got = main_output(forward(model, ids, mask, position_ids))
    assert torch.equal(got, expected)
    assert model.config._attn_implementation == impl
    assert probe.n_examples == B
    # The probe did record something (a no-op probe would pass the parity check trivially).
    assert probe.captured(0, 0, "q", "post_rope").vectors.shape[0] == int(mask.sum())


# ---- 2. values ----
@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize(("variant", "impl"), CASES)
def test_captured_vectors_match_recomputation(variant: str, impl: str, padding: str) -> None:
    model = model_for(variant, impl)
    cfg = model.config
    ids, mask, position_ids = batch(padding)
    valid = mask.bool()
    probe = full_probe(model)
    with probe, attention_inputs(model) as seen:
        forward(model, ids, mask, position_ids)
    positions = (position_ids if position_ids is not None else torch.arange(T).expand(B, T))[valid]
    example_ids = torch.arange(B)[:, None].expand(B, T)[valid]
    for layer in range(cfg.num_hidden_layers):
        hidden, cos_sin = seen[layer]
        pre, post = reference_qkv(model, layer, hidden, cos_sin)
        for stage, ref in (("pre_rope", pre), ("post_rope", post)):
            for kind in ("q", "k", "v"):
                n = config_n_heads(cfg) if kind == "q" else config_n_kv_heads(cfg)
                for head in range(n):
                    got = probe.captured(layer, head, kind, stage)
                    where = f"layer {layer} head {head} {kind} {stage}"
                    assert got.vectors.dtype == torch.float32
                    torch.testing.assert_close(got.vectors, rows(ref[kind], head, valid), **F32, msg=where)
                    assert torch.equal(got.positions.long(), positions), where
                    assert torch.equal(got.example_ids.long(), example_ids), where


@pytest.mark.parametrize(("variant", "impl"), EAGER_CASES)
def test_attention_weights_from_captured_qk_match_output_attentions(variant: str, impl: str) -> None:
    model = model_for(variant, impl)
    cfg = model.config
    ids, mask, position_ids = batch("left")
    valid = mask.bool()
    probe = spectra.Probe(model, capture=("q", "k"))
    with probe:
        attentions = forward(model, ids, mask, position_ids, output_attentions=True).attentions
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    for layer in range(cfg.num_hidden_layers):
        allowed = valid[:, None, :].expand(B, T, T).clone()
        if cfg.model_type not in ("bert", "roberta"):
            allowed &= j <= i
        window = config_window(cfg, layer)
        if window is not None:
            allowed &= i - j < window
        softcap = getattr(cfg, "attn_logit_softcapping", None)
        for head in range(config_n_heads(cfg)):
            q = torch.zeros(B, T, config_head_dim(cfg))
            k = torch.zeros(B, T, config_head_dim(cfg))
            q[valid] = probe.captured(layer, head, "q").vectors
            k[valid] = probe.captured(layer, expected_kv_head(cfg, head), "k").vectors
            scores = q @ k.transpose(1, 2) * config_scaling(cfg, layer)
            if softcap is not None:
                scores = torch.tanh(scores / softcap) * softcap
            weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
            torch.testing.assert_close(
                weights[valid],
                attentions[layer][:, head][valid],
                rtol=0,
                atol=1e-6,
                msg=f"layer {layer} head {head}",
            )


# ---- 3. pre/post-RoPE consistency and the two pre-RoPE routes ----
@pytest.mark.parametrize(("variant", "impl"), CASES)
def test_pre_and_post_rope_stages_agree(variant: str, impl: str) -> None:
    model = model_for(variant, impl)
    cfg = model.config
    ids, mask, position_ids = batch("left")
    valid = mask.bool()
    by_hook, by_inverse = full_probe(model), full_probe(model, pre_rope_route="inverse_rope")
    with by_hook, by_inverse, attention_inputs(model) as seen:
        forward(model, ids, mask, position_ids)
    for layer in range(cfg.num_hidden_layers):
        rope = config_uses_rope(cfg, layer)
        for kind in ("q", "k", "v"):
            n = config_n_heads(cfg) if kind == "q" else config_n_kv_heads(cfg)
            for head in range(n):
                where = f"layer {layer} head {head} {kind}"
                pre = by_hook.captured(layer, head, kind, "pre_rope").vectors
                post = by_hook.captured(layer, head, kind, "post_rope").vectors
                assert torch.equal(by_inverse.captured(layer, head, kind, "post_rope").vectors, post), where
                inverse_pre = by_inverse.captured(layer, head, kind, "pre_rope").vectors
                if rope and kind != "v":
                    cos, sin = seen[layer][1]
                    torch.testing.assert_close(post, rotate(pre, cos[valid], sin[valid]), **F32, msg=where)
                    torch.testing.assert_close(inverse_pre, pre, **F32, msg=where)
                    assert not torch.equal(pre, post), where  # RoPE did something (positions > 0 exist)
                else:  # V, NoPE layers, absolute-position families: the stages are the same vectors
                    assert torch.equal(pre, post), where
                    assert torch.equal(inverse_pre, pre), where


# ---- 4. GQA ----
@pytest.mark.parametrize("variant", GQA_VARIANTS)
def test_gqa_kv_head_map_and_slices(variant: str) -> None:
    model = model_for(variant, "sdpa" if VARIANTS[variant][0] not in EAGER_ONLY else "eager")
    cfg = model.config
    n, n_kv = config_n_heads(cfg), config_n_kv_heads(cfg)
    group = n // n_kv
    # Query head 1 reads KV head 0 (h // group), not KV head 1 (h % n_kv).
    head = 1
    assert group > 1 and head // group != head % n_kv
    ids, mask, position_ids = batch("left")
    valid = mask.bool()
    probe = spectra.Probe(model, heads=[head], capture=("q", "k", "v"), stage="post_rope")
    with probe, attention_inputs(model) as seen:
        forward(model, ids, mask, position_ids)
    assert probe.kv_head_map == tuple(h // group for h in range(n))
    assert probe.kv_head(head) == head // group
    for layer in range(cfg.num_hidden_layers):
        assert probe.kv_heads(layer) == (head // group,)
        _, post = reference_qkv(model, layer, *seen[layer])
        torch.testing.assert_close(probe.captured(layer, head, "q").vectors, rows(post["q"], head, valid), **F32)
        for kind in ("k", "v"):
            got = probe.captured(layer, probe.kv_head(head), kind).vectors
            torch.testing.assert_close(got, rows(post[kind], head // group, valid), **F32)
            # and not the slice of the KV head the query head does not read
            assert not torch.allclose(got, rows(post[kind], head % n_kv, valid))
        with pytest.raises(ValueError, match="was not captured"):
            probe.captured(layer, head % n_kv, "k")


# ---- 5. half precision ----
HALF = pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])


@HALF
@pytest.mark.parametrize(("variant", "impl"), CASES)
def test_half_precision_outputs_bitwise_unchanged(variant: str, impl: str, dtype: torch.dtype) -> None:
    # In half precision GPT-2's reorder_and_upcast_attn path differs from the plain eager one, so
    # this also checks that the probe delegates to the path the model itself would take.
    model = model_for(variant, impl, dtype)
    ids, mask, position_ids = batch("left")
    expected = main_output(forward(model, ids, mask, position_ids))
    with full_probe(model):
        got = main_output(forward(model, ids, mask, position_ids))
    assert got.dtype == dtype and torch.equal(got, expected)


@HALF
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("variant", ["llama", "qwen3"])
def test_half_precision_parity_and_float32_rows(variant: str, impl: str, dtype: torch.dtype) -> None:
    model = model_for(variant, impl, dtype)
    cfg = model.config
    ids, mask, position_ids = batch("left")
    valid = mask.bool()
    expected = forward(model, ids, mask, position_ids).logits
    probe = full_probe(model)
    with probe, attention_inputs(model) as seen:
        got = forward(model, ids, mask, position_ids).logits
    assert got.dtype == dtype and torch.equal(got, expected)
    d = config_head_dim(cfg)
    for layer, attn in enumerate(attention_modules(model)):
        hidden, (cos, sin) = seen[layer]
        # The model's own modules and RoPE, in the model's dtype: what the attention kernel saw.
        q = attn.q_proj(hidden).view(B, T, -1, d)
        k = attn.k_proj(hidden).view(B, T, -1, d)
        v = attn.v_proj(hidden).view(B, T, -1, d).transpose(1, 2)
        if cfg.model_type == "qwen3":
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        q_post, k_post = sys.modules[type(attn).__module__].apply_rotary_pos_emb(q, k, cos, sin)
        assert q_post.dtype == dtype
        for kind, pre, post, n in (
            ("q", q, q_post, config_n_heads(cfg)),
            ("k", k, k_post, config_n_kv_heads(cfg)),
            ("v", v, v, config_n_kv_heads(cfg)),
        ):
            for head in range(n):
                for stage, ref in (("pre_rope", pre), ("post_rope", post)):
                    captured = probe.captured(layer, head, kind, stage).vectors
                    assert captured.dtype == torch.float32
                    assert torch.equal(captured, rows(ref, head, valid)), f"layer {layer} head {head} {kind} {stage}"


# ---- 6. sliding-window metadata on disk ----
@pytest.mark.parametrize("variant", SLIDING_VARIANTS)
def test_sliding_window_column_per_layer(variant: str, tmp_path) -> None:
    model = model_for(variant, "eager")
    cfg = model.config
    ids, mask, position_ids = batch("right")
    probe = spectra.Probe(model, heads=[0], capture=("q", "k"), stage=("pre_rope", "post_rope"), out_dir=tmp_path)
    with probe:
        forward(model, ids, mask, position_ids)
    windows = [config_window(cfg, layer) for layer in range(cfg.num_hidden_layers)]
    if variant != "llama":
        assert any(w is not None for w in windows)
    if variant not in ("mistral", "llama"):
        assert None in windows  # mixed sliding / full layers
    for layer, window in enumerate(windows):
        assert probe.adapter.sliding_window(layer) == window
        for kind, head in (("q", 0), ("k", probe.kv_head(0))):
            for stage in ("pre_rope", "post_rope"):
                column = pq.read_table(capture_path(tmp_path, layer, head, kind, stage)).column("sliding_window")
                assert len(column) == int(mask.sum())
                assert column.to_pylist() == [window] * len(column), f"layer {layer} {kind} {stage}"
    assert read_sidecar(tmp_path)["model"]["sliding_window"] == windows


# ---- 7. the supported-architectures table cannot drift from this file ----
def test_supported_model_types_are_exactly_the_tested_families() -> None:
    tested = {family for family, _ in VARIANTS.values()}
    assert set(spectra.SUPPORTED_MODEL_TYPES) == tested
    assert len(spectra.SUPPORTED_MODEL_TYPES) == len(set(spectra.SUPPORTED_MODEL_TYPES))
