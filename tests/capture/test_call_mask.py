"""The metrics read which keys each query sees from the mask the model passes to its attention call,
never from a config value or an adapter's guess: windows only in the config, windows the adapter does
not know of, custom masks (chunked, document, per head) taken key by key, and masks Spectra cannot
reproduce (additive biases, other ranks) refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spectra
from spectra.capture.call_mask import CustomMaskError, MaskShape, mask_shape
from spectra.models import adapter_for
from spectra.models.random_init import tiny_model

POS = torch.arange(10)
CAUSAL = POS[:, None] >= POS[None]
VALID = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 10]).bool()  # left-padded, unpadded


def batch(pattern: torch.Tensor) -> torch.Tensor:
    return (pattern[None] & VALID[:, None, :])[:, None]


@pytest.mark.parametrize("window", [None, 1, 3, 7])
def test_causal_masks_with_and_without_a_window(window):
    pattern = CAUSAL if window is None else CAUSAL & (POS[:, None] - POS[None] < window)
    assert mask_shape(batch(pattern), VALID, causal=True, layer=0) == MaskShape(True, window)
    additive = torch.zeros(2, 1, 10, 10).masked_fill(~batch(pattern), torch.finfo(torch.float32).min)
    assert mask_shape(additive, VALID, causal=True, layer=0) == MaskShape(True, window)
    assert (
        mask_shape(additive.masked_fill(~batch(pattern), -torch.inf), VALID, causal=True, layer=0).sliding_window
        == window
    )


def test_no_mask_bidirectional_masks_and_a_window_longer_than_the_text():
    assert mask_shape(None, None, causal=True, layer=0) == MaskShape(True, None)
    assert mask_shape(None, None, causal=False, layer=0) == MaskShape(False, None)
    both_ways = VALID[:, None, None, :].expand(2, 1, 10, 10)
    assert mask_shape(both_ways, VALID, causal=False, layer=0) == MaskShape(False, None)
    long = CAUSAL & (POS[:, None] - POS[None] < 64)  # never bites: the same as no window
    assert mask_shape(batch(long), VALID, causal=True, layer=0) == MaskShape(True, None)


CHUNKED = batch(CAUSAL & (POS[:, None] // 4 == POS[None] // 4))
DOCUMENT = batch(CAUSAL & ((POS[:, None] < 5) == (POS[None] < 5)))
PER_HEAD = torch.stack([batch(CAUSAL)[:, 0], batch(CAUSAL & (POS[:, None] - POS[None] < 2))[:, 0]], 1)
BIDIRECTIONAL_DOCUMENT = (((POS[:, None] < 5) == (POS[None] < 5))[None] & VALID[:, None, :])[:, None]


@pytest.mark.parametrize(
    "name, mask, causal",
    [("chunked", CHUNKED, True), ("document", DOCUMENT, True), ("per head", PER_HEAD, True)]
    + [("bidirectional document", BIDIRECTIONAL_DOCUMENT, False)],
)
def test_custom_masks_are_taken_key_by_key(name, mask, causal):
    shape = mask_shape(mask, VALID, causal=causal, layer=5)
    assert shape.causal is causal and shape.sliding_window is None
    assert shape.visible is not None and torch.equal(shape.visible, mask)
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    again = mask_shape(additive, VALID, causal=causal, layer=5)
    assert torch.equal(again.visible, mask)
    assert torch.equal(mask_shape(additive, VALID, causal=causal, layer=5).visible, mask)  # from the cache


@pytest.mark.parametrize(
    "name, mask, match",
    [
        ("bias", torch.zeros(2, 1, 10, 10).masked_fill(~batch(CAUSAL), -torch.inf) - 0.5 * POS, "bias"),
        ("3-D", CAUSAL[None].float(), "4-D"),
    ],
)
def test_other_masks_are_refused_naming_the_layer(name, mask, match):
    with pytest.raises(CustomMaskError, match=f"^layer 5: .*{match}"):
        mask_shape(mask, VALID, causal=True, layer=5)


def test_the_mask_wins_over_the_adapters_window(monkeypatch):
    """A Mistral whose window (4) the adapter does not report: the metrics still match eager attention."""
    model = tiny_model("mistral", "eager", sliding_window=4)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(type(adapter_for(model)), "sliding_window", lambda self, layer: None)
    table = spectra.profile(model, ids, layers=[0], heads=[0], metrics=["entropy", "n_visible"], ignore_first=0)
    with torch.no_grad():
        weights = model(ids, output_attentions=True).attentions[0][:, 0].double()  # (B, T, T)
    logs = torch.where(weights > 0, weights.log(), torch.zeros((), dtype=torch.float64))
    entropy = -(weights * logs).sum(-1)
    got = table.sort_values(["sample", "token"])
    np.testing.assert_allclose(got["entropy"], entropy.reshape(-1).numpy(), atol=1e-5)
    assert got["n_visible"].max() == 4


def test_a_custom_mask_in_the_users_forward_is_measured_as_the_model_applies_it():
    model = tiny_model("llama", "eager")
    ids = torch.randint(0, model.config.vocab_size, (1, 10), generator=torch.Generator().manual_seed(0))
    chunked = torch.zeros(1, 1, 10, 10).masked_fill(~(CAUSAL & (POS[:, None] // 4 == POS[None] // 4)), -torch.inf)
    probe = spectra.Probe(model, layers=[0], capture=(), row_stats=True)
    with probe, torch.no_grad():
        weights = model(ids, attention_mask=chunked, output_attentions=True).attentions[0].double()[0]  # (H, T, T)
    rows = probe.drain_row_stats()
    logs = torch.where(weights > 0, weights.log(), torch.zeros((), dtype=torch.float64))
    entropy = -(weights * logs).sum(-1)  # (H, T)
    order = np.lexsort((rows["position"], rows["head"]))
    np.testing.assert_allclose(rows["entropy"][order], entropy.reshape(-1).numpy(), atol=1e-5)
    np.testing.assert_array_equal(rows["n_visible"][order], (weights > 0).sum(-1).reshape(-1).numpy())


@pytest.mark.parametrize("model_type", ["ministral3", "mixtral", "phi3"])
def test_windows_only_in_the_config_are_measured_as_the_model_applies_them(model_type, monkeypatch):
    """Types whose window the attention module does not carry (it sits in the config, or on every layer):
    run through the Llama adapter, which knows of no window, the metrics of a left-padded batch still
    match eager attention, because they follow the mask the call receives (ignoring it: ~1.2 nats off)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from spectra import models
    from spectra.models.llama import LlamaAdapter

    dims = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2)
    config = AutoConfig.for_model(
        model_type, **dims, num_hidden_layers=2, vocab_size=97, sliding_window=4, initializer_range=0.2, pad_token_id=0
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    monkeypatch.setitem(models._BY_MODEL_TYPE, model_type, LlamaAdapter)
    ids = torch.randint(3, 97, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :3] = 0
    table = spectra.profile(model, ids, mask, metrics=["entropy"], ignore_first=0)
    with torch.no_grad():
        attentions = model(ids, attention_mask=mask, output_attentions=True).attentions
    for layer, weights in enumerate(attentions):
        w = weights.double()
        entropy = -(w * torch.where(w > 0, w.log(), torch.zeros((), dtype=torch.float64))).sum(-1)  # (B, H, T)
        for sample in range(2):
            got = table[(table["sample"] == sample) & (table["layer"] == layer)].sort_values(["head", "token"])
            want = entropy[sample][:, mask[sample].bool()].reshape(-1).numpy()
            np.testing.assert_allclose(got["entropy"], want, atol=1e-5)


def test_the_mask_is_read_in_blocks_of_query_rows(monkeypatch):
    """A small block size gives the same answers (as at long context)."""
    import spectra.capture.call_mask as call_mask

    monkeypatch.setattr(call_mask, "BLOCK_ELEMENTS", 2 * 10 * 3)  # 3 query rows a block for batch 2
    window = CAUSAL & (POS[:, None] - POS[None] < 3)
    assert mask_shape(batch(window), VALID, causal=True, layer=0) == MaskShape(True, 3)
    assert mask_shape(batch(CAUSAL), VALID, causal=True, layer=0) == MaskShape(True, None)
    chunked = mask_shape(CHUNKED, VALID, causal=True, layer=0)
    assert chunked.causal and torch.equal(chunked.visible, CHUNKED)


def test_llama4_chunked_attention_is_measured_as_the_model_applies_it():
    """Llama 4's chunked layers (chunks of 5 here, shorter than the text) and its NoPE full-attention
    layer: profile on a left-padded batch against float64 eager weights, logits bitwise under a
    Probe, single-head isolation, and the report viewer's weights, all through the custom mask."""
    from spectra.models import conformance
    from spectra.report.viewer import attention_data, attention_weights

    model = conformance.tiny_model_of("llama4_text")
    assert model.config.layer_types == ["chunked_attention", "full_attention"]
    assert model.config.attention_chunk_size == 5
    row = conformance.check("llama4_text", model)  # metrics ≤ 1e-4 nats, Probe bitwise, check_isolation
    assert row.status == "supported" and row.max_entropy_error < 1e-5, row
    ids = conformance._inputs(model)["input_ids"][1:]
    view = attention_data(model, None, ids)
    assert view["layers"][0]["visible"] is not None and view["layers"][1]["visible"] is None
    with torch.no_grad():
        attentions = model(ids, output_attentions=True).attentions
    for layer in range(2):
        for query in range(ids.shape[1]):
            want = attentions[layer][0, 2, query].double().numpy()
            np.testing.assert_allclose(attention_weights(view, layer, 2, 0, query), want, atol=2e-6)
    assert attention_weights(view, 0, 2, 0, 7)[:5].sum() == 0  # query 7's chunk starts at 5
