"""HeadGeometry on a random tiny Llama: values, hook ownership, and no effect on the model."""

import gc
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import spectra


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
    )
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def test_table_matches_direct_computation(tiny_llama):
    ids = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(1))
    table = spectra.head_geometry(tiny_llama, [ids[:2], ids[2:]])
    assert len(table) == 2 * 4
    with torch.no_grad():
        hidden = tiny_llama.model.embed_tokens(ids)
        attention = tiny_llama.model.layers[0].self_attn
        q = attention.q_proj(tiny_llama.model.layers[0].input_layernorm(hidden)).unflatten(-1, (4, 8))
        k = attention.k_proj(tiny_llama.model.layers[0].input_layernorm(hidden)).unflatten(-1, (2, 8))
    layer0 = table[table.layer == 0].set_index("head")
    torch.testing.assert_close(torch.tensor(layer0.q_norm_mean.values), q.double().norm(dim=-1).mean((0, 1)))
    torch.testing.assert_close(
        torch.tensor(layer0.q_norm_std.values), q.double().norm(dim=-1).std((0, 1), correction=0)
    )
    k_norm = k.double().norm(dim=-1).mean((0, 1))
    torch.testing.assert_close(torch.tensor(layer0.k_norm_mean.values), k_norm[[0, 0, 1, 1]])
    assert layer0.kv_head.tolist() == [0, 0, 1, 1]
    assert (table.tokens == 30).all()
    pr = (q.double() ** 2).sum(-1) ** 2 / (q.double() ** 4).sum(-1)
    torch.testing.assert_close(torch.tensor(layer0.q_participation_ratio_mean.values), pr.mean((0, 1)))


def test_logits_bitwise_unchanged_and_hooks_removed(tiny_llama):
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(2))
    foreign = tiny_llama.model.layers[1].self_attn.q_proj.register_forward_hook(lambda *a: None)
    before = {id(m): dict(m._forward_hooks) for m in tiny_llama.modules()}
    with torch.no_grad():
        baseline = tiny_llama(ids).logits
        geometry = spectra.HeadGeometry(tiny_llama)
        with geometry:
            probed = tiny_llama(ids).logits
    assert torch.equal(baseline, probed)
    after = {id(m): dict(m._forward_hooks) for m in tiny_llama.modules()}
    assert after == before  # ours are gone, the foreign hook is still there
    foreign.remove()


def test_hooks_removed_when_forward_raises_and_no_reference_leak(tiny_llama):
    geometry = spectra.HeadGeometry(tiny_llama)
    with pytest.raises(IndexError):
        with geometry, torch.no_grad():
            tiny_llama(torch.tensor([[10_000]]))  # token id out of the vocabulary
    assert all(not m._forward_hooks for m in tiny_llama.modules())
    ref = weakref.ref(geometry)
    del geometry
    gc.collect()
    assert ref() is None


def test_reentry_and_unsupported_models_are_refused(tiny_llama):
    geometry = spectra.HeadGeometry(tiny_llama)
    with geometry:
        with pytest.raises(RuntimeError, match="already active"):
            geometry.__enter__()
    with pytest.raises(TypeError, match=r"model: expected a transformers PreTrainedModel"):
        spectra.HeadGeometry(torch.nn.Linear(2, 2))


def test_qk_norm_models_are_measured_after_the_norm():
    # Qwen3: the statistics belong to the q_norm/k_norm outputs (the seeds' "k_norm output"), not
    # to the raw projections the norm rescales.
    from spectra.models.random_init import tiny_model

    model = tiny_model("qwen3")
    x = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(3))
    seen = {}
    attention = model.model.layers[1].self_attn
    handle = attention.k_norm.register_forward_hook(lambda m, a, out: seen.setdefault("k", out.detach()))
    table = spectra.head_geometry(model, [x])
    handle.remove()
    expected = seen["k"].double().norm(dim=-1).mean((0, 1))  # (B, T, Hkv, D) -> per KV head
    layer1 = table[table.layer == 1].set_index("head")
    torch.testing.assert_close(
        torch.tensor(layer1.k_norm_mean.tolist(), dtype=torch.float64), expected[torch.tensor(layer1.kv_head.tolist())]
    )
