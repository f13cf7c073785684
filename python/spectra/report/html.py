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
import html
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spectra.heads.taxonomy import classify
from spectra.io.atomic import write_bytes
from spectra.models import adapter_for
from spectra.report.results import (
    KINDS,
    HeadTable,
    ResultFolder,
    flatten,
    grid_metrics,
    head_table,
    model_reference,
    read_result,
    recorded_special_tokens,
)
from spectra.report.viewer import (
    LoadedModel,
    attention_data,
    attention_weights,
    class_labels,
    computed_classes,
    load_run_model,
    viewer_windows,
)

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


FIGURE_SECTIONS = {
    "profile": "Profile figures",
    "sweep": "Intervention and gain",
    "dynamics": "Training dynamics",
    "geometry": "QK geometry",
    "plasticity": "Attention plasticity",
}


# ---- figures --------------------------------------------------------------------------------

FIGURE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
_ACRONYMS = {
    "qk": "QK",
    "pc": "PC",
    "pc0": "PC0",
    "pc1": "PC1",
    "kv": "KV",
    "ap": "AP",
    "ci": "CI",
    "qnorm": "q-norm",
    "knorm": "k-norm",
    "rq": "r_q",
    "rk": "r_k",
}


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
    what = {
        "profile": "profile",
        "sweep": f"sweep ({result.meta.get('run', {}).get('experiment', '?')})",
        "dynamics": "training dynamics",
        "geometry": "QK geometry",
        "plasticity": "attention plasticity",
    }
    return f"Spectra report: {what[result.kind]} of {model or 'an unnamed model'}"


def build_report_data(
    result_dir: str | os.PathLike,
    *,
    model: str | None = None,
    with_model: bool = True,
    n_samples: int = 2,
    max_tokens: int = 64,
    dtype: Any = None,
    device: Any = None,
    attn_implementation: str | None = None,
) -> dict[str, Any]:
    """Everything the page shows, JSON-serialisable (figures as data URIs).

    ``model`` overrides the model named in the folder (e.g. when it moved); ``with_model=False``
    skips loading it (no attention viewer, and only classes the folder itself holds); ``dtype``
    (default float32), ``device`` (default the CPU) and ``attn_implementation`` (default sdpa, eager
    where the architecture refuses sdpa) are how it is loaded.

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
        loaded = load_run_model(reference, dtype=dtype, device=device, attn_implementation=attn_implementation)
    else:
        loaded = LoadedModel(reference, reason="the report was built without loading the model (--no-model)")
    n_layers, n_heads = _grid_shape(result, table, loaded)
    viewer: dict[str, Any] = {"available": False, "reason": loaded.reason}
    taxonomy, taxonomy_source, missing = None, "", loaded.reason
    if table.classes is not None and "class" in table.classes.columns:
        taxonomy, taxonomy_source = table.classes, str(table.classes["source"].iloc[0])
    elif {
        "sink_mass_mean",
        "induction_score",
        "previous_token_score",
        "positional_score",
        "entropy_normalized_mean",
    } <= set(table.frame.columns):
        taxonomy, taxonomy_source = classify(table.frame), f"classify({table.source})"
    if loaded.model is not None:
        windows = viewer_windows(
            loaded.model,
            loaded.tokenizer,
            n_samples=n_samples,
            max_tokens=max_tokens,
            add_special_tokens=recorded_special_tokens(result.meta),
        )
        viewer = {"available": True, **attention_data(loaded.model, loaded.tokenizer, windows, model_name=reference)}
        if taxonomy is None:
            taxonomy = computed_classes(loaded.model, windows)
            taxonomy_source = (
                f"head_stats of {reference} on {windows.shape[0]} held-out windows of {windows.shape[1]} tokens"
            )
    texts, short = class_labels(
        table, n_layers, n_heads, taxonomy=taxonomy, taxonomy_source=taxonomy_source, missing_reason=missing
    )
    metrics = grid_metrics(table.frame)
    figures = [
        {"name": p.relative_to(result.path).as_posix(), "caption": figure_caption(p.name), "uri": _data_uri(p)}
        for p in find_figures(result.path)
    ]
    return {
        "title": _title(result, reference),
        "kind": result.kind,
        "folder": str(result.path.resolve()),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "meta_rows": flatten(result.meta),
        "summary_rows": flatten(result.summary)[:400],
        "grid": {
            "n_layers": n_layers,
            "n_heads": n_heads,
            "source": table.source,
            "note": table.note,
            "metrics": metrics,
            "default_metric": metrics[0] if metrics else None,
            "values": _grid_values(table.frame, metrics, n_layers, n_heads),
            "classes": texts,
            "class_short": short,
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
        for f in figures
    )


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


def write_report(
    result_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    with_model: bool = True,
    n_samples: int = 2,
    max_tokens: int = 64,
    dtype: Any = None,
    device: Any = None,
    attn_implementation: str | None = None,
) -> Path:
    """Writes the report of ``result_dir`` to ``out`` (default ``<result_dir>/report.html``),
    atomically, and returns its path. See :func:`build_report_data` for the options.

    Example:
        >>> write_report("/nonexistent")
        Traceback (most recent call last):
        ...
        FileNotFoundError: result_dir: /nonexistent does not exist
    """
    data = build_report_data(
        result_dir,
        model=model,
        with_model=with_model,
        n_samples=n_samples,
        max_tokens=max_tokens,
        dtype=dtype,
        device=device,
        attn_implementation=attn_implementation,
    )
    target = Path(out) if out is not None else Path(result_dir) / "report.html"
    if target.is_dir():
        raise ValueError(f"out: {target} is a folder; give the path of the HTML file to write")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"out: the folder {target.parent} does not exist")
    write_bytes(target, render_html(data).encode("utf-8"))
    return target
