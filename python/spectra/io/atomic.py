"""The one atomic writer: every result file (or shard folder) appears complete or not at all.

Each writer renders to a hidden temporary beside the target, named by :func:`tmp_name`
(``.<name>.<pid>.<uuid8>.tmp``: unique to the process and the call, so concurrent writers never
share one, and every cleanup of stale temporaries finds them with the glob ``.*.tmp``), then moves it
into place with ``os.replace``; on failure the temporary is removed. A killed job leaves either the
old file or the new one, never a half-written one. :func:`atomic_path` is the streamed form: a
context manager yielding the temporary path (of a file, or a fresh folder) for the caller to fill.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("a")
    >>> write_json(folder / "b.json", {"x": float("nan")})
    >>> sorted(p.name for p in folder.iterdir()), (folder / "b.json").read_text()
    (['a.txt', 'b.json'], '{\\n  "x": null\\n}\\n')
    >>> try:
    ...     with atomic_path(folder / "c.txt") as tmp:
    ...         _ = tmp.write_text("half")
    ...         raise RuntimeError("killed")
    ... except RuntimeError:
    ...     pass
    >>> sorted(p.name for p in folder.iterdir())  # no c.txt, no temporary left
    ['a.txt', 'b.json']
    >>> tmp_name(folder / "c.txt").name.startswith(".c.txt."), tmp_name(folder / "c.txt").suffix
    (True, '.tmp')
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def tmp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path``, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def discard(path: Path) -> None:
    """Removes a temporary file or folder, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def move_into_place(tmp: Path, path: Path) -> None:
    """Renames ``tmp`` onto ``path``; when ``tmp`` is a folder, whatever is at ``path`` is first moved
    aside (under a temporary name) and removed after: a folder is replaced, never merged into."""
    old = None
    if tmp.is_dir() and path.exists():
        old = tmp_name(path)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        discard(old)


@contextmanager
def atomic_path(path: Path, *, folder: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (with ``folder=True``, an empty folder created there)
    to write into; on a normal exit it is moved onto ``path``, on an exception removed."""
    tmp = tmp_name(path)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        move_into_place(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            discard(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def finite_or_none(obj: Any) -> Any:
    """NaN/inf floats as None, so that the JSON is standard."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(finite_or_none(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    write_bytes(path, (text + "\n").encode())


def write_parquet_table(path: Path, table: pa.Table, **options: Any) -> None:
    """Writes an Arrow table with ``pyarrow.parquet.write_table(table, tmp, **options)``."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **options)


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    write_parquet_table(path, pa.Table.from_pandas(frame, preserve_index=False), compression="zstd")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_bytes(path, frame.to_csv(index=False).encode())


def save_figure(fig: Figure, path: Path) -> Path:
    """Renders ``fig`` as PNG next to ``path`` under a temporary name, then renames it into place."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only for jobs that draw

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        FigureCanvasAgg(fig)
        fig.savefig(tmp, format="png", dpi=110)
    return path
