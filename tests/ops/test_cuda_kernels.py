"""CUDA kernels of torch.ops.spectra.{vec_stats, attn_row_stats, plasticity_pairwise} against the CPU
op (same inputs copied to the CPU) and against the float64 twin in spectra.reference.

The GPU tests skip without a CUDA device or without the CUDA kernels in the build; the source check
at the top runs everywhere (the CUDA files are compiled on CPU-only CI by `make cuda-check`).

Tolerances: real-valued float32 statistics rtol 1e-4 / atol 1e-5 against the CPU op; integer outputs
exact, except argmax where two weights tie within rounding, and k_eff where every cumulative mass
between the two answers lies within rounding of θ − 1e-6 (the op's own tie rule).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import spectra
from spectra import plasticity
from spectra.ops import reference
from spectra.ops.backend import LINKED_CUDA
from spectra.testing.tolerance import FLOAT_DTYPES, assert_within_2x_reference

ROOT = Path(__file__).resolve().parents[2]
CUDA_OPS = {"vec_stats": "vec_stats", "attn_row_stats": "attn_row_stats", "plasticity_pairwise": "plasticity_pairwise"}


# ---- runs everywhere: the sources CMake compiles for CUDA builds ----


def test_cuda_sources_are_listed_and_register_cuda_kernels():
    text = (ROOT / "CMakeLists.txt").read_text()
    listed = re.search(r"set\(SPECTRA_CUDA_SOURCES([^)]*)\)", text)
    assert listed, "CMakeLists.txt has no set(SPECTRA_CUDA_SOURCES ...)"
    sources = re.sub(r"#[^\n]*", "", listed.group(1)).split()
    for op, stem in CUDA_OPS.items():
        path = f"cpp/ops/{stem}_cuda.cu"
        assert path in sources, f"{path} is not in SPECTRA_CUDA_SOURCES"
        code = (ROOT / path).read_text()
        assert "TORCH_LIBRARY_IMPL(spectra, CUDA, m)" in code, path
        assert f'm.impl("{op}"' in code, path
    assert (ROOT / "tools" / "cuda_compile_check.sh").is_file()
    assert re.search(r"^cuda-check:", (ROOT / "Makefile").read_text(), re.M)


# ---- GPU ----


def _has_cuda_kernel(op: str) -> bool:
    # Linked into spectra._core, not merely present in the dispatcher: where no kernel is linked,
    # spectra.ops registers the torch path for the CUDA key (tests/ops/test_torch_path.py).
    return torch.cuda.is_available() and op in LINKED_CUDA


needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and all(_has_cuda_kernel(op) for op in CUDA_OPS)),
    reason="needs a CUDA device and a build with every CUDA kernel (SPECTRA_WITH_CUDA=ON, a CUDA torch and nvcc)",
)

REAL = ("entropy", "entropy_normalized", "max_attn", "sink_mass", "sink_mass_n", "logit_var")


def _close(got: torch.Tensor, want: torch.Tensor, name: str, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, name
    torch.testing.assert_close(got.cpu(), want, rtol=rtol, atol=atol, equal_nan=True, msg=name)


def _truth_cumulative(q, k, scaling, **mask):
    """float64 sorted cumulative probabilities and probabilities of every row (B, H, Tq, Tk)."""
    heads, tq = q.shape[1], q.shape[2]
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
    p = torch.softmax(logits.masked_fill(~visible, -math.inf), dim=-1)
    return p.sort(dim=-1, descending=True).values.cumsum(-1), p


def check_attn(q, k, scaling, threshold=0.9, n_sink=4, tie_band=1e-5, **mask):
    """The CUDA op against the CPU op on the same inputs, and argmax/k_eff against the float64 truth."""
    gpu_mask = dict(mask)
    if mask.get("key_valid") is not None:
        gpu_mask["key_valid"] = mask["key_valid"].cuda()
    got = spectra.attn_row_stats(q.cuda(), k.cuda(), scaling, threshold=threshold, n_sink=n_sink, **gpu_mask)
    want = spectra.attn_row_stats(q, k, scaling, threshold=threshold, n_sink=n_sink, **mask)
    expected_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    for name in REAL:
        g = getattr(got, name)
        assert g.device.type == "cuda" and g.dtype == expected_dtype and g.shape == q.shape[:3], name
        # logit_var is a difference of moments: its rounding is relative to E[(s - max)^2] (~1 for these inputs).
        _close(g, getattr(want, name), name, atol=1e-4 if name == "logit_var" else 1e-5)
    assert torch.equal(got.n_visible.cpu(), want.n_visible), "n_visible"
    ok = want.n_visible > 0
    cumulative, p = _truth_cumulative(q, k, scaling, **mask)
    empty = ~ok | torch.isnan(want.entropy)
    assert torch.equal(got.argmax.cpu()[empty], want.argmax[empty]), "argmax of empty/NaN rows"
    assert torch.equal(got.k_eff.cpu()[empty], want.k_eff[empty]), "k_eff of empty/NaN rows"
    live = ~empty
    if p.shape[-1] == 0:  # no keys at all: every row is empty
        return got, want
    # argmax: equal, or a key whose float64 weight ties the row's maximum within rounding.
    g_arg = got.argmax.cpu()
    picked = p.gather(-1, g_arg.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    same_arg = g_arg == want.argmax
    assert bool((same_arg | (picked >= p.amax(-1) * (1 - 1e-4) - 1e-7))[live].all()), "argmax"
    # k_eff: equal, or every prefix mass between the two answers is within tie_band of the target.
    g_k, c_k = got.k_eff.cpu(), want.k_eff
    lo_k, hi_k = torch.minimum(g_k, c_k), torch.maximum(g_k, c_k)
    target = threshold - 1e-6
    idx = torch.arange(cumulative.shape[-1])
    between = (idx >= (lo_k - 1).clamp(min=0).unsqueeze(-1)) & (idx < (hi_k - 1).clamp(min=0).unsqueeze(-1))
    near = ((cumulative - target).abs() <= tie_band) | ~between
    tie_ok = near.all(-1)
    bad = live & ~((g_k == c_k) | tie_ok)
    assert not bool(bad.any()), (
        f"k_eff differs beyond ties at {bad.nonzero()[:5].tolist()}: gpu {g_k[bad][:5].tolist()} cpu {c_k[bad][:5].tolist()}"
    )
    return got, want


def _qk(batch, heads, kv_heads, tq, tk, dim, dtype, scale=1.0, seed=0, transposed=False):
    gen = torch.Generator().manual_seed(seed)
    if transposed:  # the (B, T, H, D) -> (B, H, T, D) views a model hands over
        q = torch.randn(batch, tq, heads, dim, generator=gen).transpose(1, 2)
    else:
        q = torch.randn(batch, heads, tq, dim, generator=gen)
    k = torch.randn(batch, kv_heads, tk, dim, generator=gen)
    return (q * scale).to(dtype), k.to(dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    "mask",
    [
        dict(causal=True),
        dict(causal=False),
        dict(causal=True, sliding_window=17),
        dict(causal=False, sliding_window=5),
        dict(causal=True, query_offset=3),
        dict(causal=True, query_offset=-4),  # the first rows see no key at all
        dict(causal=True, softcap=5.0),
        dict(causal=True, pad=7),  # key_valid: left padding on the last batch row
        dict(causal=False, pad=70, sliding_window=40),  # padding longer than a whole key tile
    ],
    ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()),
)
@pytest.mark.parametrize("threshold", [0.5, 0.9, 1.0])
def test_attn_row_stats_masks_and_dtypes(dtype, mask, threshold):
    mask = dict(mask)
    pad = mask.pop("pad", 0)
    # T not a multiple of the 64-row / 64-key blocks; H = 6 over Hkv = 2 (GQA), D = 40 (padded to 48).
    seed = FLOAT_DTYPES.index(dtype) * 10 + int(threshold * 10)
    q, k = _qk(2, 6, 2, 77, 83, 40, dtype, scale=1.5, seed=seed, transposed=True)
    if pad:
        key_valid = torch.ones(2, 83, dtype=torch.bool)
        key_valid[-1, :pad] = False
        mask["key_valid"] = key_valid
    check_attn(q, k, 40**-0.5, threshold=threshold, n_sink=3, **mask)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("dim", [1, 8, 64, 128, 200, 256, 320])
def test_attn_row_stats_head_dims(dtype, dim):
    # 16-bit inputs take tensor cores up to head_dim 256 (zero-padded to a multiple of 16) and the
    # float32 path beyond; float32 inputs always the float32 path.
    q, k = _qk(1, 4, 1, 130, 130, dim, dtype, seed=dim)
    check_attn(q, k, dim**-0.5)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [0.05, 1.0, 4.0, 30.0])  # near-uniform, broad, peaked, one-hot
@pytest.mark.parametrize("threshold", [0.9, 0.99, 1.0])
def test_attn_row_stats_long_rows_exercise_the_k_eff_search(dtype, scale, threshold):
    # 3000 keys: the threshold bin of the first histogram holds more keys than one gather takes, so
    # rows go through the refinement levels; sinks on the first keys as real heads have.
    q, k = _qk(1, 2, 1, 100, 3000, 64, dtype, scale=scale, seed=int(scale * 10))
    k[:, :, :4] += 0.5 * q[:, :1, :1].to(k.dtype)
    check_attn(q, k, 64**-0.5, threshold=threshold, query_offset=2900)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_attn_row_stats_ties(dtype):
    # Identical logits: zero queries (every row uniform), duplicated keys (many keys of one weight
    # across the threshold), zero keys among random ones.
    q, k = _qk(1, 3, 1, 70, 2000, 16, dtype, seed=4)
    q[:, 0] = 0
    k[:, :, 100:1500] = k[:, :, 7:8]
    k[:, :, 1500:1800] = 0
    for threshold in (0.3, 0.9, 1.0):
        got, _ = check_attn(q, k, 0.25, threshold=threshold, causal=False)
        if threshold == 0.3:  # uniform rows: ceil(0.3·n − 1e-6·n)
            assert got.k_eff[0, 0].cpu().tolist() == [math.ceil((0.3 - 1e-6) * 2000)] * 70


@needs_cuda
def test_attn_row_stats_rows_without_keys_and_empty_shapes():
    q, k = _qk(2, 2, 1, 5, 9, 8, torch.float32)
    key_valid = torch.ones(2, 9, dtype=torch.bool)
    key_valid[1] = False  # the whole second batch row is padding
    got, _ = check_attn(q, k, 1.0, key_valid=key_valid)
    assert torch.isnan(got.entropy[1]).all() and (got.argmax[1] == -1).all() and (got.k_eff[1] == 0).all()
    assert (got.n_visible[1] == 0).all()
    # No keys at all, and no queries.
    check_attn(*_qk(1, 2, 2, 4, 0, 8, torch.float32), 1.0, key_valid=torch.ones(1, 0, dtype=torch.bool))
    empty = spectra.attn_row_stats(torch.zeros(1, 2, 0, 8, device="cuda"), torch.zeros(1, 1, 3, 8, device="cuda"))
    assert empty.entropy.shape == (1, 2, 0) and empty.entropy.device.type == "cuda"


@needs_cuda
def test_attn_row_stats_nan_rows_and_key_valid_on_the_cpu():
    q, k = _qk(1, 2, 1, 5, 5, 4, torch.float32)
    k[0, 0, 2, 1] = float("nan")
    got, _ = check_attn(q, k, 0.5)
    assert torch.isnan(got.entropy[0, :, 2:]).all() and (got.k_eff[0, :, 2:] == 0).all()
    assert not torch.isnan(got.entropy[0, :, :2]).any()
    # A CPU key_valid with CUDA q/k is accepted (moved to the device), as the twin accepts it.
    key_valid = torch.tensor([[True, False, True, True, True]])
    mixed = spectra.attn_row_stats(q.cuda(), k.cuda(), 0.5, key_valid=key_valid)
    same = spectra.attn_row_stats(q, k, 0.5, key_valid=key_valid)
    _close(mixed.max_attn, same.max_attn, "max_attn")


@needs_cuda
def test_attn_row_stats_gqa_reads_h_floordiv_group_and_never_a_copy_of_k():
    q, k = _qk(1, 32, 8, 70, 70, 64, torch.bfloat16, seed=9)
    got, _ = check_attn(q, k, 0.125)
    for head, kv in ((19, 4), (8, 2), (23, 5)):
        single = spectra.attn_row_stats(q[:, head : head + 1].cuda(), k[:, kv : kv + 1].cuda(), 0.125)
        assert torch.equal(got.entropy[:, head], single.entropy[:, 0])


@needs_cuda
def test_attn_row_stats_memory_is_linear_in_t():
    # (B, H, T, T) float32 logits at T = 8192 would be 1 GiB for these 4 heads; the op allocates its
    # outputs only (9 tensors of B·H·T elements) plus nothing per key.
    q, k = _qk(1, 4, 1, 8192, 8192, 64, torch.bfloat16)
    q, k = q.cuda(), k.cuda()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    spectra.attn_row_stats(q, k, 0.125)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base < 16 * 4 * 8192 * 9 + (1 << 20)


@needs_cuda
def test_attn_row_stats_errors_name_the_argument():
    q, k = torch.randn(1, 4, 3, 8, device="cuda"), torch.randn(1, 2, 3, 8, device="cuda")
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\]"):
        spectra.attn_row_stats(q, k, threshold=0.0)
    with pytest.raises(ValueError, match=r"q's heads \(4\) must be a multiple of k's kv_heads \(3\)"):
        spectra.attn_row_stats(q, torch.randn(1, 3, 3, 8, device="cuda"))
    with pytest.raises(TypeError, match=r"k has dtype .* but q has"):
        spectra.attn_row_stats(q, k.double())
    with pytest.raises(ValueError, match=r"key_valid must have shape \(batch, key_len\)"):
        spectra.attn_row_stats(q, k, key_valid=torch.ones(1, 4, dtype=torch.bool, device="cuda"))


@needs_cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_vec_stats_matches_cpu_and_twin(dtype):
    gen = torch.Generator().manual_seed(1)
    base = (torch.randn(6, 10, 16, generator=gen, dtype=torch.float64) * 3).to(dtype)
    base[0, 0, 3] = float("nan")
    base[1, 1] = 0  # the zero vector: PR is NaN
    views = {
        "contiguous": base,
        "transposed_last": base.transpose(-1, -2),
        "transposed_leading": base.transpose(0, 1),
        "sliced": base[:, ::3, 1::2],
        "expanded": base[:1, :1].expand(4, 3, 16),
        "bhtd_like": base.view(6, 10, 4, 4).permute(0, 2, 1, 3),
        "one_row": base[2, 3],
        "long_rows": (torch.randn(3, 5000, generator=gen, dtype=torch.float64)).to(dtype),
    }
    for name, view in views.items():
        got = spectra.vec_stats(view.cuda())
        want = spectra.vec_stats(view)
        truth = reference.vec_stats(view, compute_dtype=torch.float64)
        same = reference.vec_stats(view)
        for stat in ("norm", "max_abs", "participation_ratio"):
            g = getattr(got, stat)
            assert g.device.type == "cuda", name
            _close(g, getattr(want, stat), f"{name}.{stat}", rtol=1e-6 if dtype != torch.float64 else 1e-12, atol=0)
            assert_within_2x_reference(
                g, getattr(same, stat), getattr(truth, stat), name=f"{name}.{stat}", ulps=4.0 + view.shape[-1]
            )


@needs_cuda
def test_vec_stats_empty_and_many_leading_dims():
    assert spectra.vec_stats(torch.randn(0, 5, device="cuda")).norm.shape == (0,)
    # Seven leading dims that do not collapse (read in place), then ten (more than the kernel indexes:
    # read from a contiguous copy).
    x = torch.randn(2, 1, 3, 1, 2, 2, 1, 2, 2, 3, 5, dtype=torch.float64).permute(9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 10)
    y = torch.randn([2] * 10 + [3], dtype=torch.float64).permute(*reversed(range(10)), 10)
    for t in (x, y):
        _close(spectra.vec_stats(t.cuda()).norm, spectra.vec_stats(t).norm, "norm", rtol=1e-12, atol=0)


@needs_cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mean_kind", ["shared", "per_pair"])
@pytest.mark.parametrize("var_kind", ["diagonal", "full"])
def test_plasticity_pairwise_matches_cpu_and_twin(dtype, mean_kind, var_kind):
    gen = torch.Generator().manual_seed(2)
    pairs, d = 37, 24
    w = torch.randn(pairs, d, generator=gen, dtype=torch.float64)
    w[3] = 0  # v = 0 with m = 0: p = 1/2, PP = 1
    mean = torch.randn(*((pairs, d) if mean_kind == "per_pair" else (d,)), generator=gen, dtype=torch.float64)
    if var_kind == "full":
        a = torch.randn(d, d, generator=gen, dtype=torch.float64)
        var = a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    else:
        var = torch.rand(d, generator=gen, dtype=torch.float64) + 0.05
    w, mean, var = w.to(dtype), mean.to(dtype), var.to(dtype)
    got = plasticity.pairwise(w.cuda(), mean.cuda(), var.cuda())
    want = plasticity.pairwise(w, mean, var)
    twin = reference.plasticity.pairwise(w, mean, var)
    for name in ("m", "v", "p", "pp"):
        g = getattr(got, name)
        assert g.device.type == "cuda" and g.dtype == torch.float64 and g.shape == (pairs,), name
        _close(g, getattr(want, name), name, rtol=1e-10, atol=1e-12)
        _close(g, getattr(twin, name), name, rtol=1e-10, atol=1e-12)


@needs_cuda
def test_plasticity_pairwise_mixed_dtypes_strides_and_errors():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(9, 7000, generator=gen)[:, ::2]  # d = 3500, column stride 2
    mean = torch.randn(3500, generator=gen, dtype=torch.float64)
    var = torch.rand(3500, generator=gen).half()
    got = plasticity.pairwise(w.cuda(), mean.cuda(), var.cuda())
    want = plasticity.pairwise(w, mean, var)
    for name in ("m", "v", "p", "pp"):
        _close(getattr(got, name), getattr(want, name), name, rtol=1e-10, atol=1e-12)
    big = torch.randn(3, 7000, generator=gen, dtype=torch.float64)  # d beyond the shared-memory stage
    got = plasticity.pairwise(big.cuda(), big[0].cuda(), torch.ones(7000, dtype=torch.float64, device="cuda"))
    want = plasticity.pairwise(big, big[0], torch.ones(7000, dtype=torch.float64))
    _close(got.v, want.v, "v", rtol=1e-10, atol=0)
    empty = plasticity.pairwise(
        torch.zeros(0, 3, device="cuda"), torch.zeros(3, device="cuda"), torch.ones(3, device="cuda")
    )
    assert empty.pp.shape == (0,)
    with pytest.raises(ValueError, match=r"var has a negative variance -1(\.0+)? at index 1"):
        plasticity.pairwise(
            torch.ones(2, 3, device="cuda"),
            torch.zeros(3, device="cuda"),
            torch.tensor([1.0, -1.0, 1.0], device="cuda"),
        )
    cov = torch.eye(3, device="cuda")
    cov[2, 2] = -2
    with pytest.raises(ValueError, match=r"negative variance -2(\.0+)? on its diagonal at \(2, 2\)"):
        plasticity.pairwise(torch.ones(2, 3, device="cuda"), torch.zeros(3, device="cuda"), cov)
    with pytest.raises(ValueError, match=r"must be on the same CUDA device"):
        plasticity.pairwise(torch.ones(2, 3, device="cuda"), torch.zeros(3), torch.ones(3, device="cuda"))


@needs_cuda
def test_opcheck_on_cuda():
    q, k = _qk(1, 2, 1, 9, 11, 8, torch.float32)
    torch.library.opcheck(torch.ops.spectra.attn_row_stats.default, (q.cuda(), k.cuda(), 0.3))
    torch.library.opcheck(torch.ops.spectra.vec_stats.default, (torch.randn(3, 5, 8, device="cuda"),))
    torch.library.opcheck(
        torch.ops.spectra.plasticity_pairwise.default,
        (torch.randn(4, 3, device="cuda"), torch.randn(3, device="cuda"), torch.ones(3, device="cuda")),
    )
