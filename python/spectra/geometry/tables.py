"""Geometry tables of many heads: of a live Probe (:func:`head_table`), of a capture folder
(:func:`capture_table`) and of a series of checkpoints' captures (:func:`series`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spectra.capture.store import open_qk_folder, read_capture
from spectra.geometry.pca import _check_count, kind_pca
from spectra.geometry.rotation_model import AxisB, _check_axis, _planes_frame, pc0_class
from spectra.models.checkpoints import capture_step
from spectra.ops import qk_geometry

# The per-head scalars of the rotation model, in the order of the head table's columns.
_ROTATION_COLUMNS = (
    "mu_q_a",
    "mu_k_a",
    "mu_q_b",
    "mu_k_b",
    "intercept_q_a",
    "intercept_k_a",
    "alpha_q",
    "alpha_k",
    "r_q_a",
    "r_k_a",
    "position_r",
    "bias_strength",
    "separation_strength",
    "var_frac_a",
    "var_frac_b",
    "plane_var_fraction",
    "complement_var_fraction",
    "content_var_b",
    "residual_pos_r",
    "drift_norm",
    "n_active_planes",
    "active_var_fraction",
)


@dataclass
class GeometryTables:
    """The tables of a geometry run.

    ``heads``: one row per (layer, query head) — PC0's ``pc0_explained_variance``, ``pc0_r_q``,
    ``pc0_r_k``, ``pc0_class``, ``p_q``, ``p_k``, ``fisher_pc0``, ``accuracy_pc01`` and the rotation
    metrics. ``components``: the thesis's ``qk.csv`` (layer, head, pc, explained_variance, r_q, r_k).
    ``planes``: the complement's rotation planes (layer, head, plane, var_fraction, angle_r, accuracy,
    active). ``correlations``: the published per-kind PCA's ``correlations.csv`` (only with
    ``per_kind=True``). Series add ``checkpoint`` and ``step`` columns to every table.
    """

    heads: pd.DataFrame
    components: pd.DataFrame
    planes: pd.DataFrame
    correlations: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Options:
    n_components: int = 10
    axis_b: AxisB = "centroid"
    hi: float = 0.7
    lo: float = 0.3
    n_planes: int = 30
    active_threshold: float = 0.3
    anchor_tolerance: float = 0.05

    def check(self) -> None:
        _check_count("n_components", self.n_components, 1)
        _check_count("n_planes", self.n_planes, 0)
        _check_axis(self.axis_b)
        pc0_class(0.0, 0.0, hi=self.hi, lo=self.lo)  # validates lo/hi
        if not 0.0 <= self.active_threshold <= 1.0:
            raise ValueError(f"active_threshold: expected a value in [0, 1]; got {self.active_threshold}")


def _analyse(
    targets: Sequence[tuple[int, int, int]], rows_of, options: _Options, chunk: int = 32
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Head, component and plane tables of (layer, head, kv_head) targets; ``rows_of(layer, head, kv)``
    gives the (q, k) captures. Heads go to the native batch in chunks (parallel over heads, bounded
    memory)."""
    head_rows, components, planes = [], [], []
    for start in range(0, len(targets), chunk):
        part = targets[start : start + chunk]
        inputs = []
        for layer, head, kv in part:
            q, k = rows_of(layer, head, kv)
            inputs.append((q.vectors, q.positions.double(), k.vectors, k.positions.double()))
        try:
            results = qk_geometry.qk_geometry_batch(
                inputs,
                options.n_components,
                options.axis_b,
                options.anchor_tolerance,
                options.n_planes,
                options.active_threshold,
            )
        except ValueError as error:
            match = re.match(r"heads\[(\d+)\]: (.*)", str(error), re.S)
            if match is None:
                raise
            layer, head, kv = part[int(match.group(1))]
            raise ValueError(f"layer {layer} head {head} (KV head {kv}): {match.group(2)}") from None
        for (layer, head, kv), (q, _, k, _), (pca, rot) in zip(part, inputs, results, strict=True):
            r_q0, r_k0 = float(pca["r_q"][0]), float(pca["r_k"][0])
            row = {
                "layer": layer,
                "head": head,
                "kv_head": kv,
                "n_q": len(q),
                "n_k": len(k),
                "pc0_explained_variance": float(pca["explained_variance"][0]),
                "pc0_r_q": r_q0,
                "pc0_r_k": r_k0,
                "pc0_class": pc0_class(r_q0, r_k0, hi=options.hi, lo=options.lo),
                "p_q": pca["p_q"],
                "p_k": pca["p_k"],
                "fisher_pc0": pca["fisher_pc0"],
                "accuracy_pc01": pca["accuracy_pc01"],
            }
            rot = dict(rot)
            plane_table = _planes_frame(rot)
            row.update({key: rot[key] for key in _ROTATION_COLUMNS})
            head_rows.append(row)
            n = len(pca["r_q"])
            components.append(
                pd.DataFrame(
                    {
                        "layer": layer,
                        "head": head,
                        "pc": np.arange(n),
                        "explained_variance": pca["explained_variance"].numpy(),
                        "r_q": pca["r_q"].numpy(),
                        "r_k": pca["r_k"].numpy(),
                    }
                )
            )
            planes.append(plane_table.assign(layer=layer, head=head))
    plane_columns = ["layer", "head", "plane", "var_fraction", "omega", "angle_r", "accuracy", "active"]
    return (
        pd.DataFrame(head_rows),
        pd.concat(components, ignore_index=True),
        pd.concat(planes, ignore_index=True)[plane_columns] if planes else pd.DataFrame(columns=plane_columns),
    )


