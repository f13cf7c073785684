"""The options of ``spectra dynamics`` and the keys of ``kind: dynamics``, declared once."""

from __future__ import annotations

from spectra.jobs.options import (
    Option,
    attn_implementation_option,
    device_option,
    dtype_option,
    keys,
    special_tokens_option,
)

__all__ = ["KEYS", "OPTIONS"]

OPTIONS: tuple[Option, ...] = (
    Option(
        "checkpoints",
        help="Checkpoint folders of one model (repeat the option); named step-N / checkpoint-N or "
        "with trainer_state.json.",
        path="dir",
        multiple=True,
        key=False,
    ),
    Option(
        "model",
        help="Instead of --checkpoints: a zoo model with checkpoints (tiny-qwen3).",
        dest="model_name",
        key=False,
    ),
    Option("out", help="Result folder.", path="dir", dest="out_dir", required=True, key=False),
    Option("context_length", 128, type=int, min=1),
    Option("n_samples", 8, "Held-out text windows.", type=int, min=1),
    special_tokens_option(),
    Option("n_random", 8, "Repeated random blocks.", type=int, min=1),
    Option("random_block", 32, "Tokens per random block.", type=int, min=2),
    Option("batch_size", 8, "Windows per forward.", cli=False),
    dtype_option(),
    device_option(),
    attn_implementation_option(),
    Option(
        "gamma_heatmap",
        help="Require (or skip) the k_norm gamma heatmap; default: drawn when the family has QK-norm.",
        secondary="--no-gamma-heatmap",
    ),
    Option("data", help="Text file, folder or .npz of windows (default: the zoo's held-out corpus).", cli=False),
    Option("quiet", False, "No progress bar.", is_flag=True, key=False),
)

#: The keys of ``kind: dynamics`` with their defaults.
KEYS = keys(OPTIONS)
