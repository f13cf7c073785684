"""torch.ops.spectra.attn_row_stats against its twin (spectra.reference.attn_row_stats): float64
truth, the 2x rule for real-valued outputs, exact agreement for counts and indices except where the
truth itself sits within rounding of a tie."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spectra
from spectra.ops import reference
from spectra.testing.tolerance import (
    FLOAT_DTYPES,
    assert_k_eff_within_ties,
    assert_row_stats_within_2x,
    devices,
)

REAL_OUTPUTS = ("entropy", "entropy_normalized", "max_attn", "sink_mass", "sink_mass_n")


@pytest.fixture(autouse=True, scope="module", params=["native", "torch"])
def implementation(request):
    """Every test of this module runs on the native kernel and on the torch path (spectra.backend)."""
    with spectra.backend(request.param):
        yield request.param


def truth_logits(q, k, scaling, **mask):
    """(float64 logits with hidden keys at −inf, visible mask), both (B, H, Tq, Tk)."""
    batch, heads, tq, _ = q.shape
    keys = k.double().repeat_interleave(heads // k.shape[1], dim=1)
    logits = q.double() @ keys.transpose(-1, -2) * scaling
    if mask.get("softcap"):
        logits = mask["softcap"] * torch.tanh(logits / mask["softcap"])
    visible = reference.visible_keys(
        tq,
        k.shape[2],
        causal=mask.get("causal", True),
        sliding_window=mask.get("sliding_window"),
        query_offset=mask.get("query_offset"),
        key_valid=mask.get("key_valid"),
    ).expand_as(logits)
    return logits.masked_fill(~visible, -math.inf), visible


def truth_cumulative(q, k, scaling, **mask):
    """Sorted cumulative probabilities of every row, in float64 (for judging k_eff near ties)."""
    p = torch.softmax(truth_logits(q, k, scaling, **mask)[0], dim=-1)
    return p.sort(dim=-1, descending=True).values.cumsum(-1), p


def check_logit_var(out, same, truth, q, k, scaling, **mask):
    """logit_var = E[(s − max)²] − E[s − max]²: its rounding is relative to the second moment."""
    logits, visible = truth_logits(q, k, scaling, **mask)
    p = torch.softmax(logits, dim=-1)
    shifted = torch.where(visible, logits - logits.amax(-1, keepdim=True), torch.zeros_like(logits))
    second_moment = (p * shifted**2).sum(-1)
    got, ref, want = out.logit_var.double(), same.logit_var.double(), truth.logit_var.double()
    assert torch.equal(torch.isnan(got), torch.isnan(want)), "logit_var: NaN pattern differs"
    ok = ~torch.isnan(want)
    eps = torch.finfo(out.logit_var.dtype).eps
    tol = 2 * (ref - want).abs() + (16 + k.shape[2]) * eps * (second_moment + 1.0)
    assert bool(((got - want).abs() <= tol)[ok].all()), "logit_var outside tolerance"


def check(q, k, scaling, threshold=0.9, n_sink=4, **mask):
    out = spectra.attn_row_stats(q, k, scaling, threshold=threshold, n_sink=n_sink, **mask)
    same = reference.attn_row_stats(q, k, scaling, threshold=threshold, n_sink=n_sink, **mask)
    truth = reference.attn_row_stats(
        q, k, scaling, threshold=threshold, n_sink=n_sink, compute_dtype=torch.float64, **mask
    )
    expected_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    for name in REAL_OUTPUTS:
        got = getattr(out, name)
        assert got.dtype == expected_dtype and got.shape == q.shape[:3], name
    # Summing T weights in another order than the reference costs up to ~T ulps.
    # Entropies are ln Z − E[s − max]: their rounding is relative to those O(1) terms.
    assert_row_stats_within_2x(out, same, truth, REAL_OUTPUTS, ulps=8.0 + k.shape[2])
    assert torch.equal(out.n_visible, truth.n_visible)
    cumulative, p = truth_cumulative(q, k, scaling, **mask)
    check_logit_var(out, same, truth, q, k, scaling, **mask)
    ok = out.n_visible > 0
    # k_eff: any count whose float64 prefix mass reaches the target within rounding, and whose
    # one-shorter prefix does not clearly reach it.
    assert_k_eff_within_ties(out.k_eff, cumulative, threshold, ok)
    assert torch.equal(out.k_eff[~ok], torch.zeros_like(out.k_eff[~ok]))
    # argmax: a key whose float64 weight is within rounding of the row's maximum.
    picked = p.gather(-1, out.argmax.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert bool((picked >= p.amax(-1) * (1 - 1e-3) - 1e-6)[ok].all())
    assert torch.equal(out.argmax[~ok], torch.full_like(out.argmax[~ok], -1))
    return out


# ---- hand-computed cases ----


def test_g2_causal_uniform_rows():
    out = spectra.attn_row_stats(torch.zeros(1, 1, 4, 8), torch.randn(1, 1, 4, 8))
    torch.testing.assert_close(out.entropy[0, 0], torch.tensor([0.0, 0.6931471806, 1.0986122887, 1.3862943611]))
    torch.testing.assert_close(out.max_attn[0, 0], torch.tensor([1.0, 0.5, 1 / 3, 0.25]))
    assert out.k_eff[0, 0].tolist() == [1, 2, 3, 4]
    valid = out.entropy[0, 0, 2:]
    assert valid.mean().item() == pytest.approx(1.2424533249, abs=1e-6)


def test_g3_and_g4_single_rows():
    q = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    peaked = spectra.attn_row_stats(
        q, torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64).view(1, 1, 3, 1), 1.0, causal=False
    )
    assert peaked.entropy.item() == pytest.approx(0.8323955818, abs=1e-9)
    assert peaked.max_attn.item() == pytest.approx(0.6652409558, abs=1e-9)
    assert peaked.k_eff.item() == 2
    tie = torch.tensor([0.6, 0.3, 0.1]).log().view(1, 1, 3, 1)
    for dtype in (torch.float32, torch.float64):
        assert spectra.attn_row_stats(q.to(dtype), tie.to(dtype), 1.0, causal=False).k_eff.item() == 2


def test_g6_closed_form_entropy_slope():
    # dH/d ln(alpha) = -Var_p(alpha s): logit_var against central finite differences (docs/concepts.md, 'Intervention effects').
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 2, 7, 5, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 1, 7, 5, generator=gen, dtype=torch.float64)
    h = 1e-5
    for alpha in (0.5, 1.0, 1.5):
        at = spectra.attn_row_stats(q, k, alpha)
        up = spectra.attn_row_stats(q, k, alpha * math.exp(h)).entropy
        down = spectra.attn_row_stats(q, k, alpha * math.exp(-h)).entropy
        torch.testing.assert_close(-at.logit_var, (up - down) / (2 * h), atol=1e-6, rtol=0)
    two_keys = spectra.attn_row_stats(
        torch.ones(1, 1, 1, 1, dtype=torch.float64),
        torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 1, 2, 1),
        1.0,
        causal=False,
    )
    p = 1 / (1 + math.exp(-1.0))
    assert two_keys.logit_var.item() == pytest.approx(p * (1 - p), abs=1e-12)


def test_gqa_reads_h_floordiv_group():
    # Regression for the seed code's wrong KV head (h % Hkv): with H=32, Hkv=8, heads 19/8/23 read KV heads 4/2/5.
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 32, 6, 4, generator=gen)
    k = torch.randn(1, 8, 6, 4, generator=gen)
    out = spectra.attn_row_stats(q, k)
    for head, kv in ((19, 4), (8, 2), (23, 5)):
        single = spectra.attn_row_stats(q[:, head : head + 1], k[:, kv : kv + 1])
        assert torch.equal(out.entropy[:, head], single.entropy[:, 0])


# ---- hypothesis against the twin ----


@pytest.mark.parametrize("device", devices("attn_row_stats"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 2),
    kv_heads=st.integers(1, 2),
    group=st.sampled_from([1, 2, 3]),
    query_len=st.integers(1, 40),
    extra_keys=st.integers(0, 5),
    dim=st.integers(1, 40),
    causal=st.booleans(),
    window=st.sampled_from([0, 1, 3, 17]),
    pad=st.integers(0, 6),
    threshold=st.sampled_from([0.5, 0.9, 0.99, 1.0]),
    n_sink=st.integers(0, 5),
    softcap=st.sampled_from([0.0, 0.0, 5.0]),
    scale=st.sampled_from([0.1, 1.0, 4.0]),
    transposed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(
    device,
    dtype,
    batch,
    kv_heads,
    group,
    query_len,
    extra_keys,
    dim,
    causal,
    window,
    pad,
    threshold,
    n_sink,
    softcap,
    scale,
    transposed,
    seed,
):
    gen = torch.Generator().manual_seed(seed)
    heads, key_len = kv_heads * group, query_len + extra_keys
    if transposed:  # the (B, T, H, D) -> (B, H, T, D) views the model hands over
        q = torch.randn(batch, query_len, heads, dim, generator=gen).transpose(1, 2)
    else:
        q = torch.randn(batch, heads, query_len, dim, generator=gen)
    q = (q * scale).to(dtype)
    k = torch.randn(batch, kv_heads, key_len, dim, generator=gen).to(dtype)
    key_valid = torch.ones(batch, key_len, dtype=torch.bool)
    key_valid[-1, : min(pad, key_len)] = False  # left padding on the last row
    check(
        q.to(device),
        k.to(device),
        dim**-0.5,
        threshold=threshold,
        n_sink=n_sink,
        causal=causal,
        sliding_window=window,
        key_valid=key_valid,
        softcap=softcap,
    )


def test_long_rows_and_peaked_rows():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 2, 700, 16, generator=gen)
    k = torch.randn(1, 1, 700, 16, generator=gen)
    for scale in (0.05, 1.0, 30.0):  # near-uniform, broad, one-hot
        check(q * scale, k, 0.25)


def test_nan_rows_are_reported_not_averaged():
    q, k = torch.randn(1, 2, 5, 4), torch.randn(1, 1, 5, 4)
    k[0, 0, 2, 1] = float("nan")
    out = spectra.attn_row_stats(q, k)
    assert not torch.isnan(out.entropy[0, :, :2]).any()
    assert torch.isnan(out.entropy[0, :, 2:]).all() and torch.isnan(out.max_attn[0, :, 2:]).all()
    assert (out.k_eff[0, :, 2:] == 0).all()


def test_bad_arguments_name_the_argument():
    q, k = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 3, 8)
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\]"):
        spectra.attn_row_stats(q, k, threshold=0.0)
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\]"):
        spectra.attn_row_stats(q, k, threshold=1.5)
    with pytest.raises(ValueError, match=r"q's heads \(4\) must be a multiple of k's kv_heads \(3\)"):
        spectra.attn_row_stats(q, torch.randn(1, 3, 3, 8))
    with pytest.raises(ValueError, match="k has head_dim 7 but q has 8"):
        spectra.attn_row_stats(q, torch.randn(1, 2, 3, 7))
    with pytest.raises(TypeError, match="k has dtype Half but q has Float"):
        spectra.attn_row_stats(q, k.half())
    with pytest.raises(TypeError, match="allowed dtypes are float16, bfloat16, float32, float64"):
        spectra.attn_row_stats(q.int(), k.int())
    with pytest.raises(ValueError, match=r"key_valid must have shape \(batch, key_len\) = \(1, 3\)"):
        spectra.attn_row_stats(q, k, key_valid=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="q must have shape"):
        spectra.attn_row_stats(q[0], k)
    with pytest.raises(ValueError, match="sliding_window must be >= 0"):
        spectra.attn_row_stats(q, k, sliding_window=-2)


def test_empty_and_torch_library_contract():
    empty = spectra.attn_row_stats(torch.randn(2, 4, 0, 8), torch.randn(2, 2, 0, 8))
    assert empty.entropy.shape == (2, 4, 0)
    q, k = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8)
    torch.library.opcheck(
        torch.ops.spectra.attn_row_stats.default, (q, k, 0.3), test_utils=("test_schema", "test_faketensor")
    )
    compiled = torch.compile(lambda a, b: spectra.attn_row_stats(a, b).entropy, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k), spectra.attn_row_stats(q, k).entropy)
