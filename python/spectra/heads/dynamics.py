"""Per-head statistics over training (seeds 003/004; see docs/heads.md, 'spectra.dynamics'): from saved checkpoints, or live.

* :func:`track` runs :func:`spectra.stats.head_stats` and :func:`spectra.taxonomy.classify` on each
  checkpoint folder of one architecture (the embedded ``tiny-qwen3`` ships six) and returns tidy
  series — ``head_series`` (step, layer, head, kv_head, stat, value), ``kv_series`` (step, layer,
  kv_head, stat, value: what a k_norm hook sees), ``gamma`` (step, layer, head, dim, gamma: the
  k_norm gain, ``head = -1`` when shared by every head) and ``taxonomy`` (step, layer, head, class,
  score, margin, runner_up). It is :func:`resolve_checkpoints` (the series' folders and steps),
  :func:`track_checkpoint` on each (one checkpoint's rows) and :func:`combine` (the parts joined by
  step); ``spectra run`` with ``kind: dynamics`` runs the same parts as separate tasks.
* :class:`KeyTracker` records the key statistics of every KV head (norm, max |x_d|, participation
  ratio, one-hotness, on the QK-norm output — the seeds' hook point — or the key projection) and γ
  every ``every`` steps of any training loop, reading detached tensors under ``no_grad`` so the
  training is bitwise unchanged; :class:`KeyTrackerCallback` is the same as a
  ``transformers.TrainerCallback``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import TrainerCallback

from spectra.data.windows import load_windows
from spectra.heads.stats import head_stats
from spectra.heads.taxonomy import Thresholds, classify
from spectra.models import adapter_for, zoo
from spectra.models.checkpoints import checkpoint_step
from spectra.models.loading import load_model
from spectra.ops.native import vec_stats

__all__ = [
    "Dynamics",
    "KeyTracker",
    "KeyTrackerCallback",
    "architecture",
    "check_architecture",
    "checkpoint_step",
    "combine",
    "gamma_table",
    "require_qk_norm",
    "resolve_checkpoints",
    "track",
    "track_checkpoint",
]

KV_STATS = (
    "k_norm_mean",
    "k_norm_std",
    "k_max_abs_mean",
    "k_participation_ratio_mean",
    "k_one_hotness_mean",
    "k_spectral_pr",
    "k_entropy_rank",
)
ID_COLUMNS = ("layer", "head", "kv_head")


def architecture(model: nn.Module) -> dict[str, object]:
    """What must agree across the checkpoints of one series."""
    a = adapter_for(model)
    return {
        "model_type": getattr(model.config, "model_type", None),
        "n_layers": a.n_layers,
        "n_heads": a.n_heads,
        "n_kv_heads": a.n_kv_heads,
        "head_dim": a.head_dim,
        "vocab_size": getattr(model.config, "vocab_size", None),
    }


def _no_qk_norm(family: str) -> ValueError:
    return ValueError(
        f"gamma: {family} has no QK-norm (no k_norm gain to plot); the γ heatmap needs a family with "
        "one (qwen3, gemma3, phi with qk_layernorm)"
    )


def require_qk_norm(model: nn.Module) -> None:
    """The ValueError of ``gamma_table(model, required=True)`` when a layer has no k_norm gain, without
    reading a weight (so it works on a ``meta``-device skeleton of the model too)."""
    a = adapter_for(model)
    for layer in range(a.n_layers):
        module = a.k_norm_module(layer)
        if module is None or getattr(module, "weight", None) is None:
            raise _no_qk_norm(a.family)


def gamma_table(model: nn.Module, step: int = 0, *, required: bool = False) -> pd.DataFrame:
    """The k_norm gain γ of every layer as rows (step, layer, head, dim, gamma); ``head = -1`` when γ is
    shared by all heads. Empty for families without QK-norm, or a ValueError with ``required``."""
    a = adapter_for(model)
    rows = []
    for layer in range(a.n_layers):
        gain = a.k_gain(layer)
        if gain is None:
            if required:
                raise _no_qk_norm(a.family)
            return pd.DataFrame(columns=["step", "layer", "head", "dim", "gamma"])
        per_head = gain.dim() == 2
        heads = range(gain.shape[0]) if per_head else [-1]
        for head in heads:
            values = gain[head] if per_head else gain
            rows.append(
                pd.DataFrame(
                    {
                        "step": step,
                        "layer": layer,
                        "head": head,
                        "dim": range(len(values)),
                        "gamma": values.double().numpy(),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


@dataclass
class Dynamics:
    """Tidy series over checkpoints (see the module docstring)."""

    head_series: pd.DataFrame
    kv_series: pd.DataFrame
    gamma: pd.DataFrame
    taxonomy: pd.DataFrame
    steps: list[int] = field(default_factory=list)
    architecture: dict[str, object] = field(default_factory=dict)


def _series(stats: pd.DataFrame, step: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    numeric = [c for c in stats.columns if c not in (*ID_COLUMNS, "tokens")]
    head = stats.melt(id_vars=list(ID_COLUMNS), value_vars=numeric, var_name="stat", value_name="value")
    head.insert(0, "step", step)
    kv_cols = [c for c in KV_STATS if c in stats.columns]
    kv = stats.drop_duplicates(["layer", "kv_head"])[["layer", "kv_head", *kv_cols]]
    kv = kv.melt(id_vars=["layer", "kv_head"], value_vars=kv_cols, var_name="stat", value_name="value")
    kv.insert(0, "step", step)
    return head, kv


def resolve_checkpoints(checkpoints: Sequence[str | Path] | str) -> list[tuple[int, Path]]:
    """The ``(step, folder)`` of every checkpoint of a series, sorted by step (what :func:`track` runs).

    ``checkpoints``: checkpoint folders of one model, or a zoo name (``"tiny-qwen3"``: its training
    checkpoints, then the final model when it is a later step than the last checkpoint).

    Example:
        >>> [(step, folder.name) for step, folder in resolve_checkpoints("tiny-qwen3")][:2]
        [(0, 'step-000000'), (100, 'step-000100')]
    """
    folders: list[Path]
    final_step: int | None = None
    if isinstance(checkpoints, str) and checkpoints in zoo.MODEL_NAMES:
        folders = zoo.checkpoint_paths(checkpoints)
        if not folders:
            raise ValueError(f"checkpoints: zoo model {checkpoints!r} ships no training checkpoints")
        final = zoo.model_path(checkpoints)
        training = json.loads((final / "training.json").read_text()) if (final / "training.json").is_file() else {}
        if "step" in training and int(training["step"]) not in {checkpoint_step(f) for f in folders}:
            final_step = int(training["step"])  # the final model is a later step than the last checkpoint
            folders = [*folders, final]
    elif isinstance(checkpoints, (str, Path)):
        raise ValueError(
            f"checkpoints: expected a list of checkpoint folders or a zoo name ({', '.join(zoo.MODEL_NAMES)}); "
            f"got {checkpoints!r}"
        )
    else:
        folders = [Path(c) for c in checkpoints]
    if not folders:
        raise ValueError("checkpoints: the list is empty")
    for folder in folders:
        if not (folder / "config.json").is_file():
            raise ValueError(f"checkpoints: {folder} is not a model folder (no config.json)")
    steps = [final_step if (final_step is not None and f == folders[-1]) else checkpoint_step(f) for f in folders]
    if len(set(steps)) != len(steps):
        raise ValueError(f"checkpoints: two checkpoints share a step ({steps})")
    order = sorted(range(len(folders)), key=lambda i: steps[i])
    return [(steps[i], folders[i]) for i in order]


def check_architecture(
    first: str | Path, reference: dict[str, object], folder: str | Path, shape: dict[str, object]
) -> None:
    """Raises the ValueError of a series mixing models: ``folder`` (of :func:`architecture` ``shape``)
    differs from the series' ``first`` checkpoint."""
    if shape != reference:
        differ = {k: (reference.get(k), shape[k]) for k in shape if shape[k] != reference.get(k)}
        raise ValueError(
            f"checkpoints: {folder} has another architecture than {first}: {differ}; one series "
            "needs checkpoints of one model"
        )


