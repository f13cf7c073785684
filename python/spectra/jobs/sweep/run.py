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

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from spectra import defaults
from spectra.data.windows import load_windows
from spectra.figures import sweep as sweep_figures
from spectra.interventions import gain as gain_mod
from spectra.interventions import qk_asymmetry
from spectra.interventions.scale_sweep import (
    DEFAULT_ALPHAS,
    KINDS,
    MODES,
    check_alphas,
    scale_sweep,
)
from spectra.io.atomic import write_csv as _atomic_csv
from spectra.io.atomic import write_json as _atomic_json
from spectra.io.atomic import write_parquet as _atomic_parquet
from spectra.io.identity import config_hash, data_sha256, weights_fingerprint
from spectra.io.identity import sha256_of as _sha256
from spectra.io.identity import versions as _versions
from spectra.jobs.profile.run import _difference
from spectra.metrics.profile import check_threshold
from spectra.models.loading import load_model

__all__ = ["EXPERIMENTS", "GainSelection", "SweepConfig", "SweepResult", "SweepShard", "analyse_sweep", "check_heads",
           "gain_map_selection", "load_config", "model_shape", "plan_shards", "read_shard", "run_sweep", "sweep_meta",
           "sweep_shard"]

EXPERIMENTS = ("scale_sweep", "gain_map", "qk_asymmetry")
META = "meta.json"
SHARDS = "shards"


