"""Left, right and no padding give the same per-token metrics for the same text.

The text alone, left-padded and right-padded in one batch (beside a longer text), on embedded zoo
models with eager and sdpa attention: positions come from the mask (index among the real tokens,
also for RoPE), ``token`` and ``ignore_first`` count real tokens, the sink is the first real key and
``argmax`` an offset from the first real token.
"""

import numpy as np
import pytest
import torch

import spectra
from spectra.capture.forward import padded_position_ids
from spectra.metrics.profile import METRICS
from spectra.models import zoo
from spectra.models.loading import load_model

TEXT = "In the beginning God created the heaven and the earth."
LONGER = "And the earth was without form, and void; and darkness was upon the face of the deep."
KEYS = ["layer", "head", "token"]


def padded_batch(tok):
    """(ids, mask) rows: the longer text, TEXT left-padded, TEXT right-padded; and TEXT alone."""
    text = tok(TEXT, add_special_tokens=False).input_ids
    longer = tok(LONGER, add_special_tokens=False).input_ids
    assert len(longer) > len(text) + 3
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    n, t = len(text), len(longer)
    ids = torch.full((3, t), pad, dtype=torch.long)
    mask = torch.zeros(3, t, dtype=torch.long)
    ids[0], mask[0] = torch.tensor(longer), 1
    ids[1, t - n :], mask[1, t - n :] = torch.tensor(text), 1
    ids[2, :n], mask[2, :n] = torch.tensor(text), 1
    return ids, mask, torch.tensor([text])


@pytest.fixture(scope="module", params=[(m, a) for m in ("tiny-llama", "tiny-qwen3") for a in ("eager", "sdpa")])
def loaded(request):
    name, attn = request.param
    model, tok = load_model(name, attn_implementation=attn)
    return model, tok


def sample(table, i):
    return table[table["sample"] == i].drop(columns="sample").sort_values(KEYS).reset_index(drop=True)


def assert_same(got, want, what):
    assert got[KEYS].equals(want[KEYS]), what
    for name in METRICS:
        a, b = got[name].to_numpy(np.float64), want[name].to_numpy(np.float64)
        assert np.array_equal(np.isnan(a), np.isnan(b)), (what, name)
        ok = ~np.isnan(a)
        if name in ("k_eff", "argmax"):  # integers: at most a float32 near-tie apart
            assert (a[ok] == b[ok]).mean() > 0.98, (what, name)
        else:
            np.testing.assert_allclose(a[ok], b[ok], atol=2e-5, rtol=1e-4, err_msg=f"{what} {name}")


@pytest.mark.parametrize("ignore_first", [0, 2])
def test_left_right_and_unpadded_profiles_agree(loaded, ignore_first):
    model, tok = loaded
    ids, mask, alone = padded_batch(tok)
    table = spectra.profile(model, ids, mask, metrics=METRICS, ignore_first=ignore_first)
    single = sample(spectra.profile(model, alone, metrics=METRICS, ignore_first=ignore_first), 0)
    left, right = sample(table, 1), sample(table, 2)
    assert sorted(left["token"].unique()) == list(range(alone.shape[1]))  # real-token positions
    assert_same(left, single, "left-padded vs alone")
    assert_same(right, single, "right-padded vs alone")
    # The first real key is the sink: the first real token attends only to itself.
    if ignore_first == 0:
        first = left[left["token"] == 0]
        np.testing.assert_allclose(first["sink_mass"], 1.0, atol=1e-6)
        assert (first["argmax"] == 0).all()
    else:
        assert left.loc[left["token"] < ignore_first, "entropy"].isna().all()
        assert left.loc[left["token"] >= ignore_first, "entropy"].notna().all()