def head_table(
    probe,
    heads: Iterable[tuple[int, int]] | None = None,
    *,
    n_components: int = 10,
    axis_b: AxisB = "centroid",
    hi: float = 0.7,
    lo: float = 0.3,
    n_planes: int = 30,
    active_threshold: float = 0.3,
) -> pd.DataFrame:
    """One row per (layer, query head) of a Probe that captured post-RoPE q and k (the ``heads``
    table of :class:`GeometryTables`; its ``attrs`` hold the ``components`` and ``planes`` tables).
    ``heads`` defaults to every captured query head.

    Example:
        >>> import torch, spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> ids = tok(zoo.heldout_text()[:6000], return_tensors="pt").input_ids[:, :512].view(4, 128)
        >>> probe = spectra.Probe(model, layers=[1], heads=[0, 5], capture=("q", "k"))
        >>> with probe, torch.no_grad():
        ...     _ = model(ids)
        >>> table = head_table(probe)
        >>> len(table), bool((table["residual_pos_r"] < 1e-8).all())
        (2, True)
    """
    if "q" not in probe.kinds or "k" not in probe.kinds:
        raise ValueError("probe: needs capture=('q', 'k') (it captured " + ", ".join(probe.kinds) + ")")
    options = _Options(n_components, axis_b, hi, lo, n_planes, active_threshold)
    options.check()
    stage = "post_rope" if "post_rope" in probe.stages else probe.stages[0]
    wanted = (
        list(heads) if heads is not None else [(layer, h) for layer, hs in probe.heads_by_layer.items() for h in hs]
    )
    targets = [(layer, head, probe.kv_head(head)) for layer, head in wanted]
    table, components, planes = _analyse(
        targets,
        lambda layer, head, kv: (probe.captured(layer, head, "q", stage), probe.captured(layer, kv, "k", stage)),
        options,
    )
    table.attrs.update(components=components, planes=planes)
    return table


def capture_table(
    qk_dir,
    *,
    n_components: int = 10,
    axis_b: AxisB = "centroid",
    hi: float = 0.7,
    lo: float = 0.3,
    n_planes: int = 30,
    active_threshold: float = 0.3,
    gqa_group: int | None = None,
    per_kind: bool = False,
    max_rows: int | None = None,
) -> GeometryTables:
    """Every captured query head of a qk-sniffer / Spectra capture folder (``l{LL}h{HH}q`` with its KV
    head's ``l{LL}h{GG}k``; post-RoPE). The KV head comes from the folder's ``spectra_capture.json``
    when present, else ``h // gqa_group``. ``per_kind=True`` also runs the published tool's PCA on
    every q and k file (``correlations``); ``max_rows`` keeps the first N rows of each file, as the
    published tool's ``max_samples`` does.

    Example:
        >>> import tempfile, torch, spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-qwen3")
        >>> out = tempfile.mkdtemp()
        >>> ids = tok(zoo.heldout_text()[:3000], return_tensors="pt").input_ids[:, :256]
        >>> with spectra.Probe(model, layers=[2], heads=[0, 7], out_dir=out), torch.no_grad():
        ...     _ = model(ids)
        >>> tables = capture_table(out, per_kind=True)
        >>> tables.heads[["layer", "head", "kv_head"]].values.tolist(), sorted(set(tables.correlations["kind"]))
        ([[2, 0, 0], [2, 7, 1]], ['k', 'q'])
    """
    options = _Options(n_components, axis_b, hi, lo, n_planes, active_threshold)
    options.check()
    if max_rows is not None:
        _check_count("max_rows", max_rows, 2)
    qk = open_qk_folder(qk_dir, gqa_group)
    folder, files, sidecar, kv_of = qk.path, qk.files, qk.sidecar, qk.kv_head

    def read(layer: int, head: int, kind: str):
        if (layer, head) not in files[kind]:
            raise FileNotFoundError(
                f"qk: {folder} has no {kind} capture l{layer:02d}h{head:02d}{kind}/data.parquet"
                + (" (the KV head of a captured query head)" if kind == "k" else "")
            )
        rows = read_capture(folder, layer, head, kind)
        if max_rows is not None and len(rows.positions) > max_rows:
            rows = type(rows)(*(x[:max_rows] for x in (rows.vectors, rows.positions, rows.example_ids, rows.buckets)))
        return rows

    parts: list[pd.DataFrame] = []  # per_kind: each file's PCA, computed when the file is read
    loaded_keys: set[tuple[int, int]] = set()

    def load(layer: int, head: int, kind: str):
        rows = read(layer, head, kind)
        if per_kind:
            table = kind_pca(rows.vectors, rows.positions, n_components)
            table.attrs.clear()  # the components arrays: pandas cannot compare them when concatenating
            parts.append(table.assign(layer=layer, head=head, kind=kind))
        if kind == "k":
            loaded_keys.add((layer, head))
        return rows

    # A KV head's keys serve every query head of its group; targets run layer by layer, so only the
    # current layer's keys are kept.
    keys: dict[tuple[int, int], object] = {}

    def rows_of(layer: int, head: int, kv: int):
        if (layer, kv) not in keys:
            if any(cached_layer != layer for cached_layer, _ in keys):
                keys.clear()
            keys[(layer, kv)] = load(layer, kv, "k")
        return load(layer, head, "q"), keys[(layer, kv)]

    targets = [(layer, head, kv_of(head)) for layer, head in files["q"]]
    heads, components, planes = _analyse(targets, rows_of, options)
    model = sidecar.get("model", {})
    uses_rope = model.get("uses_rope")
    if uses_rope is not None:
        heads.insert(3, "uses_rope", [bool(uses_rope[layer]) for layer in heads["layer"]])
    correlations = None
    if per_kind:
        for layer, head in files["k"]:
            if (layer, head) not in loaded_keys:  # KV heads no captured query head reads
                load(layer, head, "k")
        columns = ["layer", "head", "kind", "pca_dim", "correlation", "p_value", "explained_variance_ratio"]
        correlations = pd.concat(parts, ignore_index=True)[columns].sort_values(
            ["layer", "head", "kind", "pca_dim"], ignore_index=True
        )
    meta = {
        "qk_dir": str(folder),
        "model": model.get("name_or_path"),
        "family": model.get("family"),
        "n_layers": model.get("n_layers"),
        "n_heads": model.get("n_heads"),
        "n_kv_heads": model.get("n_kv_heads"),
    }
    return GeometryTables(heads, components, planes, correlations, meta)


