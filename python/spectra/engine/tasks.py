"""Tasks of a run: a picklable description of one shard; how a task loads its model, writes its shard
atomically with a stamp (task id, fingerprint, model identity), and whether a shard is done; the
helpers a kind's merge uses to group and check the shards."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import AutoConfig

from spectra.engine.config import (
    STAMP_FILE,
    TASK_KEY,
    check_config,
    kind_module,
)
from spectra.io.atomic import atomic_path, write_parquet_table
from spectra.io.identity import digest_array, model_identity, sha256_of
from spectra.models import zoo
from spectra.models.loading import MINILM, load_model
from spectra.models.zoo.references import parse_hub_id, resolve_model

__all__ = [
    "Task",
    "TaskResult",
    "check_model_config",
    "checkpoint_label",
    "entries",
    "expand_checkpoints",
    "folder_shard",
    "is_done",
    "keep_created",
    "load_task_model",
    "model_folder",
    "model_identity",
    "plan",
    "read_stamp",
    "run_task",
    "shards_by_label",
    "shared_model_identity",
    "write_parquet_shard",
]


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Task:
    """One unit of work: what one shard of a run holds; picklable, self-contained.

    ``samples`` is the half-open range ``[lo, hi)`` of global sample (or example) indices the task
    covers and ``input_ids`` its token windows, when the kind uses fixed windows (tokenised once
    when planning, so every engine and retry sees the same tokens); ``data`` holds any other
    picklable input (e.g. ``[(example_id, text), ...]``). ``options`` holds the kind's settings;
    ``relpath`` is the shard the task writes, relative to ``out`` (a ``.parquet`` file or a
    folder); ``num_gpus`` is what a Ray task requests.
    """

    kind: str
    model: str
    label: str
    shard: int
    samples: tuple[int, int]
    out: str
    options: dict[str, Any]
    relpath: str
    input_ids: np.ndarray | None = field(default=None, repr=False)
    data: Any = field(default=None, repr=False)
    num_gpus: float = 0

    @property
    def id(self) -> str:
        """``<label>/<shard name>`` (``tiny-llama/shard-00000``): unique within a run."""
        name = Path(self.relpath).name
        return f"{self.label}/{name[: -len('.parquet')] if name.endswith('.parquet') else name}"

    @property
    def path(self) -> Path:
        """The shard this task writes (``out/relpath``)."""
        return Path(self.out) / self.relpath

    @property
    def is_folder(self) -> bool:
        """Whether the shard is a folder (anything but a ``.parquet`` file)."""
        return not self.relpath.endswith(".parquet")

    @property
    def fingerprint(self) -> str:
        """sha256 of everything that determines the shard's content (not where the run folder is)."""
        return sha256_of(
            {
                "kind": self.kind,
                "model": self.model,
                "label": self.label,
                "shard": self.shard,
                "samples": list(self.samples),
                "options": self.options,
                "relpath": self.relpath,
                "input_ids": digest_array(self.input_ids),
                "data": self.data,
            }
        )


@dataclass
class TaskResult:
    """What :func:`run_task` did: the shard written, its rows, how long it took, in which process."""

    task_id: str
    path: Path
    rows: int
    seconds: float
    pid: int


def model_folder(name: str) -> Path:
    """The folder of a zoo model, of ``all-minilm-l6-v2``, ``name`` itself when it holds a config.json, or
    the cached snapshot of a hub id ``org/name[@revision]`` (``spectra.models.zoo.references``)."""
    if name in zoo.MODEL_NAMES:
        return zoo.model_path(name)
    if name == MINILM:
        return zoo.minilm_path()
    folder = Path(name)
    if (folder / "config.json").is_file():
        return folder
    return resolve_model(name).path  # a hub id; anything else: the error listing what a model may be


def expand_checkpoints(entry: str) -> list[Path]:
    """The checkpoint folders an entry of ``checkpoints`` names: a zoo model's training checkpoints, one
    checkpoint folder, or a folder of checkpoint folders (``<folder>/checkpoints/*`` or ``<folder>/*``)."""
    if entry in zoo.MODEL_NAMES:
        found = zoo.checkpoint_paths(entry)
        if not found:
            raise ValueError(f"checkpoints: zoo model {entry!r} has no training checkpoints")
        return found
    folder = Path(entry)
    if (folder / "config.json").is_file():
        return [folder]
    found = sorted(p for p in (folder / "checkpoints").glob("*") if (p / "config.json").is_file()) or sorted(
        p for p in folder.glob("*") if (p / "config.json").is_file()
    )
    if not found:
        raise ValueError(
            f"checkpoints: {entry!r} is neither a zoo model with checkpoints, a checkpoint folder, "
            "nor a folder of checkpoint folders"
        )
    return found


