"""QK geometry of attention heads (see docs/geometry.md, 'Definitions'): the thesis's combined Q+K
PCA and the planar rotation model, per (layer, query head) with its KV head, on captured post-RoPE
vectors, plus the published tool's per-kind PCA. The math runs in ``spectra._core`` (float64, from
per-kind sufficient statistics, parallel over heads); this module turns it into tables.

Example:
    >>> import torch
    >>> from spectra import geometry
    >>> t = torch.arange(400.0)
    >>> q = torch.randn(400, 16) + 5.0
    >>> k = torch.randn(400, 16) - 5.0
    >>> k[:, 1] += 0.01 * t                              # keys drift with position
    >>> r = geometry.rotation(q, k, t, t)
    >>> bool(abs(r["r_k_a"]) > 0.7), r["residual_pos_r"] < 1e-10
    (True, True)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from spectra.ops import _core
from spectra.models.checkpoints import capture_step

__all__ = [
    "PC0_CLASSES", "GeometryTables", "capture_table", "checkpoint_order", "combined_pca", "depth_bins",
    "family_correlations", "head_table", "kind_pca", "pc0_class", "rotation", "series", "summarize", "summarize_series",
]

#: The 5-class PC0 taxonomy (see docs/geometry.md, 'Definitions'), checked in this order.
PC0_CLASSES = ("position-dominated", "Q-positional", "K-positional", "content-focused", "mixed")

AxisB = Literal["centroid", "eigen"]

# The per-head scalars of the rotation model, in the order of the head table's columns.
_ROTATION_COLUMNS = (
    "mu_q_a", "mu_k_a", "mu_q_b", "mu_k_b", "intercept_q_a", "intercept_k_a", "alpha_q", "alpha_k", "r_q_a", "r_k_a",
    "position_r", "bias_strength", "separation_strength", "var_frac_a", "var_frac_b", "plane_var_fraction",
    "complement_var_fraction", "content_var_b", "residual_pos_r", "drift_norm", "n_active_planes",
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


def _tensors(q, k, q_pos, k_pos) -> tuple[torch.Tensor, ...]:
    out = []
    for name, x in (("q", q), ("k", k), ("q_pos", q_pos), ("k_pos", k_pos)):
        out.append(_checked(name, x, positions=name.endswith("pos")))
    return tuple(out)


def _checked(name: str, x, *, positions: bool) -> torch.Tensor:
    t = torch.as_tensor(x)
    if positions:
        if not bool(torch.isfinite(t.double()).all()):
            raise ValueError(f"{name}: positions must be finite")
        return t.double()
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected floating vectors; got dtype {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: holds NaN or inf")
    return t


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}; got {value!r}")


def combined_pca(q, k, q_pos, k_pos, n_components: int = 10, *, anchor_tolerance: float = 0.05) -> pd.DataFrame:
    """Pooled, centred PCA of one head's [Q; K]: one row per component with ``pc``,
    ``explained_variance``, ``r_q``, ``r_k`` (signs canonicalised: r_q >= 0, or r_k >= 0 when
    |r_q| < ``anchor_tolerance``); ``attrs`` holds ``p_q``, ``p_k`` (position-linear variance
    shares), ``fisher_pc0``, ``accuracy_pc01`` (Q/K linear-discriminant accuracy on PC0–PC1), the
    ``components`` and the pooled ``mean``.

    Example:
        >>> import torch
        >>> t = torch.arange(200.0)
        >>> q = torch.randn(200, 8) + torch.outer(t, torch.eye(8)[0]) * 0.05
        >>> table = combined_pca(q, torch.randn(200, 8), t, t, n_components=3)
        >>> list(table.columns), bool(table["r_q"].iloc[0] > 0.9)
        (['pc', 'explained_variance', 'r_q', 'r_k'], True)
    """
    q, k, q_pos, k_pos = _tensors(q, k, q_pos, k_pos)
    _check_count("n_components", n_components, 1)
    out = _core.combined_pca(q, q_pos, k, k_pos, n_components, anchor_tolerance)
    table = pd.DataFrame({"pc": np.arange(len(out["r_q"])), "explained_variance": out["explained_variance"].numpy(),
                          "r_q": out["r_q"].numpy(), "r_k": out["r_k"].numpy()})
    table.attrs.update(p_q=out["p_q"], p_k=out["p_k"], fisher_pc0=out["fisher_pc0"],
                       accuracy_pc01=out["accuracy_pc01"], components=out["components"].numpy(),
                       mean=out["mean"].numpy())
    return table


def kind_pca(x, pos, n_components: int = 10) -> pd.DataFrame:
    """The published tool's PCA of one kind alone: one row per component with
    ``pca_dim``, ``correlation`` (Pearson with raw position; 0 with p 1 when a side is constant),
    ``p_value`` (two-sided) and ``explained_variance_ratio``. Components are signed as
    scikit-learn signs them (largest loading positive) — no Q/K sign canonicalisation.

    Example:
        >>> import torch
        >>> t = torch.arange(500.0)
        >>> x = torch.randn(500, 6)
        >>> x[:, 2] += 0.05 * t
        >>> table = kind_pca(x, t, n_components=2)
        >>> bool(abs(table["correlation"].iloc[0]) > 0.9), bool(table["p_value"].iloc[0] < 1e-10)
        (True, True)
    """
    x, pos = _checked("x", x, positions=False), _checked("pos", pos, positions=True)
    _check_count("n_components", n_components, 1)
    out = _core.kind_pca(x, pos, n_components)
    r = out["r"].numpy()
    table = pd.DataFrame({"pca_dim": np.arange(len(r)), "correlation": r, "p_value": _pearson_p(r, x.shape[0]),
                          "explained_variance_ratio": out["explained_variance"].numpy()})
    table.attrs.update(components=out["components"].numpy(), mean=out["mean"].numpy())
    return table


def _pearson_p(r: np.ndarray, n: int) -> np.ndarray:
    """Two-sided p-values of Pearson correlations from n pairs (scipy.stats.pearsonr's, vectorised);
    r = 0 (incl. a constant side) gives 1."""
    from scipy import stats

    if n < 3:
        return np.ones_like(r)
    # pearsonr's exact null: (r + 1)/2 ~ Beta(n/2 − 1, n/2 − 1).
    dist = stats.beta(n / 2 - 1, n / 2 - 1, loc=-1, scale=2)
    return np.clip(2 * dist.sf(np.abs(r)), 0.0, 1.0)


def rotation(q, k, q_pos, k_pos, *, axis_b: AxisB = "centroid", n_planes: int = 30,
             active_threshold: float = 0.3) -> dict[str, object]:
    """The planar rotation model of one head: axes ``a``, ``b`` and every per-head metric (see docs/geometry.md, 'Definitions'):
    ``mu_q_a`` (a mean; ``intercept_q_a`` is the OLS intercept), ``alpha_q``, ``alpha_k``,
    ``bias_strength = mu_q_a · alpha_k``, ``r_q_a``, ``r_k_a``, ``position_r``,
    ``separation_strength``, ``var_frac_a``, ``var_frac_b``, ``plane_var_fraction``,
    ``complement_var_fraction``, ``content_var_b``, ``residual_pos_r`` (analytically 0), and the
    complement's rotation planes (``planes``: a DataFrame with ``var_fraction``, ``omega`` — the rate
    in radians per token at which the rows' angles in the plane turn with position —, ``angle_r``
    — that rotation's phase coherence in [0, 1] —, ``accuracy`` — Q/K linear-discriminant accuracy on
    the plane —, ``active`` — angle_r > ``active_threshold``; ``n_active_planes``,
    ``active_var_fraction``). ``axis_b="centroid"`` is
    the thesis's P(μ_Q − μ_K); ``"eigen"`` the top eigenvector of P C_δ P (independent q/k pairing).

    Example:
        >>> import torch
        >>> t = torch.arange(300.0)
        >>> k = torch.randn(300, 8) + torch.outer(t, torch.eye(8)[1]) * 0.05
        >>> r = rotation(torch.randn(300, 8) + 2, k, t, t)
        >>> abs(r["r_k_a"]) > abs(r["r_q_a"]), r["residual_pos_r"] < 1e-10, len(r["planes"])
        (True, True, 3)
    """
    _check_axis(axis_b)
    q, k, q_pos, k_pos = _tensors(q, k, q_pos, k_pos)
    out = dict(_core.planar_rotation(q, q_pos, k, k_pos, axis_b, n_planes, active_threshold))
    out["planes"] = _planes_frame(out)
    return out


def _check_axis(axis_b: str) -> None:
    if axis_b not in ("centroid", "eigen"):
        raise ValueError(f"axis_b: unknown {axis_b!r}; allowed are 'centroid', 'eigen'")


def _planes_frame(rot: dict) -> pd.DataFrame:
    """Moves the native result's per-plane arrays out of ``rot`` into a table."""
    var = rot.pop("plane_var").numpy()
    return pd.DataFrame({"plane": np.arange(len(var)), "var_fraction": var, "omega": rot.pop("plane_omega").numpy(),
                         "angle_r": rot.pop("plane_angle_r").numpy(),
                         "accuracy": rot.pop("plane_accuracy").numpy(), "active": rot.pop("plane_active").numpy()})


