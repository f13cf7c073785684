"""Aggregates of attention plasticity (see docs/plasticity.md, 'Aggregates'): per-head profiles over the
query position, deciles and quintiles of the context fraction, per-length bins, the head columns
``ap_first_20``/``ap_last_20``/``ap_drop``, the model report, and correlations with benchmark scores.

Definitions (ρ = τ / context_length):

* profile point: one query cell (thesis) or one query bucket (published: the mean of its key-bucket
  cells, as the published plot does);
* decile k: the mean AP of a head's points with ρ ∈ [k/10, (k+1)/10); quintiles likewise, so a quintile
  equals the mean of its two deciles when both hold equally many points;
* ``ap_first_20`` = quintile 0, ``ap_last_20`` = quintile 4, ``ap_drop`` = their difference;
* length bin i: points with τ in the doubling ranges [0, L/16), [L/16, L/8), [L/8, L/4), [L/4, L/2),
  [L/2, L) — for L = 128K the thesis's 0–8K … 64–128K bins; the per-length plasticity at length ℓ is
  the bin that ends at ℓ;
* model values are means over heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import pearsonr

from spectra.plasticity import PlasticityTables

__all__ = ["LENGTH_FRACTIONS", "fractions", "model_report", "profile", "score_correlations", "with_head_summary"]

#: Edges of the per-length bins as fractions of the context (doubling ranges).
LENGTH_FRACTIONS = (0.0, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)

# Columns that identify a head; ``step`` is left out because it is NaN for folders without a step
# (pandas drops NaN group keys), and ``checkpoint`` already names the folder.
_KEYS = ["checkpoint", "layer", "head", "kv_head"]


def _keys(frame: pd.DataFrame) -> list[str]:
    return [c for c in _KEYS if c in frame.columns]


def _context_lengths(tables: PlasticityTables) -> dict:
    if "checkpoints" in tables.meta:
        return {c["label"]: c["context_length"] for c in tables.meta["checkpoints"]}
    return {None: tables.meta["context_length"]}


def profile(tables: PlasticityTables) -> pd.DataFrame:
    """One row per (head, profile point): ``q_cell, tau, context_fraction, n_queries, ap``.

    Example:
        >>> import pandas as pd
        >>> cells = pd.DataFrame({"layer": 0, "head": 0, "kv_head": 0, "q_cell": [1, 1, 2], "k_bucket": [0, 0, 1],
        ...                       "tau": [12.0, 12.0, 20.0], "n_queries": 4, "ap": [0.5, 0.7, 0.4]})
        >>> t = PlasticityTables(pd.DataFrame(), cells, pd.DataFrame(), pd.DataFrame(), {"context_length": 32})
        >>> profile(t)[["q_cell", "context_fraction", "ap"]].values.tolist()
        [[1.0, 0.375, 0.6], [2.0, 0.625, 0.4]]
    """
    cells = tables.cells
    keys = _keys(cells)
    # Several key buckets per query bucket (published): the point is their mean, as the published plot.
    points = (
        cells.groupby(keys + ["q_cell"], sort=True, dropna=False)
        .agg(tau=("tau", "first"), n_queries=("n_queries", "first"), ap=("ap", "mean"))
        .reset_index()
    )
    if "step" in cells.columns:
        points.insert(1, "step", points["checkpoint"].map(cells.groupby("checkpoint")["step"].first()))
    contexts = _context_lengths(tables)
    if "checkpoint" in points.columns:
        length = points["checkpoint"].map(contexts).astype(float)
    else:
        length = float(contexts[None])
    points.insert(points.columns.get_loc("tau") + 1, "context_fraction", points["tau"] / length)
    return points


def _binned(profile_frame: pd.DataFrame, edges: Sequence[float], scheme: str) -> pd.DataFrame:
    keys = _keys(profile_frame)
    valid = profile_frame[profile_frame["ap"].notna()]
    rho = valid["context_fraction"].to_numpy()
    index = np.searchsorted(np.asarray(edges), rho, side="right") - 1
    inside = (index >= 0) & (index < len(edges) - 1)
    binned = valid[inside].assign(bin=index[inside])
    means = binned.groupby(keys + ["bin"], sort=True)["ap"].agg(["mean", "count"]).reset_index()
    heads = profile_frame[keys].drop_duplicates()
    grid = heads.merge(pd.DataFrame({"bin": np.arange(len(edges) - 1)}), how="cross")
    out = grid.merge(means, on=keys + ["bin"], how="left")
    out["count"] = out["count"].fillna(0).astype(np.int64)
    return pd.DataFrame(
        {
            **{k: out[k] for k in keys},
            "scheme": scheme,
            "bin": out["bin"],
            "lo": np.asarray(edges)[out["bin"]],
            "hi": np.asarray(edges)[out["bin"] + 1],
            "ap": out["mean"],
            "n_points": out["count"],
        }
    )


def fractions(profile_frame: pd.DataFrame) -> pd.DataFrame:
    """Per head: deciles, quintiles and length bins of the context fraction (``scheme``, ``bin``,
    ``lo``, ``hi``, ``ap``, ``n_points``; empty bins are NaN)."""
    return pd.concat(
        [
            _binned(profile_frame, np.linspace(0.0, 1.0, 11), "decile"),
            _binned(profile_frame, np.linspace(0.0, 1.0, 6), "quintile"),
            _binned(profile_frame, LENGTH_FRACTIONS, "length"),
        ],
        ignore_index=True,
    )


def with_head_summary(heads: pd.DataFrame, fraction_frame: pd.DataFrame) -> pd.DataFrame:
    """``heads`` with ``ap_first_20``, ``ap_last_20`` and ``ap_drop`` from the quintiles."""
    keys = [k for k in _keys(heads) if k != "kv_head"]
    quint = fraction_frame[fraction_frame["scheme"] == "quintile"]
    first = quint[quint["bin"] == 0].set_index(keys)["ap"].rename("ap_first_20")
    last = quint[quint["bin"] == 4].set_index(keys)["ap"].rename("ap_last_20")
    out = heads.drop(columns=[c for c in ("ap_first_20", "ap_last_20", "ap_drop") if c in heads.columns])
    out = out.join(first, on=keys).join(last, on=keys)
    out["ap_drop"] = out["ap_first_20"] - out["ap_last_20"]
    return out


def model_report(heads: pd.DataFrame, fraction_frame: pd.DataFrame, tables: PlasticityTables) -> pd.DataFrame:
    """One row per model/checkpoint: head means of ``ap_overall``, ``ap_first_20``, ``ap_last_20``,
    ``ap_drop``, the deciles ``decile_0..9``, quintiles ``quintile_0..4``, length bins ``ap_len_0..4``,
    RoPE-only and NoPE-only ``ap_overall`` (NaN without such layers) and the mean diagnostics."""
    group = "checkpoint" if "checkpoint" in heads.columns else None
    metas = tables.meta.get("checkpoints") or [{"label": None, **tables.meta}]
    rows = []
    for meta in metas:
        part = heads if group is None else heads[heads[group] == meta["label"]]
        fr = fraction_frame if group is None else fraction_frame[fraction_frame[group] == meta["label"]]
        row = {
            "checkpoint": meta.get("label") or meta.get("model") or "model",
            "step": meta.get("step"),
            "mode": meta["mode"],
            "model": meta.get("model"),
            "family": meta.get("family"),
            "context_length": meta["context_length"],
            "bucket_size": meta["bucket_size"],
            "n_heads": len(part),
        }
        for column in ("ap_overall", "ap_first_20", "ap_last_20", "ap_drop"):
            row[column] = float(part[column].mean())
        for scheme, prefix in (("decile", "decile_"), ("quintile", "quintile_"), ("length", "ap_len_")):
            means = fr[fr["scheme"] == scheme].groupby("bin")["ap"].mean()
            for b, value in means.items():
                row[f"{prefix}{int(b)}"] = float(value)
        if "uses_rope" in part.columns:
            rope = part["uses_rope"].astype(bool)
            row["ap_overall_rope"] = float(part.loc[rope, "ap_overall"].mean()) if rope.any() else float("nan")
            row["ap_overall_nope"] = float(part.loc[~rope, "ap_overall"].mean()) if (~rope).any() else float("nan")
        else:
            row["ap_overall_rope"] = row["ap_overall_nope"] = float("nan")
        for column in ("q_R2_pos", "q_beta_norm", "q_R2_scalar"):
            row[column] = float(part[column].mean())
        row["n_pairs"] = int(part["n_pairs"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def score_correlations(report: pd.DataFrame, fraction_frame: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlations of plasticity with benchmark scores.

    ``scores`` either has a ``checkpoint`` column and numeric score columns (one row per model; each
    of ``ap_overall``, ``ap_first_20``, ``ap_last_20`` and ``ap_drop`` is correlated with each score
    across models), or columns ``checkpoint``, ``length`` (tokens) and ``score`` (per-length scores,
    e.g. RULER at 4K…128K; the model's plasticity at length ℓ is its length bin ending at ℓ, i.e.
    points with τ ∈ [ℓ/2, ℓ)). Returns ``scope, checkpoint, metric, score, n, r, p``; a correlation
    needs 3 points (fewer: skipped).
    """
    if "checkpoint" not in scores.columns:
        raise ValueError(f"scores: needs a 'checkpoint' column naming the model/checkpoint; got {list(scores.columns)}")
    known = set(report["checkpoint"].astype(str))
    scores = scores.assign(checkpoint=scores["checkpoint"].astype(str))
    unknown = sorted(set(scores["checkpoint"]) - known)
    if unknown:
        raise ValueError(f"scores: checkpoints {unknown} are not in the report (known: {sorted(known)})")
    out = []

    def add(scope, checkpoint, metric, score, x, y):
        x, y = np.asarray(x, float), np.asarray(y, float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3:
            return
        r, p = pearsonr(x[ok], y[ok])
        out.append(
            {
                "scope": scope,
                "checkpoint": checkpoint,
                "metric": metric,
                "score": score,
                "n": int(ok.sum()),
                "r": float(r),
                "p": float(p),
            }
        )

    if {"length", "score"} <= set(scores.columns):
        contexts = report.set_index(report["checkpoint"].astype(str))["context_length"]
        curve = _length_curve(fraction_frame, report)
        rows = []
        for _, s in scores.iterrows():
            length = float(s["length"])
            ctx = float(contexts[s["checkpoint"]])
            rows.append(
                (s["checkpoint"], curve.get((s["checkpoint"], _bin_ending_at(length, ctx)), np.nan), s["score"])
            )
        frame = pd.DataFrame(rows, columns=["checkpoint", "ap", "score"])
        add("lengths", "all", "ap_length", "score", frame["ap"], frame["score"])
        for name, part in frame.groupby("checkpoint"):
            add("lengths", name, "ap_length", "score", part["ap"], part["score"])
    else:
        merged = report.assign(checkpoint=report["checkpoint"].astype(str)).merge(scores, on="checkpoint")
        score_columns = [c for c in scores.columns if c != "checkpoint" and pd.api.types.is_numeric_dtype(scores[c])]
        if not score_columns:
            raise ValueError("scores: no numeric score column besides 'checkpoint'")
        for metric in ("ap_overall", "ap_first_20", "ap_last_20", "ap_drop"):
            for score in score_columns:
                add("models", "all", metric, score, merged[metric], merged[score])
    return pd.DataFrame(out, columns=["scope", "checkpoint", "metric", "score", "n", "r", "p"])


def _bin_ending_at(length: float, context: float) -> int:
    """Index of the length bin whose upper edge is ``length`` (nearest in log scale)."""
    edges = np.asarray(LENGTH_FRACTIONS[1:]) * context
    return int(np.argmin(np.abs(np.log2(edges) - np.log2(max(length, 1.0)))))


def _length_curve(fraction_frame: pd.DataFrame, report: pd.DataFrame) -> dict:
    lengths = fraction_frame[fraction_frame["scheme"] == "length"]
    if "checkpoint" not in lengths.columns:
        lengths = lengths.assign(checkpoint=str(report["checkpoint"].iloc[0]))
    means = lengths.groupby([lengths["checkpoint"].astype(str), "bin"])["ap"].mean()
    return {(c, int(b)): float(v) for (c, b), v in means.items()}