@dataclass
class SweepConfig:
    """One sweep job. Every field can be set in the YAML file; unknown keys are an error."""

    experiment: str
    model: str = "tiny-llama"
    data: str | None = None  # text file, folder or .npz of windows; None: the embedded held-out text
    context_length: int = 128
    n_samples: int = 8
    batch_size: int = 8
    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    heads: Any = None  # "all", [[layer, head], ...], or "from_gain_map" (qk_asymmetry)
    control: list[int] | None = None  # scale_sweep: the control head [layer, head] for exp2's gain ratio
    modes: list[str] | None = None  # default: local (scale_sweep, gain_map); propagated (qk_asymmetry)
    kinds: list[str] | None = None  # default: q (scale_sweep, gain_map); q and k (qk_asymmetry)
    ignore_first: int = defaults.IGNORE_FIRST
    threshold: float = defaults.THRESHOLD
    gain_by: str = "max_attn"  # the gain that sets categories and picks heads (default max_attn; the seed's entry points disagreed, see docs/concepts.md, 'What the original code got wrong')
    n_bootstrap: int = 1000
    seed: int = 42
    out: str | None = None

    def __post_init__(self) -> None:
        if self.experiment not in EXPERIMENTS:
            raise ValueError(f"experiment: unknown {self.experiment!r}; allowed are {', '.join(EXPERIMENTS)}")
        for name in ("context_length", "n_samples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1; got {value!r}")
        if isinstance(self.ignore_first, bool) or not isinstance(self.ignore_first, int) or self.ignore_first < 0:
            raise ValueError(f"ignore_first: expected an integer >= 0; got {self.ignore_first!r}")
        self.alphas = list(check_alphas(self.alphas))
        if self.modes is None:
            self.modes = ["propagated"] if self.experiment == "qk_asymmetry" else ["local"]
        if self.kinds is None:
            self.kinds = ["q", "k"] if self.experiment == "qk_asymmetry" else ["q"]
        for name, values, allowed in (("modes", self.modes, MODES), ("kinds", self.kinds, KINDS)):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ValueError(f"{name}: {values!r}; allowed are {', '.join(allowed)}")
        if self.experiment == "gain_map":
            if self.heads not in (None, "all"):
                raise ValueError("heads: a gain map covers every head; leave heads unset or 'all'")
            self.heads = "all"
        elif self.experiment == "qk_asymmetry":
            self.heads = "from_gain_map" if self.heads is None else self.heads
            if not {"q", "k"} <= set(self.kinds):
                raise ValueError(f"kinds: qk_asymmetry compares q and k scaling; got {self.kinds!r}")
        else:
            self.heads = "all" if self.heads is None else self.heads
        if self.heads not in ("all", "from_gain_map"):
            if isinstance(self.heads, str) or not isinstance(self.heads, Sequence):
                raise ValueError(f"heads: expected 'all', 'from_gain_map' or a list of [layer, head]; got {self.heads!r}")
            try:
                self.heads = [[int(x) for x in pair] for pair in self.heads]
                if any(len(pair) != 2 for pair in self.heads):
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(f"heads: expected 'all', 'from_gain_map' or a list of [layer, head]; "
                                 f"got {self.heads!r}") from None
        if self.heads == "from_gain_map" and self.experiment != "qk_asymmetry":
            raise ValueError("heads: 'from_gain_map' is for experiment qk_asymmetry")
        if self.control is not None:
            if self.experiment != "scale_sweep":
                raise ValueError("control: only scale_sweep compares a target with a control head")
            try:
                self.control = [int(x) for x in self.control]
                if len(self.control) != 2:
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(f"control: expected one [layer, head]; got {self.control!r}") from None
        if self.gain_by not in ("max_attn", "entropy"):
            raise ValueError(f"gain_by: {self.gain_by!r}; allowed are max_attn, entropy")

        check_threshold(self.threshold)
        for name in ("n_bootstrap", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0; got {value!r}")


def load_config(path: str | Path) -> SweepConfig:
    """A :class:`SweepConfig` from a YAML file (unknown keys name the allowed ones)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config: {path} is not a file")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"config: {path} must hold a YAML mapping of settings")
    allowed = set(SweepConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"config: unknown setting(s) {unknown} in {path}; allowed are {', '.join(sorted(allowed))}")
    if "experiment" not in raw:
        raise ValueError(f"config: {path} names no experiment; allowed are {', '.join(EXPERIMENTS)}")
    return SweepConfig(**raw)


@dataclass
class SweepResult:
    out_dir: Path
    meta: dict[str, Any]
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    figures: list[Path]
    computed_shards: list[str]


@dataclass(frozen=True)
class SweepShard:
    """One shard of a sweep run: its file under ``shards/``, the mode and kinds it sweeps, its target heads.

    ``local`` sweeps every target in one shard (one pass recomputes every head from one baseline);
    ``propagated`` has one shard per target head. ``spectra sweep`` and the engine's ``kind: sweep``
    write exactly these shards, under these names.
    """

    name: str
    mode: str
    kinds: tuple[str, ...]
    targets: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class GainSelection:
    """exp3b's first stage: the gain map of every head (local, Q) and the high/medium/low heads it picks."""

    gains: pd.DataFrame
    selected: pd.DataFrame
    roles: dict[tuple[int, int], str]

    @property
    def targets(self) -> list[tuple[int, int]]:
        return list(dict.fromkeys(self.roles))


GAIN_MAP_TAG = "gain_map-"


def _shard_name(mode: str, layer: int | None = None, head: int | None = None, tag: str = "") -> str:
    return f"{tag}{mode}.parquet" if layer is None else f"{tag}{mode}-L{layer:03d}H{head:03d}.parquet"


def model_shape(model_config) -> tuple[int, int]:
    """(layers, query heads per layer) of a transformers config: all the sweep analysis needs of a model."""
    return int(model_config.num_hidden_layers), int(model_config.num_attention_heads)


def check_heads(heads: Any, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """``"all"`` (every head of every layer) or (layer, head) pairs checked against the model's shape,
    with the messages of ``scale_sweep.check_targets`` (which needs the loaded model)."""
    if heads is None or heads == "all":
        return [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    out = []
    for pair in heads:
        layer, head = (int(x) for x in pair)
        if not 0 <= layer < n_layers:
            raise ValueError(f"heads: layer {layer} is not a layer of this model; allowed layers are 0..{n_layers - 1}")
        if not 0 <= head < n_heads:
            raise ValueError(f"heads: head {head} (layer {layer}) is not a query head; "
                             f"allowed heads are 0..{n_heads - 1}")
        out.append((layer, head))
    if not out:
        raise ValueError("heads: no (layer, head) given")
    return list(dict.fromkeys(out))


def _mode_shards(mode: str, kinds: Sequence[str], targets: Sequence[tuple[int, int]],
                 tag: str = "") -> list[SweepShard]:
    kinds = tuple(kinds)
    if mode == "local":
        return [SweepShard(_shard_name(mode, tag=tag), mode, kinds, tuple(targets))]
    return [SweepShard(_shard_name(mode, layer, head, tag), mode, kinds, ((layer, head),)) for layer, head in targets]


def _sweep_targets(config: SweepConfig, n_layers: int, n_heads: int,
                   selection: GainSelection | None) -> list[tuple[int, int]]:
    if config.heads == "from_gain_map":
        assert selection is not None
        return selection.targets
    targets = check_heads(config.heads, n_layers, n_heads)
    if config.control is not None:
        targets = list(dict.fromkeys([*targets, tuple(config.control)]))
    return targets


def plan_shards(config: SweepConfig, n_layers: int, n_heads: int,
                selection: GainSelection | None = None) -> list[SweepShard]:
    """Every shard of the run that can be known now, in the order ``run_sweep`` computes them.

    With ``heads: from_gain_map`` the target heads come from the gain map, so until its
    ``selection`` is known (:func:`gain_map_selection` of the first shard) the plan is that shard alone.

    Example:
        >>> cfg = SweepConfig(experiment="scale_sweep", heads=[[2, 0], [2, 5]], modes=["local", "propagated"])
        >>> [s.name for s in plan_shards(cfg, n_layers=4, n_heads=8)]
        ['local.parquet', 'propagated-L002H000.parquet', 'propagated-L002H005.parquet']
        >>> [s.name for s in plan_shards(SweepConfig(experiment="qk_asymmetry"), 4, 8)]
        ['gain_map-local.parquet']
    """
    shards: list[SweepShard] = []
    if config.heads == "from_gain_map":
        shards += _mode_shards("local", ["q"], check_heads("all", n_layers, n_heads), GAIN_MAP_TAG)
        if selection is None:
            return shards
    targets = _sweep_targets(config, n_layers, n_heads, selection)
    for mode in config.modes:
        shards += _mode_shards(mode, config.kinds, targets)
    return shards


def sweep_shard(model, input_ids, shard: SweepShard, config: SweepConfig, progress: bool = False) -> pd.DataFrame:
    """The sweep table of one shard (``scale_sweep`` of its targets, mode and kinds over ``config.alphas``)."""
    return scale_sweep(model, input_ids, list(shard.targets), alphas=config.alphas, mode=shard.mode,
                       kinds=list(shard.kinds), threshold=config.threshold, ignore_first=config.ignore_first,
                       batch_size=config.batch_size, progress=progress)


def gain_map_selection(config: SweepConfig, gain_map: pd.DataFrame) -> GainSelection:
    """The gain map (gain fits and p10/p90 categories by ``config.gain_by``) of the first stage's
    sweep table, and the heads it selects."""
    gains = gain_mod.gain_categories(gain_mod.gain_table(gain_map, n_bootstrap=config.n_bootstrap, seed=config.seed),
                                     by=config.gain_by)
    selected = gain_mod.select_heads(gains, by=config.gain_by)
    roles = {(int(r.layer), int(r.head)): str(r.role) for r in selected.itertuples()}
    return GainSelection(gains, selected, roles)


def read_shard(out: str | Path, name: str) -> pd.DataFrame:
    """A shard of a result folder as the sweep table it holds."""
    return pd.read_parquet(Path(out) / SHARDS / name)


def sweep_meta(config: SweepConfig, identity: dict[str, str], data_sha256: str,
               command_line: Sequence[str] | None = None) -> dict[str, Any]:
    """``meta.json`` of a run: ``identity`` is the model's ``class``, ``config_sha256``,
    ``weights_fingerprint`` and ``dtype``; ``run_hash`` covers the model (not its dtype name) and every
    setting but ``out``."""
    run = {k: v for k, v in asdict(config).items() if k != "out"}
    run["data_sha256"] = data_sha256
    model_identity = {k: identity[k] for k in ("class", "config_sha256", "weights_fingerprint")}
    return {
        "run_hash": _sha256({"model": model_identity, "run": run}),
        "model": {"name": config.model, **model_identity, "dtype": identity["dtype"]},
        "run": run,
        "versions": _versions(),
        "command_line": list(command_line) if command_line is not None else list(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _prepare_folder(out: Path, meta: dict[str, Any], resume: bool) -> None:
    shards = sorted((out / SHARDS).glob("*.parquet")) if (out / SHARDS).is_dir() else []
    if (out / META).is_file():
        try:
            old = json.loads((out / META).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"out: {out / META} is not valid JSON ({error}); choose another out or delete it") from None
        if old.get("run_hash") != meta["run_hash"] and shards:
            raise ValueError(f"out: {out} holds another run ({_difference(old, meta)}); choose another out or delete it")
        if shards and not resume:
            raise ValueError(f"out: {out} already holds {len(shards)} shard(s) of this run; pass --resume to finish it "
                             "(finished shards are kept) or choose another out")
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(f"out: {out} is not empty and holds no {META}; choose another out or delete it")
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    for stray in (out / SHARDS).glob(".*.tmp"):
        stray.unlink(missing_ok=True)
    _atomic_json(out / META, meta)


def _write_table(out: Path, name: str, frame: pd.DataFrame, files: dict[str, pd.DataFrame]) -> None:
    _atomic_parquet(out / f"{name}.parquet", frame)
    _atomic_csv(out / f"{name}.csv", frame)
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
    summary: dict[str, Any] = {"experiment": config.experiment, "model": config.model,
                               "n_samples": int(n_samples), "context_length": int(context_length),
                               "alphas": config.alphas}
    gain_kwargs = dict(n_bootstrap=config.n_bootstrap, seed=config.seed)
    if config.heads == "from_gain_map" and selection is None:
        selection = gain_map_selection(config, read_shard(out, _shard_name("local", tag=GAIN_MAP_TAG)))
    shards = [s for s in plan_shards(config, n_layers, n_heads, selection) if not s.name.startswith(GAIN_MAP_TAG)]
    targets = _sweep_targets(config, n_layers, n_heads, selection)
    sweep = pd.concat([_read_mode(out, [s for s in shards if s.mode == mode]) for mode in config.modes],
                      ignore_index=True)

    if config.experiment in ("scale_sweep", "gain_map"):
        _write_table(out, "sweep", sweep, tables)
        gains = gain_mod.gain_table(sweep, **gain_kwargs)
        if config.experiment == "gain_map":
            gains = gain_mod.gain_categories(gains, by=config.gain_by)
            selected = gain_mod.select_heads(gains, by=config.gain_by)
            _write_table(out, "selected_heads", selected, tables)
            summary.update(_gain_map_summary(gains, selected, config.gain_by))
            figures.append(sweep_figures.plot_gain_heatmap(gains, out / "gain_heatmap.png", metric=config.gain_by,
                                                           n_layers=n_layers, n_heads=n_heads))
            fit_heads = [(int(r.layer), int(r.head)) for r in selected.itertuples()]
        else:
            fit_heads = targets[:12]
            figures.append(sweep_figures.plot_metric_vs_scale(sweep, out / "metric_vs_scale.png", heads=fit_heads))
            if config.control is not None:
                summary.update(_control_summary(gains, targets, tuple(config.control), config.gain_by))
        _write_table(out, "gains", gains, tables)
        figures.append(sweep_figures.plot_gain_fits(sweep, gains, out / "gain_fits.png", metric=config.gain_by,
                                                    heads=fit_heads))
        summary["gains"] = _records(gains, ["layer", "head", "kind", "mode", f"gain_{config.gain_by}",
                                            f"r_squared_{config.gain_by}", f"ci_low_{config.gain_by}",
                                            f"ci_high_{config.gain_by}"], limit=64)
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
        figures.append(sweep_figures.plot_qk_delta_entropy(sweep, out / "qk_delta_entropy.png", heads=targets[:12],
                                                           mode=mode))
        figures.append(sweep_figures.plot_qk_panel(sweep, asym[asym["mode"] == mode] if "mode" in asym else asym,
                                                   out / "qk_panel.png", heads=targets[:12], mode=mode))
    summary["files"] = sorted([f"{name}.parquet" for name in tables] + [p.name for p in figures])
    _atomic_json(out / "summary.json", summary)
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
    model, tokenizer = load_model(config.model)
    windows = load_windows(config.data, tokenizer, config.context_length, config.n_samples)
    identity = {"class": type(model).__name__, "config_sha256": config_hash(model),
                "weights_fingerprint": weights_fingerprint(model), "dtype": str(next(model.parameters()).dtype)}
    meta = sweep_meta(config, identity, data_sha256(windows),
                      command_line)
    n_layers, n_heads = model_shape(model.config)
    shards = plan_shards(config, n_layers, n_heads)  # checks the heads before anything is written
    _prepare_folder(out_dir, meta, resume)
    computed: list[str] = []

    def compute(todo: Sequence[SweepShard]) -> None:
        propagated = [s for s in todo if s.mode != "local"]
        with tqdm(total=len(propagated), desc="propagated sweep", unit="head",
                  disable=not progress or not propagated) as bar:
            for shard in todo:
                path = out_dir / SHARDS / shard.name
                if not path.is_file():
                    local = progress and shard.mode == "local"
                    _atomic_parquet(path, sweep_shard(model, windows, shard, config, progress=local))
                    computed.append(shard.name)
                bar.update(shard.mode != "local")

    compute(shards)
    selection = None
    if config.heads == "from_gain_map":
        selection = gain_map_selection(config, read_shard(out_dir, shards[0].name))
        compute(plan_shards(config, n_layers, n_heads, selection)[len(shards):])
    summary, tables, figures = analyse_sweep(config, out_dir, n_layers=n_layers, n_heads=n_heads,
                                             n_samples=len(windows), context_length=int(windows.shape[1]),
                                             selection=selection)
    return SweepResult(out_dir, meta, summary, tables, figures, computed)


def _records(frame: pd.DataFrame, columns: list[str], limit: int) -> list[dict[str, Any]]:
    present = [c for c in columns if c in frame.columns]
    return frame[present].head(limit).replace({np.inf: "inf", -np.inf: "-inf"}).to_dict("records")


def _gain_map_summary(gains: pd.DataFrame, selected: pd.DataFrame, by: str) -> dict[str, Any]:
    column = f"gain_{by}"
    counts = gains["category"].value_counts()
    per_layer = gains.groupby("layer")[column].mean()
    return {
        "gain_by": by,
        "categories": {c: int(counts.get(c, 0)) for c in ("high", "medium", "low")},
        "p_low": float(gains["p_low"].iloc[0]),
        "p_high": float(gains["p_high"].iloc[0]),
        "gain_mean": float(gains[column].mean()),
        "gain_min": _head_value(gains, gains[column].idxmin(), column),
        "gain_max": _head_value(gains, gains[column].idxmax(), column),
        "r_squared_mean": float(gains[f"r_squared_{by}"].mean()),
        "monotonic_fraction": {m: float(gains[f"monotonic_{m}"].mean())
                               for m in ("entropy", "max_attn") if f"monotonic_{m}" in gains},
        "layer_mean_gain": {int(k): float(v) for k, v in per_layer.items()},
        "selected_heads": selected[["role", "layer", "head", column]].to_dict("records"),
    }


def _head_value(frame: pd.DataFrame, index, column: str) -> dict[str, Any]:
    row = frame.loc[index]
    return {"layer": int(row["layer"]), "head": int(row["head"]), column: float(row[column])}


def _control_summary(gains: pd.DataFrame, targets, control: tuple[int, int], by: str) -> dict[str, Any]:
    column = f"gain_{by}"
    first = gains.drop_duplicates(["layer", "head"]).set_index(["layer", "head"])[column]
    target = next(t for t in targets if t != control)
    ratio = float(first[target] / first[control]) if first[control] != 0 else float("inf")
    return {"target": list(target), "control": list(control), "gain_ratio": ratio,
            "gain_ratio_verdict": gain_mod.gain_ratio_verdict(float(first[target]), float(first[control]))}


def print_sweep_result(result: SweepResult) -> None:
    """What the CLI prints: where the files are and the experiment's headline numbers."""
    s = result.summary
    print(f"spectra sweep: {s['experiment']} on {s['model']} ({s['n_samples']} samples x {s['context_length']} tokens, "
          f"alphas {s['alphas']}) -> {result.out_dir}")
    if "categories" in s:
        c = s["categories"]
        print(f"gain map ({s['gain_by']}): {c['high']} high / {c['medium']} medium / {c['low']} low "
              f"(p10 {s['p_low']:.4g}, p90 {s['p_high']:.4g}); mean R^2 {s['r_squared_mean']:.3f}")
        column = f"gain_{s['gain_by']}"
        for row in s["selected_heads"]:
            print(f"  {row['role']:>6}: L{row['layer']}H{row['head']}  gain {row[column]:.4g}")
    if s["experiment"] == "scale_sweep":
        by = "max_attn"
        for row in s.get("gains", [])[:8]:
            column = next((c for c in row if c.startswith("gain_")), None)
            if column is None:
                continue
            by = column.removeprefix("gain_")
            ci = (row.get(f"ci_low_{by}"), row.get(f"ci_high_{by}"))
            ci_text = f" [{ci[0]:.4g}, {ci[1]:.4g}]" if None not in ci else ""
            print(f"  [{row.get('mode', '')}/{row.get('kind', '')}] L{row['layer']}H{row['head']} gain_{by} "
                  f"{row[column]:.4g}{ci_text}  R^2 {row.get(f'r_squared_{by}', float('nan')):.3f}")
    if "gain_ratio_verdict" in s:
        print(f"target/control gain ratio {s['gain_ratio']:.3f}: {s['gain_ratio_verdict']}")
    for row in s.get("asymmetry", [])[:12]:
        role = f"{row['role']}: " if row.get("role") else ""
        asym = row["asymmetry"]
        asym = f"{asym:.4f}" if isinstance(asym, float) else str(asym)
        mode = f"[{row['mode']}] " if row.get("mode") else ""
        print(f"  {mode}{role}L{row['layer']}H{row['head']} q_range {row['q_range']:.4g} k_range {row['k_range']:.4g} "
              f"asymmetry {asym} -> {row.get('interpretation', '')}")
        if row.get("k_group_entropy_shift") is not None:
            print(f"      K scaling also moves the rest of its GQA group's mean entropy by {row['k_group_entropy_shift']:.4g} "
                  f"nats (mean |shift|); "
                  f"logit KL q {row.get('q_kl_logits', float('nan')):.4g} vs k {row.get('k_kl_logits', float('nan')):.4g}")
    if result.computed_shards:
        print(f"computed {len(result.computed_shards)} shard(s)")
    for path in result.figures:
        print(f"figure: {path}")
