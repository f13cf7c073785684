"""``kind: capture`` on the engines: per-head Q/K/V of every model and checkpoint, one task per
(model or checkpoint, shard of ``examples_per_shard`` examples).

Layout of ``out``::

    run.json                         the plan (written by spectra.engine.run)
    <label>/                         one folder per model or checkpoint
        capture/                     the capture folder: exactly what one run_capture (spectra capture)
                                     over all the examples writes — l00h00q/data.parquet ...,
                                     pre_rope/..., spectra_capture.json
        shards/shard-00000/          examples [0, examples_per_shard) captured by one task: a capture
                                     folder of its own plus the task stamp (task.json)
        shards/merged.json           the shards capture/ was merged from (a rerun merges again only when
                                     a shard was written since)

A task runs :func:`spectra.jobs.capture.run.run_capture` on its examples (one at a time, batch size 1,
the first ``max_length`` tokens) into a temporary folder that is renamed into place when complete
(:func:`spectra.engine.folder_shard`). The merge concatenates every file's rows shard after shard
(:func:`spectra.capture.store.merge_captures`), so ``capture/`` holds the same rows in the same
order, byte for byte, as one run over all the examples: each example's rows depend only on the
model, the example and — for the random samplers ``uniform`` / ``log_uniform`` — on the
(seed, example_id, layer, kind) draw, never on which examples shared its shard or process. The
shards stay beside it (twice the disk of the capture) so that a rerun skips them.

The examples are ``data`` (a ``.jsonl`` file with ``text`` and optional ``id`` per line, or text
with one example per line, as ``spectra capture --data``; the first ``n_examples``, default all)
or, without ``data``, ``n_examples`` (8) pieces of the zoo's held-out text long enough for
``max_length`` tokens each (as ``spectra geometry --model``). ``kind: geometry`` and ``kind:
plasticity`` capture through the same tasks (:func:`plan_captures`, :func:`compute`,
:func:`merge_capture_shards`) and analyse the merged folders.

Example:
    >>> import tempfile
    >>> from spectra.engine import LocalEngine, run
    >>> config = {"kind": "capture", "models": ["tiny-llama"], "n_examples": 3, "max_length": 16,
    ...           "examples_per_shard": 2, "layers": [0], "heads": [1], "out": tempfile.mkdtemp()}
    >>> result = run(config, LocalEngine(), progress=False)
    >>> result.report.computed, result.results["tiny-llama"].sidecar["n_examples"]
    (['tiny-llama/shard-00000', 'tiny-llama/shard-00001'], 3)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from spectra.capture.probe import make_sampler
from spectra.capture.store import SIDECAR, merge_captures, read_sidecar
from spectra.data.examples import heldout_examples, read_examples
from spectra.engine.core import (
    COMMON_KEYS,
    STAMP_FILE,
    Task,
    check_model_config,
    entries,
    expand_checkpoints,
    folder_shard,
    int_list,
    load_task_model,
    model_folder,
    model_identity,
    positive_int,
    read_stamp,
    shards_by_label,
    shared_model_identity,
)
from spectra.io.atomic import write_json
from spectra.jobs.capture.options import KEYS
from spectra.jobs.capture.run import run_capture
from spectra.models.checkpoints import checkpoint_step

__all__ = [
    "KEYS",
    "STRAY_GLOB",
    "CaptureResult",
    "check",
    "check_capture_keys",
    "compute",
    "describe",
    "merge",
    "merge_capture_shards",
    "merge_for_analysis",
    "ordered_entries",
    "plan",
    "plan_captures",
    "post_rope_qk_options",
    "resolve_max_length",
]

SHARDS, CAPTURE, MERGED = "shards", "capture", "merged.json"
STRAY_GLOB = (SHARDS, "shard-*")  # folders under <label>/shards that a plan must account for
HELDOUT_EXAMPLES = 8  # n_examples without data (spectra geometry --model's default)
HELDOUT_MAX_LENGTH = 256  # max_length without data (spectra geometry --model's default)
DATA_MAX_LENGTH = 4096  # max_length with data (spectra capture's default), at most the model's context
#: What load_task_model reads from a task's options: dtype, attn_implementation, device, device_map, ...
PLACEMENT_KEYS = tuple(k for k in COMMON_KEYS if k not in ("kind", "models", "checkpoints", "out", "gpus_per_task"))
_KINDS, _STAGES, _SAMPLERS = ("q", "k", "v"), ("pre_rope", "post_rope"), ("all", "uniform", "log_uniform")


@dataclass
class CaptureResult:
    """A merged capture folder: where it is, its sidecar, the shards it was built from, and whether this
    run merged it (False: the shards had not changed since the last merge, so it was kept)."""

    out_dir: Path
    sidecar: dict[str, Any]
    shards: list[Path] = field(default_factory=list)
    merged: bool = True


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _names(value: Any, key: str, allowed: tuple[str, ...]) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or any(n not in allowed for n in names):
        raise ValueError(f"{key}: {value!r}; allowed values are {', '.join(allowed)} (a list or comma-separated)")
    return list(dict.fromkeys(names))


def check_capture_keys(config: dict[str, Any], *, min_length: int = 1) -> dict[str, Any]:
    """Checks the keys of the capture stage every capturing kind shares: ``data`` (a file), ``n_examples``,
    ``max_length`` (at least ``min_length``; None: the kind's default), ``examples_per_shard``,
    ``layers``, ``heads``, ``add_special_tokens`` (true)."""
    if config["data"] is not None:
        data = Path(str(config["data"]))
        if not data.is_file():
            raise ValueError(f"data: {data} is not a file (.jsonl with a 'text' field per line, or one example a line)")
        config["data"] = str(data.absolute())
    config["n_examples"] = positive_int(config["n_examples"], "n_examples", optional=True)
    if config["max_length"] is not None:
        length = config["max_length"]
        if not isinstance(length, int) or isinstance(length, bool) or length < min_length:
            raise ValueError(f"max_length: expected an integer >= {min_length}; got {length!r}")
    config["examples_per_shard"] = positive_int(config["examples_per_shard"], "examples_per_shard")
    config["layers"] = int_list(config["layers"], "layers")
    config["heads"] = int_list(config["heads"], "heads")
    if not isinstance(config["add_special_tokens"], bool):
        raise ValueError(f"add_special_tokens: expected true or false; got {config['add_special_tokens']!r}")
    return config


def check(config: dict[str, Any]) -> dict[str, Any]:
    """Checks the capture keys: as :func:`check_capture_keys`, and as ``spectra capture``: ``capture``
    (any of q, k, v; default q,k), ``stages`` (post_rope and/or pre_rope), ``positions`` (all,
    uniform, log_uniform, or a list of token positions), ``bucket_size`` (default 64 for the
    random samplers, else 1), ``seed`` (of the random samplers).

    Example:
        >>> from spectra.engine import check_config
        >>> config = check_config({"kind": "capture", "models": "tiny-llama", "out": "x", "capture": "q,v"})
        >>> config["capture"], config["stages"], config["positions"], config["examples_per_shard"]
        (['q', 'v'], ['post_rope'], 'all', 8)
        >>> check_config({"kind": "capture", "models": "tiny-llama", "out": "x", "positions": "random"})
        Traceback (most recent call last):
        ...
        ValueError: positions: unknown sampler 'random'; allowed are 'all', 'uniform', 'log_uniform', a spectra.PositionSampler, or a list of token positions
    """

    check_capture_keys(config)
    config["capture"] = _names(config["capture"], "capture", _KINDS)
    config["stages"] = _names(config["stages"], "stages", _STAGES)
    positions = config["positions"]
    if isinstance(positions, str) and positions not in _SAMPLERS and any(c.isdigit() for c in positions):
        positions = int_list(positions, "positions")
    elif isinstance(positions, (list, tuple, int)):
        positions = int_list(list(positions) if isinstance(positions, tuple) else positions, "positions")
    config["positions"] = positions
    config["bucket_size"] = positive_int(config["bucket_size"], "bucket_size", optional=True)
    seed = config["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0; got {seed!r}")
    if isinstance(positions, list) and any(p < 0 for p in positions):
        raise ValueError(f"positions: token positions are >= 0; got {positions}")
    try:
        make_sampler(positions, bucket_size=config["bucket_size"], seed=seed)  # its errors name the argument
    except TypeError as error:
        raise ValueError(str(error)) from None
    return config


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def ordered_entries(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """:func:`spectra.engine.entries` with the checkpoints of each ``checkpoints`` entry in training-step
    order (``checkpoint-500`` before ``checkpoint-1000``) when every one names its step.

    Example:
        >>> [label for label, _ in ordered_entries({"models": ["tiny-llama"], "checkpoints": ["tiny-qwen3"]})][:3]
        ['tiny-llama', 'tiny-qwen3-step-000000', 'tiny-qwen3-step-000100']
    """
    found = entries(config)
    ordered, rest = found[: len(config["models"])], found[len(config["models"]) :]
    for entry in config["checkpoints"]:
        size = len(expand_checkpoints(entry))
        group, rest = rest[:size], rest[size:]
        try:
            group = sorted(group, key=lambda item: checkpoint_step(item[1]))
        except ValueError:  # a folder without a step in its name or trainer_state.json: keep the folder order
            pass
        ordered.extend(group)
    return ordered


def context_of(folder: Path) -> int | None:
    """The model's context (``max_position_embeddings`` or ``n_positions``), None when its config names none."""

    model_config = AutoConfig.from_pretrained(folder, local_files_only=True)
    return getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)


