"""The torch path (spectra.ops.torch_path) against the native kernels and the float64 twins, its
memory bound, its place in the dispatcher, and the backend setting that picks it.

The 2× error rule for every op, mask option and dtype is applied by test_attn_row_stats.py,
test_vec_stats.py and test_plasticity_pairwise.py, which run every test on both implementations.
Here: the two implementations side by side on the same inputs.
"""

import importlib
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import spectra
from spectra.ops import backend as backends
from spectra.ops import reference, torch_path
from spectra.ops.torch_path import registration
from spectra.testing.tolerance import FLOAT_DTYPES

# The module (the package re-exports the function under the same name).
torch_attn = importlib.import_module("spectra.ops.torch_path.attn_row_stats")

MASKS = {
    "causal": {},
    "bidirectional": {"causal": False},
    "sliding_window": {"sliding_window": 5},
    "bidirectional_window": {"causal": False, "sliding_window": 4},
    "key_padding": {"pad": 6},
    "softcap": {"softcap": 3.0},
    "query_offset": {"query_offset": 4},
    "cache": {"extra_keys": 9},  # queries after 9 cached keys: query_offset = Tk − Tq
}


def inputs(dtype, *, batch=2, kv_heads=2, group=3, query_len=37, extra_keys=0, dim=24, pad=0, seed=0, scale=1.5):
    gen = torch.Generator().manual_seed(seed)
    key_len = query_len + extra_keys
    q = (torch.randn(batch, query_len, kv_heads * group, dim, generator=gen) * scale).transpose(1, 2).to(dtype)
    k = torch.randn(batch, kv_heads, key_len, dim, generator=gen).to(dtype)
    key_valid = torch.ones(batch, key_len, dtype=torch.bool)
    key_valid[-1, :pad] = False  # left padding on the last sequence
    return q, k, key_valid


