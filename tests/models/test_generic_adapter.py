"""The generic adapter on decoders without a hand-written one: metrics against float64 eager attention
on a left-padded batch, pre-RoPE hooks against inverse RoPE, logits bitwise equal under a Probe,
single-head isolation; and clear refusals where Spectra would otherwise measure the wrong thing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import spectra
from spectra.capture.attention_switch import layer_attention
from spectra.capture.call_mask import CustomMaskError
from spectra.models import UnsupportedModelError, adapter_for
from spectra.models.generic import GenericAdapter

DIMS = dict(
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_hidden_layers=2,
    vocab_size=97,
    initializer_range=0.2,
    pad_token_id=0,
)
# Fused qkv (phi3), QK-norm over all heads (olmo2), windows only in the config (ministral3, mixtral),
# MoE (qwen3_moe), a decoder the causal-LM head calls past its backbone (opt), interleaved RoPE (glm4).
TYPES = ["olmo2", "ministral3", "phi3", "mixtral", "granite", "cohere2", "opt", "qwen3_moe", "glm4", "starcoder2"]


def tiny(model_type: str):
    config = AutoConfig.for_model(model_type, **DIMS)
    if hasattr(config, "head_dim"):
        config.head_dim = 16
    if hasattr(config, "sliding_window"):
        config.sliding_window = 4
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


def batch():
    ids = torch.randint(3, 97, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :3] = 0
    return ids, mask


@pytest.mark.parametrize("model_type", TYPES)
def test_generic_adapter_measures_what_eager_attention_computes(model_type):
    model = tiny(model_type)
    adapter = adapter_for(model)
    assert isinstance(adapter, GenericAdapter) and adapter.n_layers == 2 and adapter.head_dim == 16
    ids, mask = batch()
    table = spectra.profile(model, ids, mask, metrics=["entropy", "max_attn"], ignore_first=0)
    with torch.no_grad():
        attentions = model(ids, attention_mask=mask, output_attentions=True).attentions
    for layer, weights in enumerate(attentions):
        w = weights.double()
        entropy = -(w * torch.where(w > 0, w.log(), torch.zeros((), dtype=torch.float64))).sum(-1)
        for sample in range(2):
            got = table[(table["sample"] == sample) & (table["layer"] == layer)].sort_values(["head", "token"])
            real = mask[sample].bool()
            np.testing.assert_allclose(got["entropy"], entropy[sample][:, real].reshape(-1).numpy(), atol=1e-5)
            np.testing.assert_allclose(got["max_attn"], w[sample][:, real].amax(-1).reshape(-1).numpy(), atol=1e-5)
    # Logits bitwise equal under a probe; one head scaled changes only that head.
    inputs = {"input_ids": ids, "attention_mask": mask}
    assert spectra.check_baseline(model, inputs).logits_equal
    spectra.check_isolation(model, spectra.ScaleQuery(1, 0, 2.0), inputs)


@pytest.mark.parametrize("model_type", ["olmo2", "phi3", "mixtral"])
def test_pre_rope_hooks_agree_with_inverse_rope(model_type):
    model = tiny(model_type)
    ids = batch()[0][1:]
    got = {}
    for route in ("hook", "inverse_rope"):
        probe = spectra.Probe(model, layers=[1], heads=[0], capture=("q", "k"), stage="pre_rope", pre_rope_route=route)
        with probe, torch.no_grad():
            model(ids)
        got[route] = [probe.captured(1, 0, kind).vectors for kind in ("q", "k")]
    for a, b in zip(got["hook"], got["inverse_rope"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_refusals_name_the_reason():
    with pytest.raises(UnsupportedModelError, match="does not call transformers' attention interface"):
        adapter_for(tiny("bloom"))
    # An additive bias the metrics do not reproduce, and sinks together with a soft-cap, are refused
    # by name (learned sinks alone are measured: tests/capture/test_learned_sinks.py).
    model = tiny("llama")
    adapter, module = adapter_for(model), adapter_for(model).attention[0]
    with pytest.raises(CustomMaskError, match="layer 0: the attention call passes position_bias"):
        layer_attention(adapter, 0, module, {"position_bias": torch.zeros(1)}, None)
    with pytest.raises(CustomMaskError, match="both learned sinks and a soft-cap"):
        layer_attention(adapter, 0, module, {"s_aux": torch.zeros(4), "softcap": 30.0}, None)
    # Differential attention calls the attention function twice per layer: refused, not double-counted.
    from spectra.models import conformance

    ids, mask = batch()
    with pytest.raises(
        UnsupportedModelError, match=r"layer 0 \(DiffLlamaAttention\) calls its attention function more"
    ):
        spectra.profile(conformance.tiny_model_of("diffllama"), ids, mask)
    with pytest.raises(ValueError, match="^pre_rope_route: .*interleaved"):
        spectra.Probe(tiny("cohere"), capture=("q",), stage="pre_rope", pre_rope_route="inverse_rope")


def test_mllama_text_measures_its_self_attention_and_passes_cross_attention_through():
    from transformers import MllamaForCausalLM, MllamaTextConfig

    config = MllamaTextConfig(**{**DIMS, "num_hidden_layers": 4}, cross_attention_layers=[1])
    torch.manual_seed(0)
    model = MllamaForCausalLM._from_config(config, attn_implementation="eager").eval()
    adapter = adapter_for(model)
    # Spectra's layers are the self-attention layers in order (the model's layers 0, 2 and 3).
    assert [int(m.layer_idx) for m in adapter.attention] == [0, 2, 3]
    ids, mask = batch()
    table = spectra.profile(model, ids, mask, metrics=["entropy"], ignore_first=0)
    with torch.no_grad():
        attentions = model(ids, attention_mask=mask, output_attentions=True).attentions
    assert len(attentions) == adapter.n_layers == 3
    for layer, weights in enumerate(attentions):
        w = weights.double()
        entropy = -(w * torch.where(w > 0, w.log(), torch.zeros((), dtype=torch.float64))).sum(-1)
        got = table[(table["sample"] == 1) & (table["layer"] == layer)].sort_values(["head", "token"])
        np.testing.assert_allclose(got["entropy"], entropy[1].reshape(-1).numpy(), atol=1e-5)
    assert spectra.check_baseline(model, {"input_ids": ids, "attention_mask": mask}).logits_equal


def test_multi_head_latent_attention_is_read_with_its_q_k_head_dim():
    from spectra.models import conformance

    # DeepSeek-V3's layout with values narrower than queries and keys (16 = 8 + 8 against 12).
    default = AutoConfig.for_model("deepseek_v3")
    config = conformance._apply(default, {**conformance._shrink_kwargs(default), "v_head_dim": 12})
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    # Metrics against float64 eager on a padded batch, logits bitwise under a Probe, isolation.
    row = conformance.check("deepseek_v3", model)
    assert row.status == "supported", row.reason
    adapter = adapter_for(model)
    attn = adapter.attention[0]
    nope, rope = int(attn.qk_nope_head_dim), int(attn.qk_rope_head_dim)
    assert adapter.mla and adapter.head_dim == nope + rope != adapter.v_head_dim
    assert adapter.n_kv_heads == adapter.n_heads
    ids = batch()[0][1:]
    probe = spectra.Probe(model, layers=[1], capture=("q", "k"), stage=("pre_rope", "post_rope"))
    with probe, torch.no_grad():
        model(ids)
    for kind in ("q", "k"):
        for head in (0, adapter.n_heads - 1):
            pre = probe.captured(1, head, kind, "pre_rope").vectors
            post = probe.captured(1, head, kind, "post_rope").vectors
            # RoPE turns only the last qk_rope_head_dim dims: the rest is the projection itself, and
            # the rotated part keeps its norm (a rotation, after DeepSeek's interleave permutation).
            torch.testing.assert_close(pre[:, :nope], post[:, :nope], atol=1e-6, rtol=0)
            torch.testing.assert_close(pre[:, nope:].norm(dim=-1), post[:, nope:].norm(dim=-1), atol=1e-5, rtol=1e-5)
            assert not torch.allclose(pre[1:, nope:], post[1:, nope:], atol=1e-3)  # RoPE did turn it
    # Keys share their rotary part across heads.
    k0, k1 = (probe.captured(1, h, "k", "pre_rope").vectors for h in (0, 1))
    torch.testing.assert_close(k0[:, nope:], k1[:, nope:], atol=0, rtol=0)
    # Values keep their own head_dim (12), post-RoPE (what the call receives) and pre-RoPE (kv_b_proj).
    probe = spectra.Probe(model, layers=[1], heads=[0], capture=("v",), stage=("pre_rope", "post_rope"))
    with probe, torch.no_grad():
        model(ids)
    pre, post = (probe.captured(1, 0, "v", stage).vectors for stage in ("pre_rope", "post_rope"))
    assert pre.shape == post.shape == (ids.shape[1], 12)
    torch.testing.assert_close(pre, post, atol=1e-6, rtol=0)
    assert probe.describe()["model"]["v_head_dim"] == 12
    with pytest.raises(ValueError, match="^pre_rope_route: .*MLA rotates only the last"):
        spectra.Probe(model, capture=("q",), stage="pre_rope", pre_rope_route="inverse_rope")


@pytest.mark.parametrize("model_type", ["minicpm3", "longcat_flash", "glm4_moe_lite", "youtu"])
def test_latent_attention_pre_rope_is_the_post_rope_vector_before_its_rotation(model_type):
    from spectra.models import conformance

    model = conformance.tiny_model_of(model_type)
    adapter = adapter_for(model)
    nope = adapter.head_dim - int(adapter.attention[1].qk_rope_head_dim)
    ids = batch()[0][1:]
    probe = spectra.Probe(model, layers=[1], heads=[0], capture=("q", "k", "v"), stage=("pre_rope", "post_rope"))
    with probe, torch.no_grad():
        model(ids)
    for kind in ("q", "k", "v"):
        pre, post = (probe.captured(1, 0, kind, stage).vectors for stage in ("pre_rope", "post_rope"))
        if kind == "v":
            torch.testing.assert_close(pre, post, atol=1e-6, rtol=0)
            continue
        torch.testing.assert_close(pre[:, :nope], post[:, :nope], atol=1e-6, rtol=0)
        torch.testing.assert_close(pre[:, nope:].norm(dim=-1), post[:, nope:].norm(dim=-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", ["bart", "whisper", "xlm-roberta", "electra"])
def test_decoders_with_one_class_for_self_and_cross_attention(model_type):
    """BART-style decoders keep cross-attention as ``encoder_attn`` and BERT-style ones as
    ``crossattention``, with the self-attention's class: only the self-attention is measured (the
    cross-attention is skipped without encoder states); BERT-style modules name their head_dim
    ``attention_head_size``."""
    from spectra.models import conformance

    model = conformance.tiny_model_of(model_type)
    adapter = adapter_for(model)
    names = {id(m): name for name, m in model.named_modules()}
    assert all("encoder_attn" not in names[id(m)] and "crossattention" not in names[id(m)] for m in adapter.attention)
    row = conformance.check(model_type, model)
    assert row.status == "supported", row.reason


def test_rope_read_from_the_modules_own_code():
    """Where RoPE applies and where QK-norm sits are read from the attention module's forward: EXAONE 4
    turns only its sliding layers when a window is set; Hunyuan and nanochat norm after RoPE, so their
    pre-RoPE vectors are the projections' and inverse RoPE is refused; GPT-J names only rotary_dim."""
    from spectra.models import conformance

    exaone = adapter_for(conformance.tiny_model_of("exaone4"))
    assert [exaone.uses_rope(layer) for layer in range(2)] == [bool(m.is_sliding) for m in exaone.attention]
    assert exaone.uses_rope(0) != exaone.uses_rope(1)
    for model_type in ("hunyuan_v1_dense", "nanochat"):
        adapter = adapter_for(conformance.tiny_model_of(model_type))
        assert "after RoPE" in adapter.inverse_rope_unavailable
        hooked = {id(h.module) for h in adapter.stage_hooks(1)}
        assert id(adapter.attention[1].q_proj) in hooked
    gptj = adapter_for(conformance.tiny_model_of("gptj"))
    assert gptj.uses_rope(0) and gptj.rotary_dim(0) == gptj.config.rotary_dim
    assert gptj.inverse_rope_unavailable  # rotate_every_two: interleaved
