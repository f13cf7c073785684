"""Reading a result folder for the report: its kind, metadata (flattened into rows) and per-head
table, and the metrics its head grid can show."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spectra.models import zoo
from spectra.models.zoo.references import recorded_reference

#: The kinds of result folder a report understands, by the job that wrote them.
KINDS: tuple[str, ...] = ("profile", "sweep", "dynamics", "geometry", "plasticity")

#: Metrics the grid shows first when a folder has them (else its first numeric column).
PREFERRED_METRICS = ("entropy_mean", "gain_max_attn", "ap_overall", "pc0_r_q", "k_norm_mean", "q_norm_mean")

#: Columns that identify a head or a run rather than measure it.
ID_COLUMNS = ("layer", "head", "kv_head", "step", "sample", "n_samples", "n_alphas")


# ---- the result folder ----------------------------------------------------------------------


@dataclass
class ResultFolder:
    """A result folder, what job wrote it, and its ``meta.json`` / ``summary.json``."""

    path: Path
    kind: str
    meta: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path, argument: str) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{argument}: cannot read {path} ({error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{argument}: {path} is not valid JSON ({error})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{argument}: {path} does not hold a JSON object")
    return loaded


def detect_kind(folder: Path, meta: Mapping[str, Any]) -> str | None:
    """Which job wrote ``folder`` (one of :data:`KINDS`), from its files and ``meta.json``; None if unknown.

    Example:
        >>> detect_kind(Path("."), {"run": {"experiment": "gain_map"}})
        'sweep'
    """
    run = meta.get("run") if isinstance(meta.get("run"), dict) else {}
    if (folder / "head_summary.csv").is_file() or (folder / "head_summary.parquet").is_file():
        return "profile"
    if "experiment" in run:
        return "sweep"
    if (folder / "head_series.csv").is_file() or ("steps" in meta and "settings" in meta):
        return "dynamics"
    if (folder / "model_report.csv").is_file() or meta.get("mode") in ("thesis", "published"):
        return "plasticity"
    if (folder / "heads.csv").is_file() or "n_components" in (meta.get("options") or {}):
        return "geometry"
    return None


def read_result(result_dir: str | os.PathLike) -> ResultFolder:
    """The result folder at ``result_dir``; a ValueError / FileNotFoundError naming ``result_dir``
    when it is missing or not the output of a Spectra job.

    Example:
        >>> read_result("/nonexistent")
        Traceback (most recent call last):
        ...
        FileNotFoundError: result_dir: /nonexistent does not exist
    """
    folder = Path(result_dir)
    if not folder.exists():
        raise FileNotFoundError(f"result_dir: {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"result_dir: {folder} is a file, not a Spectra result folder")
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        hint = (
            " (a capture folder: run spectra geometry/plasticity --qk on it first)"
            if (folder / "spectra_capture.json").is_file()
            else ""
        )
        raise ValueError(f"result_dir: {folder} is not a Spectra result folder (it has no meta.json){hint}")
    meta = _read_json(meta_path, "result_dir")
    kind = detect_kind(folder, meta)
    if kind is None:
        raise ValueError(
            f"result_dir: {folder} has a meta.json but is not the result folder of a Spectra job "
            f"({', '.join(KINDS)}): none of head_summary.csv, heads.csv, head_series.csv, gains.csv"
        )
    summary = _read_json(folder / "summary.json", "result_dir") if (folder / "summary.json").is_file() else {}
    return ResultFolder(folder, kind, meta, summary)


def model_reference(result: ResultFolder) -> str | None:
    """The model a result folder was computed on (zoo name, folder or hub id), or None when it names none.

    Where meta.json records a ``model_source``, the reference found again from any folder: a local
    folder's absolute path, a hub model's ``org/name@<commit>``. Geometry and plasticity runs over
    several captures and dynamics runs over checkpoints give the last one (the final checkpoint).
    """
    meta, summary = result.meta, result.summary
    if result.kind in ("profile", "sweep"):
        model = meta.get("model")
        name = model.get("name") if isinstance(model, dict) else model
        return recorded_reference(str(name) if name else None, meta.get("model_source"))
    if result.kind == "dynamics":
        checkpoints = summary.get("checkpoints", meta.get("checkpoints"))
        if isinstance(checkpoints, list):
            checkpoints = checkpoints[-1] if checkpoints else None
        return str(checkpoints) if checkpoints else None
    inputs = [i for i in meta.get("inputs") or [] if isinstance(i, dict)]
    model = inputs[-1].get("model") if inputs else None
    return _zoo_name(str(model)) if model else None


def recorded_special_tokens(meta: Mapping[str, Any]) -> bool:
    """Whether the run tokenised its text with the tokenizer's special tokens, as meta.json records it
    (``run`` of a profile or sweep, ``settings`` of a dynamics run); True (the default) where it
    records nothing, so the report's viewer tokenises its windows as the run did.

    Example:
        >>> recorded_special_tokens({"run": {"add_special_tokens": False}}), recorded_special_tokens({})
        (False, True)
    """
    for section in ("run", "settings"):
        part = meta.get(section)
        if isinstance(part, Mapping) and part.get("add_special_tokens") is False:
            return False
    return True


def _zoo_name(reference: str) -> str:
    """The zoo name of a folder that is a zoo model's folder (geometry/plasticity runs store the path)."""
    for name in zoo.MODEL_NAMES:
        try:
            if Path(reference).resolve() == zoo.model_path(name).resolve():
                return name
        except (OSError, ValueError):
            continue
    return reference