def tie_band(q, k, out, threshold, **mask):
    """Rows whose k_eff the float64 truth leaves within rounding of a tie (either count is right)."""
    truth = reference.attn_row_stats(q, k, threshold=threshold, compute_dtype=torch.float64, **mask)
    keys = k.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = q.double() @ keys.transpose(-1, -2) * q.shape[-1] ** -0.5
    if mask.get("softcap"):
        logits = mask["softcap"] * torch.tanh(logits / mask["softcap"])
    visible = reference.visible_keys(
        q.shape[2],
        k.shape[2],
        causal=mask.get("causal", True),
        sliding_window=mask.get("sliding_window"),
        query_offset=mask.get("query_offset"),
        key_valid=mask.get("key_valid"),
    )
    p = torch.softmax(logits.masked_fill(~visible, -math.inf), dim=-1).nan_to_num()
    cumulative = p.sort(dim=-1, descending=True).values.cumsum(-1)
    before = cumulative.gather(-1, (truth.k_eff - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (before - (threshold - 1e-6)).abs() < 1e-5


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mask_name", list(MASKS))
def test_torch_path_equals_the_native_kernel(dtype, mask_name):
    options = dict(MASKS[mask_name])
    q, k, key_valid = inputs(
        dtype, pad=options.pop("pad", 0), extra_keys=options.pop("extra_keys", 0), seed=len(mask_name)
    )
    mask = {"key_valid": key_valid, **options}
    with spectra.backend("native"):
        native = spectra.attn_row_stats(q, k, threshold=0.8, n_sink=3, **mask)
    with spectra.backend("torch"):
        torch_out = spectra.attn_row_stats(q, k, threshold=0.8, n_sink=3, **mask)
    assert torch.equal(native.n_visible, torch_out.n_visible)
    out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    eps = torch.finfo(out_dtype).eps
    for name in ("entropy", "entropy_normalized", "max_attn", "sink_mass", "sink_mass_n", "logit_var"):
        a, b = getattr(native, name), getattr(torch_out, name)
        assert a.dtype == b.dtype == out_dtype, name
        assert torch.equal(a.isnan(), b.isnan()), name
        # Both within the 2× rule of the float64 truth (test_attn_row_stats.py): they differ by at most
        # a few hundred ulps of the row's O(1) terms (sums over ~40 keys in another order).
        torch.testing.assert_close(a, b, rtol=256 * eps, atol=256 * eps, equal_nan=True, msg=name)
    # argmax and k_eff: equal except where the float64 truth itself is within rounding of a tie.
    assert torch.equal(native.argmax, torch_out.argmax) or dtype in (torch.float16, torch.bfloat16)
    band = tie_band(q, k, native, 0.8, **mask)
    assert torch.equal(native.k_eff[~band], torch_out.k_eff[~band])


def test_half_inputs_agree_on_argmax_outside_near_ties():
    # 16-bit inputs: both widen to float32 before the dot products, so only summation order differs.
    q, k, _ = inputs(torch.bfloat16, query_len=64, seed=11)
    with spectra.backend("native"):
        native = spectra.attn_row_stats(q, k)
    with spectra.backend("torch"):
        other = spectra.attn_row_stats(q, k)
    assert (native.argmax == other.argmax).float().mean().item() > 0.99
    assert other.entropy.dtype == torch.float32


@pytest.mark.parametrize("rows", [1, 5, 16, 40])
def test_query_blocks_do_not_change_the_result(rows):
    q, k, key_valid = inputs(torch.float32, query_len=40, extra_keys=3, pad=4, seed=2)
    mask = {"key_valid": key_valid, "sliding_window": 9}
    whole = torch_path.attn_row_stats(q, k, rows_per_block=40, **mask)
    blocked = torch_path.attn_row_stats(q, k, rows_per_block=rows, **mask)
    for name, a in whole._asdict().items():
        b = getattr(blocked, name)
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, equal_nan=True, msg=name)
        else:
            assert torch.equal(a, b), name


def test_float32_matmul_precision_setting_does_not_reach_the_logits():
    q, k, _ = inputs(torch.float32, seed=8)
    exact = torch_path.attn_row_stats(q, k)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # bf16 products where the hardware has them
    try:
        relaxed = torch_path.attn_row_stats(q, k)
        assert torch.get_float32_matmul_precision() == "medium"  # restored after the op
    finally:
        torch.set_float32_matmul_precision(previous)
    for a, b in zip(exact, relaxed):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_memory_is_block_times_keys_not_t_squared(monkeypatch):
    monkeypatch.setitem(torch_attn.BLOCK_ELEMENTS, "cpu", 1 << 16)
    batch, heads, length = 1, 2, 1024
    q = torch.randn(batch, heads, length, 16)
    k = torch.randn(batch, 1, length, 16)
    rows = torch_attn.block_rows(q.device, batch, heads, length)
    assert rows == (1 << 16) // (heads * length)
    with LargestTensor() as seen:
        torch_path.attn_row_stats(q, k)
    # The largest intermediate is one block's (B, H, rows, keys) logits, a 1/32 of the T×T matrix here.
    assert seen.largest <= batch * heads * rows * length
    assert seen.largest * 20 <= batch * heads * length * length


def test_every_op_has_a_cuda_implementation():
    # A CUDA tensor reaches a linked CUDA kernel or the torch path: never NotImplementedError.
    for op in backends.OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"spectra::{op}", "CUDA"), op
    assert set(registration.CUDA_FALLBACKS) == set(backends.OPS) - backends.LINKED_CUDA
    # What the dispatcher had before the torch path was registered is what CMake linked.
    assert backends.LINKED_CUDA == set(spectra.ops._core.build_info()["cuda_kernels"])


