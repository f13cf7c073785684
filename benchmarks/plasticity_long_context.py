"""Attention plasticity end to end at long context: capture q and k of every head of a random-init
Llama-shaped model with the Probe (streamed to Parquet), then analyse every head.

    python benchmarks/plasticity_long_context.py [--context 8192] [--examples 2] [--mode thesis]

Prints the capture time, the analysis time, the rows per head and the process's peak resident
memory after each phase (the forward pass dominates; the analysis holds one head's rows at a time).
On CPU the default (T = 8192) takes well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from spectra import plasticity
from spectra.jobs.plasticity.run import capture_random_llama


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--examples", type=int, default=2)
    parser.add_argument("--mode", default="thesis", choices=["thesis", "published"])
    args = parser.parse_args()
    start_rss = peak_rss_mib()  # torch and the extension, before any model exists
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "qk"
        meta = capture_random_llama(folder, context_length=args.context, n_examples=args.examples)
        capture_rss = peak_rss_mib()
        rows = max(meta["rows"].values())
        start = time.perf_counter()
        tables = plasticity.analyze(folder, args.mode)
        analyse_s = time.perf_counter() - start
    heads = tables.heads
    print(
        f"random Llama-shaped model: {meta['model']['n_layers']} layers, {meta['model']['n_heads']} query / "
        f"{meta['model']['n_kv_heads']} KV heads, d = {meta['model']['head_dim']}, T = {args.context}, "
        f"{args.examples} examples, B = {tables.meta['bucket_size']}; peak RSS after imports {start_rss:.0f} MiB"
    )
    print(f"  capture (forward + Probe to Parquet)  {meta['seconds']:7.1f} s   peak RSS {capture_rss:7.0f} MiB")
    print(
        f"  plasticity ({args.mode}, {len(heads)} heads, {rows} rows per file)  {analyse_s:7.1f} s   "
        f"peak RSS {peak_rss_mib():7.0f} MiB"
    )
    print(f"  ap_overall mean {heads['ap_overall'].mean():.4f}, {int(heads['n_pairs'].sum())} pairs")


if __name__ == "__main__":
    main()
