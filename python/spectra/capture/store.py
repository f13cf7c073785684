"""Captured Q/K/V on disk: the qk-sniffer Parquet layout, written atomically, and its reader.

Layout under ``out_dir`` (see docs/capture.md, 'Files')::

    l{LL:02d}h{HH:02d}{q|k|v}/data.parquet            post_rope (the reference tool's layout)
    pre_rope/l{LL:02d}h{HH:02d}{q|k|v}/data.parquet   pre_rope
    spectra_capture.json                               model, heads, GQA map, sampler, seed, version

For k and v, HH is the KV-head index. Columns: ``bucket`` int32, ``example_id`` int32, ``position``
int32, ``vector`` fixed_size_list<float32>[d], ``sliding_window`` int64 (null on full-attention
layers; the reference tool infers a null-typed column there), ``stage`` string. zstd-compressed.

Each file is streamed batch by batch into a hidden temporary beside it (``.data.parquet.<pid>.<uuid8>.tmp``,
see :func:`spectra.io.atomic.tmp_name`) and renamed into place when the
capture finishes; a capture that fails leaves no file behind, only its earlier complete ones.
"""

from __future__ import annotations

import json
import os
import re
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from spectra.io.atomic import atomic_path, discard, move_into_place, tmp_name, write_bytes

SIDECAR = "spectra_capture.json"


def capture_path(out_dir: str | os.PathLike, layer: int, head: int, kind: str, stage: str = "post_rope") -> Path:
    """Where one (layer, head, kind, stage) capture lives; ``head`` is the KV head for k and v."""
    name = f"l{layer:02d}h{head:02d}{kind}"
    root = Path(out_dir) if stage == "post_rope" else Path(out_dir) / stage
    return root / name / "data.parquet"


def capture_schema(head_dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("bucket", pa.int32()),
            ("example_id", pa.int32()),
            ("position", pa.int32()),
            ("vector", pa.list_(pa.float32(), head_dim)),
            ("sliding_window", pa.int64()),
            ("stage", pa.string()),
        ]
    )


@dataclass(frozen=True)
class Captured:
    """Rows of one captured head: vectors (N, D) float32 and, per row, position, example id, bucket."""

    vectors: torch.Tensor
    positions: torch.Tensor
    example_ids: torch.Tensor
    buckets: torch.Tensor


class CaptureWriter:
    """Streams capture rows into one Parquet file per (layer, head, kind, stage)."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self._writers: dict[Path, pq.ParquetWriter] = {}
        self._tmps: dict[Path, Path] = {}  # each file's temporary, written until commit
        self._created_dirs: list[Path] = []
        self.rows: dict[str, int] = {}
        self._raised_fd_limit: tuple[int, int] | None = None

    def reserve(self, n_files: int) -> None:
        """Makes room for n_files open writers (raising the soft fd limit if needed)."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = n_files + 256
        if wanted > soft:
            new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            self._raised_fd_limit = (soft, hard)

    def write(
        self,
        path: Path,
        vectors: np.ndarray,
        positions: np.ndarray,
        example_ids: np.ndarray,
        buckets: np.ndarray,
        sliding_window: int | None,
        stage: str,
    ) -> None:
        n, head_dim = vectors.shape
        writer = self._writers.get(path)
        if writer is None:
            for parent in reversed(path.relative_to(self.out_dir).parents):
                directory = self.out_dir / parent
                if not directory.exists():
                    self._created_dirs.append(directory)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._tmps[path] = tmp_name(path)
            writer = pq.ParquetWriter(self._tmps[path], capture_schema(head_dim), compression="zstd")
            self._writers[path] = writer
            self.rows[str(path.relative_to(self.out_dir))] = 0
        if n == 0:
            return
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        table = pa.table(
            {
                "bucket": pa.array(buckets, type=pa.int32()),
                "example_id": pa.array(example_ids, type=pa.int32()),
                "position": pa.array(positions, type=pa.int32()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, head_dim),
                "sliding_window": pa.array([sliding_window] * n, type=pa.int64()),
                "stage": pa.array([stage] * n, type=pa.string()),
            },
            schema=capture_schema(head_dim),
        )
        writer.write_table(table)
        self.rows[str(path.relative_to(self.out_dir))] += n

    def commit(self, sidecar: dict[str, Any]) -> None:
        """Closes every file, renames it into place, then writes the sidecar (last, so its presence
        means the capture is complete)."""
        try:
            for path, writer in self._writers.items():
                writer.close()
                move_into_place(self._tmps.pop(path), path)
            self._writers.clear()
            sidecar = {**sidecar, "rows": self.rows}
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_bytes(self.out_dir / SIDECAR, json.dumps(sidecar, indent=2, sort_keys=True).encode())
        finally:
            self._restore_fd_limit()

    def abort(self) -> None:
        """Drops every unfinished file and the folders this writer created for them."""
        try:
            for path, writer in self._writers.items():
                writer.close()
                discard(self._tmps.pop(path))
            self._writers.clear()
            for directory in reversed(self._created_dirs):
                if directory.exists() and not any(directory.iterdir()):
                    directory.rmdir()
        finally:
            self._restore_fd_limit()

    def _restore_fd_limit(self) -> None:
        if self._raised_fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self._raised_fd_limit)
            self._raised_fd_limit = None