def test_torch_overloads_pass_opcheck_and_compile():
    # As for the native op: schema and fake kernel (the NaN outputs of rows with < 2 keys defeat
    # opcheck's eager-vs-traced comparison, which does not treat NaN as equal).
    q, k, key_valid = inputs(torch.float32, query_len=9, seed=4)
    checks = ("test_schema", "test_faketensor")
    torch.library.opcheck(
        torch.ops.spectra.attn_row_stats.torch, (q, k, 0.2, key_valid, True, 3, None, 0.9, 4, 0.0), test_utils=checks
    )
    torch.library.opcheck(torch.ops.spectra.vec_stats.torch, (q,))
    w = torch.randn(5, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.spectra.plasticity_pairwise.torch, (w, torch.zeros(3), torch.ones(3)))
    with spectra.backend("torch"):
        compiled = torch.compile(
            lambda a, b: spectra.attn_row_stats(a * 2, b).entropy, backend="aot_eager", fullgraph=True
        )
        torch.testing.assert_close(compiled(q, k), spectra.attn_row_stats(q * 2, k).entropy)


def test_the_dispatcher_entries_equal_the_functions():
    q, k, key_valid = inputs(torch.float32, seed=5)
    direct = torch_path.attn_row_stats(q, k, 0.3, key_valid=key_valid, sliding_window=6)
    via_dispatcher = torch.ops.spectra.attn_row_stats.torch(q, k, 0.3, key_valid, True, 6, None, 0.9, 4, 0.0)
    for a, b in zip(direct, via_dispatcher):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())


# ---- choosing the implementation ----


def test_backend_setting_resolution(monkeypatch):
    monkeypatch.delenv("SPECTRA_BACKEND", raising=False)
    assert backends.current() == "auto"
    assert backends.resolve("attn_row_stats", "cpu") == "native"
    monkeypatch.setenv("SPECTRA_BACKEND", "torch")
    assert backends.resolve("attn_row_stats", "cpu") == "torch"
    with spectra.backend("native"):  # the context manager wins over the environment
        assert backends.resolve("vec_stats", "cpu") == "native"
        with spectra.backend("torch"):
            assert backends.current() == "torch"
        assert backends.current() == "native"
    assert backends.current() == "torch"
    # A device without a linked kernel: auto falls back, native refuses with the reason.
    monkeypatch.setenv("SPECTRA_BACKEND", "auto")
    assert backends.resolve("attn_row_stats", "mps") == "torch"
    with spectra.backend("native"), pytest.raises(ValueError, match="SPECTRA_BACKEND=native: this build links no"):
        backends.resolve("attn_row_stats", "mps")


def test_bad_backend_names_are_refused(monkeypatch):
    monkeypatch.setenv("SPECTRA_BACKEND", "cuda")
    with pytest.raises(ValueError, match=r"SPECTRA_BACKEND='cuda': allowed values are auto, native, torch"):
        spectra.vec_stats(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"backend='fast': allowed values are auto, native, torch"):
        with spectra.backend("fast"):
            pass


@pytest.mark.parametrize("implementation", ["native", "torch"])
def test_bad_input_names_the_argument(implementation):
    q = torch.randn(1, 2, 3, 4)
    with spectra.backend(implementation):
        with pytest.raises(ValueError, match=r"attn_row_stats: q, k must be on the same device; got cpu, meta"):
            spectra.attn_row_stats(q, torch.empty(1, 2, 3, 4, device="meta"))
        with pytest.raises(TypeError, match="q has dtype Long; allowed dtypes are float16, bfloat16, float32"):
            spectra.attn_row_stats(q.long(), q.long())
        with pytest.raises(TypeError, match="x has dtype Int; allowed dtypes"):
            spectra.vec_stats(torch.ones(2, 3, dtype=torch.int32))
        with pytest.raises(ValueError, match="w, mean, var must be on the same device"):
            spectra.plasticity.pairwise(torch.ones(2, 3), torch.ones(3), torch.ones(3, device="meta"))
        with pytest.raises(ValueError, match="var has a negative variance -1 at index 1"):
            spectra.plasticity.pairwise(torch.ones(2, 3), torch.ones(3), torch.tensor([1.0, -1.0, 1.0]))
