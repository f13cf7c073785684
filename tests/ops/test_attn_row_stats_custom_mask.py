"""attn_row_stats with a custom mask (``visible``: chunked attention, document masks, masks per head)
against its float64 twin, on the native kernel and the torch path: the 2x rule for real outputs, the
exact count of visible keys, together with padding, GQA, a window and learned sinks."""

import pytest
import torch

import spectra
from spectra.ops import reference
from spectra.testing.tolerance import assert_row_stats_within_2x

REAL_OUTPUTS = ("entropy", "entropy_normalized", "max_attn", "sink_mass", "sink_mass_n", "logit_var")
T = 23
POS = torch.arange(T)


@pytest.fixture(autouse=True, scope="module", params=["native", "torch"])
def implementation(request):
    with spectra.backend(request.param):
        yield request.param


def inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 6, T, 16, generator=g).to(dtype)
    k = torch.randn(2, 2, T, 16, generator=g).to(dtype)
    return q, k


MASKS = {
    "chunked": (POS[:, None] // 5 == POS[None] // 5)[None, None],
    "document": ((POS[:, None] < 9) == (POS[None] < 9))[None, None],
    "per head": torch.rand(1, 6, T, T, generator=torch.Generator().manual_seed(1)) < 0.6,
    "per sample": torch.stack([POS[:, None] // 4 == POS[None] // 4, POS[:, None] % 2 == POS[None] % 2])[:, None],
}


def check(q, k, visible, **kwargs):
    out = spectra.attn_row_stats(q, k, 0.3, visible=visible, **kwargs)
    same = reference.attn_row_stats(q, k, 0.3, visible=visible, **kwargs)
    truth = reference.attn_row_stats(q, k, 0.3, visible=visible, compute_dtype=torch.float64, **kwargs)
    unit = ("entropy", "entropy_normalized", "logit_var")
    assert_row_stats_within_2x(out, same, truth, REAL_OUTPUTS, ulps=64.0 + k.shape[2], unit_scale=unit)
    assert torch.equal(out.n_visible, truth.n_visible)
    rows = out.n_visible > 0
    assert torch.equal(out.k_eff[rows], truth.k_eff[rows])
    assert torch.equal(out.argmax[rows], truth.argmax[rows])
    return out, truth


@pytest.mark.parametrize("name", sorted(MASKS))
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_the_float64_twin(name, causal, dtype):
    q, k = inputs(dtype)
    out, truth = check(q, k, MASKS[name], causal=causal)
    # The mask hid keys: fewer visible than the causal / full rule alone.
    plain = reference.attn_row_stats(q, k, 0.3, causal=causal)
    assert bool((truth.n_visible <= plain.n_visible).all()) and bool((truth.n_visible < plain.n_visible).any())


def test_with_padding_a_window_and_sinks():
    q, k = inputs(torch.float32)
    key_valid = torch.ones(2, T, dtype=torch.bool)
    key_valid[0, :4] = False
    sinks = torch.linspace(-1.0, 2.0, 6)
    check(q, k, MASKS["per head"], key_valid=key_valid, sliding_window=7, sinks=sinks)


def test_a_row_the_mask_hides_entirely_is_undefined():
    q, k = inputs(torch.float32)
    visible = torch.ones(1, 1, T, T, dtype=torch.bool)
    visible[..., 5, :] = False
    out = spectra.attn_row_stats(q, k, 0.3, visible=visible)
    assert bool(torch.isnan(out.entropy[:, :, 5]).all()) and bool((out.n_visible[:, :, 5] == 0).all())
    assert bool((out.argmax[:, :, 5] == -1).all()) and bool((out.k_eff[:, :, 5] == 0).all())


def test_bad_masks_name_the_argument():
    q, k = inputs(torch.float32)
    with pytest.raises(TypeError, match="visible must be a bool tensor"):
        spectra.attn_row_stats(q, k, visible=torch.ones(1, 1, T, T))
    with pytest.raises(ValueError, match=r"visible must have shape \(batch or 1, heads or 1, query_len, key_len\)"):
        spectra.attn_row_stats(q, k, visible=torch.ones(1, 2, T, T, dtype=torch.bool))
