"""The options of ``spectra capture`` and the keys of ``kind: capture``, declared once; the capture
stage's keys that ``kind: geometry`` and ``kind: plasticity`` share are built by :func:`stage`."""

from __future__ import annotations

from spectra.jobs.options import (
    Option,
    attn_implementation_option,
    device_option,
    dtype_option,
    keys,
    special_tokens_option,
)

__all__ = ["KEYS", "OPTIONS", "stage"]

LAYERS_HELP = "Layers, e.g. '0,2,5-7' (default all)."
DATA_HELP = "Examples: .jsonl with 'text' (and optional integer 'id') per line, or text with one example per line."
SHARD_HELP = "Examples per task (one shard each)."
SPECIAL_HELP = "Tokenise every example with the tokenizer's special tokens (BOS, or [CLS] ... [SEP])."


def stage() -> tuple[Option, ...]:
    """The run-config keys of the capture stage of ``kind: geometry`` and ``kind: plasticity``
    (``data``, ``examples_per_shard``, ``layers``, ``heads``; each declares its own ``n_examples`` and
    ``max_length``)."""
    return (
        Option("data", help=DATA_HELP + " Default: pieces of the zoo's held-out text.", cli=False),
        Option("examples_per_shard", 8, SHARD_HELP, cli=False),
        Option("layers", help=LAYERS_HELP, cli=False),
        Option("heads", help="Query heads of every layer, e.g. '0-3' (default all).", cli=False),
        Option("add_special_tokens", True, SPECIAL_HELP, cli=False),
    )


OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        help="Zoo name, all-minilm-l6-v2, a local model folder, or a hub id org/name[@revision] from the Hugging Face cache.",
        dest="model_name",
        required=True,
        key=False,
    ),
    Option("data", help=DATA_HELP, path="file", dest="data_path", required=True),
    Option("n_examples", help="Capture the first N examples (default all).", cli=False),
    Option("out", help="Capture folder to write.", path="dir", dest="out_dir", required=True, key=False),
    Option("layers", help=LAYERS_HELP),
    Option("heads", help="Query heads for every layer, e.g. '0-3' (default all)."),
    Option("capture", "q,k", "Any of q,k,v.", dest="kinds"),
    Option("stages", "post_rope", "post_rope and/or pre_rope.", flag="--stage"),
    Option("positions", "all", "all | uniform | log_uniform | a comma-separated list of positions."),
    Option("bucket_size", help="Bucket size (default 64 for uniform/log_uniform, else 1).", type=int, min=1),
    Option("seed", 0, type=int, min=0),
    Option("max_length", 4096, "Keep the first N tokens.", type=int, min=1, key_default=None),
    special_tokens_option(SPECIAL_HELP),
    Option("examples_per_shard", 8, SHARD_HELP, cli=False),
    dtype_option(),
    device_option(),
    attn_implementation_option(),
    Option("overwrite", False, "Replace a finished capture in --out.", is_flag=True, key=False),
)

#: The keys of ``kind: capture`` with their defaults.
KEYS = keys(OPTIONS)