def track_checkpoint(
    model: nn.Module,
    step: int,
    input_ids: torch.Tensor,
    *,
    n_random: int = 8,
    random_block: int = 32,
    batch_size: int = 8,
    thresholds: Thresholds | None = None,
) -> Dynamics:
    """One checkpoint's part of the series (``steps == [step]``): :func:`spectra.stats.head_stats` on
    ``input_ids`` and the repeated random blocks, :func:`spectra.taxonomy.classify`, and γ.
    :func:`combine` joins such parts into the series :func:`track` returns.

    Example:
        >>> from spectra import zoo
        >>> from spectra.data.windows import load_windows
        >>> model, tok = zoo.load("tiny-qwen3", checkpoint=100)
        >>> part = track_checkpoint(model, 100, load_windows(None, tok, 32, 2), n_random=2, random_block=8)
        >>> part.steps, sorted(part.taxonomy["step"].unique().tolist()), part.architecture["n_kv_heads"]
        ([100], [100], 2)
    """
    stats = head_stats(model, input_ids, n_random=n_random, random_block=random_block, batch_size=batch_size)
    head, kv = _series(stats, step)
    classes = classify(stats, thresholds)[["layer", "head", "class", "score", "margin", "runner_up"]]
    classes.insert(0, "step", step)
    return Dynamics(
        head_series=head,
        kv_series=kv,
        gamma=gamma_table(model, step),
        taxonomy=classes,
        steps=[step],
        architecture=architecture(model),
    )