def read_capture(
    out_dir: str | os.PathLike, layer: int, head: int, kind: str = "q", stage: str = "post_rope"
) -> Captured:
    """Reads one captured head back from a capture folder (any tool writing this layout).

    Example:
        >>> import tempfile, torch, spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> out = tempfile.mkdtemp()
        >>> with spectra.Probe(model, layers=[0], heads=[0], out_dir=out), torch.no_grad():
        ...     _ = model(tok("In the beginning", return_tensors="pt").input_ids)
        >>> rows = spectra.read_capture(out, layer=0, head=0, kind="k")
        >>> rows.vectors.shape[1], rows.positions.tolist()[:3]
        (32, [0, 1, 2])
    """
    path = capture_path(out_dir, layer, head, kind, stage)
    if not path.exists():
        raise FileNotFoundError(f"no capture for layer {layer} head {head} kind {kind!r} stage {stage!r} at {path}")
    table = pq.read_table(path, columns=["bucket", "example_id", "position", "vector"])
    vector = table.column("vector").combine_chunks()
    head_dim = vector.type.list_size
    values = vector.flatten().to_numpy(zero_copy_only=False).reshape(-1, head_dim)
    return Captured(
        vectors=torch.from_numpy(np.array(values, dtype=np.float32)),
        positions=torch.from_numpy(table.column("position").to_numpy().astype(np.int32)),
        example_ids=torch.from_numpy(table.column("example_id").to_numpy().astype(np.int32)),
        buckets=torch.from_numpy(table.column("bucket").to_numpy().astype(np.int32)),
    )


def read_sliding_window(
    out_dir: str | os.PathLike, layer: int, head: int, kind: str = "q", stage: str = "post_rope"
) -> np.ndarray:
    """The ``sliding_window`` column of one captured head as float64 (NaN where null; all NaN when the
    column is absent or null-typed, as qk-sniffer writes it on full-attention layers)."""
    path = capture_path(out_dir, layer, head, kind, stage)
    if not path.exists():
        raise FileNotFoundError(f"no capture for layer {layer} head {head} kind {kind!r} stage {stage!r} at {path}")
    if "sliding_window" not in pq.read_schema(path).names:
        return np.full(pq.ParquetFile(path).metadata.num_rows, np.nan)
    column = pq.read_table(path, columns=["sliding_window"]).column(0)
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    return column.to_pandas().to_numpy(dtype=np.float64, na_value=np.nan)