# ---- run metadata ---------------------------------------------------------------------------


def _format_value(value: Any, limit: int = 400) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        text = ", ".join(_format_value(v) for v in value) if value else "[]"
    elif value is None:
        text = "—"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def flatten(obj: Any, prefix: str = "", *, max_records: int = 8) -> list[tuple[str, str]]:
    """``(dotted key, text)`` rows of a JSON object; the command line joined as a shell line, lists
    of more than ``max_records`` records summarised by their count.

    Example:
        >>> flatten({"model": {"name": "tiny-llama"}, "command_line": ["spectra", "demo", "--out", "a b"]})
        [('model.name', 'tiny-llama'), ('command_line', "spectra demo --out 'a b'")]
    """
    rows: list[tuple[str, str]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "command_line" and isinstance(value, list):
                rows.append((name, shlex.join(str(v) for v in value)))
            else:
                rows.extend(flatten(value, name, max_records=max_records))
    elif isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        if len(obj) > max_records:
            rows.append((prefix, f"[{len(obj)} records; see the folder's tables]"))
        else:
            for index, value in enumerate(obj):
                rows.extend(flatten(value, f"{prefix}[{index}]", max_records=max_records))
    else:
        rows.append((prefix, _format_value(obj)))
    return rows


# ---- the per-head table ---------------------------------------------------------------------


def _read_table(folder: Path, stem: str) -> pd.DataFrame | None:
    if (folder / f"{stem}.csv").is_file():
        return pd.read_csv(folder / f"{stem}.csv")
    if (folder / f"{stem}.parquet").is_file():
        return pd.read_parquet(folder / f"{stem}.parquet")
    return None


def _last_checkpoint(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Rows of the last checkpoint (largest step, else last label) when a table spans several."""
    if "step" in frame.columns and frame["step"].notna().any() and frame["step"].nunique() > 1:
        last = frame["step"].max()
        return frame[frame["step"] == last], f"step {int(last)}, the last of {frame['step'].nunique()}"
    if "checkpoint" in frame.columns and frame["checkpoint"].nunique() > 1:
        last = frame["checkpoint"].iloc[-1]
        return frame[frame["checkpoint"] == last], f"checkpoint {last}, the last of {frame['checkpoint'].nunique()}"
    return frame, ""


def _numeric_by_head(frame: pd.DataFrame, groups: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (layer, head) with the numeric columns; rows that differ by ``groups`` (e.g. mode,
    kind) become columns ``name [mode=local, kind=q]``."""
    numeric = [
        c
        for c in frame.columns
        if c not in ID_COLUMNS
        and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
        and frame[c].notna().any()
    ]
    if not groups:
        return frame.groupby(["layer", "head"], sort=True)[numeric].first().reset_index()
    parts = []
    for key, part in frame.groupby(list(groups), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{g}={k}" for g, k in zip(groups, key))
        wide = part.groupby(["layer", "head"], sort=True)[numeric].first()
        parts.append(wide.rename(columns=lambda c, label=label: f"{c} [{label}]"))
    return pd.concat(parts, axis=1).reset_index()


@dataclass
class HeadTable:
    """The per-head numbers a grid shows: one row per (layer, head), where they came from."""

    frame: pd.DataFrame
    source: str
    note: str = ""
    classes: pd.DataFrame | None = None  # layer, head, class (+ score) when the folder has them


def head_table(result: ResultFolder) -> HeadTable:
    """The per-head table of a result folder (see the module docstring for which file per kind).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "head_summary.csv").write_text("layer,head,entropy_mean,entropy_n\\n0,0,1.5,10\\n")
        >>> head_table(ResultFolder(folder, "profile", {})).frame.columns.tolist()
        ['layer', 'head', 'entropy_mean', 'entropy_n']
    """
    folder = result.path
    if result.kind == "profile":
        frame = _read_table(folder, "head_summary")
        return HeadTable(_numeric_by_head(frame), "head_summary.csv")
    if result.kind in ("geometry", "plasticity"):
        frame = _read_table(folder, "heads")
        if frame is None:
            raise ValueError(f"result_dir: {folder} is a {result.kind} result folder without heads.csv")
        frame, note = _last_checkpoint(frame)
        table = HeadTable(_numeric_by_head(frame), "heads.csv", note)
        if "pc0_class" in frame.columns:
            table.classes = frame[["layer", "head", "pc0_class"]].drop_duplicates(["layer", "head"])
        return table
    if result.kind == "dynamics":
        series = _read_table(folder, "head_series")
        if series is None:
            raise ValueError(f"result_dir: {folder} is a dynamics result folder without head_series.csv")
        series, note = _last_checkpoint(series)
        wide = series.pivot_table(index=["layer", "head"], columns="stat", values="value", aggfunc="first")
        wide.columns.name = None
        table = HeadTable(_numeric_by_head(wide.reset_index()), "head_series.csv", note)
        taxonomy = _read_table(folder, "taxonomy")
        if taxonomy is not None and {"layer", "head", "class"} <= set(taxonomy.columns):
            taxonomy, when = _last_checkpoint(taxonomy)
            table.classes = taxonomy.assign(source=f"taxonomy.csv ({when or 'final'})")
        return table
    for stem in ("gain_map", "gains", "asymmetry"):  # sweep
        frame = _read_table(folder, stem)
        if frame is not None and {"layer", "head"} <= set(frame.columns):
            groups = [g for g in ("mode", "kind") if g in frame.columns and frame[g].nunique() > 1]
            return HeadTable(_numeric_by_head(frame, groups), f"{stem}.csv")
    raise ValueError(f"result_dir: {folder} is a sweep result folder without a per-head table (gains.csv)")


def grid_metrics(frame: pd.DataFrame) -> list[str]:
    """The numeric columns of a per-head table, the preferred ones first.

    Example:
        >>> grid_metrics(pd.DataFrame({"layer": [0], "head": [0], "q_norm_mean": [1.0], "entropy_mean": [2.0]}))
        ['entropy_mean', 'q_norm_mean']
    """
    columns = [c for c in frame.columns if c not in ("layer", "head")]
    first = [c for name in PREFERRED_METRICS for c in columns if c == name or c.startswith(name + " [")]
    return first + [c for c in columns if c not in first]
