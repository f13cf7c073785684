"""Held-out perplexity of a zoo model next to a unigram baseline.

The baseline is the sanity floor: a model that does not beat token frequencies has not learned
anything a head analysis could find. Both are scored on exactly the same held-out tokens.

    python -m spectra.models.zoo.evaluate --model tiny-llama
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from spectra.models.zoo.corpus import heldout_text, train_text
from spectra.models.zoo.loading import load, resolve


@dataclasses.dataclass(frozen=True)
class Perplexity:
    """Perplexities on one held-out token sequence."""

    model: float
    unigram: float
    tokens: int


@torch.inference_mode()
def model_nll(model: PreTrainedModel, tokens: torch.Tensor, seq_len: int, bos_id: int, batch_size: int = 32) -> float:
    """Summed negative log-likelihood (nats) of every token in ``tokens``, each predicted once.

    Windows are ``[bos] + seq_len - 1`` consecutive tokens, as in training, so the first token
    of each window is predicted from bos alone; the shorter last window is scored on its own.

    >>> from spectra.models.zoo import load
    >>> model, tok = load("tiny-llama")
    >>> ids = torch.tensor(tok("And God said", add_special_tokens=False)["input_ids"])
    >>> model_nll(model, ids, 256, tok.bos_token_id) > 0
    True
    """
    body = seq_len - 1
    windows = list(tokens.split(body))
    full = [w for w in windows if len(w) == body]
    groups = [torch.stack(full[i : i + batch_size]) for i in range(0, len(full), batch_size)]
    groups += [w[None] for w in windows if len(w) < body]
    total = 0.0
    for group in groups:
        inputs = torch.cat([torch.full((len(group), 1), bos_id, dtype=group.dtype), group], dim=1)
        logits = model(input_ids=inputs).logits[:, :-1].float()
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), group.flatten(), reduction="sum").item()
    return total


def unigram_nll(train_tokens: torch.Tensor, tokens: torch.Tensor, vocab_size: int) -> float:
    """Summed NLL (nats) of ``tokens`` under add-one-smoothed training-split token frequencies.

    >>> round(unigram_nll(torch.tensor([0, 0, 1]), torch.tensor([1]), 2), 4) == round(math.log(5 / 2), 4)
    True
    """
    counts = torch.bincount(train_tokens, minlength=vocab_size).double() + 1.0
    log_probs = counts.log() - counts.sum().log()
    return -log_probs[tokens].sum().item()


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])


@functools.lru_cache(maxsize=2)
def _train_tokens(tokenizer_json: str) -> torch.Tensor:
    # Keyed by the serialised tokenizer: the zoo models and checkpoints share one, and encoding
    # the training split is the slow part of evaluating several of them.
    encoding = Tokenizer.from_str(tokenizer_json).encode(train_text(), add_special_tokens=False)
    return torch.tensor(encoding.ids)


def perplexity(name_or_path: str | Path, text: str | None = None, seq_len: int | None = None) -> Perplexity:
    """Perplexity of a zoo model (name or folder) and of the unigram baseline on ``text``.

    ``text`` defaults to the whole held-out split; ``seq_len`` to the model's training length
    (from its ``training.json``), else 256.

    >>> result = perplexity("tiny-llama", heldout_text()[:2000])
    >>> result.model < result.unigram
    True
    """
    model, tokenizer = load(name_or_path)
    if seq_len is None:
        info = resolve(name_or_path) / "training.json"
        seq_len = json.loads(info.read_text())["settings"]["seq_len"] if info.exists() else 256
    tokens = _encode(tokenizer, heldout_text() if text is None else text)
    nll = model_nll(model, tokens, seq_len, tokenizer.bos_token_id)
    baseline = unigram_nll(_train_tokens(tokenizer.backend_tokenizer.to_str()), tokens, len(tokenizer))
    return Perplexity(math.exp(nll / len(tokens)), math.exp(baseline / len(tokens)), len(tokens))


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: print a perplexity table for one or more models."""
    parser = argparse.ArgumentParser(prog="python -m spectra.models.zoo.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", required=True, help="zoo model names or model folders")
    parser.add_argument("--seq-len", type=int, default=None, help="window length (default: training length)")
    args = parser.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    print(f"{'model':<60} {'held-out tokens':>15} {'model ppl':>10} {'unigram ppl':>12}")
    for name in args.model:
        result = perplexity(name, seq_len=args.seq_len)
        print(f"{str(name):<60} {result.tokens:>15d} {result.model:>10.2f} {result.unigram:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
