"""Training batches: shuffled fixed-length windows of the tokenized training split.

Every window is ``[bos] + (seq_len - 1)`` tokens, matching the bos the tokenizer prepends, and all
randomness comes from one generator seeded by ``TrainSettings.seed``, so the batch stream is a
pure function of the settings and the tokens.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from spectra.models.zoo.settings import TrainSettings


def corpus_windows(tokens: torch.Tensor, length: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless stream of ``length``-token windows of ``tokens``, epoch after epoch, shuffled.

    Each epoch shifts the window grid by a random offset, so repeated epochs do not show the
    model the very same windows.

    >>> next(corpus_windows(torch.arange(10), 4, torch.Generator().manual_seed(0))).shape
    torch.Size([4])
    """
    if len(tokens) < 2 * length:
        raise ValueError(f"tokens must hold at least 2 windows of {length}, got {len(tokens)} tokens")
    while True:
        offset = int(torch.randint(length, (1,), generator=generator))
        count = (len(tokens) - offset) // length
        windows = tokens[offset : offset + count * length].view(count, length)
        yield from windows[torch.randperm(count, generator=generator)]


def batches(tokens: torch.Tensor, settings: TrainSettings, bos_id: int) -> Iterator[torch.Tensor]:
    """Endless stream of ``(batch_size, seq_len)`` training batches, a pure function of the seed.

    >>> next(batches(torch.arange(1, 100), TrainSettings(batch_size=2, seq_len=8), 0)).shape
    torch.Size([2, 8])
    """
    windows = corpus_windows(tokens, settings.seq_len - 1, torch.Generator().manual_seed(settings.seed))
    bos = torch.full((settings.batch_size, 1), bos_id, dtype=tokens.dtype)
    while True:
        rows = torch.stack([next(windows) for _ in range(settings.batch_size)])
        yield torch.cat([bos, rows], dim=1)