def combine(parts: Sequence[Dynamics]) -> Dynamics:
    """The series of several checkpoints' parts (from :func:`track_checkpoint`), sorted by step,
    exactly as :func:`track` returns it; the architecture is the first part's (see
    :func:`check_architecture`).

    Example:
        >>> import pandas as pd
        >>> empty = pd.DataFrame({"step": [], "value": []})
        >>> late, early = (Dynamics(empty, empty, empty, empty, steps=[s]) for s in (200, 100))
        >>> combine([late, early]).steps
        [100, 200]
    """
    if not parts:
        raise ValueError("checkpoints: the list is empty")
    parts = sorted(parts, key=lambda p: p.steps[0])
    steps = [step for part in parts for step in part.steps]
    if len(set(steps)) != len(steps):
        raise ValueError(f"checkpoints: two checkpoints share a step ({steps})")
    return Dynamics(
        head_series=pd.concat([p.head_series for p in parts], ignore_index=True),
        kv_series=pd.concat([p.kv_series for p in parts], ignore_index=True),
        gamma=pd.concat([p.gamma for p in parts], ignore_index=True),
        taxonomy=pd.concat([p.taxonomy for p in parts], ignore_index=True),
        steps=sorted(steps),
        architecture=dict(parts[0].architecture),
    )


def track(
    checkpoints: Sequence[str | Path] | str,
    input_ids: torch.Tensor | None = None,
    *,
    context_length: int = 128,
    n_samples: int = 8,
    add_special_tokens: bool = True,
    n_random: int = 8,
    random_block: int = 32,
    batch_size: int = 8,
    thresholds: Thresholds | None = None,
    progress: bool = False,
    dtype: torch.dtype | str | None = None,
    device: str | int | torch.device | None = None,
    attn_implementation: str = "sdpa",
) -> Dynamics:
    """Head statistics and classes of every checkpoint, as tidy series sorted by step.

    ``checkpoints``: checkpoint folders of one architecture, or a zoo name (``"tiny-qwen3"``: its
    training checkpoints, then the final model). ``input_ids``: ``(N, T)`` windows; default the
    zoo's held-out text cut into ``n_samples`` windows of ``context_length`` tokens with the first
    checkpoint's tokenizer, with its special tokens unless ``add_special_tokens=False``
    (:func:`spectra.data.windows.load_windows`). Each checkpoint is :func:`track_checkpoint`; the parts are joined by
    :func:`combine` (``spectra run`` with ``kind: dynamics`` computes the parts as separate tasks).
    ``dtype`` (default float32), ``device`` (default: the CPU) and ``attn_implementation`` load each checkpoint as
    :func:`spectra.models.loading.load_model` does; the statistics are float32/float64 whatever they are.

    Example:
        >>> from spectra import dynamics
        >>> result = dynamics.track("tiny-qwen3", context_length=64, n_samples=2, n_random=2, random_block=8)
        >>> result.steps
        [0, 100, 200, 400, 800, 1600]
        >>> sorted(result.gamma["head"].unique().tolist()), result.kv_series["stat"].nunique()
        ([-1], 7)
    """
    series = resolve_checkpoints(checkpoints)
    parts: list[Dynamics] = []
    first: tuple[Path, dict[str, object]] | None = None
    for step, folder in tqdm(series, desc="checkpoints", disable=not progress):
        model, tokenizer = load_model(str(folder), dtype=dtype, device=device, attn_implementation=attn_implementation)
        shape = architecture(model)
        if first is None:
            first = (folder, shape)
            if input_ids is None:
                input_ids = load_windows(
                    None, tokenizer, context_length, n_samples, add_special_tokens=add_special_tokens
                )
        else:
            check_architecture(first[0], first[1], folder, shape)
        parts.append(
            track_checkpoint(
                model,
                step,
                input_ids,
                n_random=n_random,
                random_block=random_block,
                batch_size=batch_size,
                thresholds=thresholds,
            )
        )
    return combine(parts)


