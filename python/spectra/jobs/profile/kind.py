"""``kind: profile`` on the engines: per-token metrics of every model and checkpoint, one task per
(model or checkpoint, shard of ``samples_per_shard`` samples).

Layout of ``out``::

    run.json                       the plan (written by spectra.engine.run)
    <label>/                       one folder per model or checkpoint, exactly what run_profile writes:
        meta.json                  model identity, run configuration, run_hash (as spectra profile)
        tokens/shard-00000.parquet per-token metrics of samples [0, samples_per_shard), one per task
        head_summary.parquet/.csv, correlations_*.parquet, summary.json, figures/ ...

A shard holds the samples ``[shard * samples_per_shard, ...)`` profiled in one forward pass,
exactly as ``spectra profile --batch-size samples_per_shard`` would, so the two produce the same
shards and the same ``run_hash``; the merge builds the rest of the folder from the shards alone.

Example:
    >>> import tempfile
    >>> from spectra.engine import LocalEngine, run
    >>> config = {"kind": "profile", "models": ["tiny-llama"], "context_length": 32, "n_samples": 3,
    ...           "samples_per_shard": 2, "layers": [0], "n_permutations": 5, "out": tempfile.mkdtemp()}
    >>> run(config, LocalEngine(), progress=False).report.computed
    ['tiny-llama/shard-00000', 'tiny-llama/shard-00001']
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spectra.data.windows import config_windows
from spectra.engine.core import (
    Task,
    check_model_config,
    entries,
    int_list,
    keep_created,
    load_task_model,
    model_folder,
    model_identity,
    positive_int,
    shards_by_label,
    shared_model_identity,
    write_parquet_shard,
)
from spectra.io.atomic import write_json
from spectra.io.identity import data_sha256
from spectra.jobs.profile.options import KEYS
from spectra.jobs.profile.run import DEFAULT_METRICS, META, ProfileResult, _analyse, profile_meta, read_tokens
from spectra.metrics.profile import check_metrics, check_threshold, profile
from spectra.metrics.summaries import layer_summary
from spectra.models import check_ignore_first
from spectra.models.zoo.model_classes import default_ignore_first
from spectra.models.zoo.paths import load_tokenizer
from spectra.models.zoo.references import model_source

__all__ = ["KEYS", "check", "compute", "describe", "merge", "plan"]

STRAY_GLOB = ("tokens", "shard-*.parquet")  # files under <label>/tokens that a plan must account for


def check(config: dict[str, Any]) -> dict[str, Any]:
    """Checks the profile keys: ``context_length`` (required), ``n_samples`` (default: all windows of
    the data), ``samples_per_shard`` (8) and, as in ``spectra profile``, ``data``, ``layers``,
    ``heads``, ``metrics``, ``threshold``, ``ignore_first`` (none: 2 for decoders, 0 for encoders),
    ``add_special_tokens`` (true), ``n_permutations``."""
    config["context_length"] = positive_int(config["context_length"], "context_length")
    config["n_samples"] = positive_int(config["n_samples"], "n_samples", optional=True)
    config["samples_per_shard"] = positive_int(config["samples_per_shard"], "samples_per_shard")
    config["layers"] = int_list(config["layers"], "layers")
    config["heads"] = int_list(config["heads"], "heads")
    metrics = config["metrics"]
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    config["metrics"] = list(check_metrics(DEFAULT_METRICS if metrics is None else metrics))
    config["threshold"] = check_threshold(config["threshold"])
    config["ignore_first"] = check_ignore_first(config["ignore_first"])
    if not isinstance(config["add_special_tokens"], bool):
        raise ValueError(f"add_special_tokens: expected true or false; got {config['add_special_tokens']!r}")
    config["n_permutations"] = positive_int(config["n_permutations"], "n_permutations")
    if config["data"] is not None:
        config["data"] = str(config["data"])
    return config


def plan(config: Mapping[str, Any]) -> list[Task]:
    """The tasks of a profile run: every model and checkpoint × every shard of ``samples_per_shard`` samples.

    The windows are tokenised here, once per model, with that model's tokenizer
    (``spectra.data.windows.config_windows``). Tasks come grouped by model, in config order, shards ascending.

    Example:
        >>> from spectra.engine import check_config
        >>> tasks = plan(check_config({"kind": "profile", "models": ["tiny-llama"], "checkpoints": ["tiny-qwen3"],
        ...                            "context_length": 32, "n_samples": 5, "samples_per_shard": 2, "out": "results/x"}))
        >>> len(tasks), tasks[0].id, tasks[2].samples, tasks[-1].id
        (21, 'tiny-llama/shard-00000', (4, 5), 'tiny-qwen3-step-001600/shard-00002')
    """

    options = {
        key: config[key]
        for key in (
            "context_length",
            "layers",
            "heads",
            "metrics",
            "threshold",
            "ignore_first",
            "dtype",
            "attn_implementation",
            "device",
            "device_map",
            "max_memory",
            "offload_folder",
            "n_permutations",
            "data",
            "add_special_tokens",
            "samples_per_shard",
        )
    }
    options["n_samples_requested"] = config["n_samples"]
    tasks: list[Task] = []
    for label, model in entries(config):
        folder = model_folder(model)
        check_model_config(
            model, folder, context_length=config["context_length"], layers=config["layers"], heads=config["heads"]
        )
        tokenizer = load_tokenizer(folder)
        windows = config_windows(config, tokenizer, config["data"])
        if config["ignore_first"] is None:  # the model's default, as spectra profile's: 0 for encoders
            options["ignore_first"] = default_ignore_first(folder)
        size = config["samples_per_shard"]
        for shard, lo in enumerate(range(0, len(windows), size)):
            hi = min(len(windows), lo + size)
            tasks.append(
                Task(
                    kind="profile",
                    model=model,
                    label=label,
                    shard=shard,
                    samples=(lo, hi),
                    out=config["out"],
                    options=dict(options),
                    relpath=f"{label}/tokens/shard-{shard:05d}.parquet",
                    input_ids=windows[lo:hi],
                    num_gpus=config["gpus_per_task"],
                )
            )
    return tasks


def compute_frame(task: Task):
    """The shard's per-token table (``spectra.profile`` of the task's windows in one forward pass) and
    the model identity that goes into the shard's metadata."""

    model, _ = load_task_model(task)
    lo, hi = task.samples
    frame = profile(
        model,
        torch.from_numpy(np.ascontiguousarray(task.input_ids)),
        layers=task.options["layers"],
        heads=task.options["heads"],
        metrics=task.options["metrics"],
        threshold=task.options["threshold"],
        ignore_first=task.options["ignore_first"],
        sample_ids=list(range(lo, hi)),
    )
    return frame, model_identity(model)