def pc0_class(r_q: float, r_k: float, *, hi: float = 0.7, lo: float = 0.3) -> str:
    """The 5-class PC0 taxonomy on the canonicalised r_q (>= 0) and |r_k|, strict inequalities.

    Example:
        >>> pc0_class(0.8, -0.75), pc0_class(0.8, 0.1), pc0_class(0.1, 0.9), pc0_class(0.1, 0.1), pc0_class(0.5, 0.5)
        ('position-dominated', 'Q-positional', 'K-positional', 'content-focused', 'mixed')
    """
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"lo/hi: expected 0 <= lo < hi <= 1; got lo={lo}, hi={hi}")
    ak = abs(r_k)
    if r_q > hi and ak > hi:
        return "position-dominated"
    if r_q > hi and ak < lo:
        return "Q-positional"
    if r_q < lo and ak > hi:
        return "K-positional"
    if r_q < lo and ak < lo:
        return "content-focused"
    return "mixed"


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


def _analyse(targets: Sequence[tuple[int, int, int]], rows_of, options: _Options,
             chunk: int = 32) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Head, component and plane tables of (layer, head, kv_head) targets; ``rows_of(layer, head, kv)``
    gives the (q, k) captures. Heads go to the native batch in chunks (parallel over heads, bounded
    memory)."""
    head_rows, components, planes = [], [], []
    for start in range(0, len(targets), chunk):
        part = targets[start:start + chunk]
        inputs = []
        for layer, head, kv in part:
            q, k = rows_of(layer, head, kv)
            inputs.append((q.vectors, q.positions.double(), k.vectors, k.positions.double()))
        try:
            results = _core.qk_geometry_batch(inputs, options.n_components, options.axis_b, options.anchor_tolerance,
                                              options.n_planes, options.active_threshold)
        except ValueError as error:
            match = re.match(r"heads\[(\d+)\]: (.*)", str(error), re.S)
            if match is None:
                raise
            layer, head, kv = part[int(match.group(1))]
            raise ValueError(f"layer {layer} head {head} (KV head {kv}): {match.group(2)}") from None
        for (layer, head, kv), (q, _, k, _), (pca, rot) in zip(part, inputs, results, strict=True):
            r_q0, r_k0 = float(pca["r_q"][0]), float(pca["r_k"][0])
            row = {"layer": layer, "head": head, "kv_head": kv, "n_q": len(q), "n_k": len(k),
                   "pc0_explained_variance": float(pca["explained_variance"][0]), "pc0_r_q": r_q0, "pc0_r_k": r_k0,
                   "pc0_class": pc0_class(r_q0, r_k0, hi=options.hi, lo=options.lo), "p_q": pca["p_q"],
                   "p_k": pca["p_k"], "fisher_pc0": pca["fisher_pc0"], "accuracy_pc01": pca["accuracy_pc01"]}
            rot = dict(rot)
            plane_table = _planes_frame(rot)
            row.update({key: rot[key] for key in _ROTATION_COLUMNS})
            head_rows.append(row)
            n = len(pca["r_q"])
            components.append(pd.DataFrame({"layer": layer, "head": head, "pc": np.arange(n),
                                            "explained_variance": pca["explained_variance"].numpy(),
                                            "r_q": pca["r_q"].numpy(), "r_k": pca["r_k"].numpy()}))
            planes.append(plane_table.assign(layer=layer, head=head))
    plane_columns = ["layer", "head", "plane", "var_fraction", "omega", "angle_r", "accuracy", "active"]
    return (pd.DataFrame(head_rows), pd.concat(components, ignore_index=True),
            pd.concat(planes, ignore_index=True)[plane_columns] if planes else pd.DataFrame(columns=plane_columns))


def head_table(probe, heads: Iterable[tuple[int, int]] | None = None, *, n_components: int = 10,
               axis_b: AxisB = "centroid", hi: float = 0.7, lo: float = 0.3, n_planes: int = 30,
               active_threshold: float = 0.3) -> pd.DataFrame:
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
    wanted = list(heads) if heads is not None else [(layer, h) for layer, hs in probe.heads_by_layer.items() for h in hs]
    targets = [(layer, head, probe.kv_head(head)) for layer, head in wanted]
    table, components, planes = _analyse(
        targets, lambda layer, head, kv: (probe.captured(layer, head, "q", stage), probe.captured(layer, kv, "k", stage)),
        options)
    table.attrs.update(components=components, planes=planes)
    return table


def capture_table(qk_dir, *, n_components: int = 10, axis_b: AxisB = "centroid", hi: float = 0.7, lo: float = 0.3,
                  n_planes: int = 30, active_threshold: float = 0.3, gqa_group: int | None = None,
                  per_kind: bool = False, max_rows: int | None = None) -> GeometryTables:
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
    from spectra.capture.store import open_qk_folder, read_capture

    options = _Options(n_components, axis_b, hi, lo, n_planes, active_threshold)
    options.check()
    if max_rows is not None:
        _check_count("max_rows", max_rows, 2)
    qk = open_qk_folder(qk_dir, gqa_group)
    folder, files, sidecar, kv_of = qk.path, qk.files, qk.sidecar, qk.kv_head

    def read(layer: int, head: int, kind: str):
        if (layer, head) not in files[kind]:
            raise FileNotFoundError(f"qk: {folder} has no {kind} capture l{layer:02d}h{head:02d}{kind}/data.parquet"
                                    + (" (the KV head of a captured query head)" if kind == "k" else ""))
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
            ["layer", "head", "kind", "pca_dim"], ignore_index=True)
    meta = {"qk_dir": str(folder), "model": model.get("name_or_path"), "family": model.get("family"),
            "n_layers": model.get("n_layers"), "n_heads": model.get("n_heads"), "n_kv_heads": model.get("n_kv_heads")}
    return GeometryTables(heads, components, planes, correlations, meta)


def series(qk_dirs: Sequence[str | Path], *, labels: Sequence[str] | None = None,
           steps: Sequence[int | None] | None = None, **options) -> GeometryTables:
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
        parts = [getattr(t, name).assign(checkpoint=label, step=step) for label, step, t in tables
                 if getattr(t, name) is not None]
        if not parts:
            return None
        frame = pd.concat(parts, ignore_index=True)
        frame["step"] = frame["step"].astype("Int64")
        return frame[["checkpoint", "step"] + [c for c in frame.columns if c not in ("checkpoint", "step")]]

    meta = {"checkpoints": [{"label": label, "step": step, **t.meta} for label, step, t in tables]}
    return GeometryTables(joined("heads"), joined("components"), joined("planes"), joined("correlations"), meta)



def depth_bins(layers: pd.Series, n_layers: int | None = None, n_bins: int = 10) -> np.ndarray:
    """Depth = layer / max layer index in ``n_bins`` equal bins, depth 1.0 in the last;
    the max layer index is ``n_layers - 1``, or the largest layer given. Integer arithmetic, because
    layer / max · n_bins in floats can land just below a bin edge.

    Example:
        >>> depth_bins(pd.Series([0, 3, 9]), n_layers=10).tolist()
        [0, 3, 9]
    """
    layer = np.asarray(layers, dtype=np.int64)
    last = (n_layers - 1) if n_layers else int(layer.max())
    return np.minimum(layer * n_bins // max(last, 1), n_bins - 1)


def checkpoint_order(table: pd.DataFrame) -> list:
    """Checkpoint labels of a series table by step; a stable sort, so checkpoints without a step
    (or a table without a ``step`` column) keep their order of appearance, after the stepped ones.

    Example:
        >>> checkpoint_order(pd.DataFrame({"checkpoint": ["b", "a", "c"], "step": [10, 0, None]}))
        ['a', 'b', 'c']
    """
    if "step" not in table:
        return list(table["checkpoint"].drop_duplicates())
    steps = pd.to_numeric(table["step"], errors="coerce").groupby(table["checkpoint"], sort=False).min()
    return list(steps.sort_values(kind="stable", na_position="last").index)


def summarize(heads: pd.DataFrame, n_layers: int | None = None) -> dict[str, object]:
    """Per-model aggregates of a head table: class shares, means and medians
    of the rotation metrics, the median |α_K|/|α_Q|, the fraction of heads with positive bias and
    mu_q_a, the bias–separation correlation, axis b's variance beating axis a's, and per-depth-bin
    means (10 bins of layer / max layer index); RoPE-only / NoPE-only means when the capture says
    which layers use RoPE.

    Example:
        >>> heads = pd.DataFrame({"layer": [0, 1, 1], "pc0_class": ["mixed"] * 3, "bias_strength": [1.0, 2.0, -1.0],
        ...     "mu_q_a": [1.0, 1.0, -1.0], "alpha_q": [1.0, 1.0, 1.0], "alpha_k": [1.0, 2.0, 1.0],
        ...     "r_q_a": [0.5] * 3, "r_k_a": [0.9] * 3, "separation_strength": [0.3, 0.2, 0.1],
        ...     "plane_var_fraction": [0.4] * 3, "var_frac_a": [0.1] * 3, "var_frac_b": [0.3] * 3,
        ...     "residual_pos_r": [0.0] * 3, "pc0_r_q": [0.8] * 3, "pc0_r_k": [0.5] * 3, "p_q": [0.2] * 3,
        ...     "p_k": [0.1] * 3, "pc0_explained_variance": [0.3] * 3, "accuracy_pc01": [1.0] * 3})
        >>> s = summarize(heads)
        >>> s["fraction_bias_positive"], s["median_alpha_k_over_alpha_q"]
        (0.6666666666666666, 1.0)
    """
    from spectra.io.tables import check_frame
    check_frame(heads, ["layer", "pc0_class", "bias_strength", "mu_q_a", "alpha_q", "alpha_k", "r_q_a", "r_k_a",
                        "separation_strength", "plane_var_fraction", "var_frac_a", "var_frac_b", "residual_pos_r"],
                "heads")
    if heads.empty:
        raise ValueError("heads: the table is empty")
    ratio = (heads["alpha_k"].abs() / heads["alpha_q"].abs()).replace([np.inf, -np.inf], np.nan)
    summary: dict[str, object] = {
        "n_heads": int(len(heads)),
        "pc0_class_share": {c: float((heads["pc0_class"] == c).mean()) for c in PC0_CLASSES},
        **_means(heads),
        "median_bias_strength": float(heads["bias_strength"].median()),
        "median_alpha_k_over_alpha_q": float(ratio.median()),
        "fraction_bias_positive": float((heads["bias_strength"] > 0).mean()),
        "fraction_mu_q_a_positive": float((heads["mu_q_a"] > 0).mean()),
        "fraction_b_variance_above_a": float((heads["var_frac_b"] > heads["var_frac_a"]).mean()),
        "bias_vs_separation_r": _corr(heads["bias_strength"], heads["separation_strength"]),
        "max_residual_pos_r": float(heads["residual_pos_r"].max()),
    }
    columns = [c for c in ("bias_strength", "alpha_k", "mu_q_a", "pc0_r_q", "pc0_r_k", "plane_var_fraction")
               if c in heads]
    per_bin = heads.assign(depth_bin=depth_bins(heads["layer"], n_layers)).groupby("depth_bin")[columns].mean()
    summary["depth_bins"] = {int(b): {k: float(v) for k, v in row.items()} for b, row in per_bin.iterrows()}
    if "uses_rope" in heads:
        for name, part in (("rope", heads[heads["uses_rope"]]), ("nope", heads[~heads["uses_rope"].astype(bool)])):
            summary[f"{name}_heads"] = int(len(part))
            if len(part):
                summary[f"{name}_means"] = _means(part)
    return summary


def _corr(x: pd.Series, y: pd.Series) -> float:
    return float(x.corr(y)) if len(x) > 2 else float("nan")


def _means(heads: pd.DataFrame) -> dict[str, float]:
    """The per-model means (and the PCA means) of a head table."""
    out = {
        "mean_bias_strength": float(heads["bias_strength"].mean()),
        "mean_mu_q_a": float(heads["mu_q_a"].mean()),
        "mean_alpha_k": float(heads["alpha_k"].mean()),
        "mean_abs_alpha_k": float(heads["alpha_k"].abs().mean()),
        "mean_abs_alpha_q": float(heads["alpha_q"].abs().mean()),
        "mean_abs_r_k_a": float(heads["r_k_a"].abs().mean()),
        "mean_abs_r_q_a": float(heads["r_q_a"].abs().mean()),
        "mean_separation_strength": float(heads["separation_strength"].mean()),
        "mean_plane_var_fraction": float(heads["plane_var_fraction"].mean()),
    }
    for column in ("pc0_r_q", "pc0_r_k", "pc0_explained_variance", "p_q", "p_k", "fisher_pc0", "accuracy_pc01",
                   "n_active_planes", "active_var_fraction"):
        if column in heads:
            out[f"mean_{column}"] = float(heads[column].mean())
    return out


def summarize_series(heads: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint of a :func:`series` head table, in step order: the class shares
    (``share_<class>``), the means of :func:`summarize` and the bias decomposition's interquartile
    ranges (``mu_q_a_q25`` … ``bias_strength_q75``) — the thesis's training-trajectory table.

    Example:
        >>> heads = pd.DataFrame({"checkpoint": ["b", "b", "a"], "step": [10, 10, 0], "layer": 0,
        ...     "pc0_class": ["mixed", "Q-positional", "mixed"], "bias_strength": [1.0, 3.0, 0.5],
        ...     "mu_q_a": 1.0, "alpha_q": 1.0, "alpha_k": 1.0, "r_q_a": 0.5, "r_k_a": 0.9,
        ...     "separation_strength": 0.3, "plane_var_fraction": 0.4})
        >>> summarize_series(heads)[["checkpoint", "n_heads", "mean_bias_strength", "share_mixed"]].values.tolist()
        [['a', 1, 0.5, 1.0], ['b', 2, 2.0, 0.5]]
    """
    from spectra.io.tables import check_frame
    check_frame(heads, ["checkpoint", "step", "pc0_class", "bias_strength", "mu_q_a", "alpha_k"], "heads")
    rows = []
    for label in checkpoint_order(heads):
        part = heads[heads["checkpoint"] == label]
        row = {"checkpoint": label, "step": part["step"].iloc[0], "n_heads": len(part)}
        row.update({f"share_{c}": float((part["pc0_class"] == c).mean()) for c in PC0_CLASSES})
        row.update(_means(part))
        for column in ("mu_q_a", "alpha_k", "bias_strength"):
            row[f"{column}_q25"], row[f"{column}_q75"] = (float(v) for v in part[column].quantile([0.25, 0.75]))
        rows.append(row)
    return pd.DataFrame(rows)


def family_correlations(heads: pd.DataFrame, by: str = "family") -> pd.DataFrame:
    """Pearson r of bias_strength vs separation_strength pooled and within each group (``family`` or
    ``checkpoint``): the thesis's Simpson's-paradox check.

    Example:
        >>> heads = pd.DataFrame({"family": ["a"] * 3 + ["b"] * 3, "bias_strength": [1, 2, 3, 10, 11, 12],
        ...                       "separation_strength": [3, 2, 1, 13, 12, 11]})
        >>> family_correlations(heads)["r"].round(2).tolist()
        [0.94, -1.0, -1.0]
    """
    from spectra.io.tables import check_frame
    check_frame(heads, [by, "bias_strength", "separation_strength"], "heads")
    rows = [{by: "(pooled)", "n_heads": len(heads), "r": _corr(heads["bias_strength"], heads["separation_strength"])}]
    for name, part in heads.groupby(by, sort=False):
        rows.append({by: name, "n_heads": len(part), "r": _corr(part["bias_strength"], part["separation_strength"])})
    return pd.DataFrame(rows)
