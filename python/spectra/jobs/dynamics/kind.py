"""``kind: dynamics`` on the engines: per-head statistics, classes and k_norm γ over the training
checkpoints of a model, one task per checkpoint.

The unit of work is a checkpoint, not a sample shard: ``spectra.dynamics.track_checkpoint`` runs
``head_stats`` (whose per-head statistics over the windows — means, the spectral ranks of the key
covariance — are not sums over samples) and ``classify`` (thresholds and margins on those
statistics) on all the windows at once, so a checkpoint's rows cannot be added up from sample
shards. A task writes its checkpoint's four tables; the merge joins them by step
(``spectra.dynamics.combine``) and writes the folder with ``spectra.jobs.dynamics.run.write_dynamics``,
the very function ``spectra dynamics`` writes through — the same tables, CSVs, figures,
``summary.json`` and ``meta.json`` (up to its ``created`` and ``command_line``).

Config keys besides the common ones: ``checkpoints`` (required; ``models`` is refused), and as in
``spectra dynamics``: ``context_length`` (128), ``n_samples`` (8), ``add_special_tokens`` (true), ``n_random`` (8),
``random_block`` (32), ``batch_size`` (8), ``gamma_heatmap`` (None: drawn when the family has
QK-norm; true: required; false: skipped). ``data`` must stay unset: like ``spectra dynamics``, the
kind reads the zoo's held-out text, cut into windows with the first checkpoint's tokenizer (once,
when planning; every task carries them).

Every entry of ``checkpoints`` names a series, and every series gets its own result folder:

* a zoo model with checkpoints (``tiny-qwen3``): its training checkpoints, then the final model
  when that is a later step (exactly the checkpoints ``spectra dynamics --model`` tracks);
  labelled by the zoo name;
* a folder of checkpoint folders (``<folder>/checkpoints/*`` or ``<folder>/*``), labelled by the
  folder's name;
* checkpoint folders (``.../step-000100``, ``.../checkpoint-100``): the folders of one parent
  (``run/checkpoint-*``, or ``run/checkpoints/step-*``) form one series, labelled by the parent's
  name (``run``) — so a list of folders of one run is one series.

Layout of ``out``::

    run.json                              the plan (written by spectra.engine.run)
    <series>/                             what spectra dynamics writes for the series, plus shards/:
        meta.json, summary.json           settings, steps, architecture / checkpoints, classes per step
        head_series, kv_series, gamma, taxonomy (.parquet and .csv), *.png
        shards/step-000100/               one folder per checkpoint (one task): its four tables as
            head_series.parquet ...       Parquet, checkpoint.json (step, folder, architecture) and
            checkpoint.json, task.json    the task stamp

A series of checkpoints of different architectures is refused when planning (a ``meta``-device
skeleton of each checkpoint, no weights), with the error ``spectra dynamics`` gives.

What differs from ``spectra dynamics`` on the same checkpoints: the ``shards/`` folder; checkpoint
folders appear in ``summary.json`` as absolute paths (``spectra dynamics`` records them as typed);
``meta.json``'s ``settings`` also name the loading keys (``dtype``, ``device``, ...) set to other
than ``spectra dynamics``' fixed float32 / sdpa / CPU. A task's ``shard`` is its step, so adding a
checkpoint to a series leaves the other shards valid.

Example:
    >>> from spectra.engine import check_config
    >>> tasks = plan(check_config({"kind": "dynamics", "checkpoints": "tiny-qwen3", "context_length": 32,
    ...                            "n_samples": 2, "out": "results/x"}))
    >>> [t.id for t in tasks][:2], tasks[0].relpath, tasks[0].input_ids.shape
    (['tiny-qwen3/step-000000', 'tiny-qwen3/step-000100'], 'tiny-qwen3/shards/step-000000', (2, 32))
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from spectra.data.windows import config_windows
from spectra.engine.core import (
    COMMON_KEYS,
    Task,
    check_model_config,
    expand_checkpoints,
    folder_shard,
    load_task_model,
    model_identity,
    positive_int,
    shards_by_label,
)
from spectra.heads.dynamics import (
    Dynamics,
    architecture,
    check_architecture,
    combine,
    require_qk_norm,
    resolve_checkpoints,
    track_checkpoint,
)
from spectra.jobs.dynamics.options import KEYS
from spectra.jobs.dynamics.run import SETTINGS, TABLES, write_dynamics
from spectra.models import zoo
from spectra.models.zoo.paths import load_tokenizer

__all__ = ["KEYS", "Series", "check", "compute", "describe", "merge", "plan", "series_of"]

STRAY_GLOB = ("shards", "step-*")  # checkpoint shards under <series>/shards that a plan must account for
CHECKPOINT_FILE = "checkpoint.json"  # in a shard: the step, the checkpoint folder, its architecture
#: The common keys a task needs to load its model (dtype, attention, device, device_map, ...); meta.json
#: records those that differ from the defaults spectra dynamics always uses.
LOADING = tuple(k for k in COMMON_KEYS if k not in ("kind", "models", "checkpoints", "out", "gpus_per_task"))
_OPTIONS = ("context_length", "n_samples", "add_special_tokens", "n_random", "random_block", "batch_size", *LOADING)


# --------------------------------------------------------------------------------------------
# Configuration and series
# --------------------------------------------------------------------------------------------


def check(config: dict[str, Any]) -> dict[str, Any]:
    """Checks the dynamics keys (see the module docstring); ``models`` must be empty.

    Example:
        >>> from spectra.engine import check_config
        >>> check_config({"kind": "dynamics", "models": "tiny-qwen3", "out": "x"})
        Traceback (most recent call last):
        ...
        ValueError: models: kind dynamics tracks checkpoints over training, not models; name each series under checkpoints (a zoo model with checkpoints such as tiny-qwen3, checkpoint folders of one run, or a folder of checkpoint folders)
    """
    if config["models"]:
        raise ValueError(
            "models: kind dynamics tracks checkpoints over training, not models; name each series under "
            "checkpoints (a zoo model with checkpoints such as tiny-qwen3, checkpoint folders of one run, "
            "or a folder of checkpoint folders)"
        )
    for key in ("context_length", "n_samples", "n_random", "batch_size"):
        config[key] = positive_int(config[key], key)
    if not isinstance(config["add_special_tokens"], bool):
        raise ValueError(f"add_special_tokens: expected true or false; got {config['add_special_tokens']!r}")
    block = config["random_block"]
    if not isinstance(block, int) or isinstance(block, bool) or block < 2:
        raise ValueError(f"random_block: expected an integer >= 2; got {block!r}")
    if config["gamma_heatmap"] not in (None, True, False):
        raise ValueError(
            f"gamma_heatmap: {config['gamma_heatmap']!r}; allowed values are true (required), false "
            "(skipped) or unset (drawn when the family has QK-norm)"
        )
    if config["data"] is not None:
        raise ValueError(
            f"data: {config['data']!r}; kind dynamics reads the zoo's held-out text, as spectra dynamics "
            "does; leave data unset"
        )
    return config


@dataclass(frozen=True)
class Series:
    """One result folder of a dynamics run: ``label``, ``checkpoints`` as ``summary.json`` records them
    (a zoo name, or the folders in config order) and ``members``, ``(step, folder)`` in step order."""

    label: str
    checkpoints: str | tuple[str, ...]
    members: tuple[tuple[int, Path], ...]


def _series_key(folder: Path) -> Path:
    """The run folder a checkpoint folder belongs to: its parent, or the grandparent of
    ``<run>/checkpoints/<checkpoint>``."""
    return folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent


def series_of(config: Mapping[str, Any]) -> list[Series]:
    """The series of a checked config, in config order (see the module docstring); reads folder
    listings only, no weights.

    Example:
        >>> from spectra import zoo
        >>> folders = [str(p) for p in zoo.checkpoint_paths("tiny-qwen3")[-2:]]
        >>> [(s.label, [step for step, _ in s.members]) for s in series_of({"checkpoints": folders})]
        [('tiny-qwen3', [800, 1600])]
    """
    found: list[Series] = []
    groups: dict[Path, tuple[str, list[Path]]] = {}  # run folder -> (label, checkpoint folders in config order)
    order: list[object] = []  # zoo series and run folders, in config order
    for entry in config["checkpoints"]:
        if entry in zoo.MODEL_NAMES:
            members = tuple((step, folder.absolute()) for step, folder in resolve_checkpoints(entry))
            order.append(Series(label=entry, checkpoints=entry, members=members))
            continue
        folder = Path(entry).absolute()
        if (folder / "config.json").is_file():
            key, folders = _series_key(folder), [folder]
        else:
            key, folders = folder, [p.absolute() for p in expand_checkpoints(entry)]
        if key not in groups:
            groups[key] = (key.name or str(key), [])
            order.append(key)
        mine = groups[key][1]
        mine.extend(f for f in folders if f not in mine)
    for item in order:
        if isinstance(item, Series):
            found.append(item)
        else:
            label, folders = groups[item]
            members = tuple((step, folder) for step, folder in resolve_checkpoints(folders))
            found.append(Series(label=label, checkpoints=tuple(str(f) for f in folders), members=members))
    labels = [s.label for s in found]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(
            f"checkpoints: the series {', '.join(twice)} appear(s) more than once (a zoo name and its "
            "checkpoint folders, or two runs of the same folder name)"
        )
    return found


def _skeleton(folder: Path):
    """The model of a checkpoint folder on the ``meta`` device: its architecture without its weights."""

    model_config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config)


def _check_series(series: Series, config: Mapping[str, Any]) -> None:
    """The errors ``spectra dynamics`` would give, found before any task runs: checkpoints of another
    architecture than the first, a context or random block beyond the positions, a required γ
    heatmap of a family without QK-norm."""
    first_step, first = series.members[0]
    reference: dict[str, object] | None = None
    for _step, folder in series.members:
        model = _skeleton(folder)
        shape = architecture(model)
        if reference is None:
            reference = shape
            check_model_config(str(folder), folder, context_length=config["context_length"])
            limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
            if limit is not None and 2 * config["random_block"] > limit:
                raise ValueError(
                    f"random_block: 2 x {config['random_block']} tokens exceed the "
                    f"max_position_embeddings of {folder} ({limit})"
                )
            if config["gamma_heatmap"]:
                require_qk_norm(model)
        else:
            check_architecture(first, reference, folder, shape)


# --------------------------------------------------------------------------------------------
# Plan, compute, merge
# --------------------------------------------------------------------------------------------


def plan(config: Mapping[str, Any]) -> list[Task]:
    """One task per checkpoint of every series, in config order, steps ascending.

    A task's ``shard`` is the checkpoint's step (``relpath`` ``<series>/shards/step-NNNNNN``), so
    adding a checkpoint to a series leaves the other tasks' shards valid. The windows are tokenised
    here, once per series, with its first checkpoint's tokenizer, as ``spectra.dynamics.track`` does.
    """

    options = {key: config[key] for key in _OPTIONS}
    tasks: list[Task] = []
    for series in series_of(config):
        _check_series(series, config)
        tokenizer = load_tokenizer(series.members[0][1])
        windows = config_windows(config, tokenizer, None)
        for step, folder in series.members:
            tasks.append(
                Task(
                    kind="dynamics",
                    model=str(folder),
                    label=series.label,
                    shard=step,
                    samples=(0, len(windows)),
                    out=config["out"],
                    options={**options, "step": step},
                    relpath=f"{series.label}/shards/step-{step:06d}",
                    input_ids=windows,
                    num_gpus=config["gpus_per_task"],
                )
            )
    return tasks


def compute(task: Task) -> int:
    """``track_checkpoint`` of the task's checkpoint on its windows, written as a folder shard: the four
    tables as Parquet and ``checkpoint.json``. Returns the number of rows written."""

    model, _ = load_task_model(task)
    options = task.options
    part = track_checkpoint(
        model,
        options["step"],
        torch.from_numpy(np.ascontiguousarray(task.input_ids)),
        n_random=options["n_random"],
        random_block=options["random_block"],
        batch_size=options["batch_size"],
    )
    with folder_shard(task, model_identity(model)) as folder:
        for name in TABLES:
            pq.write_table(
                pa.Table.from_pandas(getattr(part, name), preserve_index=False),
                folder / f"{name}.parquet",
                compression="zstd",
            )
        (folder / CHECKPOINT_FILE).write_text(
            json.dumps(
                {"step": options["step"], "checkpoint": task.model, "architecture": part.architecture},
                sort_keys=True,
                indent=1,
            )
        )
    return sum(len(getattr(part, name)) for name in TABLES)


def read_shard(path: str | Path):
    """A checkpoint shard as ``(Dynamics of one step, checkpoint folder)``."""

    path = Path(path)
    info = json.loads((path / CHECKPOINT_FILE).read_text())
    frames = {name: pd.read_parquet(path / f"{name}.parquet") for name in TABLES}
    return Dynamics(**frames, steps=[int(info["step"])], architecture=info["architecture"]), info["checkpoint"]


def loading_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The model-loading keys that differ from the defaults ``spectra dynamics`` always uses (float32,
    sdpa, on the CPU, no device_map); meta.json records them beside the settings.

    Example:
        >>> from spectra.engine import COMMON_KEYS
        >>> loading_settings({**COMMON_KEYS, "dtype": "bfloat16"})
        {'dtype': 'bfloat16'}
    """
    return {key: config[key] for key in LOADING if config[key] != COMMON_KEYS[key]}


