"""``spectra dynamics``: the training-dynamics tables and figures of a checkpoint series in one folder.

``meta.json`` (settings, steps, architecture, versions, command line), ``head_series``,
``kv_series``, ``gamma`` and ``taxonomy`` as Parquet and CSV, ``summary.json`` (checkpoints, steps,
class counts per step), and the figures: per-head key-norm divergence, entropy vs norm coloured by
step, effective rank / participation ratio per layer, the k_norm γ heatmap (families with QK-norm),
‖Q‖/‖K‖ over steps. Every file is written atomically; rerunning replaces the folder's contents.
:func:`run_dynamics` computes the series in this process (``spectra.dynamics.track``);
:func:`write_dynamics` writes the folder from a series, and ``spectra run`` (``kind: dynamics``,
``spectra.jobs.dynamics.kind``) calls it on the series it combines from per-checkpoint shards.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectra import defaults
from spectra.figures import dynamics as dynamics_figures
from spectra.heads.dynamics import Dynamics, gamma_table, track
from spectra.io.atomic import write_csv, write_json, write_parquet
from spectra.io.identity import versions
from spectra.models import zoo
from spectra.models.devices import check_device
from spectra.models.loading import dtype_name

__all__ = ["DynamicsResult", "run_dynamics", "write_dynamics"]


@dataclass
class DynamicsResult:
    out_dir: Path
    dynamics: Dynamics
    summary: dict[str, Any]
    figures: list[Path]


#: The run settings meta.json records (as ``run_dynamics`` takes them).
SETTINGS: tuple[str, ...] = (
    "context_length",
    "n_samples",
    "add_special_tokens",
    "n_random",
    "random_block",
    "batch_size",
)
TABLES: tuple[str, ...] = ("head_series", "kv_series", "gamma", "taxonomy")


def run_dynamics(
    checkpoints: Sequence[str | Path] | str,
    out_dir: str | Path,
    *,
    context_length: int = 128,
    n_samples: int = 8,
    add_special_tokens: bool = True,
    n_random: int = 8,
    random_block: int = 32,
    batch_size: int = 8,
    gamma_heatmap: bool | None = None,
    progress: bool = True,
    command_line: Sequence[str] | None = None,
    dtype: str = defaults.DTYPE,
    device: str | None = None,
    attn_implementation: str = defaults.ATTN_IMPLEMENTATION,
) -> DynamicsResult:
    """Tracks ``checkpoints`` (folders, or a zoo name) into ``out_dir``: :func:`spectra.dynamics.track`,
    then :func:`write_dynamics`.

    ``dtype``, ``device`` and ``attn_implementation``: how each checkpoint is loaded (as ``spectra.models.loading.load_model``);
    ``meta.json``'s settings name them when they differ from the defaults (float32, the CPU), as
    ``kind: dynamics`` does.

    ``gamma_heatmap``: None draws the k_norm γ heatmap when the family has QK-norm; True requires it
    (a family without QK-norm is then a ValueError, before any checkpoint is processed); False skips it.

    Example:
        >>> import tempfile
        >>> result = run_dynamics("tiny-qwen3", tempfile.mkdtemp(), context_length=48, n_samples=2, n_random=2,
        ...                       random_block=8, progress=False)
        >>> sorted(p.name for p in result.figures)[:2], result.summary["steps"][-1]
        (['entropy_vs_norm.png', 'gamma_heatmap.png'], 1600)
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a folder")
    if gamma_heatmap:
        _require_qk_norm(checkpoints)
    result = track(
        checkpoints,
        context_length=context_length,
        n_samples=n_samples,
        add_special_tokens=add_special_tokens,
        n_random=n_random,
        random_block=random_block,
        batch_size=batch_size,
        progress=progress,
        dtype=dtype,
        device=device,
        attn_implementation=attn_implementation,
    )
    settings: dict[str, Any] = {
        "context_length": context_length,
        "n_samples": n_samples,
        "add_special_tokens": add_special_tokens,
        "n_random": n_random,
        "random_block": random_block,
        "batch_size": batch_size,
    }
    if dtype_name(dtype) != defaults.DTYPE:
        settings["dtype"] = dtype_name(dtype)
    if attn_implementation != defaults.ATTN_IMPLEMENTATION:
        settings["attn_implementation"] = attn_implementation
    if device is not None and str(check_device(device)) != defaults.DEVICE:
        settings["device"] = str(check_device(device))
    return write_dynamics(
        result, out, checkpoints=checkpoints, settings=settings, gamma_heatmap=gamma_heatmap, command_line=command_line
    )


