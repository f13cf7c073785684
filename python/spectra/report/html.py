"""One self-contained HTML report of any Spectra result folder: ``spectra report RESULT_DIR``.

The page has no outside references (CSS and JavaScript inlined, figures as base64 data URIs) and
holds four parts:

1. **Run metadata**: ``meta.json`` and ``summary.json`` flattened into tables (command line,
   model, versions, options).
2. **Head grid** (layer x head) coloured by a per-head metric chosen in a ``<select>``: the numeric
   columns of ``head_summary.csv`` (profile), ``heads.csv`` (geometry, plasticity), the gain table
   (sweep) or the last checkpoint of ``head_series.csv`` (dynamics). Each cell's tooltip names the
   head's taxonomy class (``spectra.taxonomy.classify``; from ``taxonomy.csv`` for dynamics runs,
   else from ``spectra.head_stats`` of the run's model on a couple of held-out windows), the PC0
   class for geometry runs, or says why no class is available.
3. **Attention viewer**: the tokens of the first held-out windows (at most 64 tokens) of the run's
   model. The page embeds every head's post-RoPE q and every KV head's k (captured with
   ``spectra.Probe``) and each layer's scaling, soft-cap, causality and sliding window, and
   computes ``softmax(q_t . k_j * scaling)`` over the visible keys in JavaScript for the selected
   head only. :func:`attention_weights` is the same computation in Python (what the tests check
   against the model's eager attention). Clicking a grid cell selects that head; clicking a token
   makes it the query.
4. **Figures** of the folder (profile, intervention and gain, training dynamics, geometry,
   plasticity), captioned from their file names.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "meta.json").write_text(json.dumps({"inputs": [{"model": None, "n_layers": 1, "n_heads": 2}],
    ...                                                    "options": {"n_components": 10}}))
    >>> _ = (folder / "heads.csv").write_text("layer,head,pc0_class,pc0_r_q\\n0,0,positional,0.9\\n0,1,mixed,0.2\\n")
    >>> path = write_report(folder)
    >>> path.name, "PC0 class: positional" in path.read_text()
    ('report.html', True)
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import os
import re
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spectra.io.atomic import write_bytes

__all__ = [
    "KINDS",
    "ResultFolder",
    "attention_data",
    "attention_weights",
    "build_report_data",
    "figure_caption",
    "find_figures",
    "head_table",
    "read_result",
    "render_html",
    "write_report",
]

#: The kinds of result folder a report understands, by the job that wrote them.
KINDS: tuple[str, ...] = ("profile", "sweep", "dynamics", "geometry", "plasticity")

#: Metrics the grid shows first when a folder has them (else its first numeric column).
PREFERRED_METRICS = ("entropy_mean", "gain_max_attn", "ap_overall", "pc0_r_q", "k_norm_mean", "q_norm_mean")

#: Columns that identify a head or a run rather than measure it.
ID_COLUMNS = ("layer", "head", "kv_head", "step", "sample", "n_samples", "n_alphas")

FIGURE_SECTIONS = {
    "profile": "Profile figures",
    "sweep": "Intervention and gain",
    "dynamics": "Training dynamics",
    "geometry": "QK geometry",
    "plasticity": "Attention plasticity",
}

CLASS_SHORT = {
    "static_sink": "sink",
    "induction": "ind",
    "previous_token": "prev",
    "positional": "pos",
    "gatherer": "gath",
    "semantic_retriever": "sem",
    "unclassified": "·",
}

#: Embedded q/k floats above which the viewer keeps fewer windows / tokens (4 bytes each, base64).
MAX_VIEWER_VALUES = 6_000_000


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
        hint = " (a capture folder: run spectra geometry/plasticity --qk on it first)" if (
            folder / "spectra_capture.json").is_file() else ""
        raise ValueError(f"result_dir: {folder} is not a Spectra result folder (it has no meta.json){hint}")
    meta = _read_json(meta_path, "result_dir")
    kind = detect_kind(folder, meta)
    if kind is None:
        raise ValueError(f"result_dir: {folder} has a meta.json but is not the result folder of a Spectra job "
                         f"({', '.join(KINDS)}): none of head_summary.csv, heads.csv, head_series.csv, gains.csv")
    summary = _read_json(folder / "summary.json", "result_dir") if (folder / "summary.json").is_file() else {}
    return ResultFolder(folder, kind, meta, summary)


def model_reference(result: ResultFolder) -> str | None:
    """The model a result folder was computed on (zoo name or folder), or None when it names none.

    Geometry and plasticity runs over several captures and dynamics runs over checkpoints give the
    last one (the final checkpoint).
    """
    meta, summary = result.meta, result.summary
    if result.kind in ("profile", "sweep"):
        model = meta.get("model")
        name = model.get("name") if isinstance(model, dict) else model
        return str(name) if name else None
    if result.kind == "dynamics":
        checkpoints = summary.get("checkpoints", meta.get("checkpoints"))
        if isinstance(checkpoints, list):
            checkpoints = checkpoints[-1] if checkpoints else None
        return str(checkpoints) if checkpoints else None
    inputs = [i for i in meta.get("inputs") or [] if isinstance(i, dict)]
    model = inputs[-1].get("model") if inputs else None
    return _zoo_name(str(model)) if model else None


def _zoo_name(reference: str) -> str:
    """The zoo name of a folder that is a zoo model's folder (geometry/plasticity runs store the path)."""
    from spectra.models import zoo

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
    numeric = [c for c in frame.columns if c not in ID_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c]) and frame[c].notna().any()]
    if not groups:
        return frame.groupby(["layer", "head"], sort=True)[numeric].first().reset_index()
    parts = []
    for key, part in frame.groupby(list(groups), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{g}={k}" for g, k in zip(groups, key))
        wide = part.groupby(["layer", "head"], sort=True)[numeric].first()
        parts.append(wide.rename(columns=lambda c: f"{c} [{label}]"))
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


# ---- the model: classes and attention -------------------------------------------------------

@dataclass
class LoadedModel:
    """The run's model, or why it is not available."""

    name: str | None
    model: Any = None
    tokenizer: Any = None
    reason: str = ""


def load_run_model(reference: str | None) -> LoadedModel:
    """Loads ``reference`` (zoo name or local folder) with ``spectra.models.loading.load_model``; on
    failure the returned object says why (a report is still written, without the viewer).

    Example:
        >>> load_run_model("/no/such/model").reason  # doctest: +ELLIPSIS
        "model '/no/such/model' could not be loaded (ValueError: model: '/no/such/model' is neither a zoo model ...)"
    """
    if not reference:
        return LoadedModel(None, reason="the result folder names no model")
    from spectra.models.loading import load_model
    try:
        model, tokenizer = load_model(reference)
    except Exception as error:  # any loading failure only removes the model-based parts of the report
        return LoadedModel(reference, reason=f"model {reference!r} could not be loaded ({type(error).__name__}: {error})")
    return LoadedModel(reference, model, tokenizer)


def viewer_windows(model: Any, tokenizer: Any, *, n_samples: int = 2, max_tokens: int = 64):
    """The first ``n_samples`` held-out windows of ``min(max_tokens, max_position_embeddings)`` tokens.

    Example:
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> viewer_windows(model, tok, n_samples=3, max_tokens=16).shape
        torch.Size([3, 16])
    """
    from spectra.data.windows import load_windows
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    length = min(max_tokens, int(limit)) if limit else max_tokens
    return load_windows(None, tokenizer, length, n_samples)


def computed_classes(model: Any, windows) -> pd.DataFrame:
    """``spectra.taxonomy.classify`` of ``spectra.head_stats`` on ``windows`` (the viewer's windows).

    Example:
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> classes = computed_classes(model, viewer_windows(model, tok, n_samples=1, max_tokens=32))
        >>> len(classes), set(classes["class"]) <= {"gatherer", "semantic_retriever", "unclassified", "positional",
        ...                                         "previous_token", "induction", "static_sink"}
        (32, True)
    """
    from spectra.heads.stats import head_stats
    from spectra.heads.taxonomy import classify

    limit = getattr(model.config, "max_position_embeddings", None) or 64
    block = max(2, min(32, int(limit) // 2))
    return classify(head_stats(model, windows, random_block=block))


def _class_text(row: Mapping[str, Any]) -> str:
    score = row.get("score")
    return f"{row['class']}" + (f" (score {score:.2f})" if isinstance(score, float) and math.isfinite(score) else "")


def class_labels(table: HeadTable, n_layers: int, n_heads: int, *, taxonomy: pd.DataFrame | None,
                 taxonomy_source: str, missing_reason: str) -> tuple[list[list[str]], list[list[str]]]:
    """Per (layer, head): the tooltip text naming its class(es), and a short label for the cell.

    ``taxonomy`` is a classify() table (or None, then every tooltip gives ``missing_reason``).

    Example:
        >>> table = HeadTable(pd.DataFrame({"layer": [0, 0], "head": [0, 1]}), "heads.csv")
        >>> tax = pd.DataFrame({"layer": [0], "head": [0], "class": ["gatherer"], "score": [0.9]})
        >>> texts, short = class_labels(table, 1, 2, taxonomy=tax, taxonomy_source="test", missing_reason="")
        >>> texts[0], short[0]
        (['taxonomy class: gatherer (score 0.90) [test]', 'no taxonomy class: head not in the taxonomy table (test)'], ['gath', ''])
    """
    texts = [["" for _ in range(n_heads)] for _ in range(n_layers)]
    short = [["" for _ in range(n_heads)] for _ in range(n_layers)]
    tax = {} if taxonomy is None else {(int(r["layer"]), int(r["head"])): r for r in taxonomy.to_dict("records")}
    pc0 = {}
    if table.classes is not None and "pc0_class" in table.classes.columns:
        pc0 = {(int(r.layer), int(r.head)): r.pc0_class for r in table.classes.itertuples()}
    for layer in range(n_layers):
        for head in range(n_heads):
            row = tax.get((layer, head))
            if row is not None:
                parts = [f"taxonomy class: {_class_text(row)} [{taxonomy_source}]"]
                short[layer][head] = CLASS_SHORT.get(row["class"], str(row["class"])[:4])
            elif taxonomy is None:
                parts = [f"no taxonomy class: {missing_reason}"]
            else:
                parts = [f"no taxonomy class: head not in the taxonomy table ({taxonomy_source})"]
            if (layer, head) in pc0:
                parts.append(f"PC0 class: {pc0[(layer, head)]} [heads.csv]")
                if not short[layer][head]:
                    short[layer][head] = str(pc0[(layer, head)])[:4]
            texts[layer][head] = "; ".join(parts)
    return texts, short


class _LayerAttentionRecorder:
    """Observer that notes each layer's scaling, soft-cap, causality and sliding window."""

    def __init__(self, model: Any) -> None:
        from spectra.capture.attention_switch import OBSERVER_ORDER
        from spectra.models import adapter_for

        self.attention_order = OBSERVER_ORDER
        self.adapter = adapter_for(model)
        self.layers: dict[int, dict[str, Any]] = {}

    def begin_batch(self, positions, valid) -> None:
        pass

    def end_batch(self, failed: bool) -> None:
        pass

    def wants_output(self, layer: int) -> bool:
        return False

    def on_output(self, layer: int, output):
        return output

    def on_attention(self, layer, module, q, k, v, attention_mask, kwargs):
        from spectra.capture.attention_switch import layer_attention

        how = layer_attention(self.adapter, layer, module, kwargs)
        self.layers[layer] = {"scaling": float(how.scaling), "softcap": float(how.softcap) if how.softcap else None,
                              "causal": bool(how.causal),
                              "window": int(how.sliding_window) if how.sliding_window else None}
        return q, k, v


def _encode_floats(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


@functools.lru_cache(maxsize=4)
def decode_floats(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of the page's base64 float32 encoding (little-endian), as a read-only array of
    ``shape`` (cached: :func:`attention_weights` is called once per query)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape)


def _token_text(tokenizer: Any, token_id: int) -> str:
    if tokenizer is None:
        return f"#{int(token_id)}"
    text = tokenizer.decode([int(token_id)])
    return text if text else tokenizer.convert_ids_to_tokens(int(token_id))


def attention_data(model: Any, tokenizer: Any, windows, *, model_name: str = "",
                   max_values: int = MAX_VIEWER_VALUES) -> dict[str, Any]:
    """What the viewer embeds: tokens of ``windows`` (N, T), every head's post-RoPE q
    ``(L, H, N, T, D)`` and every KV head's k ``(L, Hkv, N, T, D)`` as base64 float32, and each
    layer's scaling / softcap / causal / window, captured with ``spectra.Probe`` in one forward.

    Windows and then tokens are cut so that q and k hold at most ``max_values`` floats. Without a
    ``tokenizer`` the tokens are shown as ``#id``.

    Example:
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> ids = tok("In the beginning God created", return_tensors="pt").input_ids
        >>> view = attention_data(model, tok, ids)
        >>> view["n_layers"], view["n_heads"], view["n_kv_heads"], view["head_dim"], view["n_tokens"] == ids.shape[1]
        (4, 8, 2, 32, True)
    """
    import torch

    from spectra.capture.attention_switch import attached
    from spectra.capture.forward import run_model
    from spectra.capture.probe import Probe

    recorder = _LayerAttentionRecorder(model)
    a = recorder.adapter
    n_layers, n_heads, n_kv, dim = a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim
    per_token = n_layers * (n_heads + n_kv) * dim
    ids = torch.as_tensor(windows)[:, :]
    note = ""
    while ids.shape[0] > 1 and ids.numel() * per_token > max_values:
        ids = ids[:-1]
    if ids.numel() * per_token > max_values:
        ids = ids[:, : max(2, max_values // per_token)]
    if ids.shape != torch.as_tensor(windows).shape:
        note = (f"kept {ids.shape[0]} window(s) of {ids.shape[1]} tokens so that the page stays under "
                f"{max_values * 4 / 1e6:.0f} MB of q/k")
    n, t = ids.shape
    probe = Probe(model, capture=("q", "k"), stage="post_rope", positions="all", keep_in_memory=True)
    with probe, attached(model, recorder):
        run_model(model, ids, require_eval=False)
    q = np.zeros((n_layers, n_heads, n, t, dim), dtype=np.float32)
    k = np.zeros((n_layers, n_kv, n, t, dim), dtype=np.float32)
    for layer in range(n_layers):
        for head, kind, target in [(h, "q", q) for h in range(n_heads)] + [(h, "k", k) for h in range(n_kv)]:
            rows = probe.captured(layer, head, kind, "post_rope")
            target[layer, head, rows.example_ids.long().numpy(), rows.positions.long().numpy()] = rows.vectors.numpy()
    return {
        "model": model_name,
        "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv, "head_dim": dim,
        "kv_head": [probe.kv_head(h) for h in range(n_heads)],
        "layers": [recorder.layers[layer] for layer in range(n_layers)],
        "samples": [{"ids": [int(i) for i in row], "tokens": [_token_text(tokenizer, i) for i in row]} for row in ids],
        "n_tokens": t,
        "q": _encode_floats(q), "k": _encode_floats(k),
        "note": note,
    }


def attention_weights(view: Mapping[str, Any], layer: int, head: int, sample: int, query: int) -> np.ndarray:
    """The attention weights of ``query`` over all tokens of ``sample`` for one head, from the
    embedded q and k, exactly as the page's JavaScript computes them (float64 from the float32
    vectors): ``s_j = softcap·tanh(q_t·k_j·scaling / softcap)`` (without softcap: ``q_t·k_j·scaling``)
    over the visible keys j (``j <= t`` when causal, ``|t − j| < window`` with a sliding window),
    then ``exp(s_j − max s) / Σ exp(s − max s)``; 0 for hidden keys.

    Example:
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> view = attention_data(model, tok, tok("And God said, Let there be light", return_tensors="pt").input_ids)
        >>> w = attention_weights(view, 2, 5, 0, 3)
        >>> round(float(w.sum()), 12), bool((w[4:] == 0).all())
        (1.0, True)
    """
    n, t, dim = len(view["samples"]), view["n_tokens"], view["head_dim"]
    q = decode_floats(view["q"], (view["n_layers"], view["n_heads"], n, t, dim))
    k = decode_floats(view["k"], (view["n_layers"], view["n_kv_heads"], n, t, dim))
    how = view["layers"][layer]
    qt = q[layer, head, sample, query].astype(np.float64)
    keys = k[layer, view["kv_head"][head], sample].astype(np.float64)
    scores = (keys @ qt) * how["scaling"]
    if how["softcap"]:
        scores = how["softcap"] * np.tanh(scores / how["softcap"])
    j = np.arange(t)
    visible = j <= query if how["causal"] else np.ones(t, dtype=bool)
    if how["window"]:
        visible &= np.abs(query - j) < how["window"]
    weights = np.zeros(t)
    shifted = np.exp(scores[visible] - scores[visible].max())
    weights[visible] = shifted / shifted.sum()
    return weights


# ---- figures --------------------------------------------------------------------------------

FIGURE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
_ACRONYMS = {"qk": "QK", "pc": "PC", "pc0": "PC0", "pc1": "PC1", "kv": "KV", "ap": "AP", "ci": "CI",
             "qnorm": "q-norm", "knorm": "k-norm", "rq": "r_q", "rk": "r_k"}


def figure_caption(name: str) -> str:
    """A caption from a figure's file name.

    Example:
        >>> figure_caption("pc_scatter_l01h06.png"), figure_caption("entropy_vs_qnorm.png")
        ('PC scatter L1H6', 'Entropy vs q-norm')
    """
    words = []
    for word in re.split(r"[_\-\s]+", Path(name).stem):
        head = re.fullmatch(r"l(\d+)h(\d+)", word)
        if head:
            words.append(f"L{int(head[1])}H{int(head[2])}")
        else:
            words.append(_ACRONYMS.get(word.lower(), word))
    text = " ".join(w for w in words if w)
    return text[:1].upper() + text[1:]


def find_figures(folder: Path) -> list[Path]:
    """Figure files of a result folder: at its top level and under ``figures/`` (any depth), sorted."""
    found = [p for p in folder.iterdir() if p.suffix.lower() in FIGURE_SUFFIXES and p.is_file()]
    if (folder / "figures").is_dir():
        found += [p for p in (folder / "figures").rglob("*") if p.suffix.lower() in FIGURE_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _data_uri(path: Path) -> str:
    mime = FIGURE_SUFFIXES[path.suffix.lower()]
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


# ---- the report data ------------------------------------------------------------------------

def _grid_shape(result: ResultFolder, table: HeadTable, loaded: LoadedModel) -> tuple[int, int]:
    """(n_layers, n_heads): from the model, else the folder's metadata, else the table."""
    if loaded.model is not None:
        from spectra.models import adapter_for

        a = adapter_for(loaded.model)
        return a.n_layers, a.n_heads
    described = result.meta.get("architecture") or next(iter(result.meta.get("inputs") or []), {}) or {}
    if isinstance(described, dict) and described.get("n_layers") and described.get("n_heads"):
        return int(described["n_layers"]), int(described["n_heads"])
    return int(table.frame["layer"].max()) + 1, int(table.frame["head"].max()) + 1


def _grid_values(frame: pd.DataFrame, metrics: Sequence[str], n_layers: int, n_heads: int) -> dict[str, list]:
    values = {}
    layer, head = frame["layer"].to_numpy(int), frame["head"].to_numpy(int)
    inside = (layer < n_layers) & (head < n_heads) & (layer >= 0) & (head >= 0)
    for metric in metrics:
        grid = np.full((n_layers, n_heads), np.nan)
        grid[layer[inside], head[inside]] = frame[metric].to_numpy(dtype=np.float64)[inside]
        values[metric] = [[float(v) if math.isfinite(v) else None for v in row] for row in grid]
    return values


def _title(result: ResultFolder, model: str | None) -> str:
    what = {"profile": "profile", "sweep": f"sweep ({result.meta.get('run', {}).get('experiment', '?')})",
            "dynamics": "training dynamics", "geometry": "QK geometry", "plasticity": "attention plasticity"}
    return f"Spectra report: {what[result.kind]} of {model or 'an unnamed model'}"


def build_report_data(result_dir: str | os.PathLike, *, model: str | None = None, with_model: bool = True,
                      n_samples: int = 2, max_tokens: int = 64) -> dict[str, Any]:
    """Everything the page shows, JSON-serialisable (figures as data URIs).

    ``model`` overrides the model named in the folder (e.g. when it moved); ``with_model=False``
    skips loading it (no attention viewer, and only classes the folder itself holds).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "meta.json").write_text('{"model": {"name": "tiny-llama"}, "run": {"context_length": 8}}')
        >>> _ = (folder / "head_summary.csv").write_text("layer,head,entropy_mean\\n0,0,1.5\\n0,1,0.5\\n")
        >>> data = build_report_data(folder, with_model=False)
        >>> data["kind"], data["grid"]["values"]["entropy_mean"][0][:2], data["grid"]["classes"][0][0][:20]
        ('profile', [1.5, 0.5], 'no taxonomy class: t')
    """
    result = read_result(result_dir)
    reference = model or model_reference(result)
    table = head_table(result)
    if with_model:
        loaded = load_run_model(reference)
    else:
        loaded = LoadedModel(reference, reason="the report was built without loading the model (--no-model)")
    n_layers, n_heads = _grid_shape(result, table, loaded)
    viewer: dict[str, Any] = {"available": False, "reason": loaded.reason}
    taxonomy, taxonomy_source, missing = None, "", loaded.reason
    if table.classes is not None and "class" in table.classes.columns:
        taxonomy, taxonomy_source = table.classes, str(table.classes["source"].iloc[0])
    elif {"sink_mass_mean", "induction_score", "previous_token_score", "positional_score",
          "entropy_normalized_mean"} <= set(table.frame.columns):
        from spectra.heads.taxonomy import classify

        taxonomy, taxonomy_source = classify(table.frame), f"classify({table.source})"
    if loaded.model is not None:
        windows = viewer_windows(loaded.model, loaded.tokenizer, n_samples=n_samples, max_tokens=max_tokens)
        viewer = {"available": True, **attention_data(loaded.model, loaded.tokenizer, windows, model_name=reference)}
        if taxonomy is None:
            taxonomy = computed_classes(loaded.model, windows)
            taxonomy_source = (f"head_stats of {reference} on {windows.shape[0]} held-out windows of "
                               f"{windows.shape[1]} tokens")
    texts, short = class_labels(table, n_layers, n_heads, taxonomy=taxonomy, taxonomy_source=taxonomy_source,
                                missing_reason=missing)
    metrics = grid_metrics(table.frame)
    figures = [{"name": p.relative_to(result.path).as_posix(), "caption": figure_caption(p.name),
                "uri": _data_uri(p)} for p in find_figures(result.path)]
    return {
        "title": _title(result, reference),
        "kind": result.kind,
        "folder": str(result.path.resolve()),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "meta_rows": flatten(result.meta),
        "summary_rows": flatten(result.summary)[:400],
        "grid": {
            "n_layers": n_layers, "n_heads": n_heads, "source": table.source, "note": table.note,
            "metrics": metrics, "default_metric": metrics[0] if metrics else None,
            "values": _grid_values(table.frame, metrics, n_layers, n_heads),
            "classes": texts, "class_short": short,
        },
        "viewer": viewer,
        "figures": figures,
        "figure_section": FIGURE_SECTIONS[result.kind],
    }


# ---- rendering ------------------------------------------------------------------------------

def _asset(name: str) -> str:
    return resources.files("spectra").joinpath("assets", "report", name).read_text(encoding="utf-8")


def _rows_html(rows: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)


def _figures_html(figures: Sequence[Mapping[str, str]]) -> str:
    if not figures:
        return '<p class="note">This result folder has no figures.</p>'
    return "\n".join(
        f'<figure><img src="{f["uri"]}" alt="{html.escape(f["caption"])}" loading="lazy">'
        f'<figcaption>{html.escape(f["caption"])} <code>{html.escape(f["name"])}</code></figcaption></figure>'
        for f in figures)


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element (no ``</script>``, no ``<!--``)."""
    text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(data: Mapping[str, Any]) -> str:
    """The page for :func:`build_report_data`'s ``data``: the template of
    ``spectra/assets/report/`` with its CSS, JavaScript, tables, figures and data inlined.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "meta.json").write_text('{"model": {"name": "tiny-llama"}, "command_line": ["spectra", "x"]}')
        >>> _ = (folder / "head_summary.csv").write_text("layer,head,entropy_mean\\n0,0,1.5\\n")
        >>> page = render_html(build_report_data(folder, with_model=False))
        >>> page.startswith("<!DOCTYPE html>"), "<th>command_line</th><td>spectra x</td>" in page
        (True, True)
    """
    page_data = {k: v for k, v in data.items() if k not in ("figures", "meta_rows", "summary_rows")}
    replacements = {
        "<!--SPECTRA:TITLE-->": html.escape(data["title"]),
        "<!--SPECTRA:FOLDER-->": html.escape(data["folder"]),
        "<!--SPECTRA:CREATED-->": html.escape(data["created"]),
        "<!--SPECTRA:META-->": _rows_html(data["meta_rows"]),
        "<!--SPECTRA:SUMMARY-->": _rows_html(data["summary_rows"]) or '<tr><td>(no summary.json)</td></tr>',
        "<!--SPECTRA:SUMMARY_OPEN-->": " open" if len(data["summary_rows"]) <= 30 else "",
        "<!--SPECTRA:FIGURE_SECTION-->": html.escape(data["figure_section"]),
        "<!--SPECTRA:FIGURES-->": _figures_html(data["figures"]),
        "/*SPECTRA:CSS*/": _asset("report.css"),
        "/*SPECTRA:JS*/": _asset("report.js"),
        "/*SPECTRA:DATA*/": _script_json(page_data),
    }
    page = _asset("report.html")
    missing = [marker for marker in replacements if marker not in page]
    if missing:
        raise RuntimeError(f"report template: marker(s) {missing} missing")
    # One pass, so that text inserted for one marker is never searched for another.
    pattern = re.compile("|".join(re.escape(marker) for marker in replacements))
    return pattern.sub(lambda match: replacements[match.group(0)], page)


def write_report(result_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, model: str | None = None,
                 with_model: bool = True, n_samples: int = 2, max_tokens: int = 64) -> Path:
    """Writes the report of ``result_dir`` to ``out`` (default ``<result_dir>/report.html``),
    atomically, and returns its path. See :func:`build_report_data` for the options.

    Example:
        >>> write_report("/nonexistent")
        Traceback (most recent call last):
        ...
        FileNotFoundError: result_dir: /nonexistent does not exist
    """
    data = build_report_data(result_dir, model=model, with_model=with_model, n_samples=n_samples,
                             max_tokens=max_tokens)
    target = Path(out) if out is not None else Path(result_dir) / "report.html"
    if target.is_dir():
        raise ValueError(f"out: {target} is a folder; give the path of the HTML file to write")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"out: the folder {target.parent} does not exist")
    write_bytes(target, render_html(data).encode("utf-8"))
    return target
