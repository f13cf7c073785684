"""``spectra sweep --config FILE.yaml``: the seed's intervention experiments as resumable jobs.

Three experiments (configs for each seed experiment in ``configs/``):

- ``scale_sweep`` (exp1, exp2): chosen heads over an α grid, ``local`` and/or ``propagated``;
  gain fits per head, and with a ``control`` head exp2's target/control gain ratio verdict.
- ``gain_map`` (exp2b): every head, local mode; gain fits with bootstrap CIs, p10/p90 categories,
  the closed-form cross-check, the heads exp3b should use.
- ``qk_asymmetry`` (exp3, exp3b): Q scaling vs K scaling of chosen heads in real forward passes
  (``heads: from_gain_map`` picks the high/medium/low heads from a gain map run first), with the
  correct GQA mapping, the group side effects, the downstream differences and the seed's
  interpretation table.

A result folder holds ``meta.json`` (config, model identity, versions, ``run_hash``), the sweep
table sharded per target head under ``shards/`` (each written atomically; ``--resume`` keeps the
finished ones), the analysis tables as Parquet and CSV, ``summary.json`` and the figures.

The job is split so that other runners can share it: :func:`plan_shards` names the shards (from the
model's shape alone), :func:`sweep_shard` computes one, and :func:`analyse_sweep` builds every
table, figure and ``summary.json`` from the shards without the model; :func:`sweep_meta` is the
``meta.json``. ``spectra run`` (``kind: sweep``, :mod:`spectra.jobs.sweep.kind`) runs the same shards
as tasks and writes the same result folder.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from spectra.data.windows import load_windows
from spectra.figures import sweep as sweep_figures
from spectra.interventions import gain as gain_mod
from spectra.interventions import qk_asymmetry
from spectra.io.atomic import write_csv, write_json, write_parquet
from spectra.io.identity import config_hash, data_sha256, non_default_attn_implementation, versions, weights_fingerprint
from spectra.io.identity import sha256_of as _sha256
from spectra.jobs.profile.run import _difference
from spectra.jobs.sweep.config import EXPERIMENTS, META, SHARDS, SweepConfig, SweepResult, load_config
from spectra.jobs.sweep.shards import (
    GAIN_MAP_TAG,
    GainSelection,
    SweepShard,
    _shard_name,
    _sweep_targets,
    check_heads,
    gain_map_selection,
    model_shape,
    plan_shards,
    read_shard,
    sweep_shard,
)
from spectra.jobs.sweep.summary import _control_summary, _gain_map_summary, _records, print_sweep_result
from spectra.models import resolve_ignore_first
from spectra.models.loading import load_model
from spectra.models.zoo.references import model_source

__all__ = [
    "EXPERIMENTS",
    "GainSelection",
    "META",
    "SHARDS",
    "SweepConfig",
    "SweepResult",
    "SweepShard",
    "analyse_sweep",
    "check_heads",
    "gain_map_selection",
    "load_config",
    "model_shape",
    "plan_shards",
    "print_sweep_result",
    "read_shard",
    "run_sweep",
    "sweep_meta",
    "sweep_shard",
]


def _attn(identity: dict[str, str]) -> dict[str, str]:
    return non_default_attn_implementation(identity.get("attn_implementation"))


def sweep_meta(
    config: SweepConfig, identity: dict[str, str], data_sha256: str, command_line: Sequence[str] | None = None
) -> dict[str, Any]:
    """``meta.json`` of a run: ``identity`` is the model's ``class``, ``config_sha256``,
    ``weights_fingerprint``, ``dtype`` and ``attn_implementation`` (the one used; recorded where it is
    not sdpa); ``run_hash`` covers the model (not its dtype name: the
    weights_fingerprint hashes each weight's dtype) and every setting but ``out``, ``dtype``,
    ``attn_implementation`` and ``device`` (where the model runs is not part of a run's identity, so ``--resume`` may finish
    on a GPU a run started on the CPU)."""
    run = {k: v for k, v in asdict(config).items() if k not in ("out", "dtype", "device", "attn_implementation")}
    run["data_sha256"] = data_sha256
    model_identity = {k: identity[k] for k in ("class", "config_sha256", "weights_fingerprint")}
    return {
        "run_hash": _sha256({"model": model_identity, "run": run}),
        "model": {"name": config.model, **model_identity, "dtype": identity["dtype"], **_attn(identity)},
        "run": run,
        "versions": versions(),
        "command_line": list(command_line) if command_line is not None else list(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _prepare_folder(out: Path, meta: dict[str, Any], resume: bool) -> None:
    shards = sorted((out / SHARDS).glob("*.parquet")) if (out / SHARDS).is_dir() else []
    if (out / META).is_file():
        try:
            old = json.loads((out / META).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(
                f"out: {out / META} is not valid JSON ({error}); choose another out or delete it"
            ) from None
        if old.get("run_hash") != meta["run_hash"] and shards:
            raise ValueError(
                f"out: {out} holds another run ({_difference(old, meta)}); choose another out or delete it"
            )
        if shards and not resume:
            raise ValueError(
                f"out: {out} already holds {len(shards)} shard(s) of this run; pass --resume to finish it "
                "(finished shards are kept) or choose another out"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(f"out: {out} is not empty and holds no {META}; choose another out or delete it")
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    for stray in (out / SHARDS).glob(".*.tmp"):
        stray.unlink(missing_ok=True)
    write_json(out / META, meta)


def _write_table(out: Path, name: str, frame: pd.DataFrame, files: dict[str, pd.DataFrame]) -> None:
    write_parquet(out / f"{name}.parquet", frame)
    write_csv(out / f"{name}.csv", frame)
    files[name] = frame


def _read_mode(out: Path, shards: Sequence[SweepShard]) -> pd.DataFrame:
    return pd.concat([read_shard(out, s.name) for s in shards], ignore_index=True)


def analyse_sweep(
    config: SweepConfig,
    out: str | Path,
    *,
    n_layers: int,
    n_heads: int,
    n_samples: int,
    context_length: int,
    selection: GainSelection | None = None,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame], list[Path]]:
    """The analysis of a finished run from its shards alone (no model): writes the tables (Parquet
    and CSV), the figures and ``summary.json`` into ``out``; returns (summary, tables, figures).

    ``n_layers``/``n_heads`` are the model's shape (:func:`model_shape` of its config), ``n_samples``
    and ``context_length`` the windows'. ``selection`` (``heads: from_gain_map``) is recomputed from
    the gain-map shard when not given. Every shard of :func:`plan_shards` must be in ``out/shards``.
    """
    out = Path(out)
    tables: dict[str, pd.DataFrame] = {}
    figures: list[Path] = []
    summary: dict[str, Any] = {
        "experiment": config.experiment,
        "model": config.model,
        "n_samples": int(n_samples),
        "context_length": int(context_length),
        "alphas": config.alphas,
    }
    gain_kwargs = dict(n_bootstrap=config.n_bootstrap, seed=config.seed)
    if config.heads == "from_gain_map" and selection is None:
        selection = gain_map_selection(config, read_shard(out, _shard_name("local", tag=GAIN_MAP_TAG)))
    shards = [s for s in plan_shards(config, n_layers, n_heads, selection) if not s.name.startswith(GAIN_MAP_TAG)]
    targets = _sweep_targets(config, n_layers, n_heads, selection)
    sweep = pd.concat(
        [_read_mode(out, [s for s in shards if s.mode == mode]) for mode in config.modes], ignore_index=True
    )

    if config.experiment in ("scale_sweep", "gain_map"):
        _write_table(out, "sweep", sweep, tables)
        gains = gain_mod.gain_table(sweep, **gain_kwargs)
        if config.experiment == "gain_map":
            gains = gain_mod.gain_categories(gains, by=config.gain_by)
            selected = gain_mod.select_heads(gains, by=config.gain_by)
            _write_table(out, "selected_heads", selected, tables)
            summary.update(_gain_map_summary(gains, selected, config.gain_by))
            figures.append(
                sweep_figures.plot_gain_heatmap(
                    gains, out / "gain_heatmap.png", metric=config.gain_by, n_layers=n_layers, n_heads=n_heads
                )
            )
            fit_heads = [(int(r.layer), int(r.head)) for r in selected.itertuples()]
        else:
            fit_heads = targets[:12]
            figures.append(sweep_figures.plot_metric_vs_scale(sweep, out / "metric_vs_scale.png", heads=fit_heads))
            if config.control is not None:
                summary.update(_control_summary(gains, targets, tuple(config.control), config.gain_by))
        _write_table(out, "gains", gains, tables)
        figures.append(
            sweep_figures.plot_gain_fits(sweep, gains, out / "gain_fits.png", metric=config.gain_by, heads=fit_heads)
        )
        summary["gains"] = _records(
            gains,
            [
                "layer",
                "head",
                "kind",
                "mode",
                f"gain_{config.gain_by}",
                f"r_squared_{config.gain_by}",
                f"ci_low_{config.gain_by}",
                f"ci_high_{config.gain_by}",
            ],
            limit=64,
        )
    else:
        roles: dict[tuple[int, int], str] = {}
        if selection is not None:
            _write_table(out, "gain_map", selection.gains, tables)
            _write_table(out, "selected_heads", selection.selected, tables)
            roles = selection.roles
            summary.update(_gain_map_summary(selection.gains, selection.selected, config.gain_by))
        _write_table(out, "sweep", sweep, tables)
        asym = qk_asymmetry.asymmetry_table(sweep, roles=roles or None)
        _write_table(out, "asymmetry", asym, tables)
        summary["asymmetry"] = _records(asym, list(asym.columns), limit=64)
        mode = "propagated" if "propagated" in config.modes else config.modes[0]
        figures.append(sweep_figures.plot_metric_vs_scale(sweep, out / "metric_vs_scale.png", heads=targets[:12]))
        figures.append(
            sweep_figures.plot_qk_delta_entropy(sweep, out / "qk_delta_entropy.png", heads=targets[:12], mode=mode)
        )
        figures.append(
            sweep_figures.plot_qk_panel(
                sweep,
                asym[asym["mode"] == mode] if "mode" in asym else asym,
                out / "qk_panel.png",
                heads=targets[:12],
                mode=mode,
            )
        )
    summary["files"] = sorted([f"{name}.parquet" for name in tables] + [p.name for p in figures])
    write_json(out / "summary.json", summary)
    return json.loads((out / "summary.json").read_text()), tables, figures


def run_sweep(
    config: SweepConfig,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    command_line: Sequence[str] | None = None,
) -> SweepResult:
    """Runs ``config`` into ``out`` (default ``config.out``, else ``results/<experiment>``).

    Computes the missing shards of :func:`plan_shards` (with ``heads: from_gain_map`` the gain-map
    shard first, then the shards of the heads it selects), then :func:`analyse_sweep`.

    Example:
        >>> import tempfile
        >>> cfg = SweepConfig(experiment="gain_map", context_length=32, n_samples=2, n_bootstrap=50)
        >>> result = run_sweep(cfg, out=tempfile.mkdtemp(), progress=False)
        >>> result.summary["categories"]["high"] + result.summary["categories"]["medium"] + result.summary["categories"]["low"]
        32
        >>> sorted(p.name for p in result.figures)
        ['gain_fits.png', 'gain_heatmap.png']
    """

    out_dir = Path(out or config.out or f"results/{config.experiment}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out: {out_dir} exists and is not a folder")
    model, tokenizer = load_model(
        config.model, dtype=config.dtype, device=config.device, attn_implementation=config.attn_implementation
    )
    # The model's own default where the config leaves ignore_first unset, so meta.json records the value used.
    config = dataclasses.replace(config, ignore_first=resolve_ignore_first(model, config.ignore_first))
    windows = load_windows(
        config.data, tokenizer, config.context_length, config.n_samples, add_special_tokens=config.add_special_tokens
    )
    identity = {
        "class": type(model).__name__,
        "config_sha256": config_hash(model),
        "weights_fingerprint": weights_fingerprint(model),
        "dtype": str(next(model.parameters()).dtype),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }
    meta = sweep_meta(config, identity, data_sha256(windows), command_line)
    source = model_source(config.model)
    if source is not None:  # a folder (absolute) or hub model (repo id, commit): found again from any folder
        meta["model_source"] = source
    n_layers, n_heads = model_shape(model.config)
    shards = plan_shards(config, n_layers, n_heads)  # checks the heads before anything is written
    _prepare_folder(out_dir, meta, resume)
    computed: list[str] = []

    def compute(todo: Sequence[SweepShard]) -> None:
        propagated = [s for s in todo if s.mode != "local"]
        with tqdm(
            total=len(propagated), desc="propagated sweep", unit="head", disable=not progress or not propagated
        ) as bar:
            for shard in todo:
                path = out_dir / SHARDS / shard.name
                if not path.is_file():
                    local = progress and shard.mode == "local"
                    write_parquet(path, sweep_shard(model, windows, shard, config, progress=local))
                    computed.append(shard.name)
                bar.update(shard.mode != "local")

    compute(shards)
    selection = None
    if config.heads == "from_gain_map":
        selection = gain_map_selection(config, read_shard(out_dir, shards[0].name))
        compute(plan_shards(config, n_layers, n_heads, selection)[len(shards) :])
    summary, tables, figures = analyse_sweep(
        config,
        out_dir,
        n_layers=n_layers,
        n_heads=n_heads,
        n_samples=len(windows),
        context_length=int(windows.shape[1]),
        selection=selection,
    )
    return SweepResult(out_dir, meta, summary, tables, figures, computed)