def write_dynamics(
    result: Dynamics,
    out_dir: str | Path,
    *,
    checkpoints: Sequence[str | Path] | str,
    settings: Mapping[str, Any],
    gamma_heatmap: bool | None = None,
    command_line: Sequence[str] | None = None,
) -> DynamicsResult:
    """Writes a series (``track``'s result, or the ``combine`` of per-checkpoint parts) into ``out_dir``:
    the four tables as Parquet and CSV, the figures, ``summary.json`` (``checkpoints`` as given: a zoo
    name or the list of folders) and ``meta.json`` (``settings``, steps, architecture, versions,
    command line, time). ``spectra dynamics`` and ``spectra run`` (``kind: dynamics``) both write
    through here, so their folders are the same."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        frame = getattr(result, name)
        write_parquet(out / f"{name}.parquet", frame)
        write_csv(out / f"{name}.csv", frame)
    figures = [
        dynamics_figures.plot_norm_divergence(result.kv_series, out / "norm_divergence.png"),
        dynamics_figures.plot_entropy_vs_norm(result.head_series, out / "entropy_vs_norm.png"),
        dynamics_figures.plot_rank_evolution(result.kv_series, out / "rank_evolution.png"),
        dynamics_figures.plot_qk_ratio(result.head_series, out / "qk_ratio.png"),
    ]
    if gamma_heatmap is not False and not result.gamma.empty:
        figures.append(dynamics_figures.plot_gamma_heatmap(result.gamma, out / "gamma_heatmap.png"))
    counts = result.taxonomy.groupby(["step", "class"]).size().unstack(fill_value=0)
    summary = {
        "checkpoints": [str(c) for c in checkpoints] if not isinstance(checkpoints, str) else checkpoints,
        "steps": result.steps,
        "architecture": result.architecture,
        "classes_per_step": {int(step): {k: int(v) for k, v in row.items() if v} for step, row in counts.iterrows()},
        "has_gamma": not result.gamma.empty,
        "files": sorted([f"{n}.parquet" for n in TABLES] + [p.name for p in figures]),
    }
    write_json(out / "summary.json", summary)
    write_json(
        out / "meta.json",
        {
            "settings": dict(settings),
            "steps": result.steps,
            "architecture": result.architecture,
            "versions": versions(),
            "command_line": list(command_line) if command_line is not None else list(sys.argv),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return DynamicsResult(out, result, summary, figures)


def _require_qk_norm(checkpoints: Sequence[str | Path] | str) -> None:
    """Fails fast, on the first checkpoint, when a γ heatmap is asked of a family without QK-norm."""
    if isinstance(checkpoints, str) and checkpoints in zoo.MODEL_NAMES:
        first = zoo.checkpoint_paths(checkpoints)[:1] or [zoo.model_path(checkpoints)]
    else:
        first = [Path(checkpoints[0])] if not isinstance(checkpoints, (str, Path)) and checkpoints else []
    if first:
        model, _ = zoo.load(first[0])
        gamma_table(model, required=True)


def print_dynamics_result(result: DynamicsResult) -> None:
    s = result.summary
    print(f"spectra dynamics: {len(s['steps'])} checkpoints, steps {s['steps']} -> {result.out_dir}")
    for step, classes in s["classes_per_step"].items():
        print(f"  step {step:>6}: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items())))
    for path in result.figures:
        print(f"figure: {path}")