@dataclass(frozen=True)
class QKFolder:
    """A capture folder opened for per-head analyses: its captured (layer, head) pairs per kind, its
    sidecar (empty for qk-sniffer folders) and the KV head of each query head."""

    path: Path
    files: dict[str, list[tuple[int, int]]]
    sidecar: dict[str, Any]
    gqa_group: int | None

    def kv_head(self, head: int) -> int:
        """The KV head of query ``head``: the sidecar's ``kv_head_map``, else ``head // gqa_group``."""
        kv_map = self.sidecar.get("kv_head_map")
        if kv_map is not None:
            if head >= len(kv_map):
                raise ValueError(f"qk: query head {head} is outside the capture's kv_head_map ({len(kv_map)} heads)")
            return int(kv_map[head])
        return head // self.gqa_group


def open_qk_folder(qk_dir: str | os.PathLike, gqa_group: int | None = None) -> QKFolder:
    """Lists a capture folder's ``l{LL}h{HH}{q|k}/data.parquet`` files and reads its sidecar; errors
    name the argument when the folder, its query captures, or the KV-head mapping is missing."""
    folder = Path(qk_dir)
    if not folder.is_dir():
        raise ValueError(f"qk: {folder} is not a folder")
    files = {
        kind: sorted(
            (int(m.group(1)), int(m.group(2)))
            for p in folder.iterdir()
            if (m := re.fullmatch(rf"l(\d+)h(\d+){kind}", p.name)) and (p / "data.parquet").is_file()
        )
        for kind in ("q", "k")
    }
    if not files["q"]:
        raise ValueError(f"qk: no query captures (l<L>h<H>q/data.parquet) in {folder}")
    try:
        sidecar = read_sidecar(folder)
    except FileNotFoundError:
        sidecar = {}
    if sidecar.get("kv_head_map") is None and gqa_group is None:
        raise ValueError(
            f"gqa_group: {folder} has no spectra_capture.json naming the KV head of each query head; "
            "pass gqa_group (query heads per KV head)"
        )
    if gqa_group is not None and (isinstance(gqa_group, bool) or not isinstance(gqa_group, int) or gqa_group < 1):
        raise ValueError(f"gqa_group: expected an integer >= 1; got {gqa_group!r}")
    return QKFolder(folder, files, sidecar, gqa_group)


