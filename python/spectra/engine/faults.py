"""Fault injection for the engine tests: task runners that die or fail on purpose.

They live in the package (not in ``tests/``) so that Ray workers can import them by name. Each
records every attempt as an empty marker file ``<marker_dir>/<task>.attempt-<n>.pid-<pid>``, so a
test can count how often a task ran and in which processes.

Example:
    >>> import tempfile
    >>> attempts(tempfile.mkdtemp(), "tiny-llama/shard-00000")
    0
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from spectra.engine.core import Task, TaskResult, run_task
from spectra.io.atomic import tmp_name

__all__ = ["always_fail", "attempts", "die_once", "record_attempt"]


def _stem(task_id: str) -> str:
    return task_id.replace("/", "__")


def attempts(marker_dir: str | os.PathLike, task_id: str) -> int:
    """How many attempts of ``task_id`` were recorded in ``marker_dir``."""
    return len(list(Path(marker_dir).glob(f"{_stem(task_id)}.attempt-*")))


def record_attempt(marker_dir: str | os.PathLike, task: Task) -> int:
    """Records an attempt of ``task`` and returns its number (1 for the first)."""
    folder = Path(marker_dir)
    folder.mkdir(parents=True, exist_ok=True)
    number = attempts(folder, task.id) + 1
    (folder / f"{_stem(task.id)}.attempt-{number}.pid-{os.getpid()}").touch()
    return number


def die_once(task: Task, *, marker_dir: str, task_ids: Collection[str] | None = None) -> TaskResult:
    """``run_task``, except that the first attempt of each task in ``task_ids`` (default: all) does the
    task's work, leaves a half-written temporary shard beside its shard (a file, or a folder with a
    partial file) and kills its own process (``os._exit(1)``) before the shard is in place, as a
    worker lost mid-task would."""
    if record_attempt(marker_dir, task) == 1 and (task_ids is None or task.id in task_ids):
        # the work itself, written to a throw-away run folder: the shard never reaches its place
        scratch = Path(marker_dir) / f"{_stem(task.id)}.scratch"
        run_task(replace(task, out=str(scratch)))
        tmp = tmp_name(task.path)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        if task.is_folder:
            tmp.mkdir()
            (tmp / "data.parquet").write_bytes(b"PAR1 half a shard")
        else:
            tmp.write_bytes(b"PAR1 half a shard")
        os._exit(1)
    return run_task(task)


def always_fail(task: Task, *, marker_dir: str) -> TaskResult:
    """Records the attempt and raises ``RuntimeError`` (a task that fails on every retry)."""
    number = record_attempt(marker_dir, task)
    raise RuntimeError(f"injected failure of {task.id} (attempt {number})")
