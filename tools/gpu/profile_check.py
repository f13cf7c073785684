"""spectra.profile of a random-initialised Llama-3-8B-shaped model against its plain forward.

    python tools/gpu/profile_check.py [--device cuda] [--lengths 512 4096] [--tiny] [--json PATH]

Llama-3-8B shapes (32 layers, hidden 4096, 32 query / 8 KV heads, head_dim 128, vocab 128256),
random weights in bfloat16, batch 1, sdpa attention. For each T: the median time and peak memory
above the pre-call level of (1) the plain backbone forward, (2) the same forward inside a
row-stats Probe (the kernels and the per-layer copies, no table), (3) spectra.profile (the
DataFrame included) and, where the checkout has spectra.backend, (4) spectra.profile under
spectra.backend("torch"). Then the table's sanity (finite entropy, 1 <= k_eff <= n_visible,
0 < max_attn <= 1) and the row stats of layer 0, heads 0 and 1 against the CPU op on the probe's
captured post-RoPE q/k.

--tiny: a 2-layer, 64-wide Llama on the CPU in float32 (the self-check of this script).
Exit status 1 when any measurement or check raised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time

import torch

LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
)
TINY = dict(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=8192,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--dtype", default=None, help="default bfloat16 (float32 with --tiny)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    import spectra

    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float32" if args.tiny else "bfloat16"))
    shape = TINY if args.tiny else LLAMA3_8B
    results = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(dev),
        "dtype": str(dtype),
        "model": shape,
        "runs": [],
    }
    if dev.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(0)
        results["attn_row_stats_has_cuda_kernel"] = torch._C._dispatch_has_kernel_for_dispatch_key(
            "spectra::attn_row_stats", "CUDA"
        )

    def save() -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=str)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    config = LlamaConfig(**shape)
    config._attn_implementation = "sdpa"
    t = time.perf_counter()
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with dev:
            model = LlamaForCausalLM(config)
    except Exception as exc:  # noqa: BLE001
        results["init_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
        print("model init failed:", results["init_error"])
        save()
        return 1
    finally:
        torch.set_default_dtype(default)
    model.eval()
    sync()
    results["model_init_s"] = round(time.perf_counter() - t, 2)
    param = next(model.parameters())
    print(
        f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B params, {param.dtype} on {param.device}, "
        f"attn {model.config._attn_implementation}, init {results['model_init_s']} s",
        flush=True,
    )
    backbone = model.base_model

    def timed(fn) -> tuple[float, int]:
        """(median seconds, peak bytes above the pre-call level) of fn() after one warm-up call."""
        fn()
        sync()
        base = 0
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        times = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() - base if dev.type == "cuda" else 0
        return statistics.median(times), peak

    def forward(ids) -> None:
        with torch.no_grad():
            backbone(input_ids=ids, use_cache=False)

    def probe_forward(ids) -> None:
        probe = spectra.Probe(model, capture=(), row_stats=True)
        with probe, torch.no_grad():
            backbone(input_ids=ids, use_cache=False)

    def torch_backend():
        return spectra.backend("torch") if hasattr(spectra, "backend") else None

    gen = torch.Generator().manual_seed(1)
    for length in args.lengths:
        run: dict = {"T": length}
        results["runs"].append(run)
        ids = torch.randint(0, shape["vocab_size"], (1, length), generator=gen).to(dev)
        measurements = [
            ("forward", lambda ids=ids: forward(ids)),
            ("probe_row_stats", lambda ids=ids: probe_forward(ids)),
            ("profile", lambda ids=ids: spectra.profile(model, ids)),
        ]
        if torch_backend() is not None:

            def profile_torch(ids=ids):
                with spectra.backend("torch"):
                    return spectra.profile(model, ids)

            measurements.append(("profile_torch_path", profile_torch))
        for name, fn in measurements:
            try:
                seconds, peak = timed(fn)
                run[f"{name}_s"], run[f"{name}_peak_MiB"] = round(seconds, 4), round(peak / 2**20, 1)
            except Exception as exc:  # noqa: BLE001
                run[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
            print(
                f"T={length} {name}: " + ", ".join(f"{k}={v}" for k, v in run.items() if k.startswith(name)), flush=True
            )
            save()
        if "forward_s" in run:
            for name, _ in measurements[1:]:
                if f"{name}_s" in run:
                    run[f"{name}_over_forward"] = round(run[f"{name}_s"] / run["forward_s"], 2)
        try:
            check_table_and_layer0(spectra, model, backbone, config, ids, run)
        except Exception as exc:  # noqa: BLE001
            run["check_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
        print(
            f"T={length}: " + json.dumps({k: v for k, v in run.items() if not k.endswith(("_s", "_MiB"))}), flush=True
        )
        save()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    save()
    return 1 if "init_error" in results or any(k.endswith("error") for r in results["runs"] for k in r) else 0


def check_table_and_layer0(spectra, model, backbone, config, ids, run: dict) -> None:
    """The profile table's ranges, and layer 0's device row stats against the CPU op on captured q/k."""
    table = spectra.profile(model, ids, metrics=("entropy", "max_attn", "k_eff", "sink_mass", "n_visible"))
    late = table[table.token >= 2]
    run["rows"] = len(table)
    run["entropy_finite"] = bool(late.entropy.notna().all())
    run["k_eff_in_range"] = bool(((late.k_eff >= 1) & (late.k_eff <= late.n_visible)).all())
    run["max_attn_in_range"] = bool(((late.max_attn > 0) & (late.max_attn <= 1 + 1e-6)).all())
    probe = spectra.Probe(model, layers=[0], heads=[0, 1], capture=("q", "k"), row_stats=True)
    with probe, torch.no_grad():
        backbone(input_ids=ids, use_cache=False)
    cols = probe.drain_row_stats()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def native():
        return spectra.backend("native") if hasattr(spectra, "backend") else contextlib.nullcontext()

    worst = {}
    for head in (0, 1):
        q = probe.captured(0, head, "q").vectors.float()[None, None]
        k = probe.captured(0, probe.kv_head(head), "k").vectors.float()[None, None]
        with native():
            cpu = spectra.attn_row_stats(q, k, head_dim**-0.5)
        sel = cols["head"] == head
        got_h = torch.from_numpy(cols["entropy"][sel])
        got_k = torch.from_numpy(cols["k_eff"][sel])
        got_m = torch.from_numpy(cols["max_attn"][sel])
        worst[f"h{head}_entropy_maxabs"] = float((got_h - cpu.entropy[0, 0]).abs().max())
        worst[f"h{head}_max_attn_maxrel"] = float(((got_m - cpu.max_attn[0, 0]).abs() / cpu.max_attn[0, 0]).max())
        worst[f"h{head}_k_eff_equal_frac"] = float((got_k == cpu.k_eff[0, 0]).double().mean())
        worst[f"h{head}_k_eff_maxdiff"] = int((got_k - cpu.k_eff[0, 0]).abs().max())
    run["device_vs_cpu_layer0"] = worst


if __name__ == "__main__":
    sys.exit(main())
