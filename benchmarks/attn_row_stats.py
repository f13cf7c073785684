"""attn_row_stats: native kernel vs its materialising twin (spectra.reference), in one process.

    python benchmarks/attn_row_stats.py [--lengths 512 2048 8192] [--threads N]

H=8 query heads sharing 2 KV heads, D=64, causal, float32, batch 1. The twin is the seed's method
with its bugs fixed: the (B, H, T, T) logits, softmax, a full sort and a cumsum per row. Prints
the median time of each (one run for the twin at T >= 8192, where it needs gigabytes), the peak
memory above the pre-call level (spectra.testing.benchmarking), and both ratios.
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
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    heads, kv_heads, dim = 8, 2, 64
    print(f"torch {torch.__version__}, {args.threads} threads, H={heads} Hkv={kv_heads} D={dim}, causal, float32")
    print(
        f"{'T':>6} {'native ms':>10} {'twin ms':>10} {'speed-up':>9} {'native MiB':>11} {'twin MiB':>10} {'memory ratio':>13}"
    )
    for length in args.lengths:
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(1, length, heads, dim, generator=gen).transpose(1, 2)  # as the model hands it over
        k = torch.randn(1, kv_heads, length, dim, generator=gen)
        native = lambda q=q, k=k: spectra.attn_row_stats(q, k)  # noqa: E731
        twin = lambda q=q, k=k: reference.attn_row_stats(q, k)  # noqa: E731
        native()
        n_runs = [timed(native) for _ in range(args.repeats)]
        t_runs = [timed(twin) for _ in range(1 if length >= 8192 else args.repeats)]
        nt, tt = statistics.median(r[0] for r in n_runs), statistics.median(r[0] for r in t_runs)
        nm, tm = max(r[1] for r in n_runs), max(r[1] for r in t_runs)
        mib = 1 << 20
        print(
            f"{length:>6} {nt * 1e3:>10.1f} {tt * 1e3:>10.1f} {tt / nt:>8.1f}x {nm / mib:>11.2f} {tm / mib:>10.1f} "
            f"{tm / max(nm, 1):>12.0f}x"
        )


if __name__ == "__main__":
    main()
