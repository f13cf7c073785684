"""The capture job behind ``spectra capture``: texts in, a capture folder out.

Like the thesis capture protocol, examples run one at a time (batch size 1, no padding, the first
``max_length`` tokens, ``use_cache=False``), and rows are streamed to the Parquet layout of
``spectra.capture.store``. The folder appears complete or not at all: files are renamed into place
and the sidecar written only when every example has run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from spectra.capture.store import SIDECAR, read_sidecar
from spectra.models.devices import check_device, input_device, placement_kwargs
from spectra.capture.probe import Probe

MINILM = "all-minilm-l6-v2"


def load_model(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    device: str | int | torch.device | None = None,
    device_map: str | dict[str, int | str] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None,
):
    """A zoo name, ``all-minilm-l6-v2``, or a local model folder (causal LM or encoder), offline.

    Placement:
        device: the one device the whole model goes to (``"cuda"``, ``"cuda:1"``, ``"cpu"``);
            None leaves it where transformers loads it (the CPU). Used only without a ``device_map``.
        device_map: spread the model over devices through accelerate (``pip install accelerate``), for a
            model larger than one GPU: ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``,
            or a dict module name -> device (an int GPU index, ``"cpu"``, ``"cuda:N"``, ``"disk"``).
        max_memory: with a device_map, the most each device may hold, e.g. ``{0: "20GiB", "cpu": "60GiB"}``.
        offload_folder: with a device_map that offloads to ``"disk"``, where the offloaded weights go.

    Spectra's forwards send token ids to ``spectra.models.devices.input_device(model)`` and accelerate's
    hooks move every layer's inputs to that layer's device; see docs/multi-gpu.md.
    """
    from spectra.data import zoo

    target = check_device(device)
    placement = placement_kwargs(device_map, max_memory, offload_folder)  # validates before any loading
    if name_or_path == MINILM:
        model, tokenizer = zoo.load_minilm(dtype=dtype, attn_implementation=attn_implementation, **placement)
    elif name_or_path in zoo.MODEL_NAMES:
        model, tokenizer = zoo.load(name_or_path, dtype=dtype, attn_implementation=attn_implementation, **placement)
    else:
        model, tokenizer = _load_folder(name_or_path, dtype, attn_implementation, placement)
    if target is not None and not placement:
        model = model.to(target)
    return model, tokenizer


def _load_folder(name_or_path: str, dtype: torch.dtype, attn_implementation: str, placement: dict[str, Any]):
    from spectra.data import zoo

    folder = Path(name_or_path)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"model: {name_or_path!r} is neither a zoo model ({', '.join(zoo.MODEL_NAMES)}), {MINILM!r}, "
            "nor a local folder with a config.json"
        )
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    if any(a.endswith("ForCausalLM") for a in (config.architectures or [])):
        return zoo.load(folder, dtype=dtype, attn_implementation=attn_implementation, **placement)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(
            folder, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True, **placement
        ).eval()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)


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
                    raise ValueError(f"data: {path}:{number} is not a JSON object with a 'text' field ({error})") from None
            else:
                text, example_id = line.rstrip("\n"), len(examples)
            examples.append((example_id, text))
    if not examples:
        raise ValueError(f"data: {path} holds no examples")
    return examples


def run_capture(
    model,
    tokenizer,
    examples: Iterable[tuple[int, str]],
    out_dir: str | Path,
    *,
    max_length: int = 4096,
    overwrite: bool = False,
    progress: bool = True,
    **probe_kwargs: Any,
) -> dict[str, Any]:
    """Captures every example into ``out_dir`` and returns the sidecar.

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
    from tqdm.auto import tqdm

    out = Path(out_dir)
    if (out / SIDECAR).exists() and not overwrite:
        raise FileExistsError(f"out_dir: {out} already holds a finished capture; pass overwrite=True to replace it")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1; got {max_length}")
    examples = list(examples)
    probe = Probe(model, out_dir=out, keep_in_memory=False, **probe_kwargs)
    device = input_device(model)  # the input embedding's device; accelerate's hooks move each layer's inputs
    with probe, torch.no_grad():
        for example_id, text in tqdm(examples, desc="capture", unit="example", disable=not progress):
            ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt").input_ids
            if ids.shape[1] == 0:
                raise ValueError(f"data: example {example_id} tokenizes to an empty sequence")
            probe.set_example_ids([example_id])
            base = getattr(model, "base_model", model)
            base(input_ids=ids.to(device), use_cache=False) if _takes_use_cache(base) else base(input_ids=ids.to(device))
    return read_sidecar(out)


def _takes_use_cache(module) -> bool:
    import inspect

    return "use_cache" in inspect.signature(module.forward).parameters


def parse_ints(text: str | None) -> list[int] | None:
    """``"0,2,5-7"`` → [0, 2, 5, 6, 7]; None stays None."""
    if text is None:
        return None
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            values.extend(range(int(lo), int(hi) + 1))
        else:
            values.append(int(part))
    return values


def split_names(text: str) -> Sequence[str]:
    return tuple(part.strip() for part in text.split(",") if part.strip())
