"""``kind: sweep`` on the engines: the intervention experiments of ``spectra sweep`` (scale_sweep,
gain_map, qk_asymmetry) for every model and checkpoint, one task per shard ``spectra sweep`` writes.

Layout of ``out``::

    run.json                            the plan (written by spectra.engine.run)
    <label>/                            one folder per model or checkpoint, exactly what spectra sweep writes:
        meta.json                       config, model identity, versions, run_hash (as spectra sweep)
        shards/local.parquet            the local sweep of every target head (one task)
        shards/propagated-L002H000.parquet   the propagated sweep of one target head (one task per head)
        shards/gain_map-local.parquet   qk_asymmetry with heads: from_gain_map: the gain map (first stage)
        sweep.parquet/.csv, gains / gain_map / selected_heads / asymmetry tables, summary.json, *.png

The tasks are exactly the shards of ``sweep_job.plan_shards``; every task carries all the token
windows (a sweep's gains are fitted over samples, so shards split by head, not by sample). With
``heads: from_gain_map`` the plan is the gain-map shard alone until that shard is done; the next
plan reads it, selects the high/medium/low heads as ``spectra sweep`` does
(``sweep_job.gain_map_selection``) and adds their shards. The merge runs ``sweep_job.analyse_sweep``
on the shards with the model's shape from its ``config.json``, without loading weights; the model
identity in ``meta.json`` comes from the shards' stamps. A label's folder is the one ``spectra sweep
--config`` writes for ``model: <that model>`` and the same settings (same ``run_hash``, same tables
and figures byte for byte), except that each shard also carries its task stamp in its Parquet
metadata and is written with the engine's encodings (same rows).

Example:
    >>> import tempfile
    >>> from spectra.engine import LocalEngine, run
    >>> config = {"kind": "sweep", "models": ["tiny-llama"], "experiment": "scale_sweep", "heads": [[2, 0]],
    ...           "modes": ["local", "propagated"], "alphas": [0.5, 1.0, 2.0], "context_length": 16,
    ...           "n_samples": 2, "n_bootstrap": 20, "out": tempfile.mkdtemp()}
    >>> run(config, LocalEngine(), progress=False).report.computed
    ['tiny-llama/local', 'tiny-llama/propagated-L002H000']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import AutoConfig

from spectra.data.windows import config_windows
from spectra.engine.core import (
    COMMON_KEYS,
    Task,
    check_model_config,
    entries,
    is_done,
    keep_created,
    load_task_model,
    model_folder,
    model_identity,
    shards_by_label,
    shared_model_identity,
    write_parquet_shard,
)
from spectra.io.atomic import write_json
from spectra.io.identity import data_sha256
from spectra.jobs.sweep import run as sweep_job
from spectra.jobs.sweep.run import (
    EXPERIMENTS,
    META,
    SHARDS,
    SweepConfig,
    SweepResult,
    SweepShard,
)
from spectra.models.zoo.model_classes import default_ignore_first
from spectra.models.zoo.paths import load_tokenizer
from spectra.models.zoo.references import model_source

__all__ = ["KEYS", "check", "compute", "describe", "merge", "plan"]


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


#: Every ``SweepConfig`` setting but ``model`` (the config's models/checkpoints), ``out``, and ``dtype``,
#: ``device`` and ``attn_implementation`` (keys of every kind, in ``COMMON_KEYS``), with its default.
KEYS: dict[str, Any] = {
    f.name: _default(f)
    for f in fields(SweepConfig)
    if f.name not in ("model", "out", "dtype", "device", "attn_implementation")
}
#: The common keys a task needs to load its model (dtype, attention, device, device_map, ...).
PLACEMENT = tuple(k for k in COMMON_KEYS if k not in ("kind", "models", "checkpoints", "out", "gpus_per_task"))


def _sweep_config(model: str, settings: Mapping[str, Any], *, resolve: bool = True) -> SweepConfig:
    """The ``SweepConfig`` of ``model``; ``resolve``: an unset ``ignore_first`` becomes the model's
    default (0 for an encoder, 2 for a decoder), as ``spectra sweep`` records it."""
    values = {key: settings[key] for key in KEYS}
    if resolve and values["ignore_first"] is None:
        values["ignore_first"] = default_ignore_first(model_folder(model))
    return SweepConfig(model=model, **values)


def check(config: dict[str, Any]) -> dict[str, Any]:
    """Checks the sweep keys as ``spectra sweep`` does (``SweepConfig``) and stores their normalised
    values (defaults of ``modes``/``kinds``/``heads`` filled in per experiment, sorted ``alphas``):
    ``experiment`` (required: scale_sweep | gain_map | qk_asymmetry), ``data``, ``context_length``,
    ``n_samples``, ``batch_size``, ``alphas``, ``heads``, ``control``, ``modes``, ``kinds``,
    ``ignore_first``, ``threshold``, ``gain_by``, ``n_bootstrap``, ``seed``, ``add_special_tokens``.

    Example:
        >>> from spectra.engine import check_config
        >>> checked = check_config({"kind": "sweep", "models": "tiny-llama", "experiment": "qk_asymmetry", "out": "x"})
        >>> checked["heads"], checked["modes"], checked["kinds"]
        ('from_gain_map', ['propagated'], ['q', 'k'])
    """
    if config.get("experiment") is None:
        raise ValueError(f"experiment: the config names no experiment; allowed are {', '.join(EXPERIMENTS)}")
    if config["data"] is not None:
        config["data"] = str(config["data"])
    try:
        normalised = _sweep_config("-", config, resolve=False)
    except TypeError as error:  # a value of the wrong type deep in a check
        raise ValueError(f"config: a sweep setting has a value of the wrong type ({error})") from None
    for key in KEYS:
        config[key] = getattr(normalised, key)
    return config


def _shape(folder: Path) -> tuple[int, int]:

    return sweep_job.model_shape(AutoConfig.from_pretrained(folder, local_files_only=True))


def _task(
    config: Mapping[str, Any], label: str, model: str, index: int, shard: SweepShard, windows: np.ndarray
) -> Task:
    options = {key: config[key] for key in (*KEYS, *PLACEMENT)}
    return Task(
        kind="sweep",
        model=model,
        label=label,
        shard=index,
        samples=(0, len(windows)),
        out=config["out"],
        options=options,
        relpath=f"{label}/{SHARDS}/{shard.name}",
        input_ids=windows,
        data={"mode": shard.mode, "kinds": list(shard.kinds), "targets": [list(t) for t in shard.targets]},
        num_gpus=config["gpus_per_task"],
    )


def _selection(config: SweepConfig, task: Task):

    return sweep_job.gain_map_selection(config, pd.read_parquet(task.path))


def plan(config: Mapping[str, Any]) -> list[Task]:
    """The tasks of a sweep run that can be known now: per model and checkpoint (config order), the
    shards of ``sweep_job.plan_shards`` in the order ``spectra sweep`` computes them.

    The windows are tokenised here, once per model, with its tokenizer (``spectra.data.windows.config_windows``)
    and the heads checked against its ``config.json``. With ``heads: from_gain_map`` the heads' shards
    are planned once the gain-map shard is done.

    Example:
        >>> from spectra.engine import check_config
        >>> tasks = plan(check_config({"kind": "sweep", "models": ["tiny-llama"], "experiment": "scale_sweep",
        ...                            "heads": [[2, 0], [2, 5]], "modes": ["local", "propagated"],
        ...                            "context_length": 32, "n_samples": 2, "out": "results/x"}))
        >>> [t.id for t in tasks], tasks[0].data["targets"], tasks[0].samples
        (['tiny-llama/local', 'tiny-llama/propagated-L002H000', 'tiny-llama/propagated-L002H005'], [[2, 0], [2, 5]], (0, 2))
    """

    tasks: list[Task] = []
    for label, model in entries(config):
        folder = model_folder(model)
        check_model_config(model, folder, context_length=config["context_length"])
        n_layers, n_heads = _shape(folder)
        settings = _sweep_config(model, config)
        try:
            shards = sweep_job.plan_shards(settings, n_layers, n_heads)
        except ValueError as error:
            raise ValueError(f"{error} ({model}: {n_layers} layers x {n_heads} heads)") from None
        tokenizer = load_tokenizer(folder)
        windows = config_windows(config, tokenizer, config["data"])
        mine = [_task(config, label, model, i, shard, windows) for i, shard in enumerate(shards)]
        if settings.heads == "from_gain_map" and is_done(mine[0]):
            later = sweep_job.plan_shards(settings, n_layers, n_heads, _selection(settings, mine[0]))[len(shards) :]
            mine += [_task(config, label, model, len(mine) + i, shard, windows) for i, shard in enumerate(later)]
        tasks += mine
    return tasks


def compute(task: Task) -> int:
    """Sweeps the task's target heads over the task's windows (``sweep_job.sweep_shard``) and writes its shard."""

    model, _ = load_task_model(task)
    shard = SweepShard(
        name=Path(task.relpath).name,
        mode=task.data["mode"],
        kinds=tuple(task.data["kinds"]),
        targets=tuple((int(layer), int(head)) for layer, head in task.data["targets"]),
    )
    frame = sweep_job.sweep_shard(
        model, torch.from_numpy(np.ascontiguousarray(task.input_ids)), shard, _sweep_config(task.model, task.options)
    )
    write_parquet_shard(task, frame, model_identity(model))
    return len(frame)


def merge(
    config: Mapping[str, Any], tasks: Sequence[Task], command_line: Sequence[str] | None = None
) -> dict[str, Any]:
    """Builds each model's result folder from its shards (``sweep_job.analyse_sweep``, no weights):
    ``meta.json`` (the document, and the ``run_hash``, of ``spectra sweep`` with ``model: <model>``),
    the tables, ``summary.json`` and the figures. Returns ``label -> SweepResult``.

    Raises ``ValueError`` when a shard is missing, when ``shards/`` holds one this run does not plan,
    or when the shards of one folder disagree on the model (its weights changed between two runs)."""
    results: dict[str, Any] = {}
    for label, group in shards_by_label(tasks).items():
        out = Path(group[0].out) / label
        settings = _sweep_config(group[0].model, config)
        n_layers, n_heads = _shape(model_folder(group[0].model))
        selection = _selection(settings, group[0]) if settings.heads == "from_gain_map" else None
        planned = [s.name for s in sweep_job.plan_shards(settings, n_layers, n_heads, selection)]
        if planned != [Path(t.relpath).name for t in group]:
            raise ValueError(
                f"out: the tasks of {label} are not the shards of its plan ({', '.join(planned[:4])}...); rerun"
            )
        stray = sorted(p.name for p in (out / SHARDS).glob("*.parquet") if p.name not in planned)
        if stray:
            raise ValueError(
                f"out: {out / SHARDS} holds shard(s) this run does not plan ({', '.join(stray[:4])}); "
                "delete them and rerun"
            )
        identity = shared_model_identity(group)
        windows = np.ascontiguousarray(group[0].input_ids)
        meta = sweep_job.sweep_meta(settings, identity, data_sha256(windows), command_line)
        source = model_source(group[0].model)
        if source is not None and source["kind"] == "hub":  # a folder's name here is already its absolute path
            meta["model_source"] = source
        keep_created(out / META, meta)
        write_json(out / META, meta)
        summary, tables, figures = sweep_job.analyse_sweep(
            settings,
            out,
            n_layers=n_layers,
            n_heads=n_heads,
            n_samples=len(windows),
            context_length=int(windows.shape[1]),
            selection=selection,
        )
        results[label] = SweepResult(out, meta, summary, tables, figures, computed_shards=[])
    return results


def describe(label: str, result: SweepResult) -> str:
    """``tiny-llama: qk_asymmetry, 4 shards, heads L1H0 L2H1 L0H6``."""
    s = result.summary
    shards = len(list((result.out_dir / SHARDS).glob("*.parquet")))
    heads = s.get("selected_heads") or s.get("asymmetry") or s.get("gains") or []
    names = list(dict.fromkeys(f"L{row['layer']}H{row['head']}" for row in heads))
    more = f" (+{len(names) - 8})" if len(names) > 8 else ""
    return f"{label}: {s['experiment']}, {shards} shards, heads {' '.join(names[:8])}{more}"
