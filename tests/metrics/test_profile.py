"""spectra.profile against the model's own eager attention weights, on every family, with padding."""

import numpy as np
import pandas as pd
import pytest
import torch

import spectra
from spectra.metrics.profile import METRICS
from spectra.models import zoo
from spectra.models.random_init import TINY_CONFIGS, tiny_model

ALL = METRICS


def metrics_from_weights(weights: torch.Tensor, threshold=0.9, n_sink=4):
    """entropy, max, k_eff, sink masses of (B, H, T, T) attention weights, in float64."""
    p = weights.double()
    entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1)
    ordered = p.sort(-1, descending=True).values.cumsum(-1)
    k_eff = (ordered < threshold - 1e-6).sum(-1) + 1
    return {
        "entropy": entropy,
        "max_attn": p.amax(-1),
        "k_eff": k_eff.double(),
        "sink_mass": p[..., 0],
        "sink_mass_n": p[..., :n_sink].sum(-1),
    }


def batch(vocab, padding):
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(3, vocab, (2, 14), generator=gen)
    mask = torch.ones(2, 14, dtype=torch.long)
    if padding == "right":
        mask[1, 10:] = 0
    elif padding == "left":
        mask[1, :4] = 0
    return ids, mask


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_matches_eager_attention_weights(family, padding):
    model = tiny_model(family, "eager")
    ids, mask = batch(model.config.vocab_size, padding)
    kwargs = {"attention_mask": mask}
    if padding == "left":  # the positions profile derives from the mask: index among the real tokens
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        weights = model(ids, output_attentions=True, **kwargs).attentions
    table = spectra.profile(model, ids, mask, metrics=ALL, ignore_first=0)
    n_layers, n_heads = len(weights), weights[0].shape[1]
    real = mask.bool()
    lead = (mask.cumsum(-1) == 0).sum(-1)  # leading pads: the sink is the first real key
    assert len(table) == n_layers * n_heads * int(real.sum())
    for layer in range(n_layers):
        aligned = torch.stack([weights[layer][b].roll(-int(lead[b]), dims=-1) for b in range(2)])
        expected = metrics_from_weights(aligned)
        got = table[table.layer == layer]
        for name, values in expected.items():
            # (B, H, T) -> rows of real tokens in (sample, head, token) order
            want = torch.cat([values[b][:, real[b]].reshape(-1) for b in range(2)])
            have = torch.tensor(got[name].to_numpy(), dtype=torch.float64)
            if name == "k_eff":  # allow the float32 tie band: at most one key apart at exact ties
                assert (have - want).abs().max() <= 1, (family, layer, name)
                assert (have == want).float().mean() > 0.97, (family, layer, name)
            else:
                torch.testing.assert_close(have, want, atol=3e-6, rtol=1e-5, msg=f"{family} L{layer} {name}")


def test_columns_order_dtypes_and_ignore_first():
    model, tok = zoo.load("tiny-llama")
    ids = tok(zoo.heldout_text()[:2000], return_tensors="pt").input_ids[:, :40].repeat(2, 1)
    table = spectra.profile(model, ids, heads=[1, 6], sample_ids=[10, 11])
    assert list(table.columns) == [
        "sample",
        "layer",
        "head",
        "token",
        "entropy",
        "max_attn",
        "k_eff",
        "sink_mass",
        "q_norm",
        "k_norm",
    ]
    assert [str(table[c].dtype) for c in ("sample", "layer", "head", "token")] == ["int64", "int16", "int16", "int32"]
    assert all(table[c].dtype == np.float32 for c in table.columns[4:])
    assert table.set_index(["sample", "layer", "head", "token"]).index.is_monotonic_increasing
    assert sorted(table["sample"].unique()) == [10, 11] and sorted(table["head"].unique()) == [1, 6]
    early = table.token < 2
    assert table.loc[early, ["entropy", "max_attn", "k_eff", "sink_mass"]].isna().all().all()
    assert not table.loc[~early, ["entropy", "k_eff"]].isna().any().any()
    assert not table[["q_norm", "k_norm"]].isna().any().any()  # norms are defined at every token
    # Norms equal the captured post-RoPE vectors' norms; k_norm is the KV head's.
    probe = spectra.Probe(model, layers=[3], heads=[6])
    with probe, torch.no_grad():
        model(ids[:1])
    rows = table[(table["sample"] == 10) & (table.layer == 3) & (table["head"] == 6)]
    torch.testing.assert_close(torch.tensor(rows.q_norm.to_numpy()), probe.captured(3, 6, "q").vectors.norm(dim=-1))
    torch.testing.assert_close(
        torch.tensor(rows.k_norm.to_numpy()), probe.captured(3, probe.kv_head(6), "k").vectors.norm(dim=-1)
    )


def test_threshold_changes_k_eff_only():
    model, tok = zoo.load("tiny-llama")
    ids = tok(zoo.heldout_text()[:2000], return_tensors="pt").input_ids[:, :64]
    a = spectra.profile(model, ids, layers=[1], threshold=0.5)
    b = spectra.profile(model, ids, layers=[1], threshold=0.99)
    ka, kb = a.k_eff.fillna(0), b.k_eff.fillna(0)
    assert (ka <= kb).all() and (ka < kb).any()
    pd.testing.assert_series_equal(a.entropy, b.entropy)


def test_nonfinite_activations_are_reported_per_head():
    model = tiny_model("llama", "sdpa")
    with torch.no_grad():
        model.model.layers[1].self_attn.k_proj.weight[0:24] = float("nan")  # KV head 0 of layer 1 (head_dim 24)
    ids = torch.randint(3, 90, (1, 10))
    with pytest.raises(spectra.NonFiniteActivationError, match=r"L1H0 .*L1H1"):
        spectra.profile(model, ids, layers=[1])
    table = spectra.profile(model, ids, layers=[1], on_nonfinite="nan", ignore_first=0)
    assert table[table["head"] < 2].entropy.isna().all()
    assert table[table["head"] >= 2].entropy.notna().all()
    assert [(r["layer"], r["head"]) for r in table.attrs["nonfinite_heads"]] == [(1, 0), (1, 1)]


def test_bad_input_names_the_argument():
    model = tiny_model("llama", "sdpa")
    ids = torch.randint(3, 90, (1, 10))
    with pytest.raises(ValueError, match=r"threshold: 0 is outside \(0, 1\]"):
        spectra.profile(model, ids, threshold=0)
    with pytest.raises(ValueError, match=r"threshold: 1.5 is outside"):
        spectra.profile(model, ids, threshold=1.5)
    with pytest.raises(ValueError, match=r"metrics: unknown \['perplexity'\]; allowed metrics are entropy"):
        spectra.profile(model, ids, metrics=["entropy", "perplexity"])
    with pytest.raises(ValueError, match=r"input_ids: empty input"):
        spectra.profile(model, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"input_ids: sequence length 5000 exceeds the model's max_position_embeddings"
    ):
        spectra.profile(model, torch.ones(1, 5000, dtype=torch.long))
    with pytest.raises(TypeError, match="input_ids: expected an integer tensor"):
        spectra.profile(model, torch.ones(1, 4))
    with pytest.raises(ValueError, match="attention_mask: shape"):
        spectra.profile(model, ids, torch.ones(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="layers: 5 is not a layer"):
        spectra.profile(model, ids, layers=[5])
    with pytest.raises(ValueError, match="ignore_first"):
        spectra.profile(model, ids, ignore_first=-1)
    assert model.config._attn_implementation == "sdpa"
