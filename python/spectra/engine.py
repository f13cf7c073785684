"""Running a job as independent tasks, in-process or on a Ray cluster: ``spectra run CONFIG.yaml``.

A run is split into :class:`Task` s, one per (model or checkpoint, sample shard). A task is a
picklable description (job kind, model, shard index, sample range, its token windows, output
path, options); :func:`run_task` computes it and writes exactly one file, named by the task, via a
temporary name and ``os.replace``, so a retried or duplicated task overwrites its own shard rather
than adding one and a killed task leaves at most a hidden ``.*.tmp`` file. Engines only decide
where tasks run: :class:`LocalEngine` in this process one after the other, :class:`RayEngine` as
Ray tasks (retried when a worker dies or a task raises). The merge step then builds the result
folders from the shards alone, so a run's output is the same whatever the engine and the number of
workers, and a rerun skips every task whose shard is already on disk (rerun = resume).

Only the ``profile`` kind runs on engines so far. Layout of ``out`` for ``kind: profile``::

    run.json                       the plan: kind, normalised config, one entry per model/checkpoint
    <label>/                       one folder per model or checkpoint, exactly what run_profile writes:
        meta.json                  model identity, run configuration, run_hash (as spectra profile)
        tokens/shard-00000.parquet per-token metrics of samples [0, samples_per_shard), one per task
        head_summary.parquet/.csv, correlations_*.parquet, summary.json, figures/ ...

``<label>`` is the zoo name (``tiny-llama``), a checkpoint as ``<model>-<step folder>``
(``tiny-qwen3-step-001600``), or a local folder's name. A shard holds the samples
``[shard * samples_per_shard, ...)`` profiled in one forward pass, exactly as ``spectra profile
--batch-size samples_per_shard`` would, so the two produce the same shards and the same
``run_hash``.

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

import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KINDS",
    "SUPPORTED_KINDS",
    "EngineReport",
    "LocalEngine",
    "RayEngine",
    "RunResult",
    "Task",
    "TaskResult",
    "check_config",
    "load_config",
    "make_engine",
    "merge_profile",
    "plan",
    "plan_profile",
    "run",
    "run_task",
]

#: Every job kind of ``spectra run``; :data:`SUPPORTED_KINDS` are those the engines run so far.
KINDS: tuple[str, ...] = ("profile", "capture", "sweep", "dynamics", "geometry", "plasticity")
SUPPORTED_KINDS: tuple[str, ...] = ("profile",)
ENGINES: tuple[str, ...] = ("local", "ray")
RUN_FILE = "run.json"
TASK_KEY = b"spectra.task"  # Parquet key-value metadata of a shard: task id, fingerprint, model identity

_PROFILE_KEYS = {
    "kind": None, "models": None, "checkpoints": None, "data": None, "context_length": None, "n_samples": None,
    "samples_per_shard": 8, "out": None, "layers": None, "heads": None, "metrics": None, "threshold": 0.9,
    "ignore_first": 2, "n_permutations": 100, "dtype": "float32", "attn_implementation": "sdpa", "device": "cpu",
    "device_map": None, "gpus_per_task": None,
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


def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not a job kind; allowed kinds are {', '.join(KINDS)}")
    if kind not in SUPPORTED_KINDS:
        raise NotImplementedError(
            f"kind: {kind!r} does not run on the engines yet; supported so far: {', '.join(SUPPORTED_KINDS)} "
            f"(run it with 'spectra {kind}' meanwhile)"
        )
    return kind


def _as_list(value: Any, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{key}: expected a name or a list of names; got {value!r}")


def _int_list(value: Any, key: str) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        from spectra.capture_job import parse_ints

        try:
            return parse_ints(value)
        except ValueError:
            raise ValueError(f"{key}: expected e.g. '0,2,5-7' or a list of integers; got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [int(v) for v in value]
    raise ValueError(f"{key}: expected e.g. '0,2,5-7' or a list of integers; got {value!r}")


def _positive_int(value: Any, key: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key}: expected an integer >= 1; got {value!r}")
    return value


def check_config(config: Mapping[str, Any], *, out: str | os.PathLike | None = None) -> dict[str, Any]:
    """The config with every key checked and defaults filled in; ``out`` (``--out``) overrides the config's.

    Keys of ``kind: profile``: ``models`` (zoo names, ``all-minilm-l6-v2`` or model folders) and/or
    ``checkpoints`` (a zoo model with checkpoints, e.g. ``tiny-qwen3``, for all of them, or
    checkpoint folders), ``context_length`` (required), ``n_samples`` (default: all windows of the
    data), ``samples_per_shard`` (8), ``out``, and as in ``spectra profile``: ``data``, ``layers``,
    ``heads``, ``metrics``, ``threshold``, ``ignore_first``, ``n_permutations``, ``dtype``,
    ``attn_implementation``; placement: ``device`` (``cpu`` | ``cuda``), ``device_map`` (``auto``:
    a model larger than one GPU, via accelerate), ``gpus_per_task`` (default 1 with ``device:
    cuda``, else 0; what a Ray task requests).

    Example:
        >>> check_config({"kind": "profile", "models": "tiny-llama", "context_length": 32, "out": "x"})["samples_per_shard"]
        8
        >>> check_config({"kind": "geometry"})
        Traceback (most recent call last):
        ...
        NotImplementedError: kind: 'geometry' does not run on the engines yet; supported so far: profile (run it with 'spectra geometry' meanwhile)
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config: expected a mapping; got {type(config).__name__}")
    config = {str(k).replace("-", "_"): v for k, v in config.items()}
    _check_kind(config.get("kind"))
    unknown = sorted(k for k in config if k not in _PROFILE_KEYS)
    if unknown:
        raise ValueError(f"config: unknown key(s) {', '.join(unknown)}; allowed keys for kind profile are "
                         f"{', '.join(sorted(_PROFILE_KEYS))}")
    checked = {**_PROFILE_KEYS, **config}
    if out is not None:
        checked["out"] = str(out)
    if checked["out"] is None:
        raise ValueError("out: the config has no 'out' folder; add one or pass --out")
    checked["out"] = str(Path(checked["out"]).absolute())  # workers may run elsewhere than the driver's cwd
    checked["models"] = [str(m) for m in _as_list(checked["models"], "models")]
    checked["checkpoints"] = [str(m) for m in _as_list(checked["checkpoints"], "checkpoints")]
    if not checked["models"] and not checked["checkpoints"]:
        raise ValueError("models: the config names no models and no checkpoints")
    checked["context_length"] = _positive_int(checked["context_length"], "context_length")
    checked["n_samples"] = _positive_int(checked["n_samples"], "n_samples", optional=True)
    checked["samples_per_shard"] = _positive_int(checked["samples_per_shard"], "samples_per_shard")
    checked["layers"] = _int_list(checked["layers"], "layers")
    checked["heads"] = _int_list(checked["heads"], "heads")
    from spectra.profile import check_metrics, check_threshold
    from spectra.profile_job import DEFAULT_METRICS

    metrics = checked["metrics"]
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    checked["metrics"] = list(check_metrics(DEFAULT_METRICS if metrics is None else metrics))
    checked["threshold"] = check_threshold(checked["threshold"])
    if not isinstance(checked["ignore_first"], int) or checked["ignore_first"] < 0:
        raise ValueError(f"ignore_first: expected an integer >= 0; got {checked['ignore_first']!r}")
    checked["n_permutations"] = _positive_int(checked["n_permutations"], "n_permutations")
    for key, allowed in (("dtype", ("float32", "float16", "bfloat16")), ("attn_implementation", ("sdpa", "eager")),
                         ("device", ("cpu", "cuda")), ("device_map", (None, "auto"))):
        if checked[key] not in allowed:
            raise ValueError(f"{key}: {checked[key]!r}; allowed values are {', '.join(map(str, allowed))}")
    if checked["device_map"] is not None and checked["device"] != "cuda":
        raise ValueError("device_map: 'auto' spreads a model over GPUs and needs device: cuda")
    gpus = checked["gpus_per_task"]
    if gpus is None:
        gpus = 1 if checked["device"] == "cuda" else 0
    if not isinstance(gpus, (int, float)) or isinstance(gpus, bool) or gpus < 0:
        raise ValueError(f"gpus_per_task: expected a number >= 0; got {gpus!r}")
    checked["gpus_per_task"] = gpus
    if checked["data"] is not None:
        checked["data"] = str(checked["data"])
    return checked


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class Task:
    """One unit of work: a shard of samples of one model or checkpoint; picklable, self-contained.

    ``samples`` is the half-open range ``[lo, hi)`` of global sample indices and ``input_ids`` the
    ``(hi - lo, context_length)`` token windows themselves (tokenised once when planning, so every
    engine and retry sees the same tokens). ``options`` holds the job's settings; ``num_gpus`` is
    what a Ray task requests.
    """

    kind: str
    model: str
    label: str
    shard: int
    samples: tuple[int, int]
    out: str
    options: dict[str, Any]
    input_ids: np.ndarray = field(repr=False)
    num_gpus: float = 0

    @property
    def id(self) -> str:
        """``<label>/shard-<index>``: unique within a run, and the shard file's stem."""
        return f"{self.label}/shard-{self.shard:05d}"

    @property
    def path(self) -> Path:
        """The shard file this task writes (``out/<label>/tokens/shard-NNNNN.parquet``)."""
        from spectra.profile_job import shard_path

        return shard_path(Path(self.out) / self.label, self.shard)

    @property
    def fingerprint(self) -> str:
        """sha256 of everything that determines the shard's content (not where it is written)."""
        return _sha256({"kind": self.kind, "model": self.model, "label": self.label, "shard": self.shard,
                        "samples": list(self.samples), "options": self.options,
                        "input_ids": hashlib.sha256(np.ascontiguousarray(self.input_ids).tobytes()).hexdigest()})


