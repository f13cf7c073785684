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

# ruff: noqa: F401
# The engine lives in its modules: config (run configs and keys), tasks (tasks, stamps, shards), local
# and ray (the engines), runs (the staged run); this module gathers their names.
from spectra.engine.config import (
    COMMON_KEYS,
    ENGINES,
    KINDS,
    MAX_STAGES,
    RUN_FILE,
    STAMP_FILE,
    TASK_KEY,
    as_list,
    check_config,
    int_list,
    kind_module,
    load_config,
    positive_int,
)
from spectra.engine.local import EngineReport, LocalEngine, Runner
from spectra.engine.ray import RayEngine
from spectra.engine.runs import RunResult, make_engine, plan_profile, run
from spectra.engine.tasks import (
    ID_COLUMNS,
    Task,
    TaskResult,
    check_model_config,
    checkpoint_label,
    entries,
    expand_checkpoints,
    folder_shard,
    is_done,
    keep_created,
    load_task_model,
    model_folder,
    model_identity,
    plan,
    read_stamp,
    run_task,
    shards_by_label,
    shared_model_identity,
    write_parquet_shard,
)

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
