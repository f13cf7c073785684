"""Token windows: the fixed-length samples the profile, sweep, dynamics and report jobs run on,
from a text file, a folder of texts or ``.npz`` token arrays, or the zoo's held-out text."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spectra.models import zoo


def load_windows(
    data: str | os.PathLike | None,
    tokenizer,
    context_length: int,
    n_samples: int | None = None,
    *,
    add_special_tokens: bool = True,
) -> torch.Tensor:
    """Token windows ``(N, context_length)`` (int64) from ``data``, at most ``n_samples``, in order.

    ``data`` is a text file or a folder of ``*.txt`` files (sorted by name), each tokenised and cut
    into non-overlapping windows of exactly ``context_length`` tokens (the remainder of each file
    is dropped, so no window spans two files); or a ``.npz`` file, or a
    folder of ``shard_*.npz`` (any ``*.npz`` when there is no ``shard_*.npz``), with an integer
    ``input_ids`` array ``[N, L]``: rows shorter than ``context_length`` are dropped, longer ones
    truncated. ``None`` takes the zoo's held-out corpus (``zoo.heldout_text()``).

    ``add_special_tokens`` (default True, as models see text in training): every text window gets
    the tokenizer's special tokens around it as the tokenizer adds them to one text (a BOS first
    for a decoder that defines one, ``[CLS] … [SEP]`` for BERT-style encoders; nothing for a
    tokenizer that adds none), inside the ``context_length`` tokens: the text is cut into pieces of
    ``context_length`` minus their number. False: plain text tokens only. ``.npz`` rows are token
    ids already and are taken as they are.

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
        return _text_windows(texts, tokenizer, context_length, n_samples, source, add_special_tokens)
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
            [f.read_text(encoding="utf-8") for f in files],
            tokenizer,
            context_length,
            n_samples,
            str(path),
            add_special_tokens,
        )
    if path.suffix == ".npz":
        return _npz_windows([path], context_length, n_samples, str(path))
    texts = [path.read_text(encoding="utf-8")]
    return _text_windows(texts, tokenizer, context_length, n_samples, str(path), add_special_tokens)


def special_tokens(tokenizer, sample: str = "In the beginning") -> tuple[list[int], list[int]]:
    """(prefix, suffix): the special token ids ``tokenizer`` puts before and after one text, read off
    ``sample`` tokenised with and without them (``[bos]``, ``[]`` for the zoo's tokenizers;
    ``[cls]``, ``[sep]`` for BERT's)."""
    plain = list(tokenizer(sample, add_special_tokens=False).input_ids)
    full = list(tokenizer(sample, add_special_tokens=True).input_ids)
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError(
        f"add_special_tokens: the tokenizer's encoding of {sample!r} with special tokens ({full}) does not contain "
        f"its encoding without them ({plain}); tokenise without special tokens (add_special_tokens=False)"
    )


def _text_windows(
    texts: Sequence[str],
    tokenizer,
    context_length: int,
    n_samples: int | None,
    source: str,
    add_special_tokens: bool = False,
) -> torch.Tensor:
    if tokenizer is None:
        raise ValueError(f"data: {source} is text, but the model comes without a tokenizer; pass .npz token shards")
    prefix, suffix = special_tokens(tokenizer) if add_special_tokens else ([], [])
    body = context_length - len(prefix) - len(suffix)  # text tokens per window
    if body < 1:
        raise ValueError(
            f"context-length: {context_length} tokens leave no room for text beside the tokenizer's "
            f"{len(prefix) + len(suffix)} special tokens"
        )
    windows: list[torch.Tensor] = []
    longest = 0
    for text in texts:
        # verbose=False: a whole file is longer than the model's context by design (it is cut below),
        # so transformers' "longer than the specified maximum sequence length" warning is noise here.
        ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
        longest = max(longest, len(ids))
        n = len(ids) // body
        if n:
            pieces = torch.tensor(ids[: n * body], dtype=torch.int64).view(n, body)
            windows.append(
                torch.cat(
                    [
                        torch.tensor(prefix, dtype=torch.int64).expand(n, -1),
                        pieces,
                        torch.tensor(suffix, dtype=torch.int64).expand(n, -1),
                    ],
                    dim=1,
                )
            )
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


def config_windows(config: Mapping[str, Any], tokenizer, data: str | os.PathLike | None) -> np.ndarray:
    """The windows a run kind's config asks for: :func:`load_windows` of ``data`` with the config's
    ``context_length``, ``n_samples`` and ``add_special_tokens``, as an (n, T) integer array (what
    the kinds hand their tasks).

    Example:
        >>> from spectra import zoo
        >>> _, tok = zoo.load("tiny-llama")
        >>> config_windows({"context_length": 16, "n_samples": 2, "add_special_tokens": True}, tok, None).shape
        (2, 16)
    """
    return load_windows(
        data,
        tokenizer,
        config["context_length"],
        config["n_samples"],
        add_special_tokens=config["add_special_tokens"],
    ).numpy()
