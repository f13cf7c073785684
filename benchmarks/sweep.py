"""The global gain map (exp2b) of every head of the embedded model: Spectra's local mode vs the
naive way, side by side in one process.

    python benchmarks/sweep.py [--samples 8] [--context 128] [--batch-size 8]

Naive (what the seed's compute_global_gain.py did per head and alpha, but as real interventions):
one full forward per (head, alpha) with ``ScaleQuery`` applied inside the model and a Probe
measuring that head's attention rows. Spectra: ``scale_sweep(mode="local")``, one forward per
batch in which the native kernel reads every layer's q and k at each alpha. Both give the target
head's own metrics under the scaling (checked here to agree); the script prints the times, the
ratio, and the largest difference between the two tables.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

import spectra
from spectra.interventions import DEFAULT_ALPHAS, scale_sweep
from spectra.models import zoo
from spectra.testing.benchmarking import timed


def windows(tokenizer, n: int, length: int) -> torch.Tensor:
    ids = tokenizer(zoo.heldout_text(), add_special_tokens=False).input_ids
    return torch.tensor(ids[: n * length]).view(n, length)


def naive_gain_map(model, ids: torch.Tensor, alphas, batch_size: int, ignore_first: int = 2) -> pd.DataFrame:
    config = model.config
    rows = []
    for layer in range(config.num_hidden_layers):
        for head in range(config.num_attention_heads):
            for alpha in alphas:
                for start in range(0, len(ids), batch_size):
                    batch = ids[start : start + batch_size]
                    probe = spectra.Probe(model, layers=[layer], heads=[head], capture=(), row_stats=True)
                    probe.set_example_ids(range(start, start + len(batch)))
                    with torch.no_grad(), spectra.intervene(model, spectra.ScaleQuery(layer, head, alpha)), probe:
                        model(batch)
                    c = probe.drain_row_stats()
                    keep = c["position"] >= ignore_first
                    frame = pd.DataFrame(
                        {
                            "sample": c["example_id"][keep],
                            "entropy": c["entropy"][keep],
                            "max_attn": c["max_attn"][keep],
                            "k_eff": c["k_eff"][keep],
                        }
                    )
                    means = frame.groupby("sample").mean().reset_index()
                    rows.append(means.assign(layer=layer, head=head, alpha=alpha))
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tok = zoo.load("tiny-llama")
    ids = windows(tok, args.samples, args.context)
    alphas = DEFAULT_ALPHAS
    n_heads = model.config.num_hidden_layers * model.config.num_attention_heads
    print(
        f"tiny-llama: {n_heads} heads x {len(alphas)} alphas, {args.samples} windows x {args.context} tokens, "
        f"{torch.get_num_threads()} threads"
    )
    scale_sweep(model, ids[:1], [(0, 0)], alphas)  # warm-up (switch, kernels)
    t_local, mem_local, local = timed(lambda: scale_sweep(model, ids, "all", alphas, batch_size=args.batch_size))
    t_naive, mem_naive, naive = timed(lambda: naive_gain_map(model, ids, alphas, args.batch_size))
    merged = local.merge(naive, on=["layer", "head", "alpha", "sample"], suffixes=("_local", "_naive"))
    assert len(merged) == len(local) == len(naive)
    diffs = {
        m: float(np.abs(merged[f"{m}_local"] - merged[f"{m}_naive"]).max()) for m in ("entropy", "max_attn", "k_eff")
    }
    print(
        f"naive (forward per head and alpha): {t_naive:8.2f} s  ({n_heads * len(alphas)} x "
        f"{-(-args.samples // args.batch_size)} forwards)"
    )
    print(f"spectra local mode:                 {t_local:8.2f} s  ({-(-args.samples // args.batch_size)} forwards)")
    print(f"speed-up: {t_naive / t_local:.1f}x   (target >= 20x)")
    print(f"peak extra host memory: naive {mem_naive / 2**20:.1f} MiB, local {mem_local / 2**20:.1f} MiB")
    print("max |local - naive| per-sample means: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
