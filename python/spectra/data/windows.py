"""Token windows: the fixed-length samples the profile, sweep, dynamics and report jobs run on,
from a text file, a folder of texts or ``.npz`` token arrays, or the zoo's held-out text."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from spectra.models import zoo


def load_windows(
    data: str | os.PathLike | None, tokenizer, context_length: int, n_samples: int | None = None
) -> torch.Tensor:
    """Token windows ``(N, context_length)`` (int64) from ``data``, at most ``n_samples``, in order.

    ``data`` is a text file or a folder of ``*.txt`` files (sorted by name), each tokenised without
    special tokens and cut into non-overlapping windows of exactly ``context_length`` tokens (the
    remainder of each file is dropped, so no window spans two files); or a ``.npz`` file, or a
    folder of ``shard_*.npz`` (any ``*.npz`` when there is no ``shard_*.npz``), with an integer
    ``input_ids`` array ``[N, L]``: rows shorter than ``context_length`` are dropped, longer ones
    truncated. ``None`` takes the zoo's held-out corpus (``zoo.heldout_text()``).

    Example:
        >>> from spectra import zoo
        >>> _, tok = zoo.load("tiny-llama")
        >>> load_windows(None, tok, 64, 3).shape
        torch.Size([3, 64])
    """
    if not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context-length: expected an integer >= 1; got {context_length!r}")
    if n_samples is not None and (not isinstance(n_samples, int) or n_samples < 1):
        raise ValueError(f"n-samples: expected an integer >= 1; got {n_samples!r}")
    if data is None:
        texts, source = [zoo.heldout_text()], "the zoo held-out corpus"
        return _text_windows(texts, tokenizer, context_length, n_samples, source)
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"data: {path} does not exist")
    if path.is_dir():
        shards = sorted(path.glob("shard_*.npz")) or sorted(path.glob("*.npz"))
        if shards:
            return _npz_windows(shards, context_length, n_samples, str(path))
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ValueError(f"data: {path} holds no *.txt files and no .npz token shards")
        return _text_windows(
            [f.read_text(encoding="utf-8") for f in files], tokenizer, context_length, n_samples, str(path)
        )
    if path.suffix == ".npz":
        return _npz_windows([path], context_length, n_samples, str(path))
    return _text_windows([path.read_text(encoding="utf-8")], tokenizer, context_length, n_samples, str(path))


def _text_windows(
    texts: Sequence[str], tokenizer, context_length: int, n_samples: int | None, source: str
) -> torch.Tensor:
    if tokenizer is None:
        raise ValueError(f"data: {source} is text, but the model comes without a tokenizer; pass .npz token shards")
    windows: list[torch.Tensor] = []
    longest = 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        longest = max(longest, len(ids))
        n = len(ids) // context_length
        if n:
            windows.append(torch.tensor(ids[: n * context_length], dtype=torch.int64).view(n, context_length))
        if n_samples is not None and sum(len(w) for w in windows) >= n_samples:
            break
    if not windows:
        raise ValueError(
            f"context-length: {context_length} tokens is longer than every text of --data {source} "
            f"(the longest has {longest} tokens)"
        )
    return torch.cat(windows)[:n_samples]


def _npz_windows(files: Sequence[Path], context_length: int, n_samples: int | None, source: str) -> torch.Tensor:
    rows: list[np.ndarray] = []
    longest = 0
    for file in files:
        with np.load(file) as shard:
            if "input_ids" not in shard.files:
                raise ValueError(f"data: {file} has no 'input_ids' array (it has {shard.files})")
            ids = shard["input_ids"]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"data: {file}: 'input_ids' must be a 2-D integer array; got {ids.dtype} {ids.shape}")
        longest = max(longest, ids.shape[1])
        if ids.shape[1] >= context_length and ids.shape[0]:
            rows.append(ids[:, :context_length].astype(np.int64))
        if n_samples is not None and sum(len(r) for r in rows) >= n_samples:
            break
    if not rows:
        raise ValueError(
            f"context-length: {context_length} tokens is longer than every row of --data {source} "
            f"(the longest has {longest} tokens)"
        )
    return torch.from_numpy(np.concatenate(rows)[:n_samples])
