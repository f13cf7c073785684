"""Inputs that used to mislead: token ids outside the model's vocabulary, all-padding rows, and NaN
activations in more heads than the error lists -- each a clear message naming the argument."""

from __future__ import annotations

import warnings

import pytest
import torch

from spectra.capture.forward import run_model
from spectra.heads.stats import head_stats
from spectra.metrics.profile import LISTED_HEADS, NonFiniteActivationError, profile
from spectra.models.loading import load_model
from spectra.models.random_init import VOCAB_SIZE, tiny_model


@pytest.fixture(scope="module")
def small():
    return tiny_model("llama")


def test_a_token_id_past_the_vocabulary_is_a_value_error_before_the_forward(small):
    ids = torch.tensor([[1, 2, VOCAB_SIZE + 3]])
    message = rf"input_ids: token id {VOCAB_SIZE + 3} is out of range for the model's vocabulary of {VOCAB_SIZE} tokens"
    with pytest.raises(ValueError, match=message):
        run_model(small, ids)
    with pytest.raises(ValueError, match=message):
        profile(small, ids)
    with pytest.raises(ValueError, match=message):
        head_stats(small, ids.expand(2, 3).contiguous(), n_random=1, random_block=4)
    with pytest.raises(ValueError, match=r"input_ids: token id -1 is out of range"):
        run_model(small, torch.tensor([[1, -1, 2]]))


def test_a_tokenizer_larger_than_the_embedding_is_named(small):
    _, tokenizer = load_model("tiny-llama")  # 4096 tokens, against the tiny model's 97
    ids = tokenizer("In the beginning God created the heaven and the earth.", return_tensors="pt").input_ids
    assert int(ids.max()) >= VOCAB_SIZE
    with pytest.raises(ValueError, match=rf"vocabulary of {VOCAB_SIZE} tokens .*does the tokenizer belong"):
        profile(small, ids)


def test_ids_inside_the_vocabulary_still_run(small):
    table = profile(small, torch.tensor([[1, 2, VOCAB_SIZE - 1, 0]]))
    assert len(table) and table["token"].max() == 3


def test_all_padding_rows(small):
    ids = torch.randint(1, VOCAB_SIZE, (3, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[1] = 0
    with pytest.warns(UserWarning, match=r"attention_mask: batch row\(s\) 1 are all padding"):
        table = profile(small, ids, mask)
    assert sorted(table["sample"].unique()) == [0, 2]
    with pytest.warns(UserWarning, match=r"attention_mask: sample\(s\) 11 are all padding"):
        profile(small, ids, mask, sample_ids=[10, 11, 12])
    with pytest.raises(ValueError, match=r"attention_mask: every row is padding \(rows 0, 1, 2 have no real token\)"):
        profile(small, ids, torch.zeros_like(mask))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(profile(small, ids, torch.ones_like(mask))) == len(table) * 3 // 2


def test_the_nonfinite_error_counts_and_lists_every_head():
    model, _ = load_model("tiny-llama")  # 4 layers x 8 heads
    with torch.no_grad():
        for layer in (2, 3):  # NaN reaches every later layer: 16 heads
            model.model.layers[layer].self_attn.q_proj.weight[:] = float("nan")
    ids = torch.randint(3, 4000, (1, 16), generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteActivationError) as error:
        profile(model, ids)
    message = str(error.value)
    assert "of 16 head(s): " in message
    listed = message.split("head(s): ")[1].split(";")[0]
    assert listed.count("rows)") == LISTED_HEADS and listed.endswith(f" and {16 - LISTED_HEADS} more")
    with pytest.raises(NonFiniteActivationError, match=r"of 8 head\(s\): L2H0 .*L2H7 \(16 rows\);"):
        profile(model, ids, layers=[2])
