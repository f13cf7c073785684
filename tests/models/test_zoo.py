"""The embedded zoo models load offline, are reproducible to train and have learned something."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from spectra.models import zoo
from spectra.models.zoo.corpus import chapters
from spectra.models.zoo.evaluate import perplexity
from spectra.models.zoo.train import TrainSettings, train_model


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any hub access would fail these tests instead of silently downloading.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_model_loads_offline_and_runs(name: str) -> None:
    model, tokenizer = zoo.load(name)
    assert not model.training and model.dtype == torch.float32
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (8, 2)
    inputs = tokenizer("In the beginning God created the heaven and the earth.", return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_tokenizer_round_trips_and_prepends_bos() -> None:
    _, tokenizer = zoo.load("tiny-llama")
    text = "Genesis 1\nIn the beginning -- naïve café, 😀\n\nExodus 2\n"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_qwen3_checkpoints_are_ordered_and_load() -> None:
    paths = zoo.checkpoint_paths("tiny-qwen3")
    steps = [int(p.name.removeprefix("step-")) for p in paths]
    assert len(steps) >= 5 and steps[0] == 0 and steps == sorted(set(steps))
    ids = torch.tensor([[0, 1, 2, 3]])
    for step in steps:
        model, _ = zoo.load("tiny-qwen3", checkpoint=step)
        with torch.inference_mode():
            assert torch.isfinite(model(input_ids=ids).logits).all()


def test_unknown_names_list_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"'gpt2' is neither a zoo model \(tiny-llama, tiny-qwen3.*hub id org/name"):
        zoo.load("gpt2")
    with pytest.raises(ValueError, match=r"name.*tiny-llama.*tiny-qwen3"):
        zoo.model_path("gpt2")
    with pytest.raises(ValueError, match=r"checkpoint must be one of \[0, "):
        zoo.load("tiny-qwen3", checkpoint=7)


def test_splits_are_disjoint_whole_chapters() -> None:
    headings = lambda text: [c.splitlines()[0] for c in text.strip().split("\n\n")]  # noqa: E731
    train, heldout = headings(zoo.train_text()), headings(zoo.heldout_text())
    assert not set(train) & set(heldout)
    assert len(train) + len(heldout) == len(chapters())


def test_training_is_bitwise_deterministic() -> None:
    _, tokenizer = zoo.load("tiny-llama")
    tokens = torch.tensor(tokenizer(zoo.train_text()[:20_000], add_special_tokens=False)["input_ids"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        bos_token_id=tokenizer.bos_token_id,
    )

    def run(seed: int) -> dict[str, torch.Tensor]:
        settings = TrainSettings(steps=3, seed=seed, batch_size=4, seq_len=64, warmup_steps=1)
        return train_model(config, tokens, settings).model.state_dict()

    first, second, other = run(0), run(0), run(1)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_tiny_llama_beats_unigram_on_heldout() -> None:
    result = perplexity("tiny-llama", zoo.heldout_text()[:20_000])
    assert result.tokens > 4000
    assert result.model < 0.5 * result.unigram
