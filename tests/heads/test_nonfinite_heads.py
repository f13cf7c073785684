"""NaN weights: head_stats and head_geometry report NaN (never 0.0) for the heads whose per-token values
are NaN, and the taxonomy labels those heads non_finite rather than unclassified."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from spectra.heads.head_geometry import head_geometry
from spectra.heads.stats import ATTENTION_STATS, head_stats
from spectra.heads.taxonomy import NON_FINITE, classify
from spectra.models.random_init import tiny_model

IDS = torch.randint(3, 90, (2, 32), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=["q_proj", "k_proj"])
def broken(request):
    """A tiny llama (2 layers) whose layer 1 has NaN q or k projection weights."""
    model = tiny_model("llama", "eager")
    with torch.no_grad():
        getattr(model.model.layers[1].self_attn, request.param).weight[:] = math.nan
    return model


def test_head_stats_are_nan_never_zero_for_nan_heads(broken):
    table = head_stats(broken, IDS, n_random=2, random_block=8)
    nan_heads, fine = table[table["layer"] == 1], table[table["layer"] == 0]
    for column in (*ATTENTION_STATS, "previous_token_score", "induction_score", "positional_score"):
        assert nan_heads[column].isna().all(), column
        assert fine[column].notna().all(), column
    assert (fine["k_eff_mean"] >= 1).all()


def test_head_geometry_is_nan_for_nan_vectors(broken):
    table = head_geometry(broken, [IDS])
    kind = "q" if table.loc[table["layer"] == 1, "q_norm_mean"].isna().all() else "k"
    nan_heads = table[table["layer"] == 1]
    for stat in ("norm_mean", "max_abs_mean", "participation_ratio_mean", "one_hotness_mean"):
        assert nan_heads[f"{kind}_{stat}"].isna().all(), stat
    assert nan_heads["qk_norm_ratio"].isna().all()
    assert table.loc[table["layer"] == 0, "qk_norm_ratio"].notna().all()


def test_the_taxonomy_labels_nan_heads_non_finite(broken):
    classes = classify(head_stats(broken, IDS, n_random=2, random_block=8))
    nan_heads, fine = classes[classes["layer"] == 1], classes[classes["layer"] == 0]
    assert (nan_heads["class"] == NON_FINITE).all()
    assert nan_heads["score"].isna().all() and nan_heads["margin"].isna().all() and (nan_heads["runner_up"] == "").all()
    assert NON_FINITE not in set(fine["class"])


def test_a_head_with_some_nan_scores_is_still_classified_by_the_others():
    stats = pd.DataFrame(
        {
            "layer": [0, 0],
            "head": [0, 1],
            "sink_mass_mean": [0.9, np.nan],
            "induction_score": [np.nan] * 2,
            "previous_token_score": [np.nan] * 2,
            "positional_score": [np.nan] * 2,
            "entropy_normalized_mean": [0.1, np.nan],
        }
    )
    assert classify(stats)["class"].tolist() == ["static_sink", NON_FINITE]
