"""torch.ops.spectra.plasticity_pairwise against its twin (spectra.reference.plasticity.pairwise),
hand-computed values (docs/plasticity.md) and a Monte-Carlo estimate of Pr(q·k1 > q·k2)."""

import math

import pytest
import torch

import spectra
from spectra import plasticity
from spectra.ops import reference
from spectra.testing.tolerance import FLOAT_DTYPES

OUTPUTS = ("m", "v", "p", "pp")


@pytest.fixture(autouse=True, scope="module", params=["native", "torch"])
def implementation(request):
    """Every test of this module runs on the native kernel and on the torch path (spectra.backend)."""
    with spectra.backend(request.param):
        yield request.param


def random_covariance(d: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def make_inputs(pairs: int, d: int, mean_kind: str, var_kind: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(pairs, d, generator=gen, dtype=torch.float64)
    mean = torch.randn(*((pairs, d) if mean_kind == "per_pair" else (d,)), generator=gen, dtype=torch.float64)
    if var_kind == "full":
        var = random_covariance(d, gen)
    else:
        var = torch.rand(d, generator=gen, dtype=torch.float64) + 0.05
    return w, mean, var


def assert_matches_twin(w, mean, var, tol=1e-12):
    got = plasticity.pairwise(w, mean, var)
    want = reference.plasticity.pairwise(w, mean, var)
    for name in OUTPUTS:
        g, e = getattr(got, name), getattr(want, name)
        assert g.dtype == torch.float64 and g.shape == (w.shape[0],), name
        torch.testing.assert_close(g, e, rtol=tol, atol=tol, equal_nan=True, msg=name)
    return got


def test_spec_values_section_5_1():
    z = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    out = plasticity.pairwise(torch.ones(5, 1, dtype=torch.float64), z[:, None], torch.ones(1, dtype=torch.float64))
    assert out.pp[0].item() == 1.0
    assert out.pp.tolist() == pytest.approx([1.0, 0.853369, 0.533935, 0.088930, 0.005392], abs=1e-6)
    # PP(z) = PP(−z), p(−z) = 1 − p(z).
    flipped = plasticity.pairwise(
        -torch.ones(5, 1, dtype=torch.float64), z[:, None], torch.ones(1, dtype=torch.float64)
    )
    assert torch.equal(flipped.pp, out.pp)
    torch.testing.assert_close(flipped.p, 1 - out.p, rtol=0, atol=1e-15)


def test_reference_tool_expected_value_cell_section_8():
    # A single cell with τ = 1, μ(τ) = 1, keys ±1 and σ² = 1: m = 2, v = 4, z = ±1.
    k = torch.tensor([[1.0], [-1.0]])
    w = torch.stack([k[0] - k[1], k[1] - k[0]])
    out = plasticity.pairwise(w, torch.tensor([1.0]), torch.tensor([1.0]))
    assert out.m.tolist() == [2.0, -2.0]
    assert out.v.tolist() == [4.0, 4.0]
    phi1 = 0.5 * math.erfc(-1 / math.sqrt(2))
    assert out.p.tolist() == pytest.approx([phi1, 1 - phi1], abs=1e-15)
    assert out.pp.tolist() == pytest.approx([4 * phi1 * (1 - phi1)] * 2, abs=1e-15)
    assert out.pp[0].item() == pytest.approx(0.533935, abs=1e-6)


def test_large_z_keeps_precision_section_5_8():
    # 4p(1−p) with p = Φ(10) rounds to 0 in float64; the kernel's 4Φ(−|z|)(1−Φ(−|z|)) does not.
    z = torch.tensor([10.0, -10.0, 30.0], dtype=torch.float64)
    out = plasticity.pairwise(torch.ones(3, 1, dtype=torch.float64), z[:, None], torch.ones(1, dtype=torch.float64))
    naive = 4 * torch.special.ndtr(z) * (1 - torch.special.ndtr(z))
    assert naive[0].item() == 0.0
    phi_minus = [7.619853024160526066e-24, 7.619853024160526066e-24, 4.9067139271481870595e-198]  # mpmath
    for got, tail in zip(out.pp.tolist(), phi_minus):
        assert got > 0.0
        assert got == pytest.approx(4 * tail, rel=1e-12)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mean_kind", ["shared", "per_pair"])
@pytest.mark.parametrize("var_kind", ["diagonal", "full"])
def test_matches_twin(dtype, mean_kind, var_kind):
    w, mean, var = make_inputs(97, 13, mean_kind, var_kind, seed=len(mean_kind) * 10 + len(var_kind))
    # The kernel reads the given dtype exactly and works in float64, as the twin does.
    assert_matches_twin(w.to(dtype), mean.to(dtype), var.to(dtype))


@pytest.mark.parametrize("var_kind", ["diagonal", "full"])
def test_strided_inputs_are_read_in_place(var_kind):
    w, mean, var = make_inputs(40, 8, "shared", var_kind, seed=3)
    w_t = w.T.contiguous().T  # column stride P
    mean_rows = mean.expand(40, 8)  # per-pair mean with pair stride 0
    big = torch.zeros(16, 16, dtype=torch.float64)
    if var_kind == "full":
        big[::2, ::2] = var
        var_view = big[::2, ::2]
    else:
        big[0, ::2] = var
        var_view = big[0, ::2]
    for args in [
        (w_t, mean, var_view),
        (w_t, mean_rows, var),
        (w[::1], mean[None].expand(40, 8).T.contiguous().T, var),
    ]:
        got = assert_matches_twin(*args)
        contiguous = plasticity.pairwise(*(a.contiguous() for a in args))
        for name in OUTPUTS:
            assert torch.equal(getattr(got, name), getattr(contiguous, name)), name


def test_full_and_diagonal_covariance_agree_for_diagonal_sigma():
    w, mean, var = make_inputs(50, 6, "per_pair", "diagonal", seed=4)
    diag = plasticity.pairwise(w, mean, var)
    full = plasticity.pairwise(w, mean, torch.diag(var))
    for name in OUTPUTS:
        torch.testing.assert_close(getattr(full, name), getattr(diag, name), rtol=1e-14, atol=1e-15)


def test_mixed_dtypes_are_promoted():
    w, mean, var = make_inputs(20, 5, "per_pair", "full", seed=5)
    mixed = plasticity.pairwise(w.float(), mean, var.to(torch.bfloat16))
    same = plasticity.pairwise(w.float().double(), mean, var.to(torch.bfloat16).double())
    for name in OUTPUTS:
        assert torch.equal(getattr(mixed, name), getattr(same, name)), name


def test_degenerate_variance_rule_and_nan():
    # Pairs: identical keys (w = 0); w along the zero-variance axis 1 with m > 0 and m < 0; a NaN.
    w = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, -1.0], [float("nan"), 1.0]], dtype=torch.float64)
    mean = torch.tensor([0.5, 0.5], dtype=torch.float64)
    for var in (
        torch.tensor([2.0, 0.0], dtype=torch.float64),
        torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=torch.float64),
    ):
        out = assert_matches_twin(w, mean, var)
        assert out.v[:3].tolist() == [0.0, 0.0, 0.0]
        assert out.p[:3].tolist() == [0.5, 1.0, 0.0]
        assert out.pp[:3].tolist() == [1.0, 0.0, 0.0]
        for name in OUTPUTS:
            assert math.isnan(getattr(out, name)[3].item()), name