def series(
    qk_dirs: Sequence[str | Path],
    *,
    labels: Sequence[str] | None = None,
    steps: Sequence[int | None] | None = None,
    **options,
) -> GeometryTables:
    """:func:`capture_table` over captures of several checkpoints (or models), concatenated with
    ``checkpoint`` (label; default the folder name) and ``step`` columns. Steps default to the
    ``step-N`` / ``checkpoint-N`` in a folder's name or in its capture's model path, else None.

    Example:
        >>> import tempfile, torch, spectra
        >>> from pathlib import Path
        >>> from spectra import zoo
        >>> root = Path(tempfile.mkdtemp())
        >>> for step in (0, 1600):
        ...     model, tok = zoo.load("tiny-qwen3", checkpoint=step)
        ...     ids = tok(zoo.heldout_text()[:3000], return_tensors="pt").input_ids[:, :256]
        ...     with spectra.Probe(model, layers=[3], heads=[0], out_dir=root / f"step-{step}"), torch.no_grad():
        ...         _ = model(ids)
        >>> tables = series([root / "step-0", root / "step-1600"])
        >>> tables.heads[["checkpoint", "step"]].values.tolist()
        [['step-0', 0], ['step-1600', 1600]]
    """
    dirs = [Path(d) for d in qk_dirs]
    if not dirs:
        raise ValueError("qk_dirs: give at least one capture folder")
    labels = list(labels) if labels is not None else [d.name for d in dirs]
    if len(labels) != len(dirs) or len(set(labels)) != len(labels):
        raise ValueError(f"labels: expected {len(dirs)} distinct labels; got {labels}")
    steps = list(steps) if steps is not None else [None] * len(dirs)
    if len(steps) != len(dirs):
        raise ValueError(f"steps: expected {len(dirs)} entries; got {len(steps)}")
    tables = []
    for folder, label, step in zip(dirs, labels, steps, strict=True):
        result = capture_table(folder, **options)
        step = step if step is not None else capture_step(folder, result.meta.get("model"))
        tables.append((label, step, result))

    def joined(name: str) -> pd.DataFrame | None:
        parts = [
            getattr(t, name).assign(checkpoint=label, step=step)
            for label, step, t in tables
            if getattr(t, name) is not None
        ]
        if not parts:
            return None
        frame = pd.concat(parts, ignore_index=True)
        frame["step"] = frame["step"].astype("Int64")
        return frame[["checkpoint", "step"] + [c for c in frame.columns if c not in ("checkpoint", "step")]]

    meta = {"checkpoints": [{"label": label, "step": step, **t.meta} for label, step, t in tables]}
    return GeometryTables(joined("heads"), joined("components"), joined("planes"), joined("correlations"), meta)