def load_examples(config: Mapping[str, Any], max_length: int) -> list[tuple[int, str]]:
    """The run's ``(example_id, text)`` pairs: the first ``n_examples`` of ``data``, or of the held-out text."""
    if config["data"] is not None:
        examples = read_examples(config["data"])
        return examples[: config["n_examples"]] if config["n_examples"] is not None else examples
    return heldout_examples(config["n_examples"] or HELDOUT_EXAMPLES, max_length)


def plan_captures(config: Mapping[str, Any], capture_options: Callable[[str, Path], dict[str, Any]]) -> list[Task]:
    """The capture tasks of every model and checkpoint (:func:`ordered_entries` order) × every shard of
    ``examples_per_shard`` examples; ``capture_options(model, folder)`` gives a model's
    :func:`~spectra.jobs.capture.run.run_capture` settings (``max_length``, ``layers``, ``heads``,
    ``capture``, ``stages``, ``positions``, ``bucket_size``, ``seed``), checked against its config."""
    if config["kind"] != "capture" and any(label == config["kind"] for label, _ in entries(config)):
        raise ValueError(
            f"models: a model or checkpoint labelled {config['kind']!r} would share "
            f"out/{config['kind']}/ with the analysis; rename its folder"
        )
    examples: dict[int, list[tuple[int, str]]] = {}
    tasks: list[Task] = []
    for label, model in ordered_entries(config):
        folder = model_folder(model)
        options = {**capture_options(model, folder), **{key: config[key] for key in PLACEMENT_KEYS}}
        check_model_config(model, folder, layers=options["layers"], heads=options["heads"])
        length = options["max_length"]
        if length not in examples:
            examples[length] = load_examples(config, length)
        found, size = examples[length], config["examples_per_shard"]
        if not found:
            raise ValueError(f"data: {config['data']} holds no examples")
        for shard, lo in enumerate(range(0, len(found), size)):
            chunk = tuple((int(i), str(text)) for i, text in found[lo : lo + size])
            tasks.append(
                Task(
                    kind=config["kind"],
                    model=model,
                    label=label,
                    shard=shard,
                    samples=(lo, lo + len(chunk)),
                    out=config["out"],
                    options=dict(options),
                    relpath=f"{label}/{SHARDS}/shard-{shard:05d}",
                    data=chunk,
                    num_gpus=config["gpus_per_task"],
                )
            )
    return tasks


