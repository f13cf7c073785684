"""attn_row_stats with learned sink logits (gpt-oss's ``s_aux``) against its float64 twin: the sink is one
more outcome of every row (docs/metrics.md, "Learned attention sinks"). Native kernel and torch path,
the 2x rule for real outputs, the tie band for k_eff, a hand-computed row, and logit_var against a
finite difference of the entropy with only the keys' logits scaled."""

import math

import pytest
import torch

import spectra
from spectra.ops import reference
from spectra.testing.tolerance import assert_k_eff_within_ties, assert_row_stats_within_2x

REAL_OUTPUTS = ("entropy", "entropy_normalized", "max_attn", "sink_mass", "sink_mass_n")


@pytest.fixture(autouse=True, scope="module", params=["native", "torch"])
def implementation(request):
    with spectra.backend(request.param):
        yield request.param


def inputs(dtype, *, batch=2, heads=6, kv_heads=2, query_len=29, dim=16, seed=0, sink_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, query_len, dim, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, query_len, dim, generator=g).to(dtype)
    sinks = (torch.randn(heads, generator=g) * sink_scale).to(dtype)
    return q, k, sinks


def outcome_cumulative(q, k, scaling, sinks, **mask):
    """float64 weights of the keys and the sink, sorted cumulative mass of the row's outcomes."""
    heads = q.shape[1]
    keys = k.double().repeat_interleave(heads // k.shape[1], dim=1)
    logits = q.double() @ keys.transpose(-1, -2) * scaling
    visible = reference.visible_keys(
        q.shape[2],
        k.shape[2],
        causal=mask.get("causal", True),
        sliding_window=mask.get("sliding_window"),
        key_valid=mask.get("key_valid"),
    ).expand_as(logits)
    logits = logits.masked_fill(~visible, -math.inf)
    column = sinks.double().view(1, heads, 1, 1).expand(*logits.shape[:3], 1)
    p = torch.softmax(torch.cat([logits, column], -1), -1)
    return p.sort(-1, descending=True).values.cumsum(-1), p[..., :-1]


def check(q, k, sinks, scaling=0.25, threshold=0.9, **mask):
    out = spectra.attn_row_stats(q, k, scaling, threshold=threshold, sinks=sinks, **mask)
    same = reference.attn_row_stats(q, k, scaling, threshold=threshold, sinks=sinks, **mask)
    truth = reference.attn_row_stats(
        q, k, scaling, threshold=threshold, sinks=sinks, compute_dtype=torch.float64, **mask
    )
    assert_row_stats_within_2x(out, same, truth, REAL_OUTPUTS, ulps=8.0 + k.shape[2])
    assert torch.equal(out.n_visible, truth.n_visible)
    # logit_var: rounding relative to the row's squared logits.
    ok = ~torch.isnan(truth.logit_var)
    eps = torch.finfo(out.logit_var.dtype).eps
    tol = 2 * (same.logit_var.double() - truth.logit_var).abs() + (16 + k.shape[2]) * eps * 64
    assert bool(((out.logit_var.double() - truth.logit_var).abs() <= tol)[ok].all()), "logit_var"
    # k_eff: a count of outcomes whose float64 prefix reaches the target, the one shorter not clearly.
    cumulative, p = outcome_cumulative(q, k, scaling, sinks, **mask)
    rows = out.n_visible > 0
    assert_k_eff_within_ties(out.k_eff, cumulative, threshold, rows)
    assert bool((out.k_eff <= out.n_visible + 1).all())
    picked = p.gather(-1, out.argmax.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert bool((picked >= p.amax(-1) * (1 - 1e-3) - 1e-6)[rows].all()), "argmax is a key of maximal weight"
    return out, truth


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("sink_scale", [0.5, 3.0, 40.0])
def test_matches_the_float64_twin(dtype, sink_scale):
    q, k, sinks = inputs(dtype, sink_scale=sink_scale)
    check(q, k, sinks)


@pytest.mark.parametrize(
    "mask",
    [
        {"sliding_window": 5},
        {"causal": False},
        {"key_valid": torch.tensor([[True] * 29, [False] * 4 + [True] * 25])},
    ],
    ids=["window", "bidirectional", "padding"],
)
def test_masks_hide_keys_never_the_sink(mask):
    q, k, sinks = inputs(torch.float32)
    out, truth = check(q, k, sinks, **mask)
    if "key_valid" in mask:  # query rows that see only padding keys: no row, sink or not
        assert bool(torch.isnan(out.entropy[1, :, :4]).all())


def test_hand_computed_row():
    # One query, keys with logits ln 2 and 0, sink logit ln 1 = 0: weights 2/4, 1/4, sink 1/4.
    q = torch.tensor([[[[1.0]]]], dtype=torch.float64)
    k = torch.tensor([math.log(2.0), 0.0], dtype=torch.float64).view(1, 1, 2, 1)
    out = spectra.attn_row_stats(q, k, 1.0, causal=False, threshold=0.7, sinks=torch.zeros(1, dtype=torch.float64))
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert out.entropy.item() == pytest.approx(entropy, abs=1e-12)
    assert out.entropy_normalized.item() == pytest.approx(entropy / math.log(3), abs=1e-12)
    assert out.max_attn.item() == pytest.approx(0.5, abs=1e-12) and out.argmax.item() == 0
    assert out.sink_mass.item() == pytest.approx(0.75, abs=1e-12)  # key 0 and the sink
    assert out.sink_mass_n.item() == pytest.approx(1.0, abs=1e-12)
    assert out.k_eff.item() == 2  # 0.5 + 0.25 reaches 0.7
    # A sink far above the keys holds the row: k_eff 1, entropy near 0, keys' weights near 0.
    big = spectra.attn_row_stats(q, k, 1.0, causal=False, sinks=torch.tensor([60.0], dtype=torch.float64))
    assert big.k_eff.item() == 1 and big.entropy.item() < 1e-20 and big.max_attn.item() < 1e-25
    assert big.sink_mass.item() == pytest.approx(1.0)


def test_logit_var_is_minus_the_entropy_slope_with_the_sink_fixed():
    q, k, sinks = inputs(torch.float64, sink_scale=2.0)
    h = 1e-5
    at = spectra.attn_row_stats(q, k, 0.3, sinks=sinks)
    up = spectra.attn_row_stats(q, k, 0.3 * math.exp(h), sinks=sinks).entropy
    down = spectra.attn_row_stats(q, k, 0.3 * math.exp(-h), sinks=sinks).entropy
    torch.testing.assert_close(-at.logit_var, (up - down) / (2 * h), atol=1e-6, rtol=0)


def test_no_sink_and_a_sink_at_minus_infinity_agree():
    q, k, _ = inputs(torch.float32)
    plain = spectra.attn_row_stats(q, k, 0.25)
    hidden = spectra.attn_row_stats(q, k, 0.25, sinks=torch.full((6,), -1e4))
    for name in ("entropy", "max_attn", "sink_mass", "sink_mass_n"):
        torch.testing.assert_close(getattr(hidden, name), getattr(plain, name), atol=2e-6, rtol=0)
    assert torch.equal(hidden.k_eff, plain.k_eff) and torch.equal(hidden.argmax, plain.argmax)


def test_bad_sinks_name_the_argument():
    q, k, _ = inputs(torch.float32)
    with pytest.raises(ValueError, match=r"sinks must have shape \(heads,\) = \(6,\)"):
        spectra.attn_row_stats(q, k, sinks=torch.zeros(2))
    with pytest.raises(TypeError, match="sinks has dtype"):
        spectra.attn_row_stats(q, k, sinks=torch.zeros(6, dtype=torch.long))
