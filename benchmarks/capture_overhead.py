"""Cost of capturing with a Probe: plain forward vs forward with the probe, in one process.

    python benchmarks/capture_overhead.py [--device cpu|cuda] [--repeats N] [--threads N]

Two models: the embedded tiny-llama (T=256) and a random-init Llama-shaped model (8 layers,
hidden 1024, 16 heads, 4 KV heads, head_dim 64, T=2048). The probe captures post-RoPE Q and K of
every head of every layer at uniformly sampled positions (bucket 64: each token kept with
probability 1/64). Runs alternate plain / probe so drift hits both; the table reports medians,
their ratio, and each variant's peak memory above the pre-call baseline (CUDA: the allocator's
peak; CPU: peak resident set size, sampled every 0.5 ms from /proc/self/statm).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import spectra
from spectra import zoo

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakMemory:
    """Peak memory above the level at entry, for CPU (sampled RSS) or CUDA (allocator stats)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = rss_bytes()
            self.top = self.base
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.top = max(self.top, rss_bytes())
            time.sleep(0.0005)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.top, rss_bytes()) - self.base


def llama_shaped(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
        num_key_value_heads=4, head_dim=64, max_position_embeddings=4096,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval().to(device)


def measure(model, ids, repeats: int, device: torch.device) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"plain": [], "probe": [], "plain_mem": [], "probe_mem": []}
    rows = 0

    def plain():
        return model(ids, use_cache=False).logits

    def probed():
        nonlocal rows
        probe = spectra.Probe(model, capture=("q", "k"), stage="post_rope", positions="uniform", bucket_size=64)
        with probe:
            out = model(ids, use_cache=False).logits
        rows = sum(c.rows * len(c.heads) for c in probe.registry.captures())
        return out

    with torch.no_grad():
        plain(), probed()  # warm-up (allocator, thread pool, lazy imports)
        for _ in range(repeats):
            for label, fn in (("plain", plain), ("probe", probed)):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                with PeakMemory(device) as mem:
                    start = time.perf_counter()
                    out = fn()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    results[label].append(time.perf_counter() - start)
                results[label + "_mem"].append(mem.peak)
                del out
    results["rows"] = [rows]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {args.threads} threads, median of {args.repeats} alternating runs")
    print(f"{'model':<38} {'T':>5} {'plain ms':>9} {'probe ms':>9} {'ratio':>6} {'plain MiB':>10} {'probe MiB':>10} {'rows':>7}")
    tiny, tok = zoo.load("tiny-llama")
    cases = [
        ("tiny-llama (embedded)", tiny.to(device), 256),
        ("llama-shaped 8L h1024 16H/4KV d64", llama_shaped(device), 2048),
    ]
    for name, model, length in cases:
        ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
        r = measure(model, ids.to(device), args.repeats, device)
        plain, probe = statistics.median(r["plain"]), statistics.median(r["probe"])
        mib = 1 << 20
        print(
            f"{name:<38} {length:>5} {plain * 1e3:>9.1f} {probe * 1e3:>9.1f} {probe / plain:>6.3f} "
            f"{max(r['plain_mem']) / mib:>10.1f} {max(r['probe_mem']) / mib:>10.1f} {r['rows'][0]:>7}"
        )


if __name__ == "__main__":
    main()