def test_monte_carlo_probability_of_preferring_k1():
    d, n = 4, 1_000_000
    gen = torch.Generator().manual_seed(2024)
    mu = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    sigma = random_covariance(d, gen)
    keys1 = torch.randn(5, d, generator=gen, dtype=torch.float64)
    keys2 = keys1 + 0.6 * torch.randn(5, d, generator=gen, dtype=torch.float64)
    w = keys1 - keys2
    out = plasticity.pairwise(w, mu, sigma)
    q = mu + torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(sigma).T
    estimate = ((q @ keys1.T) > (q @ keys2.T)).double().mean(0)
    se = (out.p * (1 - out.p) / n).sqrt()
    assert ((out.p > 0.01) & (out.p < 0.99)).sum() >= 3, out.p  # the check has teeth
    assert ((estimate - out.p).abs() <= 4 * se).all(), (estimate, out.p, se)
    # And PP = 4·Var(Bernoulli) of the same event.
    torch.testing.assert_close(out.pp, 4 * out.p * (1 - out.p), rtol=1e-12, atol=1e-15)


def test_empty_pairs():
    out = plasticity.pairwise(torch.zeros(0, 3), torch.zeros(3), torch.ones(3, 3))
    for name in OUTPUTS:
        assert getattr(out, name).shape == (0,)


