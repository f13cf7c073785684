"""Model folders load with their own trained parts: an encoder bare, or with its masked-LM head only
when the weights hold one; never a randomly initialised head."""

from __future__ import annotations

import pytest
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, BertForMaskedLM, BertModel

from spectra import zoo
from spectra.models.random_init import tiny_config
from spectra.models.zoo.minilm import minilm_path
from spectra.models.zoo.model_classes import has_mlm_head, is_encoder, model_class


def save_with_tokenizer(model, folder):
    model.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((minilm_path() / name).read_bytes())


def test_a_bert_folder_loads_as_the_bare_encoder(tmp_path):
    config = tiny_config("bert", vocab_size=30522)
    save_with_tokenizer(BertModel(config), tmp_path)
    assert is_encoder(tmp_path) and not has_mlm_head(tmp_path)
    assert model_class(tmp_path) is AutoModel
    model, _ = zoo.load(tmp_path)
    assert type(model).__name__ == "BertModel"  # not BertLMHeadModel with a random head


def test_a_bert_folder_with_a_trained_mlm_head_keeps_it(tmp_path):
    config = tiny_config("bert", vocab_size=30522)
    save_with_tokenizer(BertForMaskedLM(config), tmp_path)
    assert has_mlm_head(tmp_path) and model_class(tmp_path) is AutoModelForMaskedLM
    model, _ = zoo.load(tmp_path)
    assert type(model).__name__ == "BertForMaskedLM"


def test_decoders_load_as_causal_lms_and_the_packaged_minilm_bare():
    assert model_class(zoo.model_path("tiny-llama")) is AutoModelForCausalLM
    assert model_class(minilm_path()) is AutoModel


def test_ignore_first_defaults_to_the_model_kind():
    from spectra import defaults
    from spectra.models import adapter_for, default_ignore_first, resolve_ignore_first
    from spectra.models.loading import load_model

    decoder, encoder = load_model("tiny-llama")[0], load_model("all-minilm-l6-v2")[0]
    assert adapter_for(decoder).causal and not adapter_for(encoder).causal
    assert default_ignore_first(decoder) == defaults.IGNORE_FIRST and default_ignore_first(encoder) == 0
    assert resolve_ignore_first(encoder, None) == 0 and resolve_ignore_first(encoder, 3) == 3
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="^ignore_first: expected an integer >= 0, or None"):
            resolve_ignore_first(decoder, bad)
