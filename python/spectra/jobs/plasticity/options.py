"""The options of ``spectra plasticity`` and the keys of ``kind: plasticity``, declared once."""

from __future__ import annotations

from spectra.jobs.capture.options import stage
from spectra.jobs.options import Option, attn_implementation_option, device_option, dtype_option, keys

__all__ = ["KEYS", "OPTIONS"]

OPTIONS: tuple[Option, ...] = (
    Option(
        "qk",
        help="Capture folder (spectra capture / qk-sniffer layout) with post-RoPE q and k; repeat to compare "
        "models or checkpoints (step from a step-N / checkpoint-N name).",
        path="dir",
        exists=True,
        dest="qk_dirs",
        multiple=True,
        key=False,
    ),
    Option(
        "model",
        help="Instead of --qk: capture this model (zoo name, folder or hub id org/name[@revision]) at its full "
        "context first, into OUT/qk/.",
        dest="model_name",
        key=False,
    ),
    Option(
        "checkpoints",
        False,
        "With --model: every training checkpoint of the zoo model (tiny-qwen3).",
        is_flag=True,
        key=False,
    ),
    Option("n_examples", 8, "With --model: examples.", type=int, min=1),
    Option(
        "max_length",
        help="With --model: tokens per example (default: the model's max_position_embeddings).",
        type=int,
        min=16,
    ),
    dtype_option(help="With --model: dtype of the model's weights."),
    device_option(help="With --model: device for the model, cpu, cuda, cuda:N or mps (default: the CPU)."),
    attn_implementation_option(help="With --model: attention backend of the model (eager where sdpa is refused)."),
    Option("out", help="Result folder.", path="dir", dest="out_dir", required=True, key=False),
    Option(
        "label", help="A name per --qk folder (default: the folder names).", dest="labels", multiple=True, key=False
    ),
    Option(
        "mode",
        "thesis",
        "thesis: query grid, keys before the query, per-cell query statistics, count-weighted; "
        "published: the attention-plasticity tool's bucket-pair cells and global statistics.",
        choices=("thesis", "published"),
    ),
    Option("bucket_size", help="Capture bucket B in tokens (default: from the capture).", type=int, min=1),
    Option(
        "context_length", help="Context for the context fractions (default: (last bucket + 1) x B).", type=int, min=1
    ),
    Option(
        "grid_width",
        help="Thesis query grid width in tokens (default: B; the thesis's profile plots used 1024).",
        type=float,
        min=0,
        min_open=True,
    ),
    Option("query_position", "midpoint", "Thesis: a cell's query position tau.", choices=("midpoint", "mean")),
    Option(
        "covariance",
        "diagonal",
        "Thesis: per-cell query covariance of the non-positional coordinates.",
        choices=("diagonal", "full"),
    ),
    Option("pairs_per_cell", 256, type=int, min=1),
    Option("seed", 0, type=int),
    Option("heatmap_bin", help="2D heatmap bin in tokens (default: B).", type=int, min=1),
    Option("max_tokens_per_head", 50_000, type=int, min=3),
    Option("normality_max_dims", 64, type=int, min=1),
    Option(
        "gqa_group",
        help="Query heads per KV head, for folders without spectra_capture.json.",
        type=int,
        min=1,
        key=False,
    ),
    Option(
        "scores",
        help="CSV of benchmark scores: checkpoint + score columns (one row per model), or checkpoint, "
        "length, score (per-length scores); writes score_correlations.csv.",
        path="file",
        exists=True,
    ),
    Option("quiet", False, "No progress bar.", is_flag=True, key=False),
    *stage(),
    Option("n_buckets", 16, "Capture buckets over each model's context.", cli=False),
)

#: The keys of ``kind: plasticity`` with their defaults.
KEYS = keys(OPTIONS)
