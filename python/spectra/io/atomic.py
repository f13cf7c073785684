"""The one atomic writer: every result file appears complete or not at all.

Each writer renders to a hidden temporary beside the target (``.<name>.<pid>.tmp``), then moves it
into place with ``os.replace``, so a killed job leaves either the old file or the new one, never a
half-written one, and concurrent writers of different files never share a temporary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_bytes(path, frame.to_csv(index=False).encode())


def save_figure(fig: Figure, path: Path) -> Path:
    """Renders ``fig`` as PNG next to ``path`` under a temporary name, then renames it into place."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only for jobs that draw

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        FigureCanvasAgg(fig)
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
