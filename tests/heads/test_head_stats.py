"""spectra.head_stats against quantities computed independently from the model's own
output_attentions and a Probe capture; taxonomy rules; bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import spectra
from spectra.heads.stats import repeated_random_tokens
from spectra.heads.taxonomy import CLASSES, Thresholds, classify
from spectra.models.random_init import VOCAB_SIZE, tiny_model
from spectra.ops import reference

N_RANDOM, BLOCK = 4, 8


def attentions(model, ids) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    return [a.double() for a in out.attentions]  # per layer (B, H, T, T)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gpt2", "gemma2"])
def test_scores_match_output_attentions(family):
    model = tiny_model(family, "eager")
    text = torch.randint(3, VOCAB_SIZE, (3, 16), generator=torch.Generator().manual_seed(0))
    table = spectra.head_stats(model, text, n_random=N_RANDOM, random_block=BLOCK).set_index(["layer", "head"])
    random_ids = repeated_random_tokens(N_RANDOM, BLOCK, model.config.vocab_size, seed=0)
    t = torch.arange(2 * BLOCK)
    for layer, p in enumerate(attentions(model, random_ids)):
        prev = p[:, :, t[1:], t[1:] - 1].mean((0, 2))
        second = t[BLOCK:]
        dup = p[:, :, second, second - BLOCK].mean((0, 2))
        ind = p[:, :, second, second - BLOCK + 1].mean((0, 2))
        # positional: agreement of argmax offsets across sequences x mean max weight, first copy
        first = t[2:BLOCK]
        offsets = first - p[:, :, first].argmax(-1)  # (N, H, T1)
        agreement = (
            torch.stack(
                [
                    torch.stack([torch.bincount(offsets[:, h, i]).max() for i in range(len(first))])
                    for h in range(p.shape[1])
                ]
            ).double()
            / N_RANDOM
        )
        positional = (agreement * p[:, :, first].amax(-1).mean(0)).mean(-1)
        for h in range(p.shape[1]):
            row = table.loc[(layer, h)]
            assert row["previous_token_score"] == pytest.approx(float(prev[h]), abs=2e-6)
            assert row["duplicate_token_score"] == pytest.approx(float(dup[h]), abs=2e-6)
            assert row["induction_score"] == pytest.approx(float(ind[h]), abs=2e-6)
            assert row["positional_score"] == pytest.approx(float(positional[h]), abs=2e-6)
    for layer, p in enumerate(attentions(model, text)):
        late = p[:, :, 2:]  # ignore_first = 2
        plogp = torch.where(late > 0, late * late.log(), torch.zeros_like(late))
        entropy = (-plogp.sum(-1)).mean((0, 2))
        sink = late[..., 0].mean((0, 2))
        for h in range(p.shape[1]):
            row = table.loc[(layer, h)]
            assert row["entropy_mean"] == pytest.approx(float(entropy[h]), abs=2e-5)
            assert row["sink_mass_mean"] == pytest.approx(float(sink[h]), abs=2e-6)


def test_key_ranks_match_the_twin_on_captured_keys():
    model = tiny_model("qwen3", "sdpa")
    text = torch.randint(3, VOCAB_SIZE, (2, 24), generator=torch.Generator().manual_seed(1))
    table = spectra.head_stats(model, text, n_random=2, random_block=4).set_index(["layer", "head"])
    probe = spectra.Probe(model, capture="k", stage="pre_rope")
    with torch.no_grad(), probe:
        model(text)
    a = spectra.models.adapter_for(model)
    for layer in range(a.n_layers):
        keys = torch.stack([probe.captured(layer, g, "k").vectors for g in range(a.n_kv_heads)], dim=1)  # (N, Hkv, D)
        pr, er = reference.effective_rank(keys)
        for h in range(a.n_heads):
            g = h // (a.n_heads // a.n_kv_heads)
            assert table.loc[(layer, h), "k_spectral_pr"] == pytest.approx(float(pr[g]), rel=1e-6)
            assert table.loc[(layer, h), "k_entropy_rank"] == pytest.approx(float(er[g]), rel=1e-6)
    assert (table["qk_norm_ratio"] == table["q_norm_mean"] / table["k_norm_mean"]).all()


def test_repeated_random_tokens():
    ids = repeated_random_tokens(3, 6, 50, seed=2)
    assert ids.shape == (3, 12) and torch.equal(ids[:, :6], ids[:, 6:])
    assert all(len(set(row[:6].tolist())) == 6 for row in ids) and int(ids.min()) >= 1
    with pytest.raises(ValueError, match="random_block"):
        repeated_random_tokens(1, 60, 50)


def test_head_stats_bad_input():
    model = tiny_model("llama", "sdpa")
    ids = torch.randint(3, VOCAB_SIZE, (1, 8))
    with pytest.raises(ValueError, match="n_random"):
        spectra.head_stats(model, ids, n_random=0)
    with pytest.raises(ValueError, match="random_block"):
        spectra.head_stats(model, ids, random_block=1)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        spectra.head_stats(model, ids, random_block=10_000)
    with pytest.raises(ValueError, match="input_ids"):
        spectra.head_stats(model, ids[:, :0])
    with pytest.raises(TypeError, match="input_ids"):
        spectra.head_stats(model, ids.float())


def test_classify_rules_and_margins():
    stats = pd.DataFrame(
        {
            "layer": 0,
            "head": range(5),
            "sink_mass_mean": [0.9, 0.1, 0.1, 0.0, 0.1],
            "induction_score": [0.0, 0.7, 0.0, 0.0, 0.0],
            "previous_token_score": [0.0, 0.2, 0.95, 0.0, 0.1],
            "positional_score": [0.95, 0.1, 0.9, 0.1, 0.3],
            "entropy_normalized_mean": [0.05, 0.4, 0.1, 1.0, 0.65],
        }
    )
    out = classify(stats)
    assert out["class"].tolist() == ["static_sink", "induction", "previous_token", "gatherer", "unclassified"]
    assert out.loc[0, "margin"] == pytest.approx(0.4) and out.loc[0, "runner_up"] == "positional"
    assert out.loc[4, "margin"] < 0 and np.isnan(out.loc[4, "score"])
    stricter = classify(stats, Thresholds(static_sink=0.95))
    assert stricter.loc[0, "class"] == "positional"
    assert set(out.columns) >= {f"score_{c}" for c in CLASSES}
    with pytest.raises(KeyError, match="induction_score"):
        classify(stats.drop(columns="induction_score"))
    with pytest.raises(ValueError, match="static_sink"):
        Thresholds(static_sink=1.5)
    with pytest.raises(ValueError, match="stats"):
        classify(pd.DataFrame())


def test_g10_rmsnorm_outputs_have_norm_sqrt_d():
    # An RMSNorm(gamma = 1) output of any nonzero D=64 vector has norm 8 (the seeds' initial k norm).
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(100, 64, generator=gen) * (1 + 9 * torch.rand(100, 1, generator=gen))  # norms far above eps
    x = torch.nn.RMSNorm(64, eps=1e-12)(raw)
    norms = spectra.vec_stats(x.detach()).norm
    torch.testing.assert_close(norms, torch.full_like(norms, 8.0), rtol=1e-6, atol=0)
    # So a QK-norm model at initialisation has k_norm_mean = sqrt(head_dim) for every head.
    from spectra.models import zoo

    model, _ = zoo.load(zoo.checkpoint_paths("tiny-qwen3")[0])
    table = spectra.head_stats(model, torch.randint(3, 4000, (2, 32)), n_random=2, random_block=4)
    assert table["k_norm_mean"].to_numpy() == pytest.approx(32**0.5, rel=1e-4)
    assert table["k_norm_std"].max() < 1e-3
    assert table["k_one_hotness_mean"].between(32**-0.5, 1.0).all()
