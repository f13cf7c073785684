"""The local engine: a run's tasks in this process, one after the other."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from spectra.engine.tasks import (
    _MODEL_CACHE,
    Task,
    TaskResult,
    run_task,
)

__all__ = ["EngineReport", "LocalEngine", "Runner"]


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
