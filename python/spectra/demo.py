"""The main job on the embedded default model: ``make demo`` / ``spectra demo``.

Runs the corpus' held-out text through ``tiny-llama`` and prints a per-(layer, head) table of
query/key geometry computed natively (``vec_stats`` + ``RunningMoments``).
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from spectra.head_geometry import head_geometry, token_windows


def run_demo(model: str = "tiny-llama", *, seq_len: int = 256, batch_size: int = 8, max_windows: int | None = None) -> pd.DataFrame:
    """Loads ``model`` from the zoo, measures head geometry on held-out text, prints and returns it.

    Example:
        >>> from spectra.demo import run_demo
        >>> table = run_demo(max_windows=2, seq_len=64)  # doctest: +ELLIPSIS
        spectra demo: tiny-llama ...
    """
    from spectra import zoo

    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1; got {seq_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    loaded, tokenizer = zoo.load(model)
    token_ids = tokenizer(zoo.heldout_text(), add_special_tokens=False).input_ids
    windows = list(token_windows(token_ids, seq_len, max_windows))
    if not windows:
        raise ValueError(f"seq_len={seq_len} is longer than the held-out text ({len(token_ids)} tokens)")
    batches = [torch.stack(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]
    config = loaded.config
    print(
        f"spectra demo: {model} ({config.num_hidden_layers} layers, {config.num_attention_heads} query heads, "
        f"{config.num_key_value_heads} KV heads, head_dim {config.head_dim}); held-out text: "
        f"{len(windows)} windows x {seq_len} tokens"
    )
    start = time.perf_counter()
    table = head_geometry(loaded, batches)
    seconds = time.perf_counter() - start
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.float_format", "{:.3f}".format):
        print(table.drop(columns="tokens").to_string(index=False))
    print(f"{len(windows) * seq_len} tokens per head in {seconds:.2f} s (forward passes + native statistics)")
    return table
