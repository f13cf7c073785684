"""``kind: plasticity`` on the engines: attention plasticity of every model and checkpoint — the
captures (at the model's full context) as tasks, then the analysis of ``spectra plasticity`` over
all of them in the driver.

Layout of ``out``::

    run.json                   the plan (written by spectra.engine.run)
    <label>/capture/           post-RoPE q and k of every position in n_buckets buckets, what
                               plasticity_job.capture_model writes for the model (see spectra.jobs.capture.kind)
    <label>/shards/            the capture tasks' shards it was merged from
    plasticity/                what ``spectra plasticity --qk <label>/capture ... --label <label> ...``
                               writes: heads.csv/.parquet, cells.csv, profile.csv, fractions.csv,
                               heatmap.csv, components.csv, model_report.csv, summary.json,
                               meta.json, figures/ (score_correlations.csv with ``scores``)

The capture stage is ``kind: capture`` with q and k, ``post_rope``, every position, ``n_examples``
(8) examples of ``max_length`` tokens (default: each model's full context,
``max_position_embeddings``) from the held-out text (or ``data``) in ``n_buckets`` (16) uniform
buckets, exactly as ``spectra plasticity --model`` captures. The analysis runs in the driver on
the merged folders, in config order (each ``checkpoints`` entry in step order), with the options
of ``spectra plasticity``; it reads only the captures, so it is rerun (and a changed analysis
option applied) without capturing again. Compared with ``spectra plasticity --model``, the series
is labelled by the run's labels (``tiny-qwen3-step-001600``, not ``step-001600``) and meta.json's
``inputs[].qk_dir`` and ``command_line`` name this run's folders and command.

Example:
    >>> from spectra.engine import check_config
    >>> config = check_config({"kind": "plasticity", "models": "tiny-llama", "n_examples": 2, "out": "results/x"})
    >>> tasks = plan(config)
    >>> tasks[0].options["max_length"], tasks[0].options["bucket_size"]
    (2048, 128)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spectra.engine.core import Task, positive_int
from spectra.jobs.capture.kind import (
    STRAY_GLOB,
    CaptureResult,
    check_capture_keys,
    compute,
    merge_for_analysis,
    plan_captures,
    post_rope_qk_options,
    resolve_max_length,
)
from spectra.jobs.capture.kind import describe as describe_capture
from spectra.jobs.plasticity.options import KEYS
from spectra.jobs.plasticity.run import run_plasticity

__all__ = ["KEYS", "ANALYSIS", "STRAY_GLOB", "check", "compute", "describe", "merge", "plan"]

ANALYSIS = "plasticity"  # the analysis folder under out
_CHOICES = {"mode": ("thesis", "published"), "query_position": ("midpoint", "mean"), "covariance": ("diagonal", "full")}


def check(config: dict[str, Any]) -> dict[str, Any]:
    """Checks the plasticity keys: the capture stage's ``data``, ``n_examples`` (8), ``max_length``
    (default: the model's context), ``n_buckets`` (16; must divide max_length),
    ``examples_per_shard`` (8), ``layers``, ``heads`` (default all), and as ``spectra plasticity``:
    ``mode`` (thesis | published), ``bucket_size`` and ``context_length`` (default: from the
    capture), ``grid_width``, ``query_position`` (midpoint | mean), ``covariance`` (diagonal |
    full), ``pairs_per_cell`` (256), ``seed`` (0), ``heatmap_bin``, ``max_tokens_per_head``
    (50000), ``normality_max_dims`` (64), ``scores`` (a CSV of benchmark scores).

    Example:
        >>> from spectra.engine import check_config
        >>> check_config({"kind": "plasticity", "models": "tiny-llama", "out": "x", "mode": "paper"})
        Traceback (most recent call last):
        ...
        ValueError: mode: 'paper'; allowed values are thesis, published
    """
    check_capture_keys(config, min_length=2)
    config["n_buckets"] = positive_int(config["n_buckets"], "n_buckets")
    if config["max_length"] is not None and config["max_length"] % config["n_buckets"]:
        raise ValueError(f"n_buckets: must divide max_length = {config['max_length']}; got {config['n_buckets']}")
    for key, allowed in _CHOICES.items():
        if config[key] not in allowed:
            raise ValueError(f"{key}: {config[key]!r}; allowed values are {', '.join(allowed)}")
    for key in ("bucket_size", "context_length", "heatmap_bin"):
        config[key] = positive_int(config[key], key, optional=True)
    for key in ("pairs_per_cell", "normality_max_dims"):
        config[key] = positive_int(config[key], key)
    tokens = config["max_tokens_per_head"]
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 3:
        raise ValueError(f"max_tokens_per_head: expected an integer >= 3; got {tokens!r}")
    width = config["grid_width"]
    if width is not None:
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"grid_width: expected a number > 0 (tokens); got {width!r}")
        config["grid_width"] = float(width)
    if not isinstance(config["seed"], int) or isinstance(config["seed"], bool):
        raise ValueError(f"seed: expected an integer; got {config['seed']!r}")
    if config["scores"] is not None:
        scores = Path(str(config["scores"]))
        if not scores.is_file():
            raise ValueError(f"scores: {scores} is not a file (a CSV of benchmark scores)")
        config["scores"] = str(scores.absolute())
    return config


def plan(config: Mapping[str, Any]) -> list[Task]:
    """The capture tasks (see :mod:`spectra.jobs.capture.kind`): post-RoPE q and k, every position, in
    ``n_buckets`` buckets of ``max_length`` (default: the model's context)."""

    def options(model: str, folder: Path) -> dict[str, Any]:
        length = resolve_max_length(config, model, folder, None)
        if length < config["n_buckets"] or length % config["n_buckets"]:
            raise ValueError(f"n_buckets: must divide max_length = {length} ({model}); got {config['n_buckets']}")
        return post_rope_qk_options(config, length, length // config["n_buckets"])

    return plan_captures(config, options)


def merge(
    config: Mapping[str, Any], tasks: Sequence[Task], command_line: Sequence[str] | None = None
) -> dict[str, Any]:
    """Merges the captures, then runs :func:`~spectra.jobs.plasticity.run.run_plasticity` on them into
    ``out/plasticity`` (emptied first). Returns ``label -> CaptureResult`` and ``"plasticity" -> PlasticityRun``."""
    captures, out = merge_for_analysis(config, tasks, ANALYSIS)
    run = run_plasticity(
        [c.out_dir for c in captures.values()],
        out,
        mode=config["mode"],
        labels=list(captures),
        scores=config["scores"],
        command_line=list(command_line) if command_line is not None else list(sys.argv),
        progress=False,
        bucket_size=config["bucket_size"],
        context_length=config["context_length"],
        grid_width=config["grid_width"],
        query_position=config["query_position"],
        covariance=config["covariance"],
        pairs_per_cell=config["pairs_per_cell"],
        seed=config["seed"],
        heatmap_bin=config["heatmap_bin"],
        max_tokens_per_head=config["max_tokens_per_head"],
        normality_max_dims=config["normality_max_dims"],
        gqa_group=None,
    )
    return {**captures, ANALYSIS: run}


def describe(label: str, result: Any) -> str:
    """One line per capture folder, and the analysis's: its head rows, folder and the last model's AP."""
    if isinstance(result, CaptureResult):
        return describe_capture(label, result)
    row = result.report.iloc[-1]
    return (
        f"{label}: {len(result.heads)} head rows -> {result.out_dir} ({row['checkpoint']}: ap_overall "
        f"{row['ap_overall']:.4f}, ap_drop {row['ap_drop']:.4f})"
    )