def read_sidecar(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The capture's description (model, heads, GQA map, sampler, rows per file)."""
    path = Path(out_dir) / SIDECAR
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: not a finished Spectra capture folder")
    return json.loads(path.read_text())


#: A capture file's path relative to its folder (``l00h01q/data.parquet``, ``pre_rope/l00h01q/data.parquet``).
_CAPTURE_FILE = re.compile(r"(?:pre_rope/)?l\d+h\d+[qkv]/data\.parquet")
#: Sidecar fields that add up over the shards of one capture; every other field must agree.
_ADDITIVE = ("rows", "n_examples")


def merge_captures(shard_folders: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Concatenates finished capture folders — shards of one capture, each over its own examples, with
    the same model, heads, stages and sampler — into ``out_dir``, in the order given; returns its sidecar.

    Every file's rows come shard after shard, Parquet row group by row group (one per example and
    file, as the Probe writes them), so the result is the folder one :func:`run_capture` over all
    the examples in that order writes, byte for byte: the same files, rows and sidecar (``rows`` and
    ``n_examples`` summed). Each file is written under a hidden temporary name and renamed into
    place; the sidecar is removed first and written last, so ``out_dir`` reads as finished only once
    every file is. Capture files already in ``out_dir`` that the shards do not hold are removed.

    Raises ``ValueError`` when the shards disagree (another model, heads, sampler…) or a file's
    rows do not match its sidecar, ``FileNotFoundError`` when a shard is not a finished capture.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from spectra import zoo
        >>> from spectra.jobs.capture.run import run_capture
        >>> model, tok = zoo.load("tiny-llama")
        >>> root = Path(tempfile.mkdtemp())
        >>> texts = [(0, "In the beginning"), (1, "And the earth was"), (2, "And God said")]
        >>> _ = run_capture(model, tok, texts[:2], root / "a", layers=[0], heads=[1], progress=False)
        >>> _ = run_capture(model, tok, texts[2:], root / "b", layers=[0], heads=[1], progress=False)
        >>> merged = merge_captures([root / "a", root / "b"], root / "all")
        >>> whole = run_capture(model, tok, texts, root / "whole", layers=[0], heads=[1], progress=False)
        >>> merged == whole, read_capture(root / "all", 0, 1, "q").example_ids.unique().tolist()
        (True, [0, 1, 2])
        >>> name = "l00h01q/data.parquet"
        >>> (root / "all" / name).read_bytes() == (root / "whole" / name).read_bytes()
        True
    """
    shards = [Path(folder) for folder in shard_folders]
    if not shards:
        raise ValueError("shard_folders: give at least one capture folder")
    out = Path(out_dir)
    if out.resolve() in {shard.resolve() for shard in shards}:
        raise ValueError(f"out_dir: {out} is one of the shards")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: {out} exists and is not a folder")
    sidecars = [read_sidecar(shard) for shard in shards]
    common = {k: v for k, v in sidecars[0].items() if k not in _ADDITIVE}
    for shard, sidecar in zip(shards[1:], sidecars[1:]):
        other = {k: v for k, v in sidecar.items() if k not in _ADDITIVE}
        if other != common:
            keys = sorted(k for k in set(common) | set(other) if common.get(k) != other.get(k))
            raise ValueError(
                f"shard_folders: {shard} is not a shard of the same capture as {shards[0]} "
                f"(its sidecar differs in {', '.join(keys)})"
            )
    rows: dict[str, int] = {}
    for shard, sidecar in zip(shards, sidecars):
        for name, count in sidecar.get("rows", {}).items():
            if not _CAPTURE_FILE.fullmatch(name):
                raise ValueError(f"shard_folders: {shard}'s sidecar names {name!r}, not a capture file")
            found = pq.ParquetFile(shard / name).metadata.num_rows if (shard / name).is_file() else None
            if found != count:
                raise ValueError(f"shard_folders: {shard / name} holds {found} rows; its sidecar says {count}")
            rows[name] = rows.get(name, 0) + int(count)

    out.mkdir(parents=True, exist_ok=True)
    (out / SIDECAR).unlink(missing_ok=True)  # unfinished until every file is in place
    for stale in sorted(out.rglob("*")):
        name = stale.relative_to(out).as_posix()
        if stale.is_file() and (name not in rows and _CAPTURE_FILE.fullmatch(name) or stale.name.endswith(".tmp")):
            stale.unlink()
    for name in sorted(rows):
        _concatenate([shard / name for shard in shards if (shard / name).is_file()], out / name)
    sidecar = {**sidecars[0], "n_examples": sum(int(s.get("n_examples", 0)) for s in sidecars), "rows": rows}
    write_bytes(out / SIDECAR, json.dumps(sidecar, indent=2, sort_keys=True).encode())
    return sidecar


def _concatenate(sources: list[Path], path: Path) -> None:
    """Writes the row groups of ``sources`` in order into ``path`` (atomically; same schema and codec
    as :class:`CaptureWriter`), one row group in memory at a time."""
    schema = _writer_schema(pq.ParquetFile(sources[0]).schema_arrow)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for source in sources:
            parquet = pq.ParquetFile(source)
            if not _writer_schema(parquet.schema_arrow).equals(schema):
                raise ValueError(f"shard_folders: {source} has another schema than {sources[0]}")
            for group in range(parquet.num_row_groups):
                writer.write_table(parquet.read_row_group(group).cast(schema))


def _writer_schema(schema: pa.Schema) -> pa.Schema:
    """The schema a file was written with, as read back: Parquet names a list's values ``element``,
    where Arrow (and so :func:`capture_schema`, which the Probe writes) names them ``item``."""
    fields = []
    for f in schema.remove_metadata():
        if pa.types.is_fixed_size_list(f.type):
            f = f.with_type(pa.list_(f.type.value_type, f.type.list_size))
        elif pa.types.is_list(f.type):
            f = f.with_type(pa.list_(f.type.value_type))
        fields.append(f)
    return pa.schema(fields)