def checkpoint_label(folder: Path) -> str:
    """``tiny-qwen3-step-001600`` for a zoo checkpoint, else ``<parent>-<folder>``."""
    parent = folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent
    for name in zoo.MODEL_NAMES:
        if parent.resolve() == zoo.model_path(name).resolve():
            return f"{name}-{folder.name}"
    return f"{parent.name}-{folder.name}" if parent.name else folder.name


def entries(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, model) of every model and checkpoint of a checked config, in config order.

    Example:
        >>> entries({"models": ["tiny-llama"], "checkpoints": []})
        [('tiny-llama', 'tiny-llama')]
    """
    found = []
    for name in config["models"]:
        if name in (*zoo.MODEL_NAMES, MINILM):
            found.append((name, name))
        elif not Path(name).is_dir() and parse_hub_id(name) is not None:
            found.append(_hub_entry(name))
        else:
            found.append((Path(name).name, str(Path(name).absolute())))
    for entry in config["checkpoints"]:
        found.extend((checkpoint_label(p), str(p.absolute())) for p in expand_checkpoints(entry))
    labels = [label for label, _ in found]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(f"models/checkpoints: {', '.join(twice)} appear(s) more than once")
    return found


def _hub_entry(name: str) -> tuple[str, str]:
    """(label, model) of a hub id: the repository's name (``-<revision>`` where one is given) and the id
    pinned to the commit it resolves to now, so that every task of the run loads the same weights."""
    resolved = resolve_model(name)
    label = resolved.repo_id.split("/")[-1] + (f"-{parse_hub_id(name)[1]}" if "@" in name else "")
    return label.replace("/", "-"), f"{resolved.repo_id}@{resolved.commit_hash or resolved.revision}"


def check_model_config(
    model: str,
    folder: Path,
    *,
    context_length: int | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> None:
    """The errors a task would hit anyway, found before any task runs (and is retried)."""
    model_config = AutoConfig.from_pretrained(folder, local_files_only=True)
    limit = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if limit is not None and context_length is not None and context_length > limit:
        raise ValueError(f"context_length: {context_length} exceeds the max_position_embeddings of {model} ({limit})")
    for key, values, attr in (("layers", layers, "num_hidden_layers"), ("heads", heads, "num_attention_heads")):
        count = getattr(model_config, attr, None)
        bad = [x for x in values or [] if count is not None and not 0 <= x < count]
        if bad:
            raise ValueError(f"{key}: {bad} out of range for {model}, which has {count} {key}")


def plan(config: Mapping[str, Any]) -> list[Task]:
    """The tasks of a config (checked here) that can be planned now (see :func:`run`)."""
    checked = check_config(config)
    return kind_module(checked["kind"]).plan(checked)


# --------------------------------------------------------------------------------------------
# Executing one task
# --------------------------------------------------------------------------------------------

_MODEL_CACHE: dict[tuple, Any] = {}  # one model per process: consecutive tasks of a model load it once


def load_task_model(task: Task):
    """``(model, tokenizer)`` of the task, in eval mode, placed as its options say (``dtype``,
    ``attn_implementation``, ``device``, ``device_map``); cached, so consecutive tasks of one model
    in a worker load it once (one model at a time, so a worker's memory holds one)."""
    options = task.options
    placement = {k: options.get(k) for k in ("device_map", "max_memory", "offload_folder")}
    key = (
        task.model,
        options.get("dtype", "float32"),
        options.get("attn_implementation", "sdpa"),
        options.get("device", "cpu"),
        json.dumps(placement, sort_keys=True, default=str),
    )
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    _MODEL_CACHE.clear()
    dtype = getattr(torch, key[1])
    if placement["device_map"] is not None:
        model, tokenizer = load_model(task.model, dtype=dtype, attn_implementation=key[2], **placement)
    else:
        model, tokenizer = load_model(task.model, dtype=dtype, attn_implementation=key[2], device=key[3])
    _MODEL_CACHE[key] = (model.eval(), tokenizer)
    return _MODEL_CACHE[key]


def _stamp(task: Task, identity: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "fingerprint": task.fingerprint,
        "model": dict(identity or {}),
        "samples": list(task.samples),
    }


ID_COLUMNS = ("sample", "layer", "head", "token")


def write_parquet_shard(task: Task, frame, identity: Mapping[str, Any] | None = None) -> Path:
    """Writes ``frame`` to ``task.path`` atomically (a unique hidden ``.tmp`` name, then ``os.replace``),
    zstd-compressed, dictionary-encoding the id columns and byte-stream-splitting the floats (as
    ``spectra.profile.write_profile_parquet``), with the task stamp in the Parquet metadata."""
    path = task.path
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    stamp = json.dumps(_stamp(task, identity), sort_keys=True)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), TASK_KEY: stamp.encode()})
    ids = [c for c in ID_COLUMNS if c in frame.columns]
    floats = [c for c in frame.columns if c not in ids and frame[c].dtype.kind == "f"]
    write_parquet_table(
        path,
        table,
        compression="zstd",
        compression_level=3,
        use_dictionary=ids or False,
        use_byte_stream_split=floats or False,
    )
    return path


