"""attn_row_stats on a CUDA GPU vs PyTorch SDPA forward on the same Q/K(/V), in one process.

    python benchmarks/cuda_metrics_vs_sdpa.py [--lengths 4096 32768 131072] [--dtypes bf16 fp16] [--repeats 5]

Llama-3-8B attention shapes: batch 1, 32 query heads sharing 8 KV heads (GQA), head_dim 128, causal,
scaling 128**-0.5. The metrics side is torch.ops.spectra.attn_row_stats (every per-row statistic,
k_eff at θ = 0.9, O(T) memory); the baseline is torch.nn.functional.scaled_dot_product_attention's
forward on the same Q and K (V random), with enable_gqa=True where torch has it, else K/V expanded
to 32 heads before timing. Both are timed with CUDA events after --warmup calls; the table shows
the median of --repeats calls, the peak memory above the pre-call level (torch.cuda.max_memory_allocated
delta: outputs and workspace, not the inputs) and the ratios metrics / SDPA. The design target is a
time ratio of at most 2.

Without a CUDA GPU, or with a build of spectra that has no CUDA kernels, the script prints why and
exits with status 0 (`make bench` runs every script in benchmarks/ and must not stop here).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cuda_timed(fn, warmup: int, repeats: int) -> tuple[float, int]:
    """(median seconds, peak bytes above the level before the calls) of fn() on the current stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
        del out
    peak = torch.cuda.max_memory_allocated() - base
    return statistics.median(times), peak


def sdpa_has_gqa() -> bool:
    """Whether this torch's SDPA takes enable_gqa (2.5+): K/V with fewer heads than Q, never expanded."""
    q, k = torch.zeros(1, 2, 1, 8, device="cuda"), torch.zeros(1, 1, 1, 8, device="cuda")
    try:
        F.scaled_dot_product_attention(q, k, k, enable_gqa=True)
    except TypeError:
        return False
    return True


def measure(
    length: int, dtype: torch.dtype, heads: int, kv_heads: int, dim: int, gqa: bool, args: argparse.Namespace
) -> tuple[float, int, float, int]:
    """(metrics seconds, metrics peak bytes, SDPA seconds, SDPA peak bytes) at one length."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, heads, length, dim, device="cuda", dtype=dtype, generator=gen)
    k = torch.randn(1, kv_heads, length, dim, device="cuda", dtype=dtype, generator=gen)
    v = torch.randn(1, kv_heads, length, dim, device="cuda", dtype=dtype, generator=gen)
    if gqa:
        k_sdpa, v_sdpa, extra = k, v, {"enable_gqa": True}
    else:
        group = heads // kv_heads
        k_sdpa, v_sdpa, extra = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), {}
    scaling = dim**-0.5

    def metrics():
        # attn_row_stats(q, k, scaling, key_valid, causal, sliding_window, query_offset, threshold, n_sink, softcap)
        return torch.ops.spectra.attn_row_stats.default(q, k, scaling, None, True, 0, None, args.threshold, 4, 0.0)

    def sdpa():
        return F.scaled_dot_product_attention(q, k_sdpa, v_sdpa, is_causal=True, scale=scaling, **extra)

    mt, mm = cuda_timed(metrics, args.warmup, args.repeats)
    st, sm = cuda_timed(sdpa, args.warmup, args.repeats)
    return mt, mm, st, sm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768, 131072])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16"])
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("cuda_metrics_vs_sdpa: needs a CUDA GPU (torch.cuda.is_available() is False); nothing measured.")
        return 0
    import spectra  # noqa: F401  (importing it registers torch.ops.spectra)

    if not torch._C._dispatch_has_kernel_for_dispatch_key("spectra::attn_row_stats", "CUDA"):
        print(
            "cuda_metrics_vs_sdpa: this build of spectra has no CUDA kernels (build it where torch is a CUDA "
            "build and nvcc is on PATH); nothing measured."
        )
        return 0

    heads, kv_heads, dim = args.heads, args.kv_heads, args.head_dim
    props = torch.cuda.get_device_properties(0)
    gqa = sdpa_has_gqa()
    print(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), {props.name}, sm_{props.major}{props.minor}, "
        f"{props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB"
    )
    print(
        f"batch 1, H={heads} Hkv={kv_heads} D={dim}, causal, k_eff θ={args.threshold}, "
        f"SDPA {'enable_gqa=True' if gqa else 'with K/V expanded to H heads'}, median of {args.repeats}"
    )
    header = (
        f"{'T':>7} {'dtype':>5} {'metrics ms':>11} {'SDPA ms':>9} {'time ratio':>11} "
        f"{'metrics MiB':>12} {'SDPA MiB':>9} {'mem ratio':>10}"
    )
    print(header)
    mib = 1 << 20
    for name in args.dtypes:
        for length in args.lengths:
            try:
                mt, mm, st, sm = measure(length, DTYPES[name], heads, kv_heads, dim, gqa, args)
            except torch.cuda.OutOfMemoryError as exc:
                print(f"{length:>7} {name:>5}  out of memory: {exc}")
                torch.cuda.empty_cache()
                continue
            print(
                f"{length:>7} {name:>5} {mt * 1e3:>11.2f} {st * 1e3:>9.2f} {mt / st:>10.2f}x "
                f"{mm / mib:>12.1f} {sm / mib:>9.1f} {mm / max(sm, 1):>9.2f}x"
            )
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