@pytest.mark.parametrize(
    ("w", "mean", "var", "pattern"),
    [
        (torch.zeros(3), torch.zeros(3), torch.ones(3), r"plasticity_pairwise: w must have shape \(P, d\)"),
        (torch.zeros(2, 3, 4), torch.zeros(4), torch.ones(4), r"plasticity_pairwise: w must have shape \(P, d\)"),
        (torch.zeros(2, 0), torch.zeros(0), torch.ones(0), r"plasticity_pairwise: w's dimension d must be >= 1"),
        (
            torch.zeros(2, 3),
            torch.zeros(4),
            torch.ones(3),
            r"plasticity_pairwise: mean must have shape \(d,\) = \(3,\)",
        ),
        (torch.zeros(2, 3), torch.zeros(3, 3), torch.ones(3), r"mean must have shape .* or \(P, d\) = \(2, 3\)"),
        (torch.zeros(2, 3), torch.zeros(1, 2, 3), torch.ones(3), r"plasticity_pairwise: mean must have shape"),
        (torch.zeros(2, 3), torch.zeros(3), torch.ones(2), r"plasticity_pairwise: var must have shape \(d,\) = \(3,\)"),
        (torch.zeros(2, 3), torch.zeros(3), torch.ones(3, 2), r"var must have shape .* or \(d, d\) = \(3, 3\)"),
        (torch.zeros(2, 3), torch.zeros(3), torch.ones(1, 3, 3), r"plasticity_pairwise: var must have shape"),
        (
            torch.zeros(2, 3),
            torch.zeros(3),
            torch.tensor([1.0, -0.5, 1.0]),
            r"plasticity_pairwise: var has a negative variance -0.5 at index 1",
        ),
        (
            torch.zeros(2, 2),
            torch.zeros(2),
            torch.tensor([[1.0, -2.0], [-2.0, -1e-3]]),
            r"plasticity_pairwise: var is a covariance with a negative variance -0.001 on its diagonal at \(1, 1\)",
        ),
    ],
)
def test_bad_shapes_and_values_raise_value_error_naming_the_argument(w, mean, var, pattern):
    with pytest.raises(ValueError, match=pattern):
        plasticity.pairwise(w, mean, var)


@pytest.mark.parametrize("arg", ["w", "mean", "var"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_non_float_dtypes_raise_type_error_naming_the_argument(arg, dtype):
    args = {"w": torch.zeros(2, 3), "mean": torch.zeros(3), "var": torch.ones(3)}
    args[arg] = args[arg].to(dtype)
    with pytest.raises(
        TypeError,
        match=rf"plasticity_pairwise: {arg} has dtype .*allowed dtypes are float16, bfloat16, float32, float64",
    ):
        plasticity.pairwise(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_cpu_result():
    # A validated CUDA kernel or, where none is linked, the torch path: never NotImplementedError.
    w, mean, var = make_inputs(7, 5, "shared", "full", seed=9)
    on_gpu = plasticity.pairwise(w.cuda(), mean.cuda(), var.cuda())
    on_cpu = plasticity.pairwise(w, mean, var)
    for name in OUTPUTS:
        torch.testing.assert_close(getattr(on_gpu, name).cpu(), getattr(on_cpu, name), rtol=1e-12, atol=1e-14)


def test_opcheck_and_torch_compile():
    w, mean, var = make_inputs(6, 4, "per_pair", "full", seed=6)
    torch.library.opcheck(torch.ops.spectra.plasticity_pairwise.default, (w, mean, var))
    torch.library.opcheck(
        torch.ops.spectra.plasticity_pairwise.default, (w.float(), mean[0].float(), var.diagonal().float())
    )
    compiled = torch.compile(lambda a, b, c: plasticity.pairwise(a * 2, b, c).pp, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(w, mean, var), plasticity.pairwise(w * 2, mean, var).pp)


@pytest.mark.parametrize("var_kind", ["diagonal", "full"])
def test_multithreaded_result_equals_single_thread(var_kind):
    w, mean, var = make_inputs(20_000, 24, "per_pair", var_kind, seed=7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = plasticity.pairwise(w, mean, var)
    finally:
        torch.set_num_threads(threads)
    multi = plasticity.pairwise(w, mean, var)
    for name in OUTPUTS:
        assert torch.equal(getattr(single, name), getattr(multi, name)), name
