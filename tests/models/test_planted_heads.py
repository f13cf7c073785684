"""Planted heads: a GPT-2 whose weights are set by hand (spectra.models.planted_heads). Their attention is
checked from the model's own output_attentions, then the taxonomy must recover every one."""

from __future__ import annotations

import pytest
import torch

import spectra
from spectra.heads.taxonomy import classify
from spectra.models.planted_heads import PLANTED, planted_model, repeated_random_tokens

BLOCK = 16
EXPECTED_CLASS = {
    "sink": "static_sink",
    "previous_token": "previous_token",
    "gatherer": "gatherer",
    "positional": "positional",
    "induction": "induction",
}


@pytest.fixture(scope="module")
def planted():
    return planted_model()


def test_the_planted_patterns(planted):
    model, _ = planted
    ids = repeated_random_tokens(8, BLOCK)
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    a0, a1 = (a.double() for a in out.attentions)
    t = torch.arange(2 * BLOCK)
    second = t[BLOCK:]
    assert a0[:, 0, 1:, 0].min() >= 0.95 and a1[:, 2, 1:, 0].min() >= 0.95  # sinks
    assert a0[:, 1, t[1:], t[1:] - 1].min() >= 0.9  # previous token
    assert a0[:, 3, t[2:], t[2:] - 2].min() >= 0.9  # fixed offset 2
    uniform = torch.tril(torch.ones(2 * BLOCK, 2 * BLOCK, dtype=torch.float64)) / (t + 1.0)[:, None]
    for layer, head in ((0, 2), (1, 1), (1, 3)):
        torch.testing.assert_close((a0, a1)[layer][:, head], uniform.expand(8, -1, -1), atol=1e-6, rtol=0)
    assert a1[:, 0, second, second - BLOCK + 1].mean() >= 0.8  # induction
    assert torch.isfinite(out.logits).all()


def test_the_taxonomy_recovers_every_planted_head(planted):
    model, labels = planted
    text = torch.randint(1, 32, (4, 48), generator=torch.Generator().manual_seed(1))
    table = classify(spectra.head_stats(model, text, n_random=8, random_block=BLOCK)).set_index(["layer", "head"])
    assert set(labels) == set(PLANTED) and len(labels) == len(table)
    for key, label in labels.items():
        row = table.loc[key]
        assert row["class"] == EXPECTED_CLASS[label], (key, label, row.to_dict())
        assert row["margin"] >= 0.19, (key, row["margin"])  # recovered with room to spare (gatherers: 1.0 - 0.8)


def test_repeated_random_tokens_bad_block():
    with pytest.raises(ValueError, match="block"):
        repeated_random_tokens(1, 40)
