"""``kind: geometry`` on the engines: QK geometry of every model and checkpoint — the captures as
tasks, then the analysis of ``spectra geometry`` over all of them in the driver.

Layout of ``out``::

    run.json                   the plan (written by spectra.engine.run)
    <label>/capture/           post-RoPE q and k of every position, what geometry_job.capture_model
                               writes for the model (see spectra.jobs.capture.kind)
    <label>/shards/            the capture tasks' shards it was merged from
    geometry/                  what ``spectra geometry --qk <label>/capture ... --label <label> ...``
                               writes: heads.parquet/.csv, qk.csv, planes.csv, series.csv,
                               summary.json, meta.json, figures/

The capture stage is ``kind: capture`` with q and k, ``post_rope``, every position, buckets of
``bucket_size`` (1) tokens, ``n_examples`` (8) examples of ``max_length`` (256) tokens from the
held-out text (or ``data``), exactly as ``spectra geometry --model`` captures. The analysis runs in
the driver on the merged folders, in config order (each ``checkpoints`` entry in step order), with
the options of ``spectra geometry``; it reads only the captures, so it is rerun (and a changed
analysis option applied) without capturing again. Compared with ``spectra geometry --model``, the
series is labelled by the run's labels (``tiny-qwen3-step-001600``, not ``step-001600``) and
meta.json's ``inputs[].qk_dir`` and ``command_line`` name this run's folders and command.

Example:
    >>> from spectra.engine import check_config
    >>> config = check_config({"kind": "geometry", "checkpoints": "tiny-qwen3", "n_examples": 4,
    ...                        "examples_per_shard": 2, "out": "results/x"})
    >>> tasks = plan(config)
    >>> len(tasks), tasks[-1].id, tasks[0].options["capture"], tasks[0].options["positions"]
    (12, 'tiny-qwen3-step-001600/shard-00001', ['q', 'k'], 'all')
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spectra.engine.core import Task, int_list, positive_int
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
from spectra.jobs.geometry.options import KEYS
from spectra.jobs.geometry.run import run_geometry

__all__ = ["KEYS", "ANALYSIS", "STRAY_GLOB", "check", "compute", "describe", "merge", "plan"]

ANALYSIS = "geometry"  # the analysis folder under out


def _fraction(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{key}: expected a number in [0, 1]; got {value!r}")
    return float(value)


def check(config: dict[str, Any]) -> dict[str, Any]:
    """Checks the geometry keys: the capture stage's ``data``, ``n_examples`` (8), ``max_length`` (256),
    ``examples_per_shard`` (8), ``layers``, ``heads`` (default all) and ``bucket_size`` (1), and as
    ``spectra geometry``: ``n_components`` (10), ``axis_b`` (centroid | eigen), ``per_kind``
    (false), ``max_rows``, ``n_planes`` (30), ``active_threshold`` (0.3), ``hi`` (0.7), ``lo``
    (0.3), ``scatter_head`` (``[layer, head]`` or ``"layer,head"``; default the most positional head).

    Example:
        >>> from spectra.engine import check_config
        >>> check_config({"kind": "geometry", "models": "tiny-llama", "out": "x", "axis_b": "pca"})
        Traceback (most recent call last):
        ...
        ValueError: axis_b: 'pca'; allowed values are centroid, eigen
    """
    check_capture_keys(config, min_length=2)
    config["bucket_size"] = positive_int(config["bucket_size"], "bucket_size")
    config["n_components"] = positive_int(config["n_components"], "n_components")
    if config["axis_b"] not in ("centroid", "eigen"):
        raise ValueError(f"axis_b: {config['axis_b']!r}; allowed values are centroid, eigen")
    if not isinstance(config["per_kind"], bool):
        raise ValueError(f"per_kind: expected true or false; got {config['per_kind']!r}")
    max_rows = config["max_rows"]
    if max_rows is not None and (not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 2):
        raise ValueError(f"max_rows: expected an integer >= 2; got {max_rows!r}")
    planes = config["n_planes"]
    if not isinstance(planes, int) or isinstance(planes, bool) or planes < 0:
        raise ValueError(f"n_planes: expected an integer >= 0; got {planes!r}")
    for key in ("active_threshold", "hi", "lo"):
        config[key] = _fraction(config[key], key)
    head = config["scatter_head"]
    if head is not None:
        pair = int_list(head, "scatter_head") if isinstance(head, (str, list, tuple)) else None
        if pair is None or len(pair) != 2 or (isinstance(head, str) and "-" in head):
            raise ValueError(f"scatter_head: expected [layer, head] or 'layer,head' such as 2,5; got {head!r}")
        config["scatter_head"] = pair
    return config


def plan(config: Mapping[str, Any]) -> list[Task]:
    """The capture tasks (see :mod:`spectra.jobs.capture.kind`): post-RoPE q and k, every position."""

    def options(model: str, folder: Path) -> dict[str, Any]:
        max_length = resolve_max_length(config, model, folder, KEYS["max_length"])
        return post_rope_qk_options(config, max_length, config["bucket_size"])

    return plan_captures(config, options)


def merge(
    config: Mapping[str, Any], tasks: Sequence[Task], command_line: Sequence[str] | None = None
) -> dict[str, Any]:
    """Merges the captures, then runs :func:`~spectra.jobs.geometry.run.run_geometry` on them into
    ``out/geometry`` (emptied first). Returns ``label -> CaptureResult`` and ``"geometry" -> GeometryRun``."""
    captures, out = merge_for_analysis(config, tasks, ANALYSIS)
    head = config["scatter_head"]
    run = run_geometry(
        [c.out_dir for c in captures.values()],
        out,
        labels=list(captures),
        per_kind=config["per_kind"],
        scatter_head=tuple(head) if head is not None else None,
        command_line=list(command_line) if command_line is not None else list(sys.argv),
        n_components=config["n_components"],
        axis_b=config["axis_b"],
        max_rows=config["max_rows"],
        n_planes=config["n_planes"],
        active_threshold=config["active_threshold"],
        hi=config["hi"],
        lo=config["lo"],
        gqa_group=None,
    )
    return {**captures, ANALYSIS: run}


def describe(label: str, result: Any) -> str:
    """One line per capture folder, and the analysis's: its head rows, folder and the final PC0 classes."""
    if isinstance(result, CaptureResult):
        return describe_capture(label, result)
    final = result.summary["final"]
    classes = ", ".join(f"{k} {v:.0%}" for k, v in final["pc0_class_share"].items())
    return f"{label}: {len(result.tables.heads)} head rows -> {result.out_dir} ({final['checkpoint']}: PC0 {classes})"
