"""load_windows with and without the tokenizer's special tokens."""

import pytest
import torch

from spectra.data.windows import load_windows, special_tokens
from spectra.models.loading import load_model


@pytest.fixture(scope="module")
def zoo_tok():
    return load_model("tiny-llama")[1]


@pytest.fixture(scope="module")
def bert_tok():
    return load_model("all-minilm-l6-v2")[1]


def test_special_tokens_of_a_decoder_and_an_encoder(zoo_tok, bert_tok):
    assert special_tokens(zoo_tok) == ([zoo_tok.bos_token_id], [])
    assert special_tokens(bert_tok) == ([bert_tok.cls_token_id], [bert_tok.sep_token_id])


def test_default_windows_carry_the_special_tokens(zoo_tok, bert_tok):
    default = load_windows(None, zoo_tok, 32, 4)
    assert torch.equal(default, load_windows(None, zoo_tok, 32, 4, add_special_tokens=True))
    assert (default[:, 0] == zoo_tok.bos_token_id).all()
    plain = load_windows(None, zoo_tok, 32, 4, add_special_tokens=False)
    assert (plain[:, 0] != zoo_tok.bos_token_id).all()
    assert plain[0, :31].tolist() == default[0, 1:].tolist()  # the same text, one token later
    encoder = load_windows(None, bert_tok, 16, 2)
    assert (encoder[:, 0] == bert_tok.cls_token_id).all() and (encoder[:, -1] == bert_tok.sep_token_id).all()


@pytest.mark.parametrize("which", ["zoo", "bert"])
def test_every_window_is_wrapped_in_the_special_tokens(which, zoo_tok, bert_tok, tmp_path):
    tok = zoo_tok if which == "zoo" else bert_tok
    prefix, suffix = special_tokens(tok)
    text = tmp_path / "text.txt"
    text.write_text("And God said, Let there be light: and there was light. " * 40, encoding="utf-8")
    windows = load_windows(text, tok, 16, 5, add_special_tokens=True)
    assert windows.shape == (5, 16)
    body = 16 - len(prefix) - len(suffix)
    assert (windows[:, : len(prefix)] == torch.tensor(prefix)).all()
    assert (windows[:, 16 - len(suffix) :] == torch.tensor(suffix)).all()
    # The text continues from window to window, without gaps or repeats.
    ids = tok(text.read_text(encoding="utf-8"), add_special_tokens=False).input_ids
    assert windows[:, len(prefix) : len(prefix) + body].reshape(-1).tolist() == ids[: 5 * body]


def test_too_short_a_context_for_the_special_tokens(bert_tok):
    with pytest.raises(ValueError, match="no room for text"):
        load_windows(None, bert_tok, 2, 1, add_special_tokens=True)
