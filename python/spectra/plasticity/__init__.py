"""Attention plasticity (see docs/plasticity.md, 'The model of a head's queries'): how far a random future query can still
flip a head's preference between two keys it has already seen.

For a key difference ``w = k1 − k2`` and a query ``q ~ N(μ, Σ)``, the logit gap ``wᵀq`` is Gaussian
with mean ``m = wᵀμ`` and variance ``v = wᵀΣw``, so ``p = Pr(q·k1 > q·k2) = Φ(m/√v)`` and the pairwise
plasticity is ``PP = 4·p·(1−p)`` (1 for a coin flip, 0 for a settled preference).

Per head, :func:`analyze_head` fits the positional–semantic query model (per-dimension OLS on
position, a Householder reflection taking the drift direction to coordinate 1, residual variances),
draws key pairs per query cell and evaluates them, all in ``spectra._core``. Two modes (see
docs/plasticity.md, 'Modes'):

* ``"thesis"`` (default): a query grid (width = the capture bucket by default); eligible keys are
  same-example keys before the cell's position τ; the positional coordinate comes from the global
  regression, the other coordinates from the cell's own queries (mean and ddof=1 variance, or a full
  covariance + 1e-12·I with ``covariance="full"``); the head's ``ap_overall`` weights cells by their
  number of queries.
* ``"published"``: the attention-plasticity tool at 23e1d60 — one cell per (query bucket j ≥ 1, key
  bucket c < j), pairs from one example inside bucket c, the global mean and diagonal residual
  variance, draws with ``v ≤ 0`` skipped, ``ap_overall`` the unweighted mean over cells.

Both use the corrected sliding-window units ``lookback = ceil(W / B)`` buckets, draw
``pairs_per_cell`` pairs per cell with replacement from a per-cell counter-based stream seeded with
``seed + 10007·layer + 379·head`` (so results are reproducible and independent of threads, though not
NumPy's stream), and compute ``PP = 4·Φ(−|z|)·(1 − Φ(−|z|))`` without cancellation.

:func:`analyze` runs every captured head of a capture folder; :mod:`spectra.plasticity.summary`
turns the result into profiles, deciles, heatmaps and the model report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from spectra.capture.store import open_qk_folder, read_capture, read_sliding_window
from spectra.models.checkpoints import capture_step
from spectra.ops.outputs import PairwisePlasticity
from spectra.ops.plasticity import key_orientation, plasticity_head, plasticity_pairwise

__all__ = [
    "HeadPlasticity",
    "PairwisePlasticity",
    "PlasticityTables",
    "analyze",
    "analyze_head",
    "infer_bucket_size",
    "pairwise",
    "window_lookback",
]

Mode = Literal["thesis", "published"]
MODES = ("thesis", "published")
QUERY_POSITIONS = ("midpoint", "mean")
COVARIANCES = ("diagonal", "full")

#: The published tool's per-head columns, in its order.
PUBLISHED_COLUMNS = (
    "n_q_tokens",
    "n_k_tokens",
    "d_model",
    "q_R2_pos",
    "q_beta_norm",
    "q_R2_scalar",
    "q_mae_baseline",
    "q_mae_proj",
    "q_mae_ratio",
    "q_resid0_skew",
    "q_resid0_kurt",
    "q_resid0_ks_p",
    "q_noise_med_abs_skew",
    "q_noise_med_abs_kurt",
    "q_noise_med_ks_p",
    "q_noise_frac_ks_p_lt_alpha",
    "ap_overall",
)


def pairwise(w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> PairwisePlasticity:
    """Logit-gap moments ``m``, ``v``, ``p = Φ(m/√v)`` and ``PP = 4p(1−p)`` for each key difference.

    Args:
        w: ``(P, d)`` key differences ``k1 − k2``, one pair per row (any strides).
        mean: the query mean, ``(d,)`` shared by every pair or ``(P, d)`` one per pair.
        var: the query's diagonal variances ``(d,)``, or a full covariance ``(d, d)`` (then
            ``v = wᵀΣw``; only Σ's symmetric part matters). Variances must be ``>= 0``.

    Returns:
        :class:`PairwisePlasticity` of four ``(P,)`` float64 tensors ``m, v, p, pp``.

    Inputs may be float16, bfloat16, float32 or float64 (mixed dtypes are promoted); sums run in
    float64. ``PP`` is computed as ``4·Φ(−|z|)·(1 − Φ(−|z|))`` with ``Φ(−|z|) = ½·erfc(|z|/√2)``, so it
    stays accurate (tiny but positive) for large ``|z|``, where ``4p(1−p)`` would round to 0. When
    ``v <= 0`` (identical keys, or a zero-variance direction) ``p`` is 1, 0 or ½ for ``m`` > 0, < 0 or
    = 0, i.e. ``PP`` is 0, 0 or 1; NaN inputs give NaN. CPU; CUDA tensors need a
    build with ``SPECTRA_WITH_CUDA=ON`` (docs/building.md: the CUDA kernel is not yet validated on a GPU). The readable
    definition is :func:`spectra.reference.plasticity.pairwise`.

    Example:
        >>> import torch
        >>> from spectra import plasticity
        >>> # The reference tool's expected-value cell: μ(τ) = 1, keys ±1 (w = 2), σ² = 1, so z = 1.
        >>> out = plasticity.pairwise(torch.tensor([[2.0]]), torch.tensor([1.0]), torch.tensor([1.0]))
        >>> out.m.item(), out.v.item(), round(out.p.item(), 6), round(out.pp.item(), 6)
        (2.0, 4.0, 0.841345, 0.533935)
        >>> # Identical keys (w = 0): v = m = 0, so p = 1/2 and PP = 1.
        >>> plasticity.pairwise(torch.zeros(1, 3), torch.ones(3), torch.eye(3)).pp.tolist()
        [1.0]
    """
    return plasticity_pairwise(w, mean, var)


def window_lookback(sliding_window: float | None, bucket_size: int) -> int:
    """Key buckets a query bucket may look back over under a sliding window of ``sliding_window``
    tokens: ``ceil(W / B)`` (at least 1), or 0 for no window (None, NaN or ``<= 0``). The published
    tool used ``floor(W)`` buckets, mixing tokens with buckets; Spectra fixes the units.

    >>> window_lookback(4096, 8192), window_lookback(8193, 8192), window_lookback(None, 8192)
    (1, 2, 0)
    """
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1; got {bucket_size}")
    if sliding_window is None or not np.isfinite(sliding_window) or sliding_window <= 0:
        return 0
    return max(1, math.ceil(sliding_window / bucket_size))


def _sliding_window_of(values: np.ndarray | None, where: str) -> float | None:
    """The single window of a head's query rows (published rule: mixed values are an error)."""
    if values is None or len(values) == 0:
        return None
    finite = pd.unique(pd.Series(values, dtype="float64").fillna(-1.0))
    if len(finite) > 1:
        raise ValueError(
            f"sliding_window: mixed sliding_window values {sorted(finite.tolist())} in {where}; "
            "a head must have one window"
        )
    value = float(finite[0])
    return value if value > 0 else None


