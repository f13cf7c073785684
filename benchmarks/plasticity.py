"""Per-head attention plasticity: Spectra's native path vs the published tool's method in NumPy/SciPy.

    python benchmarks/plasticity.py [--rows 8192] [--dim 128] [--buckets 16] [--examples 8]
                                    [--pairs 256] [--repeats 3]

One head of ``rows`` query rows and ``rows`` key rows of dimension ``dim``, sampled like the
thesis's captures (``examples`` documents of 131072 tokens, ``buckets`` uniform buckets, the rows of
an example spread evenly over its positions), Gaussian with a positional drift. Baseline: the
published attention-plasticity method as written (a literal scalar-loop port in
``spectra.reference.plasticity_published``: dense X @ H, SciPy diagnostics, one Python iteration
per drawn pair with ``rng.choice`` and a scalar ``norm.cdf``), 256 pairs per (query bucket, key
bucket) cell. Native: ``spectra.plasticity.analyze_head(mode="published")`` on the same rows, from
float32 vectors as captured. Then both evaluate the native run's draws (injected pairs, so RNG
streams do not matter) and the script prints the largest differences.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import torch

from spectra import plasticity
from spectra.ops.reference import plasticity_published as published


def make_head(rng, rows: int, dim: int, buckets: int, examples: int, context: int = 131072):
    per_example = rows // examples
    positions = np.tile(np.linspace(0, context - 1, per_example).round(), examples)
    example = np.repeat(np.arange(examples), per_example)
    direction = rng.normal(size=dim) / np.sqrt(dim)
    q = rng.normal(size=(len(positions), dim)) + 0.3 + 4e-5 * positions[:, None] * direction
    k = rng.normal(size=(len(positions), dim)) * 1.3 - 0.2 + 2e-5 * positions[:, None] * direction
    bucket = (positions // (context // buckets)).astype(np.int64)
    return q.astype(np.float32), k.astype(np.float32), positions, example, bucket, context // buckets


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    q, k, t, example, bucket, bucket_size = make_head(
        np.random.default_rng(0), args.rows, args.dim, args.buckets, args.examples
    )
    qt, kt = torch.from_numpy(q), torch.from_numpy(k)

    def native():
        return plasticity.analyze_head(
            qt,
            t,
            kt,
            t,
            example,
            q_bucket=bucket,
            k_bucket=bucket,
            bucket_size=bucket_size,
            mode="published",
            pairs_per_cell=args.pairs,
            keep_pairs=True,
        )

    def baseline(pairs=None):
        return published.analyze_head(
            q,
            t,
            bucket,
            None,
            k,
            t,
            bucket,
            example,
            layer=0,
            q_head=0,
            k_head=0,
            num_pairs_per_bucket=args.pairs,
            pairs=pairs,
        )

    native()  # warm-up: the extension, OpenMP threads
    native_s, out = median_time(native, max(args.repeats, 5))
    baseline_s, (row, _, _) = median_time(baseline, args.repeats)
    n_cells = int(out.cells["ap"].notna().sum())
    print(
        f"one head: {args.rows} Q + {args.rows} K rows, d = {args.dim}, {args.buckets} buckets, {n_cells} cells, "
        f"{len(out.pairs)} draws ({args.pairs} per cell), torch threads {torch.get_num_threads()}"
    )
    print(f"  published method (NumPy/SciPy loop)  {1e3 * baseline_s:9.1f} ms   ap_overall {row['ap_overall']:.6f}")
    print(f"  spectra native (published mode)      {1e3 * native_s:9.1f} ms   ap_overall {out.row['ap_overall']:.6f}")
    print(f"  speed-up {baseline_s / native_s:.1f}x")

    # The same draws through both: cells, diagnostics and component weights must agree.
    keys = list(zip(out.cells["q_cell"].astype(int), out.cells["k_bucket"].astype(int)))
    pairs = {keys[c]: list(zip(p["first"].tolist(), p["second"].tolist())) for c, p in out.pairs.groupby("cell")}
    row, cell_rows, component_rows = baseline(pairs)
    port = {(r["q_bucket"], r["k_bucket"]): r["ap_bucket"] for r in cell_rows}
    native_cells = dict(zip(keys, out.cells["ap"]))
    cell_diff = max(abs(port[key] - native_cells[key]) for key in port)
    diag = max(
        abs(out.row[c] - row[c]) / max(abs(row[c]), 1e-300) for c in published.HEAD_COLUMNS[6:-1] if np.isfinite(row[c])
    )
    weight_diff = float(
        np.max(
            np.abs(
                pd.DataFrame(component_rows)["component_weight"].to_numpy()
                - out.components["component_weight"].to_numpy()
            )
        )
    )
    print(
        f"  injected pairs: {len(port)} cells, max |cell AP difference| {cell_diff:.1e}, "
        f"ap_overall difference {abs(row['ap_overall'] - out.row['ap_overall']):.1e}"
    )
    print(f"  diagnostics max relative difference {diag:.1e}, component weights max difference {weight_diff:.1e}")


if __name__ == "__main__":
    main()
