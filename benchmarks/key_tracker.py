"""Cost of the live KeyTracker on a training loop, side by side with the same loop untracked.

    python benchmarks/key_tracker.py [--steps 40] [--batch 8] [--seq 256]

Trains fresh copies of the embedded tiny-qwen3's architecture (AdamW, next-token loss, held-out
text windows) for the same steps, untracked and with ``KeyTracker(every=1)`` and ``every=10``,
alternating runs, and prints the median time per step and the ratios. Also checks that the
tracked runs end with bitwise the same weights as the untracked one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from spectra.heads import dynamics
from spectra.models import zoo


def windows(tokenizer, n: int, length: int) -> torch.Tensor:
    ids = tokenizer(zoo.heldout_text(), add_special_tokens=False).input_ids
    return torch.tensor(ids[: n * length]).view(n, length)


def train(config, data: torch.Tensor, steps: int, batch: int, every: int | None) -> tuple[float, dict]:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tracker = dynamics.KeyTracker(model, every=every) if every else None
    if tracker:
        tracker.__enter__()
    start = time.perf_counter()
    for step in range(steps):
        ids = data[(step * batch) % len(data) :][:batch]
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        if tracker:
            tracker.step()
    seconds = (time.perf_counter() - start) / steps
    if tracker:
        tracker.__exit__(None, None, None)
    return seconds, {k: v.detach().clone() for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = AutoConfig.from_pretrained(zoo.model_path("tiny-qwen3"), local_files_only=True)
    config.dtype = "float32"
    _, tok = zoo.load("tiny-qwen3")
    data = windows(tok, 64, args.seq)
    times: dict[str, list[float]] = {"untracked": [], "every=1": [], "every=10": []}
    weights = {}
    train(config, data, 5, args.batch, None)  # warm-up: allocator, kernels
    variants = [("untracked", None), ("every=1", 1), ("every=10", 10)]
    for repeat in range(args.repeats):
        for name, every in variants[repeat % 3 :] + variants[: repeat % 3]:  # rotate the order
            seconds, weights[name] = train(config, data, args.steps, args.batch, every)
            times[name].append(seconds)
    base = statistics.median(times["untracked"])
    print(
        f"tiny-qwen3 architecture, {args.steps} AdamW steps of {args.batch} x {args.seq} tokens, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    for name, values in times.items():
        ms = statistics.median(values) * 1e3
        print(f"{name:>10}: {ms:8.1f} ms/step  ratio {statistics.median(values) / base:.3f}")
    same = all(torch.equal(weights["untracked"][k], weights[n][k]) for n in ("every=1", "every=10") for k in weights[n])
    print(f"final weights bitwise equal to the untracked run: {same}")


if __name__ == "__main__":
    main()
