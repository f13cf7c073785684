"""Head statistics, head geometry and training dynamics of bfloat16 and float16 models on the CPU:
finite, and close to the float32 model's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import spectra
from spectra.data.windows import load_windows
from spectra.heads.dynamics import track
from spectra.models import zoo
from spectra.models.loading import load_model

HALF = ("bfloat16", "float16")
#: Statistics compared with the float32 run (means over tokens, so rounding averages out).
COLUMNS = ["q_norm_mean", "k_norm_mean", "qk_norm_ratio", "entropy_mean", "max_attn_mean", "sink_mass_mean"]


@pytest.fixture(scope="module")
def stats():
    tables = {}
    for dtype in ("float32", *HALF):
        model, tokenizer = load_model("tiny-qwen3", dtype=dtype, device="cpu")
        windows = load_windows(None, tokenizer, 32, 2)
        tables[dtype] = (
            spectra.head_stats(model, windows, n_random=2, random_block=8),
            spectra.head_geometry(model, [windows]),
        )
    return tables


@pytest.mark.parametrize("dtype", HALF)
def test_head_stats_and_geometry_in_half_precision_are_close_to_float32(stats, dtype):
    for part in (0, 1):
        full, half = stats["float32"][part], stats[dtype][part]
        assert list(half.columns) == list(full.columns) and len(half) == len(full)
        floats = [c for c in full.columns if full[c].dtype.kind == "f"]
        assert all(half[c].dtype.kind == "f" for c in floats)
        assert (np.isfinite(half[floats]) == np.isfinite(full[floats])).all().all()
    full, half = stats["float32"][0], stats[dtype][0]
    np.testing.assert_allclose(half[COLUMNS].to_numpy(), full[COLUMNS].to_numpy(), rtol=0.05, atol=0.02)


@pytest.mark.parametrize("dtype", HALF)
def test_dynamics_tracks_checkpoints_loaded_in_half_precision(dtype):
    folders = zoo.checkpoint_paths("tiny-qwen3")[-2:]
    settings = {"context_length": 32, "n_samples": 2, "n_random": 2, "random_block": 8}
    full = track(folders, **settings)
    half = track(folders, **settings, dtype=dtype, device=torch.device("cpu"))
    assert half.steps == full.steps
    keys = ["step", "layer", "head", "stat"]
    pd.testing.assert_frame_equal(half.head_series[keys], full.head_series[keys])
    compared = full.head_series["stat"].isin(["q_norm_mean", "k_norm_mean", "entropy_mean"]).to_numpy()
    values = [f.head_series["value"].to_numpy()[compared] for f in (full, half)]
    assert np.isfinite(values[1]).all()
    np.testing.assert_allclose(values[1], values[0], rtol=0.05, atol=0.02)
    assert np.isfinite(half.gamma.select_dtypes("float")).all().all()
