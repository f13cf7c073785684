"""The shards of a sweep: which target heads, modes and kinds each holds (:func:`plan_shards`), computing
one (:func:`sweep_shard`), the gain-map selection of exp3b's first stage, reading one back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from spectra.interventions import gain as gain_mod
from spectra.interventions.scale_sweep import (
    scale_sweep,
)
from spectra.jobs.sweep.config import SHARDS, SweepConfig

__all__ = [
    "GAIN_MAP_TAG",
    "GainSelection",
    "SweepShard",
    "check_heads",
    "gain_map_selection",
    "model_shape",
    "plan_shards",
    "read_shard",
    "sweep_shard",
]


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
            raise ValueError(
                f"heads: head {head} (layer {layer}) is not a query head; allowed heads are 0..{n_heads - 1}"
            )
        out.append((layer, head))
    if not out:
        raise ValueError("heads: no (layer, head) given")
    return list(dict.fromkeys(out))


def _mode_shards(
    mode: str, kinds: Sequence[str], targets: Sequence[tuple[int, int]], tag: str = ""
) -> list[SweepShard]:
    kinds = tuple(kinds)
    if mode == "local":
        return [SweepShard(_shard_name(mode, tag=tag), mode, kinds, tuple(targets))]
    return [SweepShard(_shard_name(mode, layer, head, tag), mode, kinds, ((layer, head),)) for layer, head in targets]


def _sweep_targets(
    config: SweepConfig, n_layers: int, n_heads: int, selection: GainSelection | None
) -> list[tuple[int, int]]:
    if config.heads == "from_gain_map":
        assert selection is not None
        return selection.targets
    targets = check_heads(config.heads, n_layers, n_heads)
    if config.control is not None:
        targets = list(dict.fromkeys([*targets, tuple(config.control)]))
    return targets


def plan_shards(
    config: SweepConfig, n_layers: int, n_heads: int, selection: GainSelection | None = None
) -> list[SweepShard]:
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
    return scale_sweep(
        model,
        input_ids,
        list(shard.targets),
        alphas=config.alphas,
        mode=shard.mode,
        kinds=list(shard.kinds),
        threshold=config.threshold,
        ignore_first=config.ignore_first,
        batch_size=config.batch_size,
        progress=progress,
    )


def gain_map_selection(config: SweepConfig, gain_map: pd.DataFrame) -> GainSelection:
    """The gain map (gain fits and p10/p90 categories by ``config.gain_by``) of the first stage's
    sweep table, and the heads it selects."""
    gains = gain_mod.gain_categories(
        gain_mod.gain_table(gain_map, n_bootstrap=config.n_bootstrap, seed=config.seed), by=config.gain_by
    )
    selected = gain_mod.select_heads(gains, by=config.gain_by)
    roles = {(int(r.layer), int(r.head)): str(r.role) for r in selected.itertuples()}
    return GainSelection(gains, selected, roles)


def read_shard(out: str | Path, name: str) -> pd.DataFrame:
    """A shard of a result folder as the sweep table it holds."""
    return pd.read_parquet(Path(out) / SHARDS / name)
