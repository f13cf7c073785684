"""The options of ``spectra profile`` and the keys of ``kind: profile``, declared once."""

from __future__ import annotations

from spectra import defaults
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
        "model",
        help="Zoo name (tiny-llama, tiny-qwen3), a local model folder, or a hub id org/name[@revision] from the Hugging Face cache.",
        dest="model_name",
        required=True,
        key=False,
    ),
    Option(
        "data",
        help="Text file, folder of *.txt, .npz file or folder of shard_*.npz with input_ids "
        "(default: the zoo's held-out corpus).",
        path="any",
        dest="data_path",
    ),
    Option("context_length", help="Tokens per window.", type=int, min=1, required=True),
    Option("n_samples", help="Profile the first N windows (default all).", type=int, min=1),
    special_tokens_option(),
    Option(
        "samples_per_shard",
        8,
        "Windows per forward and per shard.",
        type=int,
        min=1,
        flag="--batch-size",
        dest="batch_size",
    ),
    Option("out", help="Result folder.", path="dir", dest="out_dir", required=True, key=False),
    Option("layers", help="Layers, e.g. '0,2,5-7' (default all)."),
    Option("heads", help="Query heads of every layer, e.g. '0-3' (default all)."),
    Option("metrics", ",".join(defaults.METRICS), "Comma-separated metrics.", key_default=None),
    Option("threshold", defaults.THRESHOLD, "Mass that k_eff must reach.", type=float),
    Option(
        "ignore_first",
        help=f"Row metrics are NaN for the first N tokens (default {defaults.IGNORE_FIRST} for decoders, "
        "0 for encoders).",
        type=int,
        min=0,
    ),
    dtype_option(),
    device_option(),
    attn_implementation_option(),
    Option(
        "resume", False, "Finish an interrupted run in --out, skipping its finished shards.", is_flag=True, key=False
    ),
    Option("quiet", False, "No progress bar.", is_flag=True, key=False),
    Option("n_permutations", 100, "Permutations of the correlation tests.", type=int, min=1, cli=False),
)

#: The keys of ``kind: profile`` with their defaults.
KEYS = keys(OPTIONS)
