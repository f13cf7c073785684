"""Cost of capturing with a Probe: plain forward vs forward with the probe, in one process.

    python benchmarks/capture_overhead.py [--device cpu|cuda] [--repeats N] [--threads N]

Two models: the embedded tiny-llama (T=256) and a random-init Llama-shaped model (8 layers,
hidden 1024, 16 heads, 4 KV heads, head_dim 64, T=2048). The probe captures post-RoPE Q and K of
every head of every layer at uniformly sampled positions (bucket 64: each token kept with
probability 1/64). Runs alternate plain / probe so drift hits both; the table reports medians,
their ratio, and each variant's peak memory above the pre-call baseline (CUDA: the caching
allocator's peak; CPU: bytes in use by malloc — glibc's mallinfo2, i.e. what torch's CPU allocator
holds — sampled every 0.2 ms; see spectra.testing.benchmarking).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import spectra
from spectra.models import zoo
from spectra.testing.benchmarking import PeakMemory


def llama_shaped(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=4096,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval().to(device)


def measure(model, ids, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Alternating runs of: a plain forward; a forward inside a probe entered before the clock
    starts (the steady state of a long capture); and a forward that also builds, enters and exits
    its probe."""
    results: dict[str, list[float]] = {}
    rows = 0

    def new_probe():
        return spectra.Probe(model, capture=("q", "k"), stage="post_rope", positions="uniform", bucket_size=64)

    def forward():
        return model(ids, use_cache=False).logits

    def with_setup():
        nonlocal rows
        probe = new_probe()
        with probe:
            out = forward()
        rows = sum(c.rows * len(c.heads) for c in probe.registry.captures())
        return out

    variants = (("plain", forward, False), ("probe", forward, True), ("probe+setup", with_setup, False))
    with torch.no_grad():
        forward(), with_setup()  # warm-up (allocator, thread pool, lazy imports)
        for _ in range(repeats):
            for label, fn, inside_probe in variants:
                probe = new_probe() if inside_probe else None
                if probe is not None:
                    probe.__enter__()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                with PeakMemory(device) as mem:
                    start = time.perf_counter()
                    out = fn()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    elapsed = time.perf_counter() - start
                if probe is not None:
                    probe.__exit__(None, None, None)
                results.setdefault(label, []).append(elapsed)
                results.setdefault(label + "_mem", []).append(mem.peak)
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
    print(
        f"torch {torch.__version__}, device {device}, {args.threads} threads, median of {args.repeats} alternating runs"
    )
    print(
        f"{'model':<36} {'T':>5} {'plain ms':>9} {'probe ms':>9} {'ratio':>6} {'+setup ms':>10} {'ratio':>6} "
        f"{'plain MiB':>10} {'probe MiB':>10} {'rows':>6}"
    )
    tiny, tok = zoo.load("tiny-llama")
    cases = [
        ("tiny-llama (embedded)", tiny.to(device), 256),
        ("llama-shaped 8L h1024 16H/4KV d64", llama_shaped(device), 2048),
    ]
    for name, model, length in cases:
        ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
        r = measure(model, ids.to(device), args.repeats, device)
        plain, probe, setup = (statistics.median(r[k]) for k in ("plain", "probe", "probe+setup"))
        mib = 1 << 20
        print(
            f"{name:<36} {length:>5} {plain * 1e3:>9.1f} {probe * 1e3:>9.1f} {probe / plain:>6.3f} "
            f"{setup * 1e3:>10.1f} {setup / plain:>6.3f} "
            f"{statistics.median(r['plain_mem']) / mib:>10.1f} {statistics.median(r['probe_mem']) / mib:>10.1f} "
            f"{r['rows'][0]:>6}"
        )


if __name__ == "__main__":
    main()
