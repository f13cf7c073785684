"""spectra.profile vs the seed's pipeline, and vs a plain forward pass, side by side in one process.

    python benchmarks/profile_vs_seed.py [--samples 16] [--context 256] [--batch-size 4]

Seed-style pipeline (the seed code's capture; its metric bugs fixed so both compute the
same numbers): an eager forward returning every layer's (B, H, T, T) attention, a hook on every
q_proj for the query norms, per-(layer, head) torch sort/cumsum, one Python dict per (sample,
layer, head, token) and a CSV. Spectra: ``spectra.profile`` (one sdpa forward, native
attn_row_stats inside it) and a zstd Parquet file. Both on the embedded tiny-llama, held-out text
in non-overlapping windows. Also prints the profile's cost over the plain forward (backbone,
sdpa, use_cache=False) on the same batches.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile

import pandas as pd
import torch

import spectra
from spectra.metrics.profile import write_profile_parquet
from spectra.models import zoo
from spectra.testing.benchmarking import timed


def windows(tokenizer, n: int, length: int) -> torch.Tensor:
    ids = tokenizer(zoo.heldout_text(), add_special_tokens=False).input_ids
    return torch.tensor(ids[: n * length]).view(n, length)


def seed_pipeline(model, batches, path: str, threshold: float = 0.9, ignore_first: int = 2) -> None:
    config = model.config
    n_heads, head_dim = config.num_attention_heads, config.head_dim
    norms: dict[int, torch.Tensor] = {}
    hooks = [
        layer.self_attn.q_proj.register_forward_hook(
            lambda m, a, out, i=i: norms.__setitem__(
                i, out.view(*out.shape[:-1], n_heads, head_dim).float().norm(dim=-1)
            )
        )
        for i, layer in enumerate(model.model.layers)
    ]
    rows = []
    try:
        sample = 0
        for ids in batches:
            with torch.no_grad():
                attentions = model(ids, output_attentions=True, use_cache=False).attentions
            for layer, p in enumerate(attentions):
                p = p.float()
                entropy = -(p * torch.log(p + 1e-9)).sum(-1)
                max_attn = p.amax(-1)
                cumulative = p.sort(-1, descending=True).values.cumsum(-1)
                k_eff = (cumulative < threshold - 1e-6).sum(-1) + 1
                q_norm = norms[layer]
                for b in range(p.shape[0]):
                    for h in range(p.shape[1]):
                        for t in range(p.shape[2]):
                            early = t < ignore_first
                            rows.append(
                                {
                                    "sample_id": sample + b,
                                    "layer": layer,
                                    "head": h,
                                    "token_pos": t,
                                    "query_norm": float(q_norm[b, t, h]),
                                    "entropy": float("nan") if early else float(entropy[b, h, t]),
                                    "max_attn": float("nan") if early else float(max_attn[b, h, t]),
                                    "k_eff": float("nan") if early else int(k_eff[b, h, t]),
                                }
                            )
            sample += ids.shape[0]
    finally:
        for hook in hooks:
            hook.remove()
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def spectra_pipeline(model, batches, path: str) -> None:
    frames, start = [], 0
    for ids in batches:
        frames.append(
            spectra.profile(
                model,
                ids,
                metrics=("q_norm", "entropy", "max_attn", "k_eff"),
                sample_ids=range(start, start + ids.shape[0]),
            )
        )
        start += ids.shape[0]
    write_profile_parquet(pd.concat(frames, ignore_index=True), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    sdpa, tokenizer = zoo.load("tiny-llama")
    eager, _ = zoo.load("tiny-llama", attn_implementation="eager")
    data = windows(tokenizer, args.samples, args.context)
    batches = list(data.split(args.batch_size))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; tiny-llama, {args.samples} samples x "
        f"{args.context} tokens, batch {args.batch_size}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, parquet_path = os.path.join(tmp, "seed.csv"), os.path.join(tmp, "spectra.parquet")
        spectra_pipeline(sdpa, batches[:1], parquet_path)  # warm-up
        seed_s, seed_mem, _ = timed(lambda: seed_pipeline(eager, batches, csv_path))
        ours_s, ours_mem, _ = timed(lambda: spectra_pipeline(sdpa, batches, parquet_path))
        seed_bytes, ours_bytes = os.path.getsize(csv_path), os.path.getsize(parquet_path)
    mib = 1 << 20
    print(f"{'pipeline':<34} {'seconds':>8} {'peak MiB':>9} {'output MiB':>11}")
    print(f"{'seed-style (eager, dict rows, CSV)':<34} {seed_s:>8.2f} {seed_mem / mib:>9.1f} {seed_bytes / mib:>11.2f}")
    print(f"{'spectra.profile + Parquet':<34} {ours_s:>8.2f} {ours_mem / mib:>9.1f} {ours_bytes / mib:>11.2f}")
    print(
        f"speed-up {seed_s / ours_s:.1f}x, output {seed_bytes / ours_bytes:.1f}x smaller, "
        f"peak memory {seed_mem / max(ours_mem, 1):.1f}x lower"
    )

    def forward():
        for ids in batches:
            with torch.no_grad():
                sdpa.model(ids, use_cache=False)

    def profiled():
        for ids in batches:
            spectra.profile(sdpa, ids)

    forward(), profiled()
    plain = min(timed(forward)[0] for _ in range(3))
    prof = min(timed(profiled)[0] for _ in range(3))
    print(f"plain forward {plain * 1e3:.0f} ms, profile {prof * 1e3:.0f} ms: overhead ratio {prof / plain:.2f}x")


if __name__ == "__main__":
    main()