def test_explicit_position_ids_are_used_as_given(loaded):
    model, tok = loaded
    ids, mask, alone = padded_batch(tok)
    derived = padded_position_ids(mask)
    a = spectra.profile(model, ids, mask, ignore_first=0)
    b = spectra.profile(model, ids, mask, position_ids=derived, ignore_first=0)
    np.testing.assert_allclose(a["entropy"], b["entropy"], atol=1e-6)
    shifted = spectra.profile(model, alone, position_ids=torch.arange(alone.shape[1])[None] + 5, ignore_first=0)
    assert shifted["token"].min() == 5
    with pytest.raises(ValueError, match="position_ids"):
        spectra.profile(model, alone, position_ids=torch.arange(3)[None])


def test_padded_position_ids():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert padded_position_ids(mask).tolist() == [[1, 1, 0, 1, 2], [0, 1, 2, 1, 1], [0, 1, 2, 3, 4]]
    assert padded_position_ids(mask, 2).tolist() == [[1, 2], [1, 1], [3, 4]]


def test_models_are_embedded_zoo_ones():
    assert {"tiny-llama", "tiny-qwen3"} <= set(zoo.MODEL_NAMES)


def test_probe_capture_with_position_ids_matches_unpadded(loaded):
    model, tok = loaded
    ids, mask, alone = padded_batch(tok)
    n = alone.shape[1]
    padded = spectra.Probe(model, layers=[1], heads=[0], capture=("q", "k"))
    with padded, torch.no_grad():
        model(ids[1:2], attention_mask=mask[1:2], position_ids=padded_position_ids(mask[1:2]))
    single = spectra.Probe(model, layers=[1], heads=[0], capture=("q", "k"))
    with single, torch.no_grad():
        model(alone)
    for kind, head in (("q", 0), ("k", padded.kv_head(0))):
        a, b = padded.captured(1, head, kind), single.captured(1, head, kind)
        assert a.positions.tolist() == list(range(n)) == b.positions.tolist()
        torch.testing.assert_close(a.vectors, b.vectors, atol=2e-5, rtol=1e-4)


def test_scale_sweep_and_head_stats_take_position_ids(loaded):
    from spectra.interventions import scale_sweep

    model, tok = loaded
    ids, mask, alone = padded_batch(tok)
    kw = {"heads": [(1, 0), (1, 3)], "alphas": [0.5, 1.0, 2.0]}
    for mode in ("local", "propagated"):
        table = scale_sweep(model, ids, attention_mask=mask, mode=mode, **kw)
        single = scale_sweep(model, alone, mode=mode, **kw)
        for sample in (1, 2):
            got = table[table["sample"] == sample].reset_index(drop=True)
            want = single.reset_index(drop=True)
            assert got["n_tokens"].tolist() == want["n_tokens"].tolist()
            np.testing.assert_allclose(got["entropy"], want["entropy"], atol=2e-5, rtol=1e-4)
        given = scale_sweep(model, ids, attention_mask=mask, position_ids=padded_position_ids(mask), mode=mode, **kw)
        np.testing.assert_allclose(given["entropy"], table["entropy"], atol=1e-6)
    a = spectra.head_stats(model, alone, n_random=2, random_block=8, ignore_first=0)
    b = spectra.head_stats(
        model, alone, n_random=2, random_block=8, ignore_first=0, position_ids=torch.arange(alone.shape[1])
    )
    np.testing.assert_allclose(a["entropy_mean"], b["entropy_mean"], atol=1e-6)
    shifted = spectra.head_stats(
        model, alone, n_random=2, random_block=8, ignore_first=3, position_ids=torch.arange(alone.shape[1]) + 3
    )
    assert (
        shifted["entropy_mean"]
        - spectra.head_stats(model, alone, n_random=2, random_block=8, ignore_first=0)["entropy_mean"]
    ).abs().max() > 0


def test_intervention_checks_take_left_padded_inputs(loaded):
    model, tok = loaded
    ids, mask, _ = padded_batch(tok)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": padded_position_ids(mask)}
    assert spectra.check_baseline(model, inputs).logits_equal
    spectra.check_isolation(model, spectra.ScaleQuery(1, 0, 2.0), inputs)  # raises on a violation
