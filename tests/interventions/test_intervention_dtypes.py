"""Interventions on a bfloat16 and a float16 model on the CPU: the identity checks, the isolation check
(norm ratios within the dtype's eps), ablation and patching, and the local and propagated scale
sweeps, finite and close to the float32 model's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import spectra
from spectra.data.windows import load_windows
from spectra.interventions import scale_sweep
from spectra.models.loading import load_model

HALF = ("bfloat16", "float16")
HEADS = [(1, 0), (2, 5)]
ALPHAS = [0.5, 1.0, 2.0]
METRICS = ["entropy", "max_attn"]


@pytest.fixture(scope="module")
def models():
    loaded = {dtype: load_model("tiny-llama", dtype=dtype, device="cpu") for dtype in ("float32", *HALF)}
    return loaded, load_windows(None, loaded["float32"][1], 24, 2)


@pytest.fixture(scope="module")
def sweeps(models):
    loaded, windows = models
    tables = {}
    for dtype, (model, _) in loaded.items():
        local = scale_sweep(model, windows, heads=HEADS, alphas=ALPHAS, mode="local")
        propagated = scale_sweep(model, windows, heads=HEADS[:1], alphas=ALPHAS, mode="propagated", kinds=("q", "k"))
        tables[dtype] = (local, propagated)
    return tables


@pytest.mark.parametrize("dtype", HALF)
def test_checks_ablation_and_patching_work_in_half_precision(models, dtype):
    loaded, windows = models
    model = loaded[dtype][0]
    assert spectra.check_baseline(model, windows).logits_equal
    report = spectra.check_isolation(model, spectra.ScaleQuery(2, 5, 2.0), windows)  # raises on a failure
    assert report.dtype == str(model.dtype).removeprefix("torch.") and report.q_norm_ratios[5] == pytest.approx(
        2.0, rel=report.rtol
    )
    with torch.no_grad():
        base = model(windows).logits
        with spectra.intervene(model, spectra.AblateHead(1, 0)):
            ablated = model(windows).logits
        source = spectra.record_head_outputs(model, windows.flip(0), layers=[2], heads=[5])
        with spectra.intervene(model, spectra.PatchHead(2, 5, source)):
            patched = model(windows).logits
    for logits in (ablated, patched):
        assert logits.dtype == model.dtype and torch.isfinite(logits).all()
        assert not torch.equal(logits, base)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("mode", [0, 1], ids=["local", "propagated"])
def test_scale_sweeps_in_half_precision_are_finite_and_close_to_float32(sweeps, dtype, mode):
    full, half = sweeps["float32"][mode], sweeps[dtype][mode]
    assert len(half) == len(full)
    keys = ["mode", "kind", "layer", "head", "alpha", "sample"]
    keys = [k for k in keys if k in full.columns]
    full, half = full.sort_values(keys).reset_index(drop=True), half.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(half[keys], full[keys])
    for column in METRICS:
        assert half[column].dtype.kind == "f" and np.isfinite(half[column]).all(), column
    np.testing.assert_allclose(half[METRICS].to_numpy(), full[METRICS].to_numpy(), rtol=0.05, atol=0.02)
