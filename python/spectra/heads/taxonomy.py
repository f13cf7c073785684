"""Head taxonomy (seeds 003/004; see docs/heads.md, 'spectra.taxonomy.classify'): each head gets one class from its ``head_stats`` row.

Every class has a score in [0, 1] and a threshold; a head takes the first class, in the order
below, whose score reaches its threshold, else ``unclassified``. The seeds gave no formal
thresholds; these defaults are exposed as :class:`Thresholds` and were validated on planted heads
(``spectra.models.planted_heads``), where every built head is recovered with a wide margin.

| class | score | default threshold |
|---|---|---|
| ``static_sink`` | ``sink_mass_mean``: mean weight on key 0 over text (Oculi's "bos" rule: > 0.5) | 0.5 |
| ``induction`` | ``induction_score`` (repeated random blocks: weight on the token after the earlier occurrence) | 0.3 |
| ``previous_token`` | ``previous_token_score`` (weight on key t − 1) | 0.5 |
| ``positional`` | ``positional_score`` (focus set by position alone, content-free) | 0.5 |
| ``gatherer`` | ``entropy_normalized_mean`` (H / ln n_visible over text: diffuse attention) | 0.8 |
| ``semantic_retriever`` | ``(1 − entropy_normalized_mean) · (1 − positional_score)``: focused, but not by position | 0.45 |

Sinks come first because a sink is also "positional" and focused; induction comes before
previous-token because an induction head on repeated blocks is the more specific pattern. The
seeds' other sink evidence — a high key norm and axis-aligned "golden dimensions" — is reported
next to the class (``k_norm_mean``, ``k_one_hotness_mean``), not required: a sink can be built
without it (the planted one is).

``margin`` is score − threshold of the assigned class (for ``unclassified``: the largest
score − threshold of any class, negative), and ``runner_up`` the best other class by that gap.

A head whose every class score is NaN (its statistics came out NaN: NaN weights or activations)
is ``non_finite``, with NaN ``score`` and ``margin`` and no ``runner_up`` (""): not ``unclassified``,
which says the head was measured and matched no class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

__all__ = ["CLASSES", "NON_FINITE", "Thresholds", "class_scores", "classify"]

#: The class of a head whose every class score is NaN (nothing about it could be measured).
NON_FINITE = "non_finite"

CLASSES: tuple[str, ...] = (
    "static_sink",
    "induction",
    "previous_token",
    "positional",
    "gatherer",
    "semantic_retriever",
)


@dataclass(frozen=True)
class Thresholds:
    """The score each class must reach (see the module docstring)."""

    static_sink: float = 0.5
    induction: float = 0.3
    previous_token: float = 0.5
    positional: float = 0.5
    gatherer: float = 0.8
    semantic_retriever: float = 0.45

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: threshold {value!r} is outside [0, 1]")


REQUIRED = (
    "layer",
    "head",
    "sink_mass_mean",
    "induction_score",
    "previous_token_score",
    "positional_score",
    "entropy_normalized_mean",
)


def class_scores(stats: pd.DataFrame) -> pd.DataFrame:
    """``score_<class>`` for every class, one row per head of ``stats``."""
    missing = [c for c in REQUIRED if c not in stats.columns]
    if missing:
        raise KeyError(
            f"stats: missing column(s) {missing}; pass the table of spectra.head_stats (it has {list(stats.columns)})"
        )
    focused = 1.0 - stats["entropy_normalized_mean"]
    return pd.DataFrame(
        {
            "score_static_sink": stats["sink_mass_mean"],
            "score_induction": stats["induction_score"],
            "score_previous_token": stats["previous_token_score"],
            "score_positional": stats["positional_score"],
            "score_gatherer": stats["entropy_normalized_mean"],
            "score_semantic_retriever": focused * (1.0 - stats["positional_score"]),
        },
        index=stats.index,
    )


def classify(stats: pd.DataFrame, thresholds: Thresholds | None = None) -> pd.DataFrame:
    """``layer, head, kv_head`` (if present), ``class``, ``score``, ``margin``, ``runner_up`` and every
    ``score_<class>``, plus the sink evidence columns of ``stats`` when present.

    Example:
        >>> stats = pd.DataFrame({"layer": [0, 0], "head": [0, 1], "sink_mass_mean": [0.9, 0.05],
        ...     "induction_score": [0.0, 0.01], "previous_token_score": [0.0, 0.1], "positional_score": [0.9, 0.1],
        ...     "entropy_normalized_mean": [0.1, 0.95]})
        >>> classify(stats)[["head", "class"]].values.tolist()
        [[0, 'static_sink'], [1, 'gatherer']]
    """
    if not isinstance(stats, pd.DataFrame) or stats.empty:
        raise ValueError("stats: expected the non-empty table of spectra.head_stats")
    thresholds = thresholds or Thresholds()
    if not isinstance(thresholds, Thresholds):
        raise TypeError(f"thresholds: expected spectra.taxonomy.Thresholds; got {type(thresholds).__name__}")
    scores = class_scores(stats)
    limits = np.array([getattr(thresholds, c) for c in CLASSES])
    values = scores[[f"score_{c}" for c in CLASSES]].to_numpy(dtype=np.float64)
    gaps = np.where(np.isnan(values), -np.inf, values - limits)  # NaN scores never qualify
    reached = gaps >= 0
    first = np.where(reached.any(1), reached.argmax(1), -1)
    names = np.array(CLASSES)
    label = np.where(first >= 0, names[np.maximum(first, 0)], "unclassified")
    rows = np.arange(len(values))
    best_gap = gaps.max(1)
    margin = np.where(first >= 0, gaps[rows, np.maximum(first, 0)], best_gap)
    score = np.where(first >= 0, values[rows, np.maximum(first, 0)], np.nan)
    others = gaps.copy()
    others[rows[first >= 0], first[first >= 0]] = -np.inf
    runner = names[others.argmax(1)]
    keep = [c for c in ("layer", "head", "kv_head") if c in stats.columns]
    out = stats[keep].copy()
    out["class"] = label
    out["score"] = score
    out["margin"] = margin
    out["runner_up"] = runner
    unmeasured = np.isnan(values).all(1)
    if unmeasured.any():
        out.loc[unmeasured, "class"] = NON_FINITE
        out.loc[unmeasured, "margin"] = np.nan
        out.loc[unmeasured, "runner_up"] = ""
    out = pd.concat([out, scores], axis=1)
    for evidence in ("k_norm_mean", "k_one_hotness_mean", "entropy_mean"):
        if evidence in stats.columns:
            out[evidence] = stats[evidence]
    return out.reset_index(drop=True)
