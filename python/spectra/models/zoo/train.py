"""Train a zoo model from a random init on the corpus, reproducibly on CPU.

The committed weights are a build artefact of this script, so it must reproduce them bit for bit:
every random draw (init, window offsets, batch order) comes from the seed, deterministic kernels
are enforced and the thread count is fixed (float reductions depend on it).

    python -m spectra.models.zoo.train --model tiny-qwen3 --out python/spectra/assets/models/tiny-qwen3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tokenizers
import torch
import transformers
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from spectra.models.zoo.architectures import MODEL_NAMES, model_config
from spectra.models.zoo.corpus import train_text
from spectra.models.zoo.data import batches
from spectra.models.zoo.paths import CORPUS_FILE
from spectra.models.zoo.settings import TrainSettings
from spectra.models.zoo.tokenizer import train_tokenizer


@dataclasses.dataclass
class TrainResult:
    """The trained float32 model and its per-step training losses."""

    model: PreTrainedModel
    losses: list[float]
    seconds: float


CheckpointHook = Callable[[int, PreTrainedModel, Sequence[float]], None]


@contextlib.contextmanager
def deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seed everything and force deterministic kernels, restoring the global torch state after.

    Restoring matters because this runs inside test sessions and notebooks too.

    >>> with deterministic(0, 1):
    ...     a = torch.rand(2)
    >>> with deterministic(0, 1):
    ...     b = torch.rand(2)
    >>> torch.equal(a, b)
    True
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


def lr_factor(step: int, settings: TrainSettings) -> float:
    """Linear warmup then cosine decay to ``min_lr_ratio`` of the peak learning rate.

    >>> lr_factor(0, TrainSettings(warmup_steps=10)), lr_factor(1600, TrainSettings(steps=1600))
    (0.1, 0.1)
    """
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return settings.min_lr_ratio + (1.0 - settings.min_lr_ratio) * cosine


def train_model(
    config: PretrainedConfig,
    tokens: torch.Tensor,
    settings: TrainSettings,
    *,
    checkpoint_steps: Sequence[int] = (),
    on_checkpoint: CheckpointHook | None = None,
    log_every: int = 0,
) -> TrainResult:
    """Train a fresh model of ``config`` on the 1-D ``tokens`` stream for ``settings.steps``.

    ``on_checkpoint(step, model, losses)`` runs after each step listed in ``checkpoint_steps``
    (step 0 is the random init). Two calls with equal arguments give bitwise-equal weights.

    >>> from transformers import LlamaConfig
    >>> cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...                   num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    >>> result = train_model(cfg, torch.randint(1, 64, (400,)), TrainSettings(steps=2, batch_size=2, seq_len=16))
    >>> len(result.losses)
    2
    """
    bos_id = config.bos_token_id if config.bos_token_id is not None else 0
    with deterministic(settings.seed, settings.threads):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
        model.train()
        matrices = [p for p in model.parameters() if p.ndim >= 2]
        vectors = [p for p in model.parameters() if p.ndim < 2]  # norms: decaying them only hurts
        optimizer = torch.optim.AdamW(
            [
                {"params": matrices, "weight_decay": settings.weight_decay},
                {"params": vectors, "weight_decay": 0.0},
            ],
            lr=settings.lr,
            betas=(0.9, 0.95),
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, settings))
        data = batches(tokens, settings, bos_id)
        losses: list[float] = []
        start = time.perf_counter()
        if on_checkpoint is not None and 0 in checkpoint_steps:
            on_checkpoint(0, model, losses)
        for step in range(1, settings.steps + 1):
            batch = next(data)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if log_every and step % log_every == 0:
                elapsed = time.perf_counter() - start
                rate = step * batch.numel() / elapsed
                print(
                    f"step {step:6d}  loss {np.mean(losses[-log_every:]):.4f}  "
                    f"lr {schedule.get_last_lr()[0]:.2e}  {elapsed:7.1f}s  {rate:6.0f} tok/s",
                    flush=True,
                )
            if on_checkpoint is not None and step in checkpoint_steps:
                on_checkpoint(step, model, losses)
        model.eval()
        return TrainResult(model, losses, time.perf_counter() - start)


def checkpoint_schedule(steps: int, count: int) -> list[int]:
    """``count`` checkpoint steps from 0 to ``steps``, halving the gap towards the start.

    Early training changes fastest (that is where heads form), so spacing is geometric.

    >>> checkpoint_schedule(1600, 6)
    [0, 100, 200, 400, 800, 1600]
    """
    if count <= 0:
        return []
    return sorted({0, *(steps // 2**k for k in range(count - 1))})


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path, info: dict) -> None:
    """Write a loadable HF model folder: float16 weights, config, tokenizer, ``training.json``.

    float16 halves the committed size; the copy keeps the float32 weights under training intact.
    Example: see :func:`main`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).to(torch.float16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "training.json").write_text(json.dumps(info, indent=2) + "\n")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(prog="python -m spectra.models.zoo.train", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, choices=MODEL_NAMES)
    parser.add_argument("--out", required=True, type=Path, help="model folder to create")
    parser.add_argument("--force", action="store_true", help="replace --out if it is not empty")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument(
        "--checkpoints",
        type=int,
        default=None,
        help="number of checkpoints in OUT/checkpoints (default: 6 for tiny-qwen3, 0 otherwise)",
    )
    parser.add_argument("--log-every", type=int, default=50)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point; ``main(["--model", "tiny-llama", "--out", "DIR"])`` trains one model."""
    args = _parse_args(argv)
    wall_start = time.perf_counter()
    transformers.utils.logging.disable_progress_bar()
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.force:
            sys.exit(f"{out} is not empty; pass --force to replace it")
        shutil.rmtree(out)
    settings = TrainSettings(
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        threads=args.threads,
    )
    n_checkpoints = args.checkpoints if args.checkpoints is not None else 6 * (args.model == "tiny-qwen3")

    tokenizer = train_tokenizer()
    tokens = torch.tensor(tokenizer(train_text(), add_special_tokens=False)["input_ids"])
    config = model_config(args.model, len(tokenizer), tokenizer.bos_token_id)

    def info(step: int, model: PreTrainedModel, losses: Sequence[float]) -> dict:
        return {
            "model": args.model,
            "step": step,
            "settings": dataclasses.asdict(settings),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_tokens": len(tokens),
            "tokens_seen": step * settings.batch_size * settings.seq_len,
            # Mean over the last 50 steps: a single batch's loss is too noisy to compare runs.
            "train_loss": float(np.mean(losses[-50:])) if losses else None,
            "wall_seconds": round(time.perf_counter() - wall_start, 1),
            "corpus_sha256": hashlib.sha256(CORPUS_FILE.read_bytes()).hexdigest(),
            "versions": {
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
            },
            "command": "python -m spectra.models.zoo.train " + " ".join(sys.argv[1:] if argv is None else argv),
        }

    def save_checkpoint(step: int, model: PreTrainedModel, losses: Sequence[float]) -> None:
        save_model(model, tokenizer, out / "checkpoints" / f"step-{step:06d}", info(step, model, losses))

    result = train_model(
        config,
        tokens,
        settings,
        checkpoint_steps=checkpoint_schedule(settings.steps, n_checkpoints),
        on_checkpoint=save_checkpoint,
        log_every=args.log_every,
    )
    save_model(result.model, tokenizer, out, info(settings.steps, result.model, result.losses))
    print(f"saved {out} after {time.perf_counter() - wall_start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