def resolve_max_length(
    config: Mapping[str, Any], model: str, folder: Path, default: int | None, *, cap: bool = False
) -> int:
    """``max_length`` of one model: the config's, else ``default`` (None: the model's context; ``cap``:
    at most the context); an explicit value beyond the context is an error."""
    context = context_of(folder)
    length = config["max_length"]
    if length is None:
        if default is None:
            if context is None:
                raise ValueError(f"max_length: {model} names no max_position_embeddings; set max_length")
            return int(context)
        return min(default, context) if cap and context is not None else default
    if context is not None and length > context:
        raise ValueError(f"max_length: {length} exceeds the max_position_embeddings of {model} ({context})")
    return length


def plan(config: Mapping[str, Any]) -> list[Task]:
    """The tasks of a capture run: every model and checkpoint × every shard of ``examples_per_shard`` examples.

    ``max_length`` defaults to 256 on the held-out text and to 4096 with ``data`` (as ``spectra
    capture``), at most the model's context.

    Example:
        >>> from spectra.engine import check_config
        >>> tasks = plan(check_config({"kind": "capture", "models": ["tiny-llama"], "checkpoints": ["tiny-qwen3"],
        ...                            "n_examples": 5, "examples_per_shard": 2, "out": "results/x"}))
        >>> len(tasks), tasks[0].id, tasks[2].samples, tasks[2].relpath, tasks[0].options["max_length"]
        (21, 'tiny-llama/shard-00000', (4, 5), 'tiny-llama/shards/shard-00002', 256)
    """

    def options(model: str, folder: Path) -> dict[str, Any]:
        default = HELDOUT_MAX_LENGTH if config["data"] is None else DATA_MAX_LENGTH
        return {
            "max_length": resolve_max_length(config, model, folder, default, cap=True),
            **{
                key: config[key]
                for key in (
                    "layers",
                    "heads",
                    "capture",
                    "stages",
                    "positions",
                    "bucket_size",
                    "seed",
                    "add_special_tokens",
                )
            },
        }

    return plan_captures(config, options)


