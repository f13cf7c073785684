"""Where the zoo's committed files live.

Everything is resolved relative to this file rather than through the hub or the working directory,
so an installed package finds its corpus and models offline from any current directory.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"  # python/spectra/assets
CORPUS_FILE = ASSETS_DIR / "corpus" / "kjv.txt.xz"
MODELS_DIR = ASSETS_DIR / "models"

#: Files of which a model folder's tokenizer needs at least one (fast, BPE, WordPiece, SentencePiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def check_tokenizer_files(folder: str | Path) -> None:
    """A ValueError naming ``folder`` and the files looked for when it holds none of
    :data:`TOKENIZER_FILES`: transformers would otherwise build an empty tokenizer from the config
    alone, and every text would tokenize to nothing (``the longest has 0 tokens``)."""
    folder = Path(folder)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"model: {folder} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); "
            "save the model's tokenizer into it (tokenizer.save_pretrained(folder))"
        )


def load_tokenizer(folder: str | Path):
    """The tokenizer of a local model folder, offline, after :func:`check_tokenizer_files`."""
    from transformers import AutoTokenizer  # heavy: only when a tokenizer loads

    check_tokenizer_files(folder)
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)