def merge(
    config: Mapping[str, Any], tasks: Sequence[Task], command_line: Sequence[str] | None = None
) -> dict[str, Any]:
    """Writes each series' folder from its checkpoint shards alone (``combine``, then ``write_dynamics``).
    Returns ``label -> DynamicsResult``. Raises ``ValueError`` when a shard is missing, or when the
    shards of a series disagree on the architecture."""

    series = {s.label: s for s in series_of(config)}
    settings = {**{key: config[key] for key in SETTINGS}, **loading_settings(config)}
    results: dict[str, Any] = {}
    for label, group in shards_by_label(tasks, order=lambda t: t.options["step"]).items():
        parts = [read_shard(t.path) for t in group]
        first_part, first_folder = parts[0]
        for part, folder in parts[1:]:
            check_architecture(first_folder, first_part.architecture, folder, part.architecture)
        combined = combine([part for part, _ in parts])
        checkpoints = series[label].checkpoints if label in series else tuple(t.model for t in group)
        results[label] = write_dynamics(
            combined,
            Path(group[0].out) / label,
            checkpoints=checkpoints if isinstance(checkpoints, str) else list(checkpoints),
            settings=settings,
            gamma_heatmap=config["gamma_heatmap"],
            command_line=command_line,
        )
    return results


def describe(label: str, result) -> str:
    """``tiny-qwen3: 6 checkpoints, steps 0-1600; at step 1600: induction 5, previous_token 3, ...``."""
    summary = result.summary
    steps = summary["steps"]
    last = summary["classes_per_step"].get(steps[-1]) or summary["classes_per_step"].get(str(steps[-1]), {})
    classes = ", ".join(f"{name} {count}" for name, count in sorted(last.items()))
    return f"{label}: {len(steps)} checkpoints, steps {steps[0]}-{steps[-1]}; at step {steps[-1]}: {classes}"