class KeyTracker:
    """Records per-KV-head key statistics and γ every ``every`` steps of a training loop.

    Hooks read the key stage (QK-norm output where the family has one, else the key projection)
    detached and under ``no_grad``: the training computes exactly what it would without them. Call
    :meth:`step` once per optimizer step (or use :class:`KeyTrackerCallback` with ``Trainer``).

    Example:
        >>> import torch, spectra
        >>> from spectra.models.random_init import tiny_model
        >>> model = tiny_model("qwen3", "sdpa").train()
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> ids = torch.randint(0, 100, (2, 12))
        >>> with spectra.dynamics.KeyTracker(model, every=2) as tracker:
        ...     for _ in range(4):
        ...         model(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad(); tracker.step()
        >>> sorted(tracker.kv_series()["step"].unique().tolist())
        [0, 2]
    """

    def __init__(self, model: nn.Module, every: int = 10) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every: expected an integer >= 1; got {every!r}")
        self.model = model
        self.adapter = adapter_for(model)
        self.every = every
        self.current_step = 0
        self._rows: list[dict[str, object]] = []
        self._gamma: list[pd.DataFrame] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._recorded_gamma_at: int | None = None

    @property
    def recording(self) -> bool:
        return self.current_step % self.every == 0

    def __enter__(self) -> KeyTracker:
        if self._handles:
            raise RuntimeError("KeyTracker: already active")
        try:
            for layer in range(self.adapter.n_layers):
                for stage_hook in self.adapter.stage_hooks(layer):
                    self._handles.append(stage_hook.module.register_forward_hook(self._reader(layer, stage_hook)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def _reader(self, layer: int, stage_hook):
        def read(module, args, output):
            if not self.recording:
                return
            keys = stage_hook.read(output).get("k")
            if keys is None:
                return
            with torch.no_grad():
                s = vec_stats(keys.detach().transpose(1, 2))  # (B, T, Hkv)
                values = {
                    "k_norm_mean": s.norm.mean((0, 1)),
                    "k_norm_std": s.norm.std((0, 1), correction=0),
                    "k_max_abs_mean": s.max_abs.mean((0, 1)),
                    "k_participation_ratio_mean": s.participation_ratio.nanmean((0, 1)),
                    "k_one_hotness_mean": (s.max_abs / s.norm).nanmean((0, 1)),
                }
            for stat, per_head in values.items():
                for kv_head, value in enumerate(per_head.tolist()):
                    self._rows.append(
                        {"step": self.current_step, "layer": layer, "kv_head": kv_head, "stat": stat, "value": value}
                    )
            if self._recorded_gamma_at != self.current_step:
                self._recorded_gamma_at = self.current_step
                self._gamma.append(gamma_table(self.model, self.current_step))

        return read

    def step(self, global_step: int | None = None) -> None:
        """Advances to the next training step (or to ``global_step``)."""
        self.current_step = self.current_step + 1 if global_step is None else int(global_step)

    def kv_series(self) -> pd.DataFrame:
        """(step, layer, kv_head, stat, value), averaged over the forwards of each recorded step."""
        if not self._rows:
            return pd.DataFrame(columns=["step", "layer", "kv_head", "stat", "value"])
        frame = pd.DataFrame(self._rows)
        return frame.groupby(["step", "layer", "kv_head", "stat"], as_index=False)["value"].mean()

    def gamma(self) -> pd.DataFrame:
        if not self._gamma:
            return pd.DataFrame(columns=["step", "layer", "head", "dim", "gamma"])
        return pd.concat(self._gamma, ignore_index=True)


class KeyTrackerCallback(TrainerCallback):
    """``transformers.Trainer(..., callbacks=[KeyTrackerCallback(every=50)])``: a :class:`KeyTracker`
    on the trained model from the first to the last step; read ``callback.tracker`` afterwards."""

    def __init__(self, every: int = 10) -> None:
        self.every = every
        self.tracker: KeyTracker | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("KeyTrackerCallback: the Trainer passed no model")
        self.tracker = KeyTracker(model, every=self.every).__enter__()
        self.tracker.step(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self.tracker.step(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self.tracker.__exit__(None, None, None)
