"""Downstream effects on a model without a trained LM head (a bare encoder): the relative change of
its last hidden state under its own name, never a "KL" of softmaxed hidden states; models with
logits keep KL and Δloss and get no hidden-state number."""

from __future__ import annotations

import math

import numpy as np
import torch

import spectra
from spectra import ScaleKey, ScaleQuery
from spectra.interventions.checks import hidden_change
from spectra.interventions.scale_sweep import scale_sweep
from spectra.models.random_init import VOCAB_SIZE, tiny_model


def batch(t: int = 9):
    ids = torch.randint(3, VOCAB_SIZE, (2, t), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, t, dtype=torch.long)
    mask[1, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_hidden_change_is_the_mean_relative_change_over_real_tokens():
    base = torch.ones(1, 3, 2)
    new = base.clone()
    new[0, 0] *= 2.0  # relative change 1 on token 0
    new[0, 2] *= 5.0  # a padding token: ignored
    valid = torch.tensor([[True, True, False]])
    assert hidden_change(base, new, valid).tolist() == [0.5]


def test_isolation_on_a_bare_encoder_reports_the_hidden_state_change():
    model = tiny_model("bert", "sdpa")
    report = spectra.check_isolation(model, ScaleQuery(1, 0, 2.0), batch())
    assert report.ok, str(report)
    assert report.output == "last_hidden_state"
    assert math.isnan(report.kl_logits) and math.isnan(report.delta_loss)
    assert report.hidden_change > 0
    assert "no LM head" in str(report) and "KL" not in str(report)
    identity = spectra.check_isolation(model, ScaleKey(1, 0, 1.0), batch())
    assert identity.ok and identity.hidden_change == 0.0


def test_isolation_on_a_language_model_keeps_kl():
    model = tiny_model("llama", "sdpa")
    report = spectra.check_isolation(model, ScaleQuery(1, 0, 2.0), batch())
    assert report.output == "logits" and report.kl_logits > 0 and math.isnan(report.hidden_change)
    assert "KL(base || intervened)" in str(report)


def test_propagated_sweep_of_an_encoder_has_hidden_change_not_kl():
    inputs = batch()
    encoder = scale_sweep(
        tiny_model("bert", "sdpa"),
        inputs["input_ids"],
        [(0, 1)],
        (0.5, 1.0, 2.0),
        attention_mask=inputs["attention_mask"],
        kinds=("q",),
        mode="propagated",
    )
    moved = encoder[encoder["alpha"] != 1.0]
    assert np.isfinite(moved["hidden_change"]).all() and (moved["hidden_change"] > 0).all()
    assert (encoder.loc[encoder["alpha"] == 1.0, "hidden_change"] == 0.0).all()
    assert encoder["kl_logits"].isna().all()
    decoder = scale_sweep(
        tiny_model("llama", "sdpa"),
        inputs["input_ids"],
        [(0, 1)],
        (0.5, 1.0),
        attention_mask=inputs["attention_mask"],
        kinds=("q",),
        mode="propagated",
    )
    assert "hidden_change" not in decoder.columns and decoder["kl_logits"].notna().all()
