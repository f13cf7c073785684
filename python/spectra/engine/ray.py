"""The Ray engine: a run's tasks as Ray tasks on a cluster (``ray`` is imported when a run needs it)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from spectra.engine.local import EngineReport, Runner, _progress
from spectra.engine.tasks import (
    Task,
    TaskResult,
    run_task,
)

__all__ = ["RayEngine"]


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

    def __init__(
        self,
        address: str | None = None,
        num_workers: int | None = None,
        max_retries: int = 3,
        runner: Runner = run_task,
    ) -> None:
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
                listed = "; ".join(
                    f"{task_id}: {(str(error).strip().splitlines() or [type(error).__name__])[-1][:200]}"
                    for task_id, error in failures
                )
                raise RuntimeError(
                    f"{len(failures)} task(s) failed after {self.max_retries} retries ({listed}); "
                    "rerun to redo only those"
                )
        finally:
            if started and not self._in_session:
                ray.shutdown()
        order = {task.id: i for i, task in enumerate(tasks)}
        report.computed.sort(key=order.__getitem__)
        report.seconds = time.perf_counter() - start
        report.pids = sorted(set(report.pids))
        return report
