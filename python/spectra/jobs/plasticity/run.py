"""The job behind ``spectra plasticity``: capture folders (or a model and its checkpoints, captured
first at the model's full context) in, a result folder of tables, ``summary.json`` and figures out.

Layout of the result folder::

    heads.csv, heads.parquet   one row per (checkpoint, layer, query head): the published tool's
                               columns, ap_overall of the chosen mode, ap_first_20/ap_last_20/ap_drop
    cells.csv                  one row per query cell (thesis) or (query bucket, key bucket) cell
    profile.csv                one row per (head, profile point): tau, context_fraction, ap
    fractions.csv              deciles, quintiles and length bins per head
    heatmap.csv                PP summed per (inter-key distance bin, query-to-midpoint bin) per head
    components.csv             per-dimension R² and weight (RoPE dimension structure)
    model_report.csv           one row per model/checkpoint
    score_correlations.csv     with --scores: plasticity vs benchmark scores
    summary.json, meta.json    aggregates; mode, bucket size, window rule, options, inputs, versions
    figures/*.png
    qk/<label>/                captures made from --model (reused when already complete)

Every file is written atomically; a capture folder is complete or absent, so a rerun after an
interruption only captures what is missing.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import AutoConfig

import spectra
from spectra import defaults, plasticity
from spectra.capture.forward import run_model
from spectra.capture.store import read_sidecar
from spectra.figures import plasticity as plasticity_figures
from spectra.io.atomic import write_csv, write_json, write_parquet
from spectra.jobs.geometry import run as geometry_job
from spectra.models import zoo
from spectra.models.random_init import VOCAB_SIZE, tiny_model
from spectra.models.zoo.loading import resolve
from spectra.plasticity import summary as plasticity_summary

__all__ = ["PlasticityRun", "capture_model", "capture_random_llama", "print_plasticity_run", "run_plasticity"]


@dataclass
class PlasticityRun:
    """What :func:`run_plasticity` wrote."""

    out_dir: Path
    tables: plasticity.PlasticityTables
    heads: pd.DataFrame
    profile: pd.DataFrame
    fractions: pd.DataFrame
    report: pd.DataFrame
    correlations: pd.DataFrame | None = None
    figures: list[Path] = field(default_factory=list)


def capture_model(
    model_name: str,
    out_root: str | Path,
    *,
    checkpoints: bool = False,
    n_examples: int = 8,
    max_length: int | None = None,
    n_buckets: int = 16,
    progress: bool = False,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    dtype: str | None = None,
    device: str | None = None,
    attn_implementation: str = defaults.ATTN_IMPLEMENTATION,
) -> list[Path]:
    """Captures post-RoPE q and k of every head of a model (zoo name or folder), or of each of its zoo
    checkpoints, on held-out text: ``n_examples`` examples of ``max_length`` tokens (default: the
    model's full context, ``max_position_embeddings``), every position kept, in ``n_buckets`` uniform
    buckets. Returns the folders in step order; finished captures are reused. ``layers`` / ``heads``
    (query heads of every layer) restrict the capture (default all); ``dtype``, ``device`` and
    ``attn_implementation`` load
    the model (as ``spectra.models.loading.load_model``; default float32 on the CPU).

    Example:
        >>> import tempfile
        >>> [p.name for p in capture_model("tiny-qwen3", tempfile.mkdtemp(), checkpoints=True, n_examples=2,
        ...                                max_length=64)][-1]
        'step-001600'
    """

    if max_length is None:
        source = zoo.checkpoint_paths(model_name)[-1] if checkpoints else model_name
        max_length = _context_of(str(source))
    if n_buckets < 1 or max_length % n_buckets:
        raise ValueError(f"n_buckets: must divide max_length = {max_length}; got {n_buckets}")
    return geometry_job.capture_model(
        model_name,
        out_root,
        checkpoints=checkpoints,
        n_examples=n_examples,
        max_length=max_length,
        progress=progress,
        bucket_size=max_length // n_buckets,
        layers=layers,
        heads=heads,
        dtype=dtype,
        device=device,
        attn_implementation=attn_implementation,
    )


def _context_of(name_or_path: str) -> int:

    path = resolve(name_or_path)
    context = getattr(AutoConfig.from_pretrained(str(path)), "max_position_embeddings", None)
    if not context:
        raise ValueError(f"max_length: {name_or_path} names no max_position_embeddings; pass max_length")
    return int(context)


def capture_random_llama(
    out_dir: str | Path, *, context_length: int = 8192, n_examples: int = 2, n_buckets: int = 16, seed: int = 0
) -> dict[str, Any]:
    """A random-init Llama-shaped model (2 layers, 8 query / 2 KV heads of d = 64, RoPE θ = 500000,
    context ``context_length``) run on random tokens with the Probe capturing q and k of every head
    at every position, streamed to ``out_dir`` (memory stays bounded by one forward pass). Returns
    the sidecar plus ``seconds`` and ``peak_rss_mib``.

    Example:
        >>> import tempfile
        >>> meta = capture_random_llama(tempfile.mkdtemp(), context_length=256, n_examples=1)
        >>> meta["model"]["n_heads"], meta["sampler"]["bucket_size"]
        (8, 16)
    """

    if context_length < n_buckets or context_length % n_buckets:
        raise ValueError(f"context_length: must be a multiple of n_buckets = {n_buckets}; got {context_length}")
    model = tiny_model(
        "llama",
        seed=seed,
        hidden_size=256,
        intermediate_size=512,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        num_hidden_layers=2,
        max_position_embeddings=context_length,
        rope_parameters={"rope_type": "default", "rope_theta": 500_000.0},
    )
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    probe = spectra.Probe(
        model,
        capture=("q", "k"),
        positions="all",
        bucket_size=context_length // n_buckets,
        out_dir=out_dir,
        keep_in_memory=False,
    )
    with probe:
        for example in range(n_examples):
            ids = torch.randint(3, VOCAB_SIZE, (1, context_length), generator=generator)
            probe.set_example_ids([example])
            run_model(model, ids, backbone=True, require_eval=False)
    meta = read_sidecar(out_dir)
    meta["seconds"] = time.perf_counter() - start
    meta["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return meta


def run_plasticity(
    qk_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    mode: str = "thesis",
    labels: Sequence[str] | None = None,
    scores: str | Path | pd.DataFrame | None = None,
    command_line: Sequence[str] | None = None,
    progress: bool = False,
    **options: Any,
) -> PlasticityRun:
    """Analyses one or more capture folders into ``out_dir`` (see the module docstring). ``options``
    go to :func:`spectra.plasticity.analyze` (bucket_size, context_length, pairs_per_cell, seed,
    grid_width, query_position, covariance, heatmap_bin, …). ``scores`` is a CSV path or frame of
    benchmark scores (see :func:`spectra.plasticity.summary.score_correlations`).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> folders = capture_model("tiny-llama", root / "qk", n_examples=2, max_length=128)
        >>> run = run_plasticity(folders, root / "out")
        >>> len(run.heads), sorted(p.name for p in run.figures)[0]
        (32, 'component_weights.png')
    """

    dirs = [Path(d) for d in qk_dirs]
    score_frame = None
    if scores is not None:
        score_frame = scores if isinstance(scores, pd.DataFrame) else pd.read_csv(scores)
    tables = plasticity.series(dirs, mode, labels=labels, progress=progress, **options)
    profile = plasticity_summary.profile(tables)
    fractions = plasticity_summary.fractions(profile)
    heads = plasticity_summary.with_head_summary(tables.heads, fractions)
    report = plasticity_summary.model_report(heads, fractions, tables)
    correlations = None
    if score_frame is not None:
        correlations = plasticity_summary.score_correlations(report, fractions, score_frame)

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    write_parquet(out / "heads.parquet", heads)
    write_csv(out / "heads.csv", heads)
    write_csv(out / "cells.csv", tables.cells)
    write_csv(out / "profile.csv", profile)
    write_csv(out / "fractions.csv", fractions)
    write_csv(out / "heatmap.csv", tables.heatmap)
    write_csv(out / "components.csv", tables.components)
    write_csv(out / "model_report.csv", report)
    if correlations is not None:
        write_csv(out / "score_correlations.csv", correlations)
    summary = {"mode": mode, "models": report.to_dict(orient="records")}
    if correlations is not None:
        summary["score_correlations"] = correlations.to_dict(orient="records")
    write_json(out / "summary.json", summary)
    write_json(
        out / "meta.json",
        {
            "spectra_version": spectra.__version__,
            "mode": mode,
            "inputs": tables.meta["checkpoints"],
            "options": {k: v for k, v in options.items()},
            "command_line": list(command_line) if command_line else None,
        },
    )

    figures_dir = out / "figures"
    last = report["checkpoint"].iloc[-1]

    def final(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["checkpoint"] == last]

    figures = [
        plasticity_figures.profile_figure(final(profile), figures_dir / "profile.png", title=f"{last}: AP profile"),
        plasticity_figures.heatmap_figure(
            final(tables.heatmap), figures_dir / "heatmap.png", title=f"{last}: PP by key distance and query distance"
        ),
        plasticity_figures.component_weights_figure(
            final(tables.components),
            figures_dir / "component_weights.png",
            title=f"{last}: positional weight per dimension",
        ),
    ]
    if mode == "published":
        figures.append(
            plasticity_figures.bucket_heatmap_figure(final(tables.cells), figures_dir / "bucket_heatmap.png")
        )
    if len(dirs) > 1:
        figures += [
            plasticity_figures.profiles_comparison_figure(profile, figures_dir / "profiles_comparison.png"),
            plasticity_figures.heatmaps_comparison_figure(tables.heatmap, figures_dir / "heatmaps_comparison.png"),
            plasticity_figures.component_weights_figure(
                tables.components, figures_dir / "component_weights_comparison.png", by="checkpoint"
            ),
        ]
    if score_frame is not None and "length" not in score_frame.columns and len(report) >= 3:
        score_columns = [c for c in score_frame.columns if c != "checkpoint"]
        figures.append(
            plasticity_figures.score_correlation_figure(
                report, score_frame, figures_dir / "ap_drop_vs_score.png", score_column=score_columns[0]
            )
        )
    return PlasticityRun(out, tables, heads, profile, fractions, report, correlations, figures)


def print_plasticity_run(run: PlasticityRun, echo=print) -> None:
    echo(f"spectra plasticity: {len(run.heads)} head rows -> {run.out_dir}")
    for _, row in run.report.iterrows():
        echo(
            f"{row['checkpoint']}: ap_overall {row['ap_overall']:.4f}, first 20% {row['ap_first_20']:.4f}, "
            f"last 20% {row['ap_last_20']:.4f}, ap_drop {row['ap_drop']:.4f} ({row['n_heads']} heads, "
            f"{row['mode']} mode, B = {row['bucket_size']}, context {row['context_length']})"
        )
    if run.correlations is not None:
        for _, row in run.correlations.iterrows():
            echo(
                f"  {row['metric']} vs {row['score']} ({row['scope']}, {row['checkpoint']}): r = {row['r']:.3f} "
                f"(n = {row['n']}, p = {row['p']:.3g})"
            )
    for path in run.figures:
        echo(f"figure: {path}")
