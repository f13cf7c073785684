"""The capture job behind ``spectra capture``: texts in, a capture folder out.

Like the thesis capture protocol, examples run one at a time (batch size 1, no padding, the first
``max_length`` tokens, ``use_cache=False``), and rows are streamed to the Parquet layout of
``spectra.capture.store``. The folder appears complete or not at all: files are renamed into place
and the sidecar written only when every example has run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from spectra.capture.forward import run_model
from spectra.capture.probe import Probe
from spectra.capture.store import SIDECAR, read_sidecar


def run_capture(
    model,
    tokenizer,
    examples: Iterable[tuple[int, str]],
    out_dir: str | Path,
    *,
    max_length: int = 4096,
    add_special_tokens: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    **probe_kwargs: Any,
) -> dict[str, Any]:
    """Captures every example into ``out_dir`` and returns the sidecar.

    Each text is tokenised with the tokenizer's special tokens (BOS, or [CLS] … [SEP]) unless
    ``add_special_tokens=False``, and cut to ``max_length`` tokens; the sidecar's ``inputs`` records both.

    Example:
        >>> import tempfile
        >>> from spectra import zoo
        >>> from spectra.jobs.capture.run import run_capture
        >>> model, tok = zoo.load("tiny-llama")
        >>> meta = run_capture(model, tok, [(7, "In the beginning"), (9, "And the earth")], tempfile.mkdtemp(),
        ...                    layers=[0], heads=[1], progress=False)
        >>> meta["n_examples"], meta["rows"]["l00h01q/data.parquet"] > 0
        (2, True)
    """

    out = Path(out_dir)
    if (out / SIDECAR).exists() and not overwrite:
        raise FileExistsError(f"out_dir: {out} already holds a finished capture; pass overwrite=True to replace it")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1; got {max_length}")
    examples = list(examples)
    probe = Probe(model, out_dir=out, keep_in_memory=False, **probe_kwargs)
    probe.input_notes = {"max_length": max_length, "add_special_tokens": add_special_tokens}
    with probe:  # inputs go to the input embedding's device; accelerate's hooks move each layer's inputs
        for example_id, text in tqdm(examples, desc="capture", unit="example", disable=not progress):
            ids = tokenizer(
                text,
                truncation=True,
                max_length=max_length,
                add_special_tokens=add_special_tokens,
                return_tensors="pt",
            ).input_ids
            if ids.shape[1] == 0:
                raise ValueError(f"data: example {example_id} tokenizes to an empty sequence")
            probe.set_example_ids([example_id])
            run_model(model, ids, backbone=True, require_eval=False)
    return read_sidecar(out)