@dataclass
class TaskResult:
    """What :func:`run_task` did: the shard written, its rows, how long it took, in which process."""

    task_id: str
    path: Path
    rows: int
    seconds: float
    pid: int


def _model_folder(name: str) -> Path:
    from spectra import zoo
    from spectra.capture_job import MINILM

    if name in zoo.MODEL_NAMES:
        return zoo.model_path(name)
    if name == MINILM:
        return zoo.minilm_path()
    folder = Path(name)
    if not (folder / "config.json").is_file():
        raise ValueError(f"model: {name!r} is neither a zoo model ({', '.join(zoo.MODEL_NAMES)}), {MINILM!r}, "
                         "nor a local folder with a config.json")
    return folder


def _expand_checkpoints(entry: str) -> list[Path]:
    from spectra import zoo

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


def _checkpoint_label(folder: Path) -> str:
    from spectra import zoo

    parent = folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent
    for name in zoo.MODEL_NAMES:
        if parent.resolve() == zoo.model_path(name).resolve():
            return f"{name}-{folder.name}"
    return f"{parent.name}-{folder.name}" if parent.name else folder.name


def _entries(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, model) of every model and checkpoint of a checked config, in config order."""
    from spectra import zoo
    from spectra.capture_job import MINILM

    entries = []
    for name in config["models"]:
        if name in (*zoo.MODEL_NAMES, MINILM):
            entries.append((name, name))
        else:
            entries.append((Path(name).name, str(Path(name).absolute())))
    for entry in config["checkpoints"]:
        entries.extend((_checkpoint_label(p), str(p.absolute())) for p in _expand_checkpoints(entry))
    labels = [label for label, _ in entries]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(f"models/checkpoints: {', '.join(twice)} appear(s) more than once")
    return entries


def _check_model_config(model: str, folder: Path, config: Mapping[str, Any]) -> None:
    """The errors a task would hit anyway, found before any task runs (and is retried)."""
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(folder, local_files_only=True)
    limit = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if limit is not None and config["context_length"] > limit:
        raise ValueError(f"context_length: {config['context_length']} exceeds the max_position_embeddings of "
                         f"{model} ({limit})")
    for key, attr in (("layers", "num_hidden_layers"), ("heads", "num_attention_heads")):
        count = getattr(model_config, attr, None)
        bad = [x for x in config[key] or [] if count is not None and not 0 <= x < count]
        if bad:
            raise ValueError(f"{key}: {bad} out of range for {model}, which has {count} {key}")


def plan_profile(config: Mapping[str, Any]) -> list[Task]:
    """The tasks of a profile run: every model and checkpoint × every shard of ``samples_per_shard`` samples.

    The windows are tokenised here, once per model, with that model's tokenizer
    (``profile_job.load_windows``). Tasks come grouped by model, in config order, shards ascending.

    Example:
        >>> tasks = plan_profile({"kind": "profile", "models": ["tiny-llama"], "checkpoints": ["tiny-qwen3"],
        ...                       "context_length": 32, "n_samples": 5, "samples_per_shard": 2, "out": "results/x"})
        >>> len(tasks), tasks[0].id, tasks[2].samples, tasks[-1].id
        (21, 'tiny-llama/shard-00000', (4, 5), 'tiny-qwen3-step-001600/shard-00002')
    """
    from transformers import AutoTokenizer

    from spectra.profile_job import load_windows

    config = check_config(config)
    options = {key: config[key] for key in ("context_length", "layers", "heads", "metrics", "threshold", "ignore_first",
                                            "dtype", "attn_implementation", "device", "device_map", "n_permutations",
                                            "data", "samples_per_shard")}
    options["n_samples_requested"] = config["n_samples"]
    tasks: list[Task] = []
    for label, model in _entries(config):
        folder = _model_folder(model)
        _check_model_config(model, folder, config)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        windows = load_windows(config["data"], tokenizer, config["context_length"], config["n_samples"]).numpy()
        size = config["samples_per_shard"]
        for shard, lo in enumerate(range(0, len(windows), size)):
            hi = min(len(windows), lo + size)
            tasks.append(Task(kind="profile", model=model, label=label, shard=shard, samples=(lo, hi), out=config["out"],
                              options=dict(options), input_ids=windows[lo:hi], num_gpus=config["gpus_per_task"]))
    return tasks


def plan(config: Mapping[str, Any]) -> list[Task]:
    """The tasks of any job kind (only ``profile`` so far; others raise ``NotImplementedError``)."""
    _check_kind(dict(config).get("kind"))
    return plan_profile(config)


# --------------------------------------------------------------------------------------------
# Executing one task
# --------------------------------------------------------------------------------------------

_MODEL_CACHE: dict[tuple, Any] = {}  # one model per process: consecutive tasks of a model load it once


def _load_for_task(task: Task):
    import torch

    key = (task.model, task.options["dtype"], task.options["attn_implementation"], task.options["device"],
           task.options["device_map"])
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    _MODEL_CACHE.clear()
    dtype = getattr(torch, task.options["dtype"])
    if task.options["device_map"] is not None:
        from transformers import AutoModelForCausalLM

        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise RuntimeError("device_map: 'auto' needs the accelerate package (pip install accelerate)") from None
        model = AutoModelForCausalLM.from_pretrained(
            _model_folder(task.model), dtype=dtype, attn_implementation=task.options["attn_implementation"],
            local_files_only=True, device_map=task.options["device_map"]).eval()
    else:
        from spectra.capture_job import load_model

        model, _ = load_model(task.model, dtype=dtype, attn_implementation=task.options["attn_implementation"])
        model = model.to(task.options["device"]).eval()
    _MODEL_CACHE[key] = model
    return model


def _model_identity(model) -> dict[str, str]:
    from spectra.profile_job import config_hash, weights_fingerprint

    return {"class": type(model).__name__, "config_sha256": config_hash(model),
            "weights_fingerprint": weights_fingerprint(model), "dtype": str(next(model.parameters()).dtype)}


def compute_shard(task: Task):
    """The shard's per-token table (``spectra.profile`` of the task's windows in one forward pass) and
    the model identity that goes into the shard's metadata."""
    import torch

    from spectra.profile import profile

    if task.kind != "profile":
        _check_kind(task.kind)
    model = _load_for_task(task)
    lo, hi = task.samples
    frame = profile(model, torch.from_numpy(np.ascontiguousarray(task.input_ids)), layers=task.options["layers"],
                    heads=task.options["heads"], metrics=task.options["metrics"], threshold=task.options["threshold"],
                    ignore_first=task.options["ignore_first"], sample_ids=list(range(lo, hi)))
    return frame, _model_identity(model)