def infer_bucket_size(positions: np.ndarray, buckets: np.ndarray) -> int:
    """The uniform bucket width B with ``bucket == floor(position / B)`` for every row.

    >>> infer_bucket_size(np.array([0, 5, 8, 15, 16]), np.array([0, 0, 1, 1, 2]))
    8
    """
    t = np.asarray(positions, dtype=np.int64)
    b = np.asarray(buckets, dtype=np.int64)
    if len(t) == 0:
        raise ValueError("positions: empty")
    lower = int(np.max(t // (b + 1))) + 1  # floor(t / B) <= b   ⇔  B > t / (b + 1)
    nonzero = b > 0
    upper = int(np.min(t[nonzero] // b[nonzero])) if nonzero.any() else max(lower, int(t.max()) + 1)
    if lower > upper or np.any(b < 0):
        raise ValueError(
            "bucket_size: the capture's buckets are not floor(position / B) for one B "
            "(log-uniform buckets?); pass bucket_size explicitly"
        )
    return lower


@dataclass
class HeadPlasticity:
    """One head's result: ``row`` (the head table's row), ``cells`` (one row per query cell, and in
    published mode per key bucket), ``pairs`` (every draw: cell, k1/k2 rows and positions, m, v, pp,
    used; only with ``keep_pairs=True``), ``heatmap`` (pooled PP per (inter-key distance bin,
    query-to-midpoint distance bin)) and ``components`` (R² and weight per native dimension)."""

    row: dict
    cells: pd.DataFrame
    heatmap: pd.DataFrame
    components: pd.DataFrame
    pairs: pd.DataFrame | None = None


def _checked_rows(name: str, x, dims: int) -> torch.Tensor:
    """Shape check; NaN and infinite values are refused by the native fit (one pass it makes anyway)."""
    t = torch.as_tensor(x)
    if t.dim() != dims:
        raise ValueError(f"{name}: expected a {dims}-D array; got shape {tuple(t.shape)}")
    return t


def analyze_head(
    q,
    q_pos,
    k,
    k_pos,
    k_example,
    *,
    q_bucket=None,
    k_bucket=None,
    bucket_size: int,
    layer: int = 0,
    head: int = 0,
    kv_head: int = 0,
    mode: Mode = "thesis",
    pairs_per_cell: int = 256,
    seed: int = 0,
    grid_width: float | None = None,
    query_position: str = "midpoint",
    min_queries: int = 2,
    covariance: str = "diagonal",
    sliding_window: float | None = None,
    heatmap_bin: int | None = None,
    max_tokens_per_head: int | None = 50_000,
    normality_max_dims: int = 64,
    p_alpha: float = 0.01,
    keep_pairs: bool = False,
    pairs: tuple | None = None,
) -> HeadPlasticity:
    """Attention plasticity of one head from its query rows ``q (n_q, d)`` at ``q_pos`` and key rows
    ``k (n_k, d)`` at ``k_pos`` from examples ``k_example``.

    Args:
        bucket_size: the capture bucket B in tokens (buckets are ``floor(t / B)`` unless ``q_bucket``/
            ``k_bucket`` are given); the thesis grid width and the heatmap bin default to it.
        mode: ``"thesis"`` or ``"published"`` (module docstring).
        pairs_per_cell: draws per cell (256 as published; fewer when fewer pairs exist).
        seed: the run's seed; a head's stream starts at ``seed + 10007·layer + 379·head``.
        grid_width, query_position, min_queries, covariance: the thesis query grid (width in tokens;
            τ at the cell's ``"midpoint"`` or the ``"mean"`` query position; cells with fewer queries
            are left out; ``"diagonal"`` or ``"full"`` per-cell covariance).
        sliding_window: the head's window in tokens (None: full attention).
        max_tokens_per_head: subsample Q and K above this many rows, as the published tool
            (``default_rng(seed).choice``; the orientation still uses every key). None: never.
        normality_max_dims, p_alpha: the noise-normality diagnostics' KS dimensions and threshold.
        keep_pairs: also return every draw in ``pairs``.
        pairs: inject ``(cell, first, second)`` index arrays instead of drawing (tests).

    Example:
        >>> import torch
        >>> from spectra import plasticity
        >>> g = torch.Generator().manual_seed(0)
        >>> t = torch.arange(2048.0)
        >>> q = torch.randn(2048, 16, generator=g); q[:, 0] += t / 512
        >>> k = torch.randn(2048, 16, generator=g); k[:, 0] += t / 512
        >>> ex = torch.arange(2048) // 512                       # four examples of 512 tokens
        >>> out = plasticity.analyze_head(q, t % 512, k, t % 512, ex, bucket_size=64)
        >>> sorted(out.row)[:3], 0.0 < out.row["ap_overall"] < 1.0
        (['alpha_pos', 'ap_overall', 'beta_pos'], True)
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}; got {mode!r}")
    if query_position not in QUERY_POSITIONS:
        raise ValueError(f"query_position: expected one of {', '.join(QUERY_POSITIONS)}; got {query_position!r}")
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance: expected one of {', '.join(COVARIANCES)}; got {covariance!r}")
    if int(bucket_size) < 1:
        raise ValueError(f"bucket_size must be >= 1; got {bucket_size}")
    if pairs_per_cell < 1:
        raise ValueError(f"pairs_per_cell must be >= 1; got {pairs_per_cell}")
    if normality_max_dims < 1:
        raise ValueError(f"normality_max_dims must be >= 1; got {normality_max_dims}")
    bucket_size = int(bucket_size)
    q = _checked_rows("q", q, 2)
    k = _checked_rows("k", k, 2)
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"d: q and k must have the same head dimension d; got {q.shape[1]} and {k.shape[1]}")
    if q.shape[0] < 3 or k.shape[0] < 2:
        raise ValueError(
            f"rows: a head needs at least 3 query rows and 2 key rows; got {q.shape[0]} and {k.shape[0]} "
            f"(layer {layer}, head {head})"
        )
    q_pos = np.asarray(q_pos, dtype=np.float64)
    k_pos = np.asarray(k_pos, dtype=np.float64)
    k_example = np.asarray(k_example, dtype=np.int64)
    for name, arr, n in (
        ("q_pos", q_pos, q.shape[0]),
        ("k_pos", k_pos, k.shape[0]),
        ("k_example", k_example, k.shape[0]),
    ):
        if arr.shape != (n,):
            raise ValueError(f"{name}: expected one value per row ({n}); got shape {arr.shape}")
    if np.any(q_pos < 0) or np.any(k_pos < 0):
        raise ValueError("q_pos/k_pos: positions must be >= 0")
    q_bucket = (q_pos // bucket_size).astype(np.int64) if q_bucket is None else np.asarray(q_bucket, dtype=np.int64)
    k_bucket = (k_pos // bucket_size).astype(np.int64) if k_bucket is None else np.asarray(k_bucket, dtype=np.int64)
    dim = int(q.shape[1])

    # The published order: orientation from every key, then each kind subsampled on its own.
    n_q_all, n_k_all = q.shape[0], k.shape[0]
    subsample = max_tokens_per_head is not None and max(n_q_all, n_k_all) > max_tokens_per_head
    sign = key_orientation(k, torch.from_numpy(k_bucket)) if subsample else None
    if max_tokens_per_head is not None and n_q_all > max_tokens_per_head:
        keep = np.random.default_rng(seed).choice(n_q_all, size=max_tokens_per_head, replace=False)
        q, q_pos, q_bucket = q[torch.from_numpy(keep)], q_pos[keep], q_bucket[keep]
    if max_tokens_per_head is not None and n_k_all > max_tokens_per_head:
        keep = np.random.default_rng(seed).choice(n_k_all, size=max_tokens_per_head, replace=False)
        k, k_pos, k_bucket, k_example = k[torch.from_numpy(keep)], k_pos[keep], k_bucket[keep], k_example[keep]
    noise_dims = (
        np.random.default_rng(seed).choice(dim - 1, size=min(normality_max_dims, dim - 1), replace=False)
        if dim > 1
        else np.zeros(0, dtype=np.int64)
    )
    lookback = window_lookback(sliding_window, bucket_size)
    width = float(grid_width) if grid_width is not None else float(bucket_size)
    injected = None
    if pairs is not None:
        injected = tuple(torch.as_tensor(np.asarray(a, dtype=np.int64)) for a in pairs)
    out = plasticity_head(
        q,
        torch.from_numpy(q_pos),
        torch.from_numpy(q_bucket),
        k,
        torch.from_numpy(k_pos),
        torch.from_numpy(k_bucket),
        torch.from_numpy(k_example),
        mode=mode,
        pairs_per_cell=int(pairs_per_cell),
        seed=int(seed + 10007 * layer + 379 * head),
        lookback=lookback,
        bucket_size=bucket_size,
        grid_width=width,
        grid_midpoint=query_position == "midpoint",
        min_queries=int(min_queries),
        full_covariance=covariance == "full",
        noise_ks_dims=[int(j) for j in noise_dims],
        sign=sign,
        pairs=injected,
    )
    model = out["model"]
    cells = pd.DataFrame({key: value.numpy() for key, value in out["cells"].items()})
    if mode == "thesis":
        cells["k_bucket"] = np.nan
    drawn = {key: value.numpy() for key, value in out["pairs"].items()}

    ap_overall = _head_ap(cells, mode)
    noise_p = model["noise_ks_p"].numpy()
    mae_baseline = float(model["mae_baseline"])
    row = {
        "layer": layer,
        "head": head,
        "kv_head": kv_head,
        "mode": mode,
        "n_q_tokens": int(q.shape[0]),
        "n_k_tokens": int(k.shape[0]),
        "d_model": dim,
        "q_R2_pos": float(model["r2_pos"]),
        "q_beta_norm": float(model["beta_norm"]),
        "q_R2_scalar": float(model["r2_scalar"]),
        "q_mae_baseline": mae_baseline,
        "q_mae_proj": float(model["mae_proj"]),
        "q_mae_ratio": float(model["mae_proj"]) / mae_baseline if mae_baseline > 0 else 1.0,
        "q_resid0_skew": float(model["resid0_skew"]),
        "q_resid0_kurt": float(model["resid0_kurt"]),
        "q_resid0_ks_p": float(model["resid0_ks_p"]),
        "q_noise_med_abs_skew": float(model["noise_med_abs_skew"]),
        "q_noise_med_abs_kurt": float(model["noise_med_abs_kurt"]),
        "q_noise_med_ks_p": float(np.median(noise_p)) if len(noise_p) else 1.0,
        "q_noise_frac_ks_p_lt_alpha": float(np.mean(noise_p < p_alpha)) if len(noise_p) else 0.0,
        "ap_overall": ap_overall,
        "alpha_pos": float(model["alpha_rot"][0]),
        "beta_pos": float(model["beta_rot"][0]),
        "sigma_pos": math.sqrt(max(float(model["resid_var"][0]), 0.0)),
        "sliding_window": sliding_window,
        "lookback_buckets": lookback,
        "n_cells": int(cells["ap"].notna().sum()),
        "n_pairs": int(cells["n_pairs"].sum()),
    }
    pair_frame = _pair_frame(drawn, cells, k_pos)
    bin_width = int(heatmap_bin) if heatmap_bin is not None else bucket_size
    heatmap = _heatmap(pair_frame, bin_width)
    components = _components(model["r2"].numpy())
    ids = {"layer": layer, "head": head, "kv_head": kv_head}
    for frame in (cells, heatmap, components):
        for i, (key, value) in enumerate(ids.items()):
            frame.insert(i, key, value)
    if keep_pairs:
        for i, (key, value) in enumerate(ids.items()):
            pair_frame.insert(i, key, value)
    return HeadPlasticity(row, cells, heatmap, components, pair_frame if keep_pairs else None)


def _head_ap(cells: pd.DataFrame, mode: str) -> float:
    valid = cells[cells["ap"].notna()]
    if valid.empty:
        return float("nan")
    if mode == "published":
        return float(valid["ap"].mean())
    # Thesis: cells weigh by their number of queries (the thesis's "bucket-size-weighted mean").
    return float(np.average(valid["ap"], weights=valid["n_queries"]))


def _pair_frame(drawn: dict, cells: pd.DataFrame, k_pos: np.ndarray) -> pd.DataFrame:
    t1 = k_pos[drawn["first"]]
    t2 = k_pos[drawn["second"]]
    tau = cells["tau"].to_numpy()[drawn["cell"]]
    return pd.DataFrame(
        {
            "cell": drawn["cell"],
            "q_cell": cells["q_cell"].to_numpy()[drawn["cell"]],
            "tau": tau,
            "first": drawn["first"],
            "second": drawn["second"],
            "k1_pos": t1,
            "k2_pos": t2,
            "key_distance": np.abs(t1 - t2),
            "query_distance": tau - 0.5 * (t1 + t2),
            "m": drawn["m"],
            "v": drawn["v"],
            "pp": drawn["pp"],
            "used": drawn["used"],
        }
    )


def _heatmap(pairs: pd.DataFrame, bin_width: int) -> pd.DataFrame:
    """PP summed per (inter-key distance bin, query-to-midpoint distance bin) over the used draws."""
    if bin_width < 1:
        raise ValueError(f"heatmap_bin must be >= 1; got {bin_width}")
    used = pairs["used"].to_numpy()
    delta_bin = (pairs["key_distance"].to_numpy()[used] // bin_width).astype(np.int64)
    distance_bin = np.floor(pairs["query_distance"].to_numpy()[used] / bin_width).astype(np.int64)
    # One integer per (delta, distance) bin, then bincount: a groupby without pandas' overhead.
    offset = int(distance_bin.min()) if len(distance_bin) else 0
    span = int(distance_bin.max()) - offset + 1 if len(distance_bin) else 1
    cells, index = np.unique(delta_bin * span + (distance_bin - offset), return_inverse=True)
    return pd.DataFrame(
        {
            "delta_bin": cells // span,
            "distance_bin": cells % span + offset,
            "bin_width": bin_width,
            "pp_sum": np.bincount(index, weights=pairs["pp"].to_numpy()[used], minlength=len(cells)),
            "n_pairs": np.bincount(index, minlength=len(cells)).astype(np.int64),
        }
    )


def _components(r2: np.ndarray) -> pd.DataFrame:
    """The published component weights: R²₊ = max(R²_j, 0) on the oriented native basis, normalised
    (1/d each when no dimension carries position). HF's rotate_half pairs j with j + d/2."""
    positive = np.clip(np.nan_to_num(r2, nan=0.0), 0.0, None)
    total = positive.sum()
    dim = len(r2)
    weight = positive / total if total > 0 else np.full(dim, 1.0 / dim)
    return pd.DataFrame(
        {
            "component": np.arange(dim),
            "component_r2": r2,
            "component_weight": weight,
            "rope_pair": np.arange(dim) % max(dim // 2, 1),
        }
    )


# ---- capture folders ----


@dataclass
class PlasticityTables:
    """Every head of one capture folder: ``heads`` (one row per (layer, head): the published
    tool's columns plus ``ap_overall`` of the chosen mode, ``alpha_pos``, ``beta_pos``, ``sigma_pos``,
    ``uses_rope``), ``cells``, ``heatmap``, ``components`` (see :class:`HeadPlasticity`) and ``meta``
    (mode, bucket size, context length, window rule, options). Series add ``checkpoint``/``step``."""

    heads: pd.DataFrame
    cells: pd.DataFrame
    heatmap: pd.DataFrame
    components: pd.DataFrame
    meta: dict = field(default_factory=dict)


def analyze(
    qk_dir,
    mode: Mode = "thesis",
    *,
    heads: Iterable[tuple[int, int]] | None = None,
    bucket_size: int | None = None,
    context_length: int | None = None,
    gqa_group: int | None = None,
    progress: bool = False,
    **options,
) -> PlasticityTables:
    """Attention plasticity of every captured query head of a capture folder (the layout of docs/capture.md, 'Files', from
    Spectra's Probe or qk-sniffer), each with its KV head's keys.

    ``bucket_size`` defaults to the Spectra capture's sampler bucket (when > 1), else it is inferred
    from the files' ``bucket`` column (uniform buckets); a capture with one-token buckets gets 16
    buckets over its captured context. ``context_length`` (for context fractions)
    defaults to (last query bucket + 1) × B. ``heads`` restricts the (layer, head) pairs. The sliding
    window of a head comes from its query rows. Other ``options`` go to :func:`analyze_head`.

    Example:
        >>> import tempfile, torch, spectra
        >>> from spectra import zoo, plasticity
        >>> model, tok = zoo.load("tiny-qwen3")
        >>> out = tempfile.mkdtemp()
        >>> with spectra.Probe(model, layers=[1], heads=[0, 5], out_dir=out), torch.no_grad():
        ...     for i in range(2):
        ...         _ = model(tok(zoo.heldout_text()[3000 * i:3000 * (i + 1)], return_tensors="pt").input_ids[:, :256])
        >>> tables = plasticity.analyze(out, bucket_size=32)
        >>> tables.heads[["layer", "head", "kv_head"]].values.tolist(), tables.meta["context_length"]
        ([[1, 0, 0], [1, 5, 1]], 256)
    """
    qk = open_qk_folder(qk_dir, gqa_group)
    folder, files, sidecar, kv_of = qk.path, qk.files, qk.sidecar, qk.kv_head
    targets = files["q"]
    if heads is not None:
        wanted = {(int(a), int(b)) for a, b in heads}
        missing = sorted(wanted - set(targets))
        if missing:
            raise ValueError(f"heads: {missing} not captured in {folder}; captured: {targets}")
        targets = [t for t in targets if t in wanted]

    sampler_bucket = (sidecar.get("sampler") or {}).get("bucket_size")
    if bucket_size is None and sampler_bucket and int(sampler_bucket) > 1:
        bucket_size = int(sampler_bucket)
    uses_rope = (sidecar.get("model") or {}).get("uses_rope")
    rows, cells, heatmaps, components = [], [], [], []
    keys: dict[tuple[int, int], object] = {}
    last_bucket = -1
    for layer, head in tqdm(targets, desc="plasticity", unit="head", disable=not progress):
        kv = kv_of(head)
        if (layer, kv) not in files["k"]:
            raise FileNotFoundError(
                f"qk: {folder} has no key capture l{layer:02d}h{kv:02d}k/data.parquet "
                f"(the KV head of query head {head})"
            )
        if (layer, kv) not in keys:
            keys.clear()  # one layer's keys at a time
            keys[(layer, kv)] = read_capture(folder, layer, kv, "k")
        kr = keys[(layer, kv)]
        qr = read_capture(folder, layer, head, "q")
        if bucket_size is None:
            bucket_size = infer_bucket_size(qr.positions.numpy(), qr.buckets.numpy())
            if bucket_size == 1:
                # A capture without buckets (every position its own): 16 buckets over the
                # captured context, the thesis's layout.
                bucket_size = max(1, (int(qr.positions.max()) + 1) // 16)
        window = _sliding_window_of(read_sliding_window(folder, layer, head, "q"), f"layer {layer} head {head}")
        # Published mode keeps the files' own buckets; the thesis grid works on positions.
        own_buckets = mode == "published" and (sampler_bucket is None or int(sampler_bucket) == bucket_size)
        result = analyze_head(
            qr.vectors,
            qr.positions.numpy(),
            kr.vectors,
            kr.positions.numpy(),
            kr.example_ids.numpy(),
            q_bucket=qr.buckets.numpy() if own_buckets else None,
            k_bucket=kr.buckets.numpy() if own_buckets else None,
            bucket_size=bucket_size,
            layer=layer,
            head=head,
            kv_head=kv,
            mode=mode,
            sliding_window=window,
            **options,
        )
        last_bucket = max(last_bucket, int(qr.positions.max()) // bucket_size)
        row = result.row
        if uses_rope is not None:
            row["uses_rope"] = bool(uses_rope[layer])
        rows.append(row)
        cells.append(result.cells)
        heatmaps.append(result.heatmap)
        components.append(result.components)
    context = int(context_length) if context_length is not None else (last_bucket + 1) * bucket_size
    if context < 1:
        raise ValueError(f"context_length must be >= 1; got {context}")
    model = sidecar.get("model") or {}
    meta = {
        "qk_dir": str(folder),
        "mode": mode,
        "bucket_size": bucket_size,
        "context_length": context,
        "window_rule": "lookback = ceil(sliding_window / bucket_size) key buckets (the published tool used floor(W))",
        "model": model.get("name_or_path"),
        "family": model.get("family"),
        "n_layers": model.get("n_layers"),
        "n_heads": model.get("n_heads"),
        "n_kv_heads": model.get("n_kv_heads"),
        "options": {key: value for key, value in options.items() if key not in ("pairs",)},
    }
    return PlasticityTables(
        pd.DataFrame(rows),
        pd.concat(cells, ignore_index=True),
        pd.concat(heatmaps, ignore_index=True),
        pd.concat(components, ignore_index=True),
        meta,
    )


def series(
    qk_dirs: Sequence[str | Path], mode: Mode = "thesis", *, labels: Sequence[str] | None = None, **options
) -> PlasticityTables:
    """:func:`analyze` over several capture folders (models or checkpoints of one model); every table
    gains ``checkpoint`` (the label, default the folder name) and ``step`` (from ``step-N`` /
    ``checkpoint-N`` folder names or the captured model path, else NaN).

    Example:
        >>> series([], mode="thesis")
        Traceback (most recent call last):
        ...
        ValueError: qk: give at least one capture folder
    """
    dirs = [Path(d) for d in qk_dirs]
    if not dirs:
        raise ValueError("qk: give at least one capture folder")
    if labels is not None and len(labels) != len(dirs):
        raise ValueError(f"labels: expected {len(dirs)} labels (one per folder); got {len(labels)}")
    parts: list[PlasticityTables] = []
    metas = []
    for i, folder in enumerate(dirs):
        tables = analyze(folder, mode, **options)
        label = labels[i] if labels is not None else folder.name
        step = capture_step(folder, tables.meta.get("model"))
        for name in ("heads", "cells", "heatmap", "components"):
            frame = getattr(tables, name)
            frame.insert(0, "checkpoint", label)
            frame.insert(1, "step", step if step is not None else np.nan)
        parts.append(tables)
        metas.append({"label": label, "step": step, **tables.meta})
    return PlasticityTables(
        *(
            pd.concat([getattr(p, name) for p in parts], ignore_index=True)
            for name in ("heads", "cells", "heatmap", "components")
        ),
        meta={"checkpoints": metas},
    )
