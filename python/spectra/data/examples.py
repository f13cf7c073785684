"""Examples for the capture jobs: a ``.jsonl`` file of ``{"text", "id"}`` records or a text file
with one example a line."""

from __future__ import annotations

import json
from pathlib import Path

from spectra.models import zoo


def read_examples(path: str | Path) -> list[tuple[int, str]]:
    """(example_id, text) pairs: ``.jsonl`` with ``text`` (and optional integer ``id``) per line,
    otherwise plain text with one example per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data: {path} does not exist")
    examples = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    record = json.loads(line)
                    text, example_id = record["text"], int(record.get("id", len(examples)))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                    raise ValueError(
                        f"data: {path}:{number} is not a JSON object with a 'text' field ({error})"
                    ) from None
            else:
                text, example_id = line.rstrip("\n"), len(examples)
            examples.append((example_id, text))
    if not examples:
        raise ValueError(f"data: {path} holds no examples")
    return examples


def heldout_examples(n_examples: int, max_length: int) -> list[tuple[int, str]]:
    """``(example_id, text)`` of the first ``n_examples`` pieces of the zoo's held-out text, each long
    enough to tokenize to at least ``max_length`` tokens (the examples :func:`capture_model` captures).

    Example:
        >>> [(i, len(text)) for i, text in heldout_examples(2, 64)]
        [(0, 512), (1, 512)]
    """
    text = zoo.heldout_text()
    # Byte-level BPE on this corpus averages well under 8 characters a token, so each example
    # tokenizes to at least max_length tokens and is cut there.
    width = 8 * max_length
    if len(text) < n_examples * width:
        raise ValueError(
            f"n_examples: the held-out text holds only {len(text) // width} examples of {max_length} tokens"
        )
    return [(i, text[i * width : (i + 1) * width]) for i in range(n_examples)]
