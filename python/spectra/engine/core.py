"""Running a job as independent tasks, in-process or on a Ray cluster: ``spectra run CONFIG.yaml``.

A run is split into :class:`Task` s, one per (model or checkpoint, sample shard) — or whatever unit
the job kind's work divides into (a target head of a sweep, a checkpoint of a dynamics series). A
task is a picklable description (job kind, model, shard, sample range, its inputs, output path,
options); :func:`run_task` computes it and writes exactly one result shard — a Parquet file or a
folder — named by the task, via a temporary name and ``os.replace``, so a retried or duplicated
task overwrites its own shard rather than adding one and a killed task leaves at most a hidden
``.*.tmp`` entry. Every shard carries a stamp (task id, a fingerprint of everything that determines
its content, the model identity), so a rerun skips exactly the tasks whose shard is on disk and
current (rerun = resume), and a folder of another configuration is refused.

Engines only decide where tasks run: :class:`LocalEngine` in this process one after the other,
:class:`RayEngine` as Ray tasks (retried when a worker dies or a task raises). The kind's merge
then builds the result folders from the shards alone, so a run's output is the same whatever the
engine and the number of workers.

Each job kind lives in ``spectra.jobs.<kind>.kind`` (``KEYS``, ``check``, ``plan``, ``compute``,
``merge``, ``describe``); see each module for its tasks and layout. ``plan`` may depend on finished
shards (a sweep whose target heads come from a gain map computed first): :func:`run` plans,
executes, and plans again until every planned task is done. Every run folder holds ``run.json``
(the kind, the normalised config, the task ids).

Example:
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> config = {"kind": "profile", "models": ["tiny-llama"], "context_length": 32, "n_samples": 3,
    ...           "samples_per_shard": 2, "layers": [0], "n_permutations": 5, "out": out}
    >>> result = run(config, LocalEngine(), progress=False)
    >>> result.report.computed, sorted(result.results)
    (['tiny-llama/shard-00000', 'tiny-llama/shard-00001'], ['tiny-llama'])
    >>> run(config, LocalEngine(), progress=False).report.skipped   # a rerun resumes: nothing left to do
    ['tiny-llama/shard-00000', 'tiny-llama/shard-00001']
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from spectra import defaults

from spectra.io.atomic import atomic_path, discard, write_parquet_table
from spectra.io.identity import digest_array, model_identity, sha256_of

__all__ = [
    "COMMON_KEYS",
    "KINDS",
    "EngineReport",
    "LocalEngine",
    "RayEngine",
    "RunResult",
    "Task",
    "TaskResult",
    "check_config",
    "entries",
    "folder_shard",
    "is_done",
    "keep_created",
    "kind_module",
    "load_config",
    "load_task_model",
    "make_engine",
    "model_identity",
    "plan",
    "read_stamp",
    "run",
    "run_task",
    "shards_by_label",
    "shared_model_identity",
    "write_parquet_shard",
]

#: Every job kind of ``spectra run``; kind ``k`` is implemented by the module ``spectra.jobs.k.kind``.
KINDS: tuple[str, ...] = ("profile", "capture", "sweep", "dynamics", "geometry", "plasticity")
ENGINES: tuple[str, ...] = ("local", "ray")
RUN_FILE = "run.json"
STAMP_FILE = "task.json"  # the stamp of a folder shard, written inside it before it is renamed into place
TASK_KEY = b"spectra.task"  # Parquet key-value metadata of a file shard: task id, fingerprint, model identity
MAX_STAGES = 8  # plan → execute rounds of one run (kinds with a later stage need two)

#: Keys every kind accepts, with their defaults; each kind adds its own (``spectra.jobs.<kind>.kind.KEYS``).
COMMON_KEYS: dict[str, Any] = {
    "kind": None, "models": None, "checkpoints": None, "out": None, "dtype": defaults.DTYPE,
    "attn_implementation": defaults.ATTN_IMPLEMENTATION, "device": defaults.DEVICE, "device_map": None,
    "max_memory": None, "offload_folder": None, "gpus_per_task": None,
}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """The YAML mapping of a ``spectra run`` config file (keys may use ``-`` or ``_``), not yet checked.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.yaml"
        >>> _ = path.write_text("kind: profile\\nmodels: [tiny-llama]\\ncontext-length: 32\\n")
        >>> load_config(path)
        {'kind': 'profile', 'models': ['tiny-llama'], 'context_length': 32}
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"config: {path} is not valid YAML ({error})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"config: {path} must hold a mapping (kind: profile, models: [...], ...)")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def kind_module(kind: Any) -> ModuleType:
    """The module implementing a job kind (``spectra.jobs.<kind>.kind``).

    Example:
        >>> kind_module("profile").__name__
        'spectra.jobs.profile.kind'
    """
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not a job kind; allowed kinds are {', '.join(KINDS)}")
    return importlib.import_module(f"spectra.jobs.{kind}.kind")


