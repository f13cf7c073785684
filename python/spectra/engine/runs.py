"""A whole run: plan, execute the tasks not done yet with an engine, plan again until every planned
task is done, then the kind's merge (the overview: :mod:`spectra.engine.core`)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from spectra.engine.config import (
    ENGINES,
    MAX_STAGES,
    RUN_FILE,
    check_config,
    kind_module,
)
from spectra.engine.local import EngineReport, LocalEngine
from spectra.engine.ray import RayEngine
from spectra.engine.tasks import (
    Task,
    is_done,
    read_stamp,
)
from spectra.io.atomic import discard, write_json

__all__ = ["RunResult", "make_engine", "plan_profile", "run"]


def make_engine(
    name: str, *, address: str | None = None, workers: int | None = None, max_retries: int = 3
) -> LocalEngine | RayEngine:
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
                raise ValueError(
                    f"out: {folder} holds shard(s) this run does not plan ({', '.join(stray[:4])}); a run "
                    "of another configuration? choose another out or delete it"
                )
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
    return {
        "kind": config["kind"],
        "config": {k: v for k, v in config.items() if k != "out"},
        "runs": list(runs.values()),
        "tasks": [task.id for task in tasks],
    }


def run(
    config: Mapping[str, Any],
    engine: LocalEngine | RayEngine | None = None,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    command_line: Sequence[str] | None = None,
) -> RunResult:
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


def _execute_stages(
    config: Mapping[str, Any],
    module: ModuleType,
    engine: LocalEngine | RayEngine,
    root: Path,
    report: EngineReport,
    computed: set[str],
    progress: bool,
) -> list[Task]:
    """Plan → execute until every planned task is done; returns the final plan."""
    for _ in range(MAX_STAGES):
        tasks = module.plan(config)
        _check_out(tasks, root, module)
        root.mkdir(parents=True, exist_ok=True)
        write_json(root / RUN_FILE, _run_document(config, tasks))
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