@contextmanager
def folder_shard(task: Task, identity: Mapping[str, Any] | None = None) -> Iterator[Path]:
    """A fresh hidden temporary folder beside ``task.path`` to write the shard into. On a normal exit
    the stamp (``task.json``) is written into it and the folder renamed onto ``task.path`` (an
    earlier folder there is moved aside first and removed); on an exception it is removed.

    Example:
        >>> import tempfile
        >>> task = Task("capture", "tiny-llama", "x", 0, (0, 1), tempfile.mkdtemp(), {}, "x/shards/shard-00000")
        >>> with folder_shard(task) as folder:
        ...     _ = (folder / "a.txt").write_text("a")
        >>> sorted(p.name for p in task.path.iterdir()), is_done(task)
        (['a.txt', 'task.json'], True)
    """
    path = task.path
    path.parent.mkdir(parents=True, exist_ok=True)
    # a shard of another configuration or an earlier attempt at ``path`` is replaced, never merged into
    with atomic_path(path, folder=True) as tmp:
        yield tmp
        (tmp / STAMP_FILE).write_text(json.dumps(_stamp(task, identity), sort_keys=True, indent=1))


def run_task(task: Task) -> TaskResult:
    """Computes one task and writes its shard atomically; running it again overwrites the same shard."""
    start = time.perf_counter()
    rows = kind_module(task.kind).compute(task)
    return TaskResult(
        task_id=task.id, path=task.path, rows=int(rows), seconds=time.perf_counter() - start, pid=os.getpid()
    )


def read_stamp(path: str | os.PathLike) -> dict[str, Any] | None:
    """The task stamp of a shard (a Parquet file's metadata or a folder's ``task.json``), or None when
    it has none (a shard written by ``spectra profile``) or cannot be read."""
    path = Path(path)
    if path.is_dir():
        try:
            return json.loads((path / STAMP_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - a damaged file is treated as not done
        return None
    raw = metadata.get(TASK_KEY)
    return json.loads(raw) if raw else None


def is_done(task: Task) -> bool:
    """Whether ``task``'s shard is on disk and was written by this very task (same fingerprint)."""
    stamp = read_stamp(task.path) if task.path.exists() else None
    return stamp is not None and stamp.get("fingerprint") == task.fingerprint


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------


def shards_by_label(
    tasks: Sequence[Task], *, order: Callable[[Task], Any] = lambda task: task.shard
) -> dict[str, list[Task]]:
    """``label -> its tasks`` sorted by ``order`` (labels in plan order), for a kind's merge; a
    ``ValueError`` naming the shards that are not done."""
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.label, []).append(task)
    for label, group in groups.items():
        group.sort(key=order)
        missing = [t.id for t in group if not is_done(t)]
        if missing:
            raise ValueError(f"out: {len(missing)} shard(s) of {label} are missing ({', '.join(missing[:4])}); rerun")
    return groups


def shared_model_identity(group: Sequence[Task]) -> dict[str, Any]:
    """The model identity every shard of one label carries in its stamp; a ``ValueError`` when they
    differ (the model's weights changed between two runs)."""
    identities = {json.dumps(read_stamp(t.path)["model"], sort_keys=True) for t in group}
    if len(identities) != 1:
        raise ValueError(
            f"out: the shards of {Path(group[0].out) / group[0].label} come from different weights of "
            f"{group[0].model}; delete the folder and rerun"
        )
    return json.loads(identities.pop())


def keep_created(meta_path: Path, meta: dict[str, Any]) -> None:
    """Keeps the ``created`` time of an earlier ``meta.json`` of the same ``run_hash`` (a merge redone)."""
    if not meta_path.is_file():
        return
    try:
        old = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return
    if old.get("run_hash") == meta["run_hash"]:
        meta["created"] = old.get("created", meta["created"])