# --------------------------------------------------------------------------------------------
# One task
# --------------------------------------------------------------------------------------------


def compute(task: Task) -> int:
    """Captures the task's examples with :func:`~spectra.jobs.capture.run.run_capture` into a temporary folder
    that becomes the task's shard folder when complete; returns the rows written."""
    model, tokenizer = load_task_model(task)
    o = task.options
    with folder_shard(task, model_identity(model)) as folder:
        sidecar = run_capture(
            model,
            tokenizer,
            task.data,
            folder,
            max_length=o["max_length"],
            add_special_tokens=o["add_special_tokens"],
            overwrite=True,
            progress=False,
            layers=o["layers"],
            heads=o["heads"],
            capture=tuple(o["capture"]),
            stage=tuple(o["stages"]),
            positions=o["positions"],
            bucket_size=o["bucket_size"],
            seed=o["seed"],
        )
    return sum(sidecar["rows"].values())


# --------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------


def merge_capture_shards(tasks: Sequence[Task]) -> dict[str, CaptureResult]:
    """Merges each label's shards into ``out/<label>/capture`` (see the module docstring); returns
    ``label -> CaptureResult`` in plan order. A folder merged from the very same shards (their
    stamps are recorded in ``shards/merged.json``, and none was written after it) is kept as it is.

    Raises ``ValueError`` when a shard is missing, or when the shards of one label disagree on the
    model (its weights changed between two runs)."""
    results: dict[str, CaptureResult] = {}
    for label, group in shards_by_label(tasks).items():
        shared_model_identity(group)
        stamps = [read_stamp(t.path) for t in group]
        root = Path(group[0].out) / label
        folder, marker = root / CAPTURE, root / SHARDS / MERGED
        record = {
            "capture": CAPTURE,
            "shards": [{k: s.get(k) for k in ("task_id", "fingerprint", "model", "samples")} for s in stamps],
        }
        shards = [t.path for t in group]
        try:  # kept when merged from these very shards, none of them written again since (a retry, a rerun)
            kept = (
                json.loads(marker.read_text()) == record
                and (folder / SIDECAR).is_file()
                and max((p / STAMP_FILE).stat().st_mtime_ns for p in shards) <= marker.stat().st_mtime_ns
            )
        except (OSError, json.JSONDecodeError):
            kept = False
        if kept:
            sidecar = read_sidecar(folder)
            kept = all((folder / name).is_file() for name in sidecar.get("rows", {}))
        if not kept:
            marker.unlink(missing_ok=True)
            sidecar = merge_captures(shards, folder)
            write_json(marker, record)
        results[label] = CaptureResult(out_dir=folder, sidecar=sidecar, shards=shards, merged=not kept)
    return results


def post_rope_qk_options(config: Mapping[str, Any], max_length: int, bucket_size: int) -> dict[str, Any]:
    """The capture options of an analysis of post-RoPE q and k at every position (geometry, plasticity)."""
    return {
        "max_length": max_length,
        "layers": config["layers"],
        "heads": config["heads"],
        "capture": ["q", "k"],
        "stages": ["post_rope"],
        "positions": "all",
        "bucket_size": bucket_size,
        "seed": 0,
        "add_special_tokens": config["add_special_tokens"],
    }


def merge_for_analysis(
    config: Mapping[str, Any], tasks: Sequence[Task], analysis: str
) -> tuple[dict[str, CaptureResult], Path]:
    """Merges the captures (:func:`merge_capture_shards`) and empties ``out/<analysis>``, the folder the
    analysis of a geometry or plasticity run then writes; returns both."""
    captures = merge_capture_shards(tasks)
    out = Path(config["out"]) / analysis
    if out.exists():
        shutil.rmtree(out)
    return captures, out


def merge(
    config: Mapping[str, Any], tasks: Sequence[Task], command_line: Sequence[str] | None = None
) -> dict[str, CaptureResult]:
    """Builds every model's ``capture/`` folder from its shards (:func:`merge_capture_shards`)."""
    return merge_capture_shards(tasks)


def describe(label: str, result: Any) -> str:
    """``tiny-llama: 8 examples, 64 files, 16384 rows -> out/tiny-llama/capture``."""
    rows = result.sidecar.get("rows", {})
    return (
        f"{label}: {result.sidecar.get('n_examples')} examples, {len(rows)} files, {sum(rows.values())} rows "
        f"-> {result.out_dir}"
    )