def as_list(value: Any, key: str) -> list:
    """``value`` as a list: None → [], one name → [name]."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{key}: expected a name or a list of names; got {value!r}")


def int_list(value: Any, key: str) -> list[int] | None:
    """``"0,2,5-7"``, an integer or a list of integers as a list (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        from spectra.io.parsing import parse_ints
        try:
            return parse_ints(value)
        except ValueError:
            raise ValueError(f"{key}: expected e.g. '0,2,5-7' or a list of integers; got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [int(v) for v in value]
    raise ValueError(f"{key}: expected e.g. '0,2,5-7' or a list of integers; got {value!r}")


def positive_int(value: Any, key: str, *, optional: bool = False) -> int | None:
    """``value`` when it is an integer >= 1 (or None with ``optional``), else a ValueError naming ``key``."""
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key}: expected an integer >= 1; got {value!r}")
    return value


def check_config(config: Mapping[str, Any], *, out: str | os.PathLike | None = None) -> dict[str, Any]:
    """The config with every key checked and defaults filled in; ``out`` (``--out``) overrides the config's.

    Keys of every kind: ``kind`` (one of :data:`KINDS`), ``models`` (zoo names,
    ``all-minilm-l6-v2`` or model folders) and/or ``checkpoints`` (a zoo model with checkpoints,
    e.g. ``tiny-qwen3``, for all of them, or checkpoint folders), ``out``, ``dtype``,
    ``attn_implementation``; placement: ``device`` (``cpu`` | ``cuda``), ``device_map`` (``auto``
    and accelerate's other strategies, or a mapping of module names to devices: a model larger than
    one GPU, loaded through accelerate), with ``max_memory`` and ``offload_folder`` as in
    :func:`spectra.models.loading.load_model`, ``gpus_per_task`` (default 1 with ``device: cuda``, else
    0; what a Ray task requests). The kind's own keys are in ``spectra.jobs.<kind>.kind.KEYS`` (see its ``check``).

    Example:
        >>> check_config({"kind": "profile", "models": "tiny-llama", "context_length": 32, "out": "x"})["samples_per_shard"]
        8
        >>> check_config({"kind": "profile", "models": "tiny-llama", "context_length": 32, "out": "x", "alpha": 1})
        Traceback (most recent call last):
        ...
        ValueError: config: unknown key(s) alpha; allowed keys for kind profile are attn_implementation, checkpoints, context_length, data, device, device_map, dtype, gpus_per_task, heads, ignore_first, kind, layers, max_memory, metrics, models, n_permutations, n_samples, offload_folder, out, samples_per_shard, threshold
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config: expected a mapping; got {type(config).__name__}")
    config = {str(k).replace("-", "_"): v for k, v in config.items()}
    module = kind_module(config.get("kind"))
    keys = {**COMMON_KEYS, **module.KEYS}
    unknown = sorted(k for k in config if k not in keys)
    if unknown:
        raise ValueError(f"config: unknown key(s) {', '.join(unknown)}; allowed keys for kind {config['kind']} are "
                         f"{', '.join(sorted(keys))}")
    checked = {**keys, **config}
    if out is not None:
        checked["out"] = str(out)
    if checked["out"] is None:
        raise ValueError("out: the config has no 'out' folder; add one or pass --out")
    checked["out"] = str(Path(checked["out"]).absolute())  # workers may run elsewhere than the driver's cwd
    checked["models"] = [str(m) for m in as_list(checked["models"], "models")]
    checked["checkpoints"] = [str(m) for m in as_list(checked["checkpoints"], "checkpoints")]
    if not checked["models"] and not checked["checkpoints"]:
        raise ValueError("models: the config names no models and no checkpoints")
    for key, allowed in (("dtype", defaults.DTYPES), ("attn_implementation", defaults.ATTN_IMPLEMENTATIONS),
                         ("device", defaults.DEVICES)):
        if checked[key] not in allowed:
            raise ValueError(f"{key}: {checked[key]!r}; allowed values are {', '.join(map(str, allowed))}")
    from spectra.models.devices import placement_kwargs

    placement_kwargs(checked["device_map"], checked["max_memory"], checked["offload_folder"])  # checks all three
    if checked["offload_folder"] is not None:
        checked["offload_folder"] = str(Path(checked["offload_folder"]).absolute())
    gpus = checked["gpus_per_task"]
    if gpus is None:
        gpus = 1 if checked["device"] == "cuda" else 0
    if not isinstance(gpus, (int, float)) or isinstance(gpus, bool) or gpus < 0:
        raise ValueError(f"gpus_per_task: expected a number >= 0; got {gpus!r}")
    checked["gpus_per_task"] = gpus
    return module.check(checked)


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
        return f"{self.label}/{name[:-len('.parquet')] if name.endswith('.parquet') else name}"

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
        return sha256_of({"kind": self.kind, "model": self.model, "label": self.label, "shard": self.shard,
                          "samples": list(self.samples), "options": self.options, "relpath": self.relpath,
                          "input_ids": digest_array(self.input_ids), "data": self.data})


@dataclass
class TaskResult:
    """What :func:`run_task` did: the shard written, its rows, how long it took, in which process."""

    task_id: str
    path: Path
    rows: int
    seconds: float
    pid: int


def model_folder(name: str) -> Path:
    """The folder of a zoo model, of ``all-minilm-l6-v2``, or ``name`` itself when it holds a config.json."""
    from spectra.models import zoo
    from spectra.models.loading import MINILM
    if name in zoo.MODEL_NAMES:
        return zoo.model_path(name)
    if name == MINILM:
        return zoo.minilm_path()
    folder = Path(name)
    if not (folder / "config.json").is_file():
        raise ValueError(f"model: {name!r} is neither a zoo model ({', '.join(zoo.MODEL_NAMES)}), {MINILM!r}, "
                         "nor a local folder with a config.json")
    return folder


def expand_checkpoints(entry: str) -> list[Path]:
    """The checkpoint folders an entry of ``checkpoints`` names: a zoo model's training checkpoints, one
    checkpoint folder, or a folder of checkpoint folders (``<folder>/checkpoints/*`` or ``<folder>/*``)."""
    from spectra.models import zoo

    if entry in zoo.MODEL_NAMES:
        found = zoo.checkpoint_paths(entry)
        if not found:
            raise ValueError(f"checkpoints: zoo model {entry!r} has no training checkpoints")
        return found
    folder = Path(entry)
    if (folder / "config.json").is_file():
        return [folder]
    found = sorted(p for p in (folder / "checkpoints").glob("*") if (p / "config.json").is_file()) \
        or sorted(p for p in folder.glob("*") if (p / "config.json").is_file())
    if not found:
        raise ValueError(f"checkpoints: {entry!r} is neither a zoo model with checkpoints, a checkpoint folder, "
                         "nor a folder of checkpoint folders")
    return found


def checkpoint_label(folder: Path) -> str:
    """``tiny-qwen3-step-001600`` for a zoo checkpoint, else ``<parent>-<folder>``."""
    from spectra.models import zoo

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
    from spectra.models import zoo
    from spectra.models.loading import MINILM
    found = []
    for name in config["models"]:
        if name in (*zoo.MODEL_NAMES, MINILM):
            found.append((name, name))
        else:
            found.append((Path(name).name, str(Path(name).absolute())))
    for entry in config["checkpoints"]:
        found.extend((checkpoint_label(p), str(p.absolute())) for p in expand_checkpoints(entry))
    labels = [label for label, _ in found]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(f"models/checkpoints: {', '.join(twice)} appear(s) more than once")
    return found


def check_model_config(model: str, folder: Path, *, context_length: int | None = None,
                       layers: Sequence[int] | None = None, heads: Sequence[int] | None = None) -> None:
    """The errors a task would hit anyway, found before any task runs (and is retried)."""
    from transformers import AutoConfig

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
    import torch

    options = task.options
    placement = {k: options.get(k) for k in ("device_map", "max_memory", "offload_folder")}
    key = (task.model, options.get("dtype", "float32"), options.get("attn_implementation", "sdpa"),
           options.get("device", "cpu"), json.dumps(placement, sort_keys=True, default=str))
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    _MODEL_CACHE.clear()
    from spectra.models.loading import load_model
    dtype = getattr(torch, key[1])
    if placement["device_map"] is not None:
        model, tokenizer = load_model(task.model, dtype=dtype, attn_implementation=key[2], **placement)
    else:
        model, tokenizer = load_model(task.model, dtype=dtype, attn_implementation=key[2], device=key[3])
    _MODEL_CACHE[key] = (model.eval(), tokenizer)
    return _MODEL_CACHE[key]


def _stamp(task: Task, identity: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"task_id": task.id, "fingerprint": task.fingerprint, "model": dict(identity or {}),
            "samples": list(task.samples)}


ID_COLUMNS = ("sample", "layer", "head", "token")


def write_parquet_shard(task: Task, frame, identity: Mapping[str, Any] | None = None) -> Path:
    """Writes ``frame`` to ``task.path`` atomically (a unique hidden ``.tmp`` name, then ``os.replace``),
    zstd-compressed, dictionary-encoding the id columns and byte-stream-splitting the floats (as
    ``spectra.profile.write_profile_parquet``), with the task stamp in the Parquet metadata."""
    import pyarrow as pa

    path = task.path
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    stamp = json.dumps(_stamp(task, identity), sort_keys=True)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), TASK_KEY: stamp.encode()})
    ids = [c for c in ID_COLUMNS if c in frame.columns]
    floats = [c for c in frame.columns if c not in ids and frame[c].dtype.kind == "f"]
    write_parquet_table(path, table, compression="zstd", compression_level=3, use_dictionary=ids or False,
                        use_byte_stream_split=floats or False)
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
    return TaskResult(task_id=task.id, path=task.path, rows=int(rows), seconds=time.perf_counter() - start,
                      pid=os.getpid())


def read_stamp(path: str | os.PathLike) -> dict[str, Any] | None:
    """The task stamp of a shard (a Parquet file's metadata or a folder's ``task.json``), or None when
    it has none (a shard written by ``spectra profile``) or cannot be read."""
    path = Path(path)
    if path.is_dir():
        try:
            return json.loads((path / STAMP_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None
    import pyarrow.parquet as pq

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
# Engines
# --------------------------------------------------------------------------------------------


@dataclass
class EngineReport:
    """What an engine did: the task ids computed and skipped (already done), seconds, the worker processes."""

    engine: str
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    pids: list[int] = field(default_factory=list)


Runner = Callable[[Task], TaskResult]


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="task", disable=not enabled)


class LocalEngine:
    """Runs the tasks in this process, one after the other (a task that raises stops the run; its
    finished shards stay, so a rerun resumes).

    Example:
        >>> LocalEngine().name
        'local'
    """

    name = "local"

    def __init__(self, runner: Runner = run_task) -> None:
        self.runner = runner

    @contextmanager
    def session(self) -> Iterator[None]:
        """Nothing to keep between the stages of a run (the Ray engine keeps its cluster)."""
        yield

    def execute(self, tasks: Sequence[Task], *, progress: bool = False) -> EngineReport:
        """Runs every task; returns the report (all of ``tasks`` are computed)."""
        report = EngineReport(engine=self.name)
        start = time.perf_counter()
        with _progress(len(tasks), progress, "run (local)") as bar:
            for task in tasks:
                result = self.runner(task)
                report.computed.append(result.task_id)
                report.pids.append(result.pid)
                bar.update()
        _MODEL_CACHE.clear()  # do not keep the last model (and its GPU memory) alive in the caller's process
        report.seconds = time.perf_counter() - start
        report.pids = sorted(set(report.pids))
        return report


def _ray_entry(runner: Runner, task: Task) -> TaskResult:
    return runner(task)


class RayEngine:
    """Runs the tasks as Ray tasks, at most ``num_workers`` at a time.

    ``address=None`` starts a local cluster with ``num_workers`` CPUs (default: all) for the run and
    stops it after; ``"auto"`` or ``"ray://..."`` joins a running cluster (the model and data paths
    must exist on its nodes). When Ray is already initialised in this process, that cluster is used
    as it is. Each task requests one CPU and ``task.num_gpus`` GPUs; a task whose worker dies or
    that raises is retried up to ``max_retries`` times (``retry_exceptions=True``); a retry
    overwrites the same shard. A task that still fails is reported after the others finish, with a
    ``RuntimeError`` naming it; the shards written stay, so a rerun only redoes the failed ones.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_workers: int | None = None, max_retries: int = 3,
                 runner: Runner = run_task) -> None:
        if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
            raise ValueError(f"workers: expected an integer >= 1; got {num_workers!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries: expected an integer >= 0; got {max_retries!r}")
        self.address, self.num_workers, self.max_retries, self.runner = address, num_workers, max_retries, runner
        self._in_session = self._started_in_session = False

    @contextmanager
    def session(self) -> Iterator[None]:
        """Keeps a cluster this engine starts alive across the ``execute`` calls inside (the stages of
        one run) and stops it at the end; a cluster is still started only when there is work."""
        self._in_session, self._started_in_session = True, False
        try:
            yield
        finally:
            self._in_session = False
            if self._started_in_session:
                import ray

                ray.shutdown()
                self._started_in_session = False

    def execute(self, tasks: Sequence[Task], *, progress: bool = False) -> EngineReport:
        """Runs every task on the cluster; returns the report once all have finished."""
        if not tasks:  # nothing left to do (a rerun of a finished run): no cluster to start
            return EngineReport(engine=self.name)
        try:
            import ray
        except ImportError:
            raise RuntimeError("engine ray: the ray package is not installed (pip install ray)") from None
        started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None:
                kwargs["num_cpus"] = self.num_workers or os.cpu_count()
            ray.init(address=self.address, **kwargs)
            started = True
            self._started_in_session = self._in_session  # a session keeps it for its later stages
        report = EngineReport(engine=self.name)
        start = time.perf_counter()
        try:
            remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=True)(_ray_entry)
            runner = ray.put(self.runner)
            queue = list(tasks)
            limit = self.num_workers or len(queue) or 1
            running: dict[Any, Task] = {}
            failures: list[tuple[str, BaseException]] = []
            with _progress(len(queue), progress, "run (ray)") as bar:
                while queue or running:
                    while queue and len(running) < limit:
                        task = queue.pop(0)
                        running[remote.options(num_gpus=task.num_gpus).remote(runner, task)] = task
                    ready, _ = ray.wait(list(running), num_returns=1)
                    for ref in ready:
                        task = running.pop(ref)
                        try:
                            result = ray.get(ref)
                        except Exception as error:  # noqa: BLE001 - reported after the others finish
                            failures.append((task.id, error))
                        else:
                            report.computed.append(result.task_id)
                            report.pids.append(result.pid)
                        bar.update()
            if failures:
                listed = "; ".join(f"{task_id}: {(str(error).strip().splitlines() or [type(error).__name__])[-1][:200]}"
                                   for task_id, error in failures)
                raise RuntimeError(f"{len(failures)} task(s) failed after {self.max_retries} retries ({listed}); "
                                   "rerun to redo only those")
        finally:
            if started and not self._in_session:
                ray.shutdown()
        order = {task.id: i for i, task in enumerate(tasks)}
        report.computed.sort(key=order.__getitem__)
        report.seconds = time.perf_counter() - start
        report.pids = sorted(set(report.pids))
        return report


def make_engine(name: str, *, address: str | None = None, workers: int | None = None,
                max_retries: int = 3) -> LocalEngine | RayEngine:
    """An engine by name (``local`` | ``ray``), as ``spectra run --engine`` builds it.

    Example:
        >>> make_engine("local").name
        'local'
    """
    if name == "local":
        if address is not None:
            raise ValueError("address: only for --engine ray")
        return LocalEngine()
    if name == "ray":
        return RayEngine(address=address, num_workers=workers, max_retries=max_retries)
    raise ValueError(f"engine: {name!r}; allowed engines are {', '.join(ENGINES)}")


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------


def shards_by_label(tasks: Sequence[Task], *, order: Callable[[Task], Any] = lambda task: task.shard
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
        raise ValueError(f"out: the shards of {Path(group[0].out) / group[0].label} come from different weights of "
                         f"{group[0].model}; delete the folder and rerun")
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


def _check_out(tasks: Sequence[Task], out: Path, module: ModuleType) -> None:
    """Refuses a folder that is not this run's: stray shards, or shards of another configuration."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RUN_FILE).is_file():
        raise ValueError(f"out: {out} is not empty and holds no {RUN_FILE}; choose another out or delete it")
    stray_glob = getattr(module, "STRAY_GLOB", None)  # (folder under <label>, pattern) of the kind's shards
    if stray_glob is not None:
        expected = {task.path for task in tasks}
        for label in sorted({task.label for task in tasks}):
            folder = out / label / stray_glob[0]
            stray = sorted(p.name for p in folder.glob(stray_glob[1]) if p not in expected) if folder.is_dir() else []
            if stray:
                raise ValueError(f"out: {folder} holds shard(s) this run does not plan ({', '.join(stray[:4])}); a run "
                                 "of another configuration? choose another out or delete it")
    for task in tasks:
        if task.path.exists() and not is_done(task):
            stamp = read_stamp(task.path)
            why = "was not written by spectra run" if stamp is None else "belongs to another configuration"
            raise ValueError(f"out: {task.path} {why}; choose another out or delete it")


def _clean_temporaries(tasks: Sequence[Task]) -> None:
    """Removes the hidden ``.*.tmp`` entries killed attempts left beside the shards (every shard is in place)."""
    for folder in sorted({task.path.parent for task in tasks}):
        for stray in folder.glob(".*.tmp"):
            discard(stray)


# --------------------------------------------------------------------------------------------
# A whole run
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """A finished run: its folder, the per-label results of the kind's merge, the engine's report."""

    out: Path
    kind: str
    results: dict[str, Any]
    report: EngineReport
    tasks: list[Task]


def _run_document(config: Mapping[str, Any], tasks: Sequence[Task]) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {}
    covered: dict[str, set[int]] = {}
    for task in tasks:
        entry = runs.setdefault(task.label, {"label": task.label, "model": task.model, "n_samples": 0, "n_shards": 0})
        covered.setdefault(task.label, set()).update(range(*task.samples))  # tasks of a sweep share every sample
        entry["n_samples"] = len(covered[task.label])
        entry["n_shards"] += 1
    return {"kind": config["kind"], "config": {k: v for k, v in config.items() if k != "out"},
            "runs": list(runs.values()), "tasks": [task.id for task in tasks]}


def run(config: Mapping[str, Any], engine: LocalEngine | RayEngine | None = None, *, out: str | os.PathLike | None = None,
        progress: bool = True, command_line: Sequence[str] | None = None) -> RunResult:
    """Plans the run, executes the tasks whose shard is not on disk yet with ``engine`` (default
    :class:`LocalEngine`), plans again (a kind may add tasks that depend on finished shards) until
    every planned task is done, then merges the shards into the result folders.

    The report lists the computed and the skipped task ids. See the module docstring for an example.
    """
    config = check_config(config, out=out)
    module = kind_module(config["kind"])
    engine = engine or LocalEngine()
    root = Path(config["out"])
    report = EngineReport(engine=engine.name)
    computed: set[str] = set()
    start = time.perf_counter()
    with engine.session():
        tasks = _execute_stages(config, module, engine, root, report, computed, progress)
    report.seconds = time.perf_counter() - start
    report.pids = sorted(set(report.pids))
    report.skipped = [task.id for task in tasks if task.id not in computed]
    _clean_temporaries(tasks)
    results = module.merge(config, tasks, command_line)
    return RunResult(out=root, kind=config["kind"], results=results, report=report, tasks=tasks)


def _execute_stages(config: Mapping[str, Any], module: ModuleType, engine: LocalEngine | RayEngine, root: Path,
                    report: EngineReport, computed: set[str], progress: bool) -> list[Task]:
    """Plan → execute until every planned task is done; returns the final plan."""
    from spectra.io.atomic import write_json as _atomic_json
    for _ in range(MAX_STAGES):
        tasks = module.plan(config)
        _check_out(tasks, root, module)
        root.mkdir(parents=True, exist_ok=True)
        _atomic_json(root / RUN_FILE, _run_document(config, tasks))
        todo = [task for task in tasks if not is_done(task)]
        if not todo:
            break
        again = sorted(task.id for task in todo if task.id in computed)
        if again:  # computed in an earlier round, yet not done: the kind's compute does not write its shard
            raise RuntimeError(f"task(s) {', '.join(again[:4])} ran but left no finished shard")
        done = engine.execute(todo, progress=progress)
        report.computed.extend(done.computed)
        report.pids.extend(done.pids)
        computed.update(done.computed)
    else:
        raise RuntimeError(f"kind {config['kind']}: still planning new tasks after {MAX_STAGES} rounds")
    return tasks


# Kept for callers of the profile-only engine.
def plan_profile(config: Mapping[str, Any]) -> list[Task]:
    """The tasks of a profile run (see :func:`spectra.jobs.profile.kind.plan`)."""
    return kind_module("profile").plan(check_config({**config, "kind": "profile"}))
