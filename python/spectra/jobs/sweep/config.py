"""A sweep's settings: :class:`SweepConfig` (every key of a sweep's YAML file, checked), reading
the file, the result folder's names and :class:`SweepResult`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from spectra import defaults
from spectra.interventions.scale_sweep import (
    DEFAULT_ALPHAS,
    KINDS,
    MODES,
    check_alphas,
)
from spectra.metrics.profile import check_threshold
from spectra.models import check_ignore_first
from spectra.models.devices import check_device
from spectra.models.loading import DTYPE_NAMES

__all__ = ["EXPERIMENTS", "META", "SHARDS", "SweepConfig", "SweepResult", "load_config"]


EXPERIMENTS = ("scale_sweep", "gain_map", "qk_asymmetry")
META = "meta.json"
SHARDS = "shards"


@dataclass
class SweepConfig:
    """One sweep job. Every field can be set in the YAML file; unknown keys are an error."""

    experiment: str
    model: str = "tiny-llama"
    data: str | None = None  # text file, folder or .npz of windows; None: the embedded held-out text
    add_special_tokens: bool = True  # the tokenizer's BOS / [CLS] ... [SEP] in every text window
    context_length: int = 128
    n_samples: int = 8
    batch_size: int = 8
    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    heads: Any = None  # "all", [[layer, head], ...], or "from_gain_map" (qk_asymmetry)
    control: list[int] | None = None  # scale_sweep: the control head [layer, head] for exp2's gain ratio
    modes: list[str] | None = None  # default: local (scale_sweep, gain_map); propagated (qk_asymmetry)
    kinds: list[str] | None = None  # default: q (scale_sweep, gain_map); q and k (qk_asymmetry)
    ignore_first: int | None = None  # None: the model's default (2 for decoders, 0 for encoders)
    threshold: float = defaults.THRESHOLD
    gain_by: str = "max_attn"  # the gain that sets categories and picks heads (default max_attn; the seed's entry points disagreed, see docs/concepts.md, 'What the original code got wrong')
    n_bootstrap: int = 1000
    seed: int = 42
    out: str | None = None
    # Loading: the weights' dtype (float32, bfloat16 / bf16, float16 / fp16) and the device the model
    # runs on (None: where it loads, the CPU; cpu, cuda, cuda:N, mps). Neither is part of ``run`` in
    # meta.json: the dtype is in the model's identity (its weights_fingerprint hashes each weight's
    # dtype), and the device changes no setting of the analysis, only float rounding.
    dtype: str = defaults.DTYPE
    device: str | None = None
    # The attention backend asked for (sdpa, eager); also outside ``run``, like the device: meta.json's
    # model records the one used (eager where the architecture refuses sdpa).
    attn_implementation: str = defaults.ATTN_IMPLEMENTATION

    def __post_init__(self) -> None:
        if self.experiment not in EXPERIMENTS:
            raise ValueError(f"experiment: unknown {self.experiment!r}; allowed are {', '.join(EXPERIMENTS)}")
        for name in ("context_length", "n_samples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1; got {value!r}")
        check_ignore_first(self.ignore_first)
        if not isinstance(self.add_special_tokens, bool):
            raise ValueError(f"add_special_tokens: expected true or false; got {self.add_special_tokens!r}")
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
                raise ValueError(
                    f"heads: expected 'all', 'from_gain_map' or a list of [layer, head]; got {self.heads!r}"
                )
            try:
                self.heads = [[int(x) for x in pair] for pair in self.heads]
                if any(len(pair) != 2 for pair in self.heads):
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(
                    f"heads: expected 'all', 'from_gain_map' or a list of [layer, head]; got {self.heads!r}"
                ) from None
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
        dtype = DTYPE_NAMES.get(self.dtype.strip().lower()) if isinstance(self.dtype, str) else None
        if dtype not in defaults.DTYPES:
            raise ValueError(f"dtype: {self.dtype!r}; allowed are {', '.join(defaults.DTYPES)} (or bf16, fp16, fp32)")
        self.dtype = dtype
        if self.attn_implementation not in defaults.ATTN_IMPLEMENTATIONS:
            allowed = ", ".join(defaults.ATTN_IMPLEMENTATIONS)
            raise ValueError(f"attn_implementation: {self.attn_implementation!r}; allowed are {allowed}")
        if self.device is not None:  # the spelling only: whether it exists is checked when the model loads
            self.device = str(check_device(self.device, available=False))
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
