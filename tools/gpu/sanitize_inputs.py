"""Small calls of the three CUDA kernels, for compute-sanitizer (memcheck, racecheck).

    compute-sanitizer --tool memcheck python tools/gpu/sanitize_inputs.py [--op attn_row_stats|vec_stats|plasticity_pairwise|all]

Odd sizes (rows and heads that do not fill a block, 3000 keys for the k_eff refinement, head dims 40
and 16, strided views, key padding, a sliding window, rows without keys) in every dtype, so out-of-
bounds reads and shared-memory races at the edges show. Prints SANITIZE-RUN-DONE at the end; on a
machine without CUDA it runs the same calls on the CPU (the self-check of this script).
Run it with PYTORCH_NO_CUDA_MEMORY_CACHING=1 under memcheck: with torch's caching allocator a read
past a tensor's end usually lands in the same cached block and is not reported.
"""

from __future__ import annotations

import argparse

import torch

import spectra
from spectra import plasticity


def attn(dev: str) -> None:
    g = torch.Generator().manual_seed(0)
    for dtype, dim, tk, offset, window in (
        (torch.bfloat16, 64, 3000, 2930, None),
        (torch.float16, 40, 83, None, 7),
        (torch.float32, 40, 83, -3, None),
        (torch.float64, 16, 300, 230, None),
        (torch.bfloat16, 128, 130, None, None),
    ):
        q = torch.randn(1, 70, 4, dim, generator=g).transpose(1, 2).to(dtype).to(dev)
        k = torch.randn(1, 2, tk, dim, generator=g).to(dtype).to(dev)
        valid = torch.ones(1, tk, dtype=torch.bool)
        valid[0, :5] = False
        s = spectra.attn_row_stats(
            q, k, query_offset=offset, key_valid=valid.to(dev), sliding_window=window, softcap=20.0, threshold=0.9
        )
        print("attn_row_stats", str(dtype), "D", dim, "Tk", tk, "k_eff mean", s.k_eff.float().mean().item())


def vec(dev: str) -> None:
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.randn(5, 9, 33, generator=g).to(dtype).to(dev)
        print("vec_stats", str(dtype), spectra.vec_stats(x.transpose(0, 1)).norm.float().sum().item())
    print("vec_stats long rows", spectra.vec_stats(torch.randn(3, 5001, generator=g).to(dev)).norm.sum().item())


def pairwise(dev: str) -> None:
    g = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.float64):
        w = torch.randn(20, 16, generator=g).to(dtype).to(dev)
        a = torch.randn(16, 16, generator=g)
        full = (a @ a.T + torch.eye(16)).to(dtype).to(dev)
        diag = (torch.rand(16, generator=g) + 0.1).to(dtype).to(dev)
        for var in (full, diag):
            out = plasticity.pairwise(w, torch.zeros(16, dtype=dtype, device=dev), var)
            print("plasticity_pairwise", str(dtype), tuple(var.shape), out.pp.sum().item())
    w = torch.randn(9, 7000, generator=g)[:, ::2].to(dev)  # d = 3500: the staged-weights path
    print(
        "plasticity_pairwise d=3500",
        plasticity.pairwise(w, torch.zeros(3500, device=dev), torch.ones(3500, device=dev)).pp.sum().item(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=["attn_row_stats", "vec_stats", "plasticity_pairwise", "all"], default="all")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    backend = spectra.backend("native") if hasattr(spectra, "backend") else None
    if backend is not None:
        backend.__enter__()
    for name, fn in (("attn_row_stats", attn), ("vec_stats", vec), ("plasticity_pairwise", pairwise)):
        if args.op in (name, "all"):
            fn(args.device)
    if args.device == "cuda":
        torch.cuda.synchronize()
    print("SANITIZE-RUN-DONE", args.device)


if __name__ == "__main__":
    main()
