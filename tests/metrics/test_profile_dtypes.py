"""spectra.profile of a bfloat16 and a float16 model on the CPU: finite float columns where the float32
run has values, NaN where it has NaN, and per-head means close to the float32 run's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import spectra
from spectra.data.windows import load_windows
from spectra.models.loading import load_model

HALF = ("bfloat16", "float16")
COLUMNS = ["entropy", "max_attn", "k_eff", "sink_mass", "q_norm", "k_norm"]


@pytest.fixture(scope="module")
def profiles() -> dict[str, pd.DataFrame]:
    frames = {}
    for dtype in ("float32", *HALF):
        model, tokenizer = load_model("tiny-llama", dtype=dtype, device="cpu")
        frames[dtype] = spectra.profile(model, load_windows(None, tokenizer, 24, 2))
    return frames


@pytest.mark.parametrize("dtype", HALF)
def test_profile_of_a_half_precision_model_is_finite_and_close_to_float32(profiles, dtype):
    full, half = profiles["float32"], profiles[dtype]
    assert half.shape == full.shape
    assert (
        half[["sample", "layer", "head", "token"]].values == full[["sample", "layer", "head", "token"]].values
    ).all()
    for column in COLUMNS:
        assert half[column].dtype.kind == "f", column  # plain floats, never bf16 objects
        assert (half[column].isna() == full[column].isna()).all(), column
        assert np.isfinite(half[column].dropna()).all(), column
    means = [f.groupby(["layer", "head"])[COLUMNS].mean() for f in (full, half)]
    np.testing.assert_allclose(means[1].to_numpy(), means[0].to_numpy(), rtol=0.05, atol=0.05)
