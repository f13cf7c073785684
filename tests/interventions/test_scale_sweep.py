"""scale_sweep: the local mode is the target head's attention under a real intervention (checked
against the propagated mode's real forward passes), closed-form slopes against finite
differences, the GQA side effects in propagated mode, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectra.interventions import scale_sweep
from spectra.models.random_init import VOCAB_SIZE, tiny_model

ALPHAS = (0.5, 1.0, 1.5)


def batch(n=2, t=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB_SIZE, (n, t), generator=gen)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[-1, -4:] = 0
    return ids, mask


@pytest.mark.parametrize(
    "family,impl",
    [
        ("llama", "sdpa"),
        ("qwen3", "sdpa"),
        ("gemma2", "eager"),
        ("gpt2", "eager"),
        ("mistral", "sdpa"),
        ("bert", "sdpa"),
    ],
)
def test_local_mode_is_the_real_intervention_for_the_target_head(family, impl):
    model = tiny_model(family, impl)
    ids, mask = batch()
    heads = [(0, 1), (1, 3)]
    local = scale_sweep(model, ids, heads, ALPHAS, attention_mask=mask, kinds=("q", "k"))
    real = scale_sweep(model, ids, heads, ALPHAS, attention_mask=mask, kinds=("q", "k"), mode="propagated")
    keys = ["kind", "layer", "head", "alpha", "sample"]
    merged = local.merge(real, on=keys, suffixes=("_local", "_real"))
    assert len(merged) == len(local) == len(real) == 2 * len(heads) * len(ALPHAS) * 2
    for metric in ("entropy", "max_attn"):
        np.testing.assert_allclose(merged[f"{metric}_local"], merged[f"{metric}_real"], rtol=0, atol=2e-5)
    # k_eff is an integer count per token: rounding of alpha*x may move a tie by one key on a token.
    assert (merged["k_eff_local"] - merged["k_eff_real"]).abs().max() <= 1.0 / merged["n_tokens_local"].min()
    assert (merged["n_tokens_local"] == merged["n_tokens_real"]).all()
    # q and k scaling coincide for the target head in local mode by construction.
    q, k = (local[local["kind"] == kind].reset_index(drop=True) for kind in ("q", "k"))
    assert q["entropy"].equals(k["entropy"])


def test_entropy_never_increases_with_alpha_for_any_head():
    model = tiny_model("llama", "sdpa")
    ids, mask = batch()
    table = scale_sweep(model, ids, "all", (0.25, 0.5, 1.0, 2.0, 4.0), attention_mask=mask)
    for _, curve in table.groupby(["layer", "head", "sample"]):
        assert (np.diff(curve.sort_values("alpha")["entropy"].to_numpy()) <= 1e-6).all()
        assert (np.diff(curve.sort_values("alpha")["max_attn"].to_numpy()) >= -1e-6).all()


def test_closed_form_slopes_match_finite_differences():
    model = tiny_model("llama", "sdpa").double()
    ids, mask = batch()
    h = 1e-4
    for alpha in (0.5, 1.0, 1.5):
        table = scale_sweep(
            model, ids, [(1, 2)], (alpha * math.exp(-h), alpha, alpha * math.exp(h)), attention_mask=mask
        )
        for _, curve in table.groupby("sample"):
            lo, mid, hi = (curve.sort_values("alpha").iloc[i] for i in range(3))
            assert mid["entropy_slope"] == pytest.approx((hi["entropy"] - lo["entropy"]) / (2 * h), abs=1e-6)
            assert mid["max_attn_slope"] == pytest.approx((hi["max_attn"] - lo["max_attn"]) / (2 * h), abs=1e-6)


def test_soft_capped_models_have_no_closed_form():
    model = tiny_model("gemma2", "eager")
    table = scale_sweep(model, batch()[0], [(0, 0)], ALPHAS)
    assert table["entropy_slope"].isna().all() and table["entropy"].notna().all()


def test_propagated_side_effects():
    model = tiny_model("llama", "sdpa")  # 4 query heads, 2 KV heads: groups {0, 1}, {2, 3}
    ids, mask = batch()
    table = scale_sweep(
        model, ids, [(0, 1)], (0.5, 1.0, 2.0), attention_mask=mask, kinds=("q", "k", "logits"), mode="propagated"
    )
    q = table[table["kind"] == "q"]
    k = table[(table["kind"] == "k") & (table["alpha"] != 1.0)]
    assert (q["group_entropy_shift"] == 0).all()  # Q scaling leaves head 0 bitwise alone
    assert (k["group_entropy_shift"].abs() > 0).all()  # K scaling also scales head 0's logits
    assert (table.loc[table["alpha"] != 1.0, "kl_logits"] > 0).all()
    assert (table.loc[table["alpha"] == 1.0, ["kl_logits", "delta_loss", "downstream_entropy_shift"]] == 0).all().all()
    assert table["downstream_entropy_shift"].notna().all()
    last = scale_sweep(model, ids, [(1, 0)], (0.5,), mode="propagated")
    assert last["downstream_entropy_shift"].isna().all()  # no later layer


def test_ignore_first_and_padding_set_the_token_count():
    model = tiny_model("llama", "sdpa")
    ids, mask = batch(t=12)
    table = scale_sweep(model, ids, [(0, 0)], (1.0,), attention_mask=mask, ignore_first=3)
    assert table.sort_values("sample")["n_tokens"].tolist() == [12 - 3, 8 - 3]


def test_bad_input():
    model = tiny_model("llama", "sdpa")
    ids = batch()[0]
    for alphas in ([], [0.0], [-1.0], [math.nan], [math.inf]):
        with pytest.raises(ValueError, match="alphas"):
            scale_sweep(model, ids, [(0, 0)], alphas)
    with pytest.raises(ValueError, match="heads: head 9"):
        scale_sweep(model, ids, [(0, 9)])
    with pytest.raises(ValueError, match="heads: layer 5"):
        scale_sweep(model, ids, [(5, 0)])
    with pytest.raises(ValueError, match="mode"):
        scale_sweep(model, ids, [(0, 0)], mode="global")
    with pytest.raises(ValueError, match="kinds"):
        scale_sweep(model, ids, [(0, 0)], kinds=("v",))
    with pytest.raises(ValueError, match="ignore_first"):
        scale_sweep(model, ids, [(0, 0)], ignore_first=-1)
    with pytest.raises(ValueError, match="attention_mask"):
        scale_sweep(model, ids, [(0, 0)], attention_mask=torch.ones(1, 3))
    with pytest.raises(ValueError, match="input_ids"):
        scale_sweep(model, ids[:, :0], [(0, 0)])
