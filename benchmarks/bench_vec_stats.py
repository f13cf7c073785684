"""vec_stats: native op vs its pure-PyTorch twin, side by side in one process.

    python benchmarks/bench_vec_stats.py [--threads N]

Shapes are captured Q tensors (B, H, T, D) of real models; the (B, H, T, D) view of a
(B, T, H*D) projection output is strided, which is how the Probe hands them over.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils import benchmark

import spectra
from spectra.ops import reference

SHAPES = {
    "llama3-8b q, T=512 (1,32,512,128)": (1, 512, 32, 128),
    "llama3-8b q, T=4096 (1,32,4096,128)": (1, 4096, 32, 128),
    "tiny-llama q, B=8 T=256 (8,8,256,32)": (8, 256, 8, 32),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; median of repeated runs (torch.utils.benchmark)")
    print(f"{'shape':<40} {'dtype':<9} {'native ms':>10} {'reference ms':>13} {'speed-up':>9}")
    for name, (b, t, h, d) in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            # (B, T, H*D) projection output viewed as (B, H, T, D): non-contiguous, as captured.
            x = torch.randn(b, t, h * d).to(dtype).unflatten(-1, (h, d)).transpose(1, 2)
            timings = {}
            for label, fn in (("native", spectra.vec_stats), ("reference", reference.vec_stats)):
                timer = benchmark.Timer(stmt="fn(x)", globals={"fn": fn, "x": x}, num_threads=args.threads)
                timings[label] = timer.blocked_autorange(min_run_time=args.min_run_time).median * 1e3
            ratio = timings["reference"] / timings["native"]
            print(
                f"{name:<40} {str(dtype).removeprefix('torch.'):<9} {timings['native']:>10.2f} "
                f"{timings['reference']:>13.2f} {ratio:>8.1f}x"
            )


if __name__ == "__main__":
    main()
