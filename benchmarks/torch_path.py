"""attn_row_stats on the CPU: the torch path vs the native kernel, and the torch path's memory vs the
T×T reference, in one process.

    python benchmarks/torch_path.py [--lengths 512 2048 8192] [--heads 4 --kv-heads 1] [--repeats 5]

Batch 1, H=4 query heads sharing 1 KV head, D=64, causal, float32, k_eff θ = 0.9. Side by side on
the same q/k: spectra.ops.torch_path.attn_row_stats (plain torch ops) and spectra.attn_row_stats
under spectra.backend("native") (the C++ kernel). Prints the median of --repeats calls of each
(alternating), the ratio torch path / native, and the peak memory above the pre-call level
(spectra.testing.benchmarking: glibc bytes in use, sampled every 0.2 ms) of the torch path, the
native kernel and, at the largest length, spectra.ops.reference.attn_row_stats, which materialises
the (B, H, T, T) logits (one run; skipped if it would need more than --max-reference-gib).
"""

from __future__ import annotations

import argparse
import statistics

import torch

import spectra
from spectra.ops import reference
from spectra.testing.benchmarking import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=1)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-reference-gib", type=float, default=12.0)
    args = parser.parse_args()
    from spectra.ops import torch_path

    torch.set_num_threads(args.threads)
    heads, kv_heads, dim = args.heads, args.kv_heads, args.head_dim
    print(
        f"torch {torch.__version__}, {args.threads} threads, B=1 H={heads} Hkv={kv_heads} D={dim}, causal, float32, "
        f"median of {args.repeats}"
    )
    print(
        f"{'T':>6} {'torch ms':>10} {'native ms':>10} {'torch/native':>13} {'torch MiB':>10} {'native MiB':>11} "
        f"{'T×T ref MiB':>12} {'ref/torch mem':>14}"
    )
    mib = 1 << 20
    for length in args.lengths:
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(1, length, heads, dim, generator=gen).transpose(1, 2)  # as the model hands it over
        k = torch.randn(1, kv_heads, length, dim, generator=gen)

        def native(q=q, k=k):
            with spectra.backend("native"):
                return spectra.attn_row_stats(q, k)

        def plain(q=q, k=k):
            return torch_path.attn_row_stats(q, k)

        native()
        plain()
        n_runs, t_runs = [], []
        for _ in range(args.repeats):  # alternating, so drift on a shared machine hits both alike
            t_runs.append(timed(plain))
            n_runs.append(timed(native))
        tt, nt = statistics.median(r[0] for r in t_runs), statistics.median(r[0] for r in n_runs)
        tm, nm = max(r[1] for r in t_runs), max(r[1] for r in n_runs)
        ref_cell, ratio_cell = f"{'-':>12}", f"{'-':>14}"
        # (B, H, T, T) float32 logits, probabilities and sorted copies: about 4 such matrices at once.
        ref_gib = 4 * heads * length * length * 4 / 2**30
        if length == max(args.lengths):
            if ref_gib <= args.max_reference_gib:
                _, rm, _ = timed(lambda q=q, k=k: reference.attn_row_stats(q, k))
                ref_cell, ratio_cell = f"{rm / mib:>12.1f}", f"{rm / max(tm, 1):>13.0f}x"
            else:
                ref_cell = f"{'(>' + str(args.max_reference_gib) + ' GiB)':>12}"
        print(
            f"{length:>6} {tt * 1e3:>10.1f} {nt * 1e3:>10.1f} {tt / nt:>12.2f}x {tm / mib:>10.1f} {nm / mib:>11.2f} "
            f"{ref_cell} {ratio_cell}",
            flush=True,
        )


if __name__ == "__main__":
    main()
