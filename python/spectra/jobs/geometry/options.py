"""The options of ``spectra geometry`` and the keys of ``kind: geometry``, declared once."""

from __future__ import annotations

from spectra.jobs.capture.options import stage
from spectra.jobs.options import Option, attn_implementation_option, device_option, dtype_option, keys

__all__ = ["ANALYSIS_OPTIONS", "KEYS", "OPTIONS"]

#: The analysis options, shared by the command and the run config.
ANALYSIS_OPTIONS: tuple[Option, ...] = (
    Option("n_components", 10, type=int, min=1),
    Option(
        "axis_b",
        "centroid",
        "Separation axis: the thesis's projected centroid difference, or the top eigenvector of P C_δ P.",
        choices=("centroid", "eigen"),
    ),
    Option("per_kind", False, "Also the published tool's per-kind PCA (correlations.csv).", is_flag=True),
    Option("max_rows", help="Keep the first N rows of each file.", type=int, min=2),
    Option("n_planes", 30, "Complement rotation planes (SVD pairs) to describe.", type=int, min=0),
    Option(
        "active_threshold",
        0.3,
        "A plane is active when the phase coherence of its rotation with position (angle_r) exceeds this.",
        type=float,
        min=0,
        max=1,
    ),
    Option("hi", 0.7, "PC0 taxonomy: high |r|.", type=float, min=0, max=1),
    Option("lo", 0.3, "PC0 taxonomy: low |r|.", type=float, min=0, max=1),
)

_SCATTER = Option("scatter_head", help="LAYER,HEAD for the PC0-PC1 scatter (default: the most positional head).")

OPTIONS: tuple[Option, ...] = (
    Option(
        "qk",
        help="Capture folder (spectra capture / qk-sniffer layout) with post-RoPE q and k; repeat for a "
        "checkpoint series (step from a step-N / checkpoint-N name).",
        path="dir",
        exists=True,
        dest="qk_dirs",
        multiple=True,
        key=False,
    ),
    Option(
        "model",
        help="Instead of --qk: capture this model (zoo name, folder or hub id org/name[@revision]) on held-out text "
        "first, into OUT/qk/.",
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
    Option("max_length", 256, "With --model: tokens each.", type=int, min=2),
    dtype_option(help="With --model: dtype of the model's weights."),
    device_option(help="With --model: device for the model, cpu, cuda, cuda:N or mps (default: the CPU)."),
    attn_implementation_option(help="With --model: attention backend of the model (eager where sdpa is refused)."),
    Option("out", help="Result folder.", path="dir", dest="out_dir", required=True, key=False),
    Option(
        "label", help="A name per --qk folder (default: the folder names).", dest="labels", multiple=True, key=False
    ),
    *ANALYSIS_OPTIONS,
    Option(
        "gqa_group",
        help="Query heads per KV head, for folders without spectra_capture.json.",
        type=int,
        min=1,
        key=False,
    ),
    _SCATTER,
    *stage(),
    Option("bucket_size", 1, "Capture bucket in tokens.", cli=False),
)

#: The keys of ``kind: geometry`` with their defaults.
KEYS = keys(OPTIONS)
