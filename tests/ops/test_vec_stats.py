"""torch.ops.spectra.vec_stats against its pure-PyTorch twin (spectra.reference.vec_stats)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spectra
from spectra.ops import reference
from spectra.testing.tolerance import FLOAT_DTYPES, assert_within_2x_reference, devices

STATS = ("norm", "max_abs", "participation_ratio")


@pytest.fixture(autouse=True, scope="module", params=["native", "torch"])
def implementation(request):
    """Every test of this module runs on the native kernel and on the torch path (spectra.backend)."""
    with spectra.backend(request.param):
        yield request.param


def check_against_reference(x: torch.Tensor) -> None:
    out = spectra.vec_stats(x)
    same_dtype = reference.vec_stats(x)
    truth = reference.vec_stats(x, compute_dtype=torch.float64)
    expected_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    for stat in STATS:
        got = getattr(out, stat)
        assert got.dtype == expected_dtype, stat
        assert got.shape == x.shape[:-1], stat
        assert got.device == x.device, stat
        # Summing D terms in a different order than the reference may cost up to ~D ulps.
        floor_ulps = 4.0 + x.shape[-1]
        assert_within_2x_reference(got, getattr(same_dtype, stat), getattr(truth, stat), name=stat, ulps=floor_ulps)


def test_golden_values_spec_g10():
    out = spectra.vec_stats(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    assert out.norm.item() == 5.0
    assert out.max_abs.item() == 4.0
    assert out.participation_ratio.item() == pytest.approx(625 / 337, abs=1e-15)
    assert out.max_abs.item() / out.norm.item() == pytest.approx(0.8)  # one-hotness
    pr = spectra.vec_stats(torch.tensor([[1.0, 1, 1, 1], [1.0, 0, 0, 0], [0.0, 0, 0, 0]])).participation_ratio
    assert pr[:2].tolist() == [4.0, 1.0]
    assert math.isnan(pr[2].item())


def test_gaussian_participation_ratio_at_d64():
    gen = torch.Generator().manual_seed(0)
    pr = spectra.vec_stats(torch.randn(100_000, 64, generator=gen)).participation_ratio
    assert pr.mean().item() == pytest.approx(22.66, abs=0.1)


def test_nan_rows_are_nan_and_other_rows_unaffected():
    x = torch.tensor([[1.0, float("nan"), 2.0], [1.0, 2.0, 2.0]])
    out = spectra.vec_stats(x)
    for stat in STATS:
        assert math.isnan(getattr(out, stat)[0].item())
    assert out.norm[1].item() == 3.0


@pytest.mark.parametrize("device", devices("vec_stats"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@settings(max_examples=25, deadline=None)
@given(
    leading=st.lists(st.integers(0, 5), min_size=0, max_size=3),
    dim=st.integers(1, 130),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference(device, dtype, leading, dim, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*leading, dim, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device)
    check_against_reference(x)


@pytest.mark.parametrize("device", devices("vec_stats"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_strided_and_non_contiguous_inputs(device, dtype):
    base = torch.randn(6, 10, 16, dtype=torch.float64).to(dtype).to(device)
    views = {
        "transposed_last": base.transpose(-1, -2),  # column stride != 1
        "transposed_leading": base.transpose(0, 1),  # leading dims do not collapse: reshape copies
        "sliced": base[:, ::3, 1::2],
        "expanded": base[:1, :1].expand(4, 3, 16),  # stride 0 rows
        "bhtd_like": base.view(6, 10, 4, 4).permute(0, 2, 1, 3),  # (B, H, T, D) from (B, T, H*D)
    }
    for name, view in views.items():
        assert not view.is_contiguous() or name == "expanded", name
        check_against_reference(view)
        torch.testing.assert_close(
            spectra.vec_stats(view).norm, spectra.vec_stats(view.contiguous()).norm, rtol=0, atol=0
        )


def test_half_inputs_do_not_overflow():
    # Sum of x^4 = 128 * 60000^4 overflows float32; the kernel accumulates in float64.
    x = torch.full((128,), 60000.0, dtype=torch.float16)
    out = spectra.vec_stats(x)
    assert out.participation_ratio.item() == pytest.approx(128.0, rel=1e-6)
    assert math.isfinite(out.norm.item())


@pytest.mark.parametrize("shape", [(0, 5), (3, 0, 4), (2, 0, 0, 7)])
def test_empty_leading_dims(shape):
    out = spectra.vec_stats(torch.randn(shape))
    for stat in STATS:
        assert getattr(out, stat).shape == shape[:-1]


def test_one_dimensional_input_gives_scalars():
    out = spectra.vec_stats(torch.tensor([3.0, 4.0]))
    assert out.norm.shape == ()
    assert out.norm.item() == 5.0


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64, torch.uint8])
def test_rejects_non_float_dtypes_naming_argument_and_allowed_values(dtype):
    with pytest.raises(
        TypeError, match=r"vec_stats: x has dtype .*allowed dtypes are float16, bfloat16, float32, float64"
    ):
        spectra.vec_stats(torch.zeros(2, 3, dtype=dtype))


def test_rejects_zero_dim_and_empty_last_dim():
    with pytest.raises(ValueError, match=r"vec_stats: x must have shape \(\.\.\., D\)"):
        spectra.vec_stats(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"vec_stats: x's last dimension D must be >= 1"):
        spectra.vec_stats(torch.zeros(3, 0))


def test_opcheck_and_torch_compile():
    x = torch.randn(3, 5, 8)
    torch.library.opcheck(torch.ops.spectra.vec_stats.default, (x,))
    compiled = torch.compile(lambda t: spectra.vec_stats(t * 2).norm, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), spectra.vec_stats(x * 2).norm)


def test_multithreaded_result_equals_single_thread():
    x = torch.randn(4096, 96)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = spectra.vec_stats(x)
    finally:
        torch.set_num_threads(threads)
    multi = spectra.vec_stats(x)
    for stat in STATS:
        assert torch.equal(getattr(single, stat), getattr(multi, stat))
