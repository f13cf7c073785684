"""attn_row_stats on a CUDA GPU vs PyTorch SDPA forward on the same Q/K(/V), in one process.

    python benchmarks/cuda_metrics_vs_sdpa.py [--lengths 4096 32768 131072] [--dtypes bf16 fp16] [--repeats 5]

Llama-3-8B attention shapes: batch 1, 32 query heads sharing 8 KV heads (GQA), head_dim 128, causal,
scaling 128**-0.5. The metrics side is torch.ops.spectra.attn_row_stats (every per-row statistic,
k_eff at θ = 0.9, O(T) memory); the baseline is torch.nn.functional.scaled_dot_product_attention's
forward on the same Q and K (V random), with enable_gqa=True where torch has it, else K/V expanded
to 32 heads before timing. Both are timed with CUDA events after --warmup calls; the table shows
the median of --repeats calls, the peak memory above the pre-call level (torch.cuda.max_memory_allocated
delta: outputs and workspace, not the inputs) and the ratios metrics / SDPA. The design target is a
time ratio of at most 2. The torch path (spectra.ops.torch_path.attn_row_stats, plain torch ops on
the same GPU) is timed the same way, side by side, where the checkout has it.

Without a CUDA GPU, or with neither a build of spectra with CUDA kernels nor the torch path, the
script prints why and exits with status 0 (`make bench` runs every script in benchmarks/ and must not stop here).
"""

from __future__ import annotations

import argparse
import functools
import json
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
    length: int,
    dtype: torch.dtype,
    heads: int,
    kv_heads: int,
    dim: int,
    gqa: bool,
    paths: dict,
    args: argparse.Namespace,
) -> dict[str, tuple[float, int] | str]:
    """{path: (median seconds, peak bytes) or the error} at one length, for each of paths and SDPA."""
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
    calls = {name: functools.partial(fn, q, k, scaling, args.threshold) for name, fn in paths.items()}
    calls["SDPA"] = lambda: F.scaled_dot_product_attention(q, k_sdpa, v_sdpa, is_causal=True, scale=scaling, **extra)
    out: dict[str, tuple[float, int] | str] = {}
    for name, fn in calls.items():
        try:
            out[name] = cuda_timed(fn, args.warmup, args.repeats)
        except torch.cuda.OutOfMemoryError:
            out[name] = "out of memory"
        torch.cuda.empty_cache()
    return out


def kernel(q, k, scaling, threshold):
    # attn_row_stats(q, k, scaling, key_valid, causal, sliding_window, query_offset, threshold, n_sink, softcap)
    return torch.ops.spectra.attn_row_stats.default(q, k, scaling, None, True, 0, None, threshold, 4, 0.0)


def torch_path_call(q, k, scaling, threshold):
    from spectra.ops import torch_path

    return torch_path.attn_row_stats(q, k, scaling, causal=True, threshold=threshold)


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
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("cuda_metrics_vs_sdpa: needs a CUDA GPU (torch.cuda.is_available() is False); nothing measured.")
        return 0
    import spectra  # noqa: F401  (importing it registers torch.ops.spectra)

    paths = {}
    if torch._C._dispatch_has_kernel_for_dispatch_key("spectra::attn_row_stats", "CUDA"):
        paths["kernel"] = kernel
    else:
        print("cuda_metrics_vs_sdpa: this build of spectra has no CUDA kernels (SPECTRA_WITH_CUDA=ON builds them).")
    try:
        from spectra.ops import torch_path  # noqa: F401

        paths["torch path"] = torch_path_call
    except ImportError:
        print("cuda_metrics_vs_sdpa: this checkout has no spectra.ops.torch_path.")
    if not paths:
        print("cuda_metrics_vs_sdpa: nothing to measure.")
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
        f"SDPA {'enable_gqa=True' if gqa else 'with K/V expanded to H heads'}, median of {args.repeats}; "
        "ms and peak MiB above the inputs; ratios are path / SDPA"
    )
    names = [*paths, "SDPA"]
    print(
        f"{'T':>7} {'dtype':>5} "
        + " ".join(f"{n + ' ms':>14}" for n in names)
        + " "
        + " ".join(f"{n + ' ratio':>16}" for n in paths)
        + " "
        + " ".join(f"{n + ' MiB':>15}" for n in names)
    )
    mib = 1 << 20
    rows = []
    for name in args.dtypes:
        for length in args.lengths:
            got = measure(length, DTYPES[name], heads, kv_heads, dim, gqa, paths, args)
            sdpa = got["SDPA"]

            def ms(r):
                return f"{r[0] * 1e3:>14.2f}" if isinstance(r, tuple) else f"{r:>14}"

            def ratio(r, sdpa=sdpa):
                ok = isinstance(r, tuple) and isinstance(sdpa, tuple)
                return f"{r[0] / sdpa[0]:>15.2f}x" if ok else f"{'n/a':>16}"

            def mem(r):
                return f"{r[1] / mib:>15.1f}" if isinstance(r, tuple) else f"{'n/a':>15}"

            print(
                f"{length:>7} {name:>5} "
                + " ".join(ms(got[n]) for n in names)
                + " "
                + " ".join(ratio(got[n]) for n in paths)
                + " "
                + " ".join(mem(got[n]) for n in names),
                flush=True,
            )
            rows.append(
                {
                    "T": length,
                    "dtype": name,
                    **{
                        n: ({"ms": r[0] * 1e3, "peak_MiB": r[1] / mib} if isinstance(r, tuple) else {"error": r})
                        for n, r in got.items()
                    },
                }
            )
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"gpu": props.name, "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