def _shard_table(task: Task, frame, identity: Mapping[str, str]):
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    stamp = json.dumps({"task_id": task.id, "fingerprint": task.fingerprint, "model": dict(identity),
                        "samples": list(task.samples)}, sort_keys=True)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), TASK_KEY: stamp.encode()})


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_shard(task: Task, frame, identity: Mapping[str, str]) -> Path:
    """Writes the shard atomically (a unique hidden ``.tmp`` name, then ``os.replace`` onto ``task.path``),
    with the same encodings as ``spectra.profile.write_profile_parquet`` and the task stamp as metadata."""
    import pyarrow.parquet as pq

    path = task.path
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [c for c in ("sample", "layer", "head", "token") if c in frame.columns]
    floats = [c for c in frame.columns if c not in ids and frame[c].dtype.kind == "f"]
    tmp = _tmp_name(path)
    try:
        pq.write_table(_shard_table(task, frame, identity), tmp, compression="zstd", compression_level=3,
                       use_dictionary=ids, use_byte_stream_split=floats or False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def run_task(task: Task) -> TaskResult:
    """Computes one task and writes its shard atomically; running it again overwrites the same file."""
    start = time.perf_counter()
    frame, identity = compute_shard(task)
    path = write_shard(task, frame, identity)
    return TaskResult(task_id=task.id, path=path, rows=len(frame), seconds=time.perf_counter() - start, pid=os.getpid())


def read_stamp(path: str | os.PathLike) -> dict[str, Any] | None:
    """The task stamp of a shard file (task id, fingerprint, model identity, samples), or None when it
    has none (a shard written by ``spectra profile``) or cannot be read."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - a damaged file is treated as not done
        return None
    raw = metadata.get(TASK_KEY)
    return json.loads(raw) if raw else None


def is_done(task: Task) -> bool:
    """Whether ``task``'s shard is on disk and was written by this very task (same fingerprint)."""
    stamp = read_stamp(task.path) if task.path.is_file() else None
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
            if started:
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
# Merging shards into result folders
# --------------------------------------------------------------------------------------------


def _check_out(tasks: Sequence[Task], out: Path) -> None:
    """Refuses a folder that is not this run's: stray shards, or shards of another configuration."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RUN_FILE).is_file():
        raise ValueError(f"out: {out} is not empty and holds no {RUN_FILE}; choose another out or delete it")
    expected = {task.path for task in tasks}
    for label in sorted({task.label for task in tasks}):
        tokens = out / label / "tokens"
        stray = sorted(p.name for p in tokens.glob("shard-*.parquet") if p not in expected) if tokens.is_dir() else []
        if stray:
            raise ValueError(f"out: {tokens} holds shard(s) this run does not plan ({', '.join(stray[:4])}); a run of "
                             "another configuration? choose another out or delete it")
    for task in tasks:
        if task.path.is_file() and not is_done(task):
            stamp = read_stamp(task.path)
            why = "was written by spectra profile" if stamp is None else "belongs to another configuration"
            raise ValueError(f"out: {task.path} {why}; choose another out or delete it")


def merge_profile(tasks: Sequence[Task], *, command_line: Sequence[str] | None = None) -> dict[str, Any]:
    """Builds each model's result folder from its shards: ``meta.json`` (the same document, and the
    same ``run_hash``, as ``spectra profile --batch-size samples_per_shard``), then the head summary,
    correlation tables, ``summary.json`` and figures from all shards. Returns ``label -> ProfileResult``.

    Raises ``ValueError`` when a shard is missing, or when the shards of one folder disagree on the
    model (its weights changed between two runs)."""
    from spectra.profile_job import META, TOKENS, ProfileResult, _analyse, _atomic_json, _versions, read_tokens, SEED
    from spectra.profile_report import layer_summary

    results: dict[str, Any] = {}
    by_label: dict[str, list[Task]] = {}
    for task in tasks:
        by_label.setdefault(task.label, []).append(task)
    for label, group in by_label.items():
        group = sorted(group, key=lambda t: t.shard)
        out = Path(group[0].out) / label
        missing = [t.id for t in group if not is_done(t)]
        if missing:
            raise ValueError(f"out: {len(missing)} shard(s) of {label} are missing ({', '.join(missing[:4])}); rerun")
        identities = {json.dumps(read_stamp(t.path)["model"], sort_keys=True) for t in group}
        if len(identities) != 1:
            raise ValueError(f"out: the shards of {out} come from different weights of {group[0].model}; delete the "
                             "folder and rerun")
        identity = json.loads(identities.pop())
        for stray in (out / TOKENS).glob(".*.tmp"):  # left by killed attempts; every shard is in place now
            stray.unlink(missing_ok=True)
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
            "data_sha256": hashlib.sha256(np.ascontiguousarray(windows).tobytes()).hexdigest(),
        }
        model_identity = {k: identity[k] for k in ("class", "config_sha256", "weights_fingerprint")}
        meta = {
            "run_hash": _sha256({"model": model_identity, "run": run_config}),
            "model": {"name": group[0].model, **model_identity, "dtype": identity["dtype"]},
            "run": run_config,
            "n_shards": len(group),
            "versions": _versions(),
            "seed": SEED,
            "command_line": list(command_line) if command_line is not None else list(sys.argv),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if (out / META).is_file():
            try:
                old = json.loads((out / META).read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("run_hash") == meta["run_hash"]:
                meta["created"] = old.get("created", meta["created"])
        _atomic_json(out / META, meta)
        frame = read_tokens(out)
        files = _analyse(frame, out, n_permutations=options["n_permutations"])
        results[label] = ProfileResult(
            out_dir=out, meta=meta, summary=json.loads(files["summary"].read_text()), shards=[t.path for t in group],
            computed_shards=[], figures=[files[k] for k in sorted(files) if k.startswith("figure:")],
            layer_summary=layer_summary(frame, [m for m in ("entropy", "max_attn", "k_eff", "sink_mass")
                                                if m in frame.columns] or None),
            files=files)
    return results


# --------------------------------------------------------------------------------------------
# A whole run
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """A finished run: its folder, the per-model results (``label -> ProfileResult``), the engine's report."""

    out: Path
    results: dict[str, Any]
    report: EngineReport
    tasks: list[Task]


