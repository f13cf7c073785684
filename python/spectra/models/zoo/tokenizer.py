"""A small byte-level BPE tokenizer trained on the corpus's training split.

Byte-level BPE (GPT-2 style) needs no unknown token and round-trips any text exactly, which the
analyses rely on when they map token positions back to characters. A 4096-entry vocabulary keeps
the embedding matrix — most of a tiny model's parameters — small. The single special token
``<|endoftext|>`` serves as bos, eos and pad; it is prepended to every encoded text, as it is to
every training window, so that position 0 always holds the same token (where attention sinks form).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from spectra.models.zoo.corpus import train_text

EOT = "<|endoftext|>"
VOCAB_SIZE = 4096


def train_tokenizer(text: str | None = None, vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the BPE tokenizer on ``text`` (default: the training split); deterministic.

    >>> tok = train_tokenizer("In the beginning God created the heaven and the earth.\\n" * 50, 300)
    >>> tok.decode(tok("the earth")["input_ids"], skip_special_tokens=True)
    'the earth'
    """
    text = train_text() if text is None else text
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Whole chapters as training documents (the pre-tokenizer splits them into words anyway);
    # their separators are restored so the newline counts match the text the model sees.
    chapters = [chapter + "\n\n" for chapter in text.split("\n\n")]
    tok.train_from_iterator(chapters, trainer=trainer)
    eot_id = tok.token_to_id(EOT)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B", special_tokens=[(EOT, eot_id)]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
    )