def compute(task: Task) -> int:
    """Profiles the task's windows and writes its shard (with the encodings of ``write_profile_parquet``)."""
    frame, identity = compute_frame(task)
    write_parquet_shard(task, frame, identity)
    return len(frame)


def merge(
    config: Mapping[str, Any], tasks: Sequence[Task], command_line: Sequence[str] | None = None
) -> dict[str, Any]:
    """Builds each model's result folder from its shards: ``meta.json`` (the same document, and the
    same ``run_hash``, as ``spectra profile --batch-size samples_per_shard``), then the head summary,
    correlation tables, ``summary.json`` and figures from all shards. Returns ``label -> ProfileResult``.

    Raises ``ValueError`` when a shard is missing, or when the shards of one folder disagree on the
    model (its weights changed between two runs)."""
    results: dict[str, Any] = {}
    for label, group in shards_by_label(tasks).items():
        out = Path(group[0].out) / label
        identity = shared_model_identity(group)
        options = group[0].options
        windows = np.concatenate([t.input_ids for t in group]).astype(np.int64)
        run_config = {
            "context_length": int(windows.shape[1]),
            "n_samples": int(windows.shape[0]),
            "n_samples_requested": options["n_samples_requested"],
            "batch_size": options["samples_per_shard"],
            "layers": options["layers"],
            "heads": options["heads"],
            "metrics": list(options["metrics"]),
            "threshold": options["threshold"],
            "ignore_first": int(options["ignore_first"]),
            "n_permutations": int(options["n_permutations"]),
            "data": options["data"],
            "add_special_tokens": options["add_special_tokens"],
            "data_sha256": data_sha256(windows),
        }
        identity_keys = {k: identity[k] for k in ("class", "config_sha256", "weights_fingerprint")}
        meta = profile_meta(
            group[0].model,
            identity_keys,
            identity["dtype"],
            run_config,
            len(group),
            command_line,
            identity.get("attn_implementation"),
        )
        source = model_source(group[0].model)
        if source is not None and source["kind"] == "hub":  # a folder's name here is already its absolute path
            meta["model_source"] = source
        keep_created(out / META, meta)
        write_json(out / META, meta)
        frame = read_tokens(out)
        files = _analyse(frame, out, n_permutations=options["n_permutations"])
        results[label] = ProfileResult(
            out_dir=out,
            meta=meta,
            summary=json.loads(files["summary"].read_text()),
            shards=[t.path for t in group],
            computed_shards=[],
            figures=[files[k] for k in sorted(files) if k.startswith("figure:")],
            layer_summary=layer_summary(
                frame, [m for m in ("entropy", "max_attn", "k_eff", "sink_mass") if m in frame.columns] or None
            ),
            files=files,
        )
    return results


def describe(label: str, result) -> str:
    """``tiny-llama: 16 samples, 4 shards, verdict GO``."""
    return (
        f"{label}: {result.meta['run']['n_samples']} samples, {len(result.shards)} shards, "
        f"verdict {result.summary.get('verdict')}"
    )