def _run_document(config: Mapping[str, Any], tasks: Sequence[Task]) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {}
    for task in tasks:
        entry = runs.setdefault(task.label, {"label": task.label, "model": task.model, "n_samples": 0, "n_shards": 0})
        entry["n_samples"] += task.samples[1] - task.samples[0]
        entry["n_shards"] += 1
    return {"kind": config["kind"], "config": {k: v for k, v in config.items() if k != "out"},
            "runs": list(runs.values()), "tasks": [task.id for task in tasks]}


def run(config: Mapping[str, Any], engine: LocalEngine | RayEngine | None = None, *, out: str | os.PathLike | None = None,
        progress: bool = True, command_line: Sequence[str] | None = None) -> RunResult:
    """Plans the run, executes the tasks whose shard is not on disk yet with ``engine`` (default
    :class:`LocalEngine`), then merges every model's shards into its result folder.

    The report lists the computed and the skipped task ids. See the module docstring for an example.
    """
    from spectra.profile_job import _atomic_json

    config = check_config(config, out=out)
    engine = engine or LocalEngine()
    tasks = plan(config)
    root = Path(config["out"])
    _check_out(tasks, root)
    root.mkdir(parents=True, exist_ok=True)
    _atomic_json(root / RUN_FILE, _run_document(config, tasks))
    todo = [task for task in tasks if not is_done(task)]
    report = engine.execute(todo, progress=progress)
    report.skipped = [task.id for task in tasks if task not in todo]
    results = merge_profile(tasks, command_line=command_line)
    return RunResult(out=root, results=results, report=report, tasks=tasks)
