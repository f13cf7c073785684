"""Probe: record per-head Q/K/V (pre- or post-RoPE) from a transformers model's real forward pass.

The model's attention is routed through Spectra (see ``spectra.capture.attention_switch``) and every
layer's q, k, v go to a native ``HookRegistry`` that decides, per (layer, kind, stage), which
positions and heads to keep. Logits are bitwise unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from spectra import __version__
from spectra.capture.attention_switch import AttentionClient, AttentionSwitch, layer_attention, switch_for
from spectra.capture.store import Captured, CaptureWriter, capture_path
from spectra.models import Adapter, UnsupportedStructureError, adapter_for, inverse_rope
from spectra.ops import HookRegistry, PositionSampler
from spectra.ops.backend import current as current_backend

KINDS = ("q", "k", "v")
STAGES = ("pre_rope", "post_rope")
PRE_ROPE_ROUTES = ("hook", "inverse_rope")
#: Bucket size used when ``positions`` names a random sampler without one.
DEFAULT_BUCKET_SIZE = 64

Positions = str | PositionSampler | Sequence[int]
Heads = None | Sequence[int] | Mapping[int, Sequence[int]] | Sequence[tuple[int, int]]


def make_sampler(positions: Positions, *, bucket_size: int | None = None, seed: int = 0) -> PositionSampler:
    """A PositionSampler from the Probe's ``positions`` argument.

    ``"all"``, ``"uniform"``, ``"log_uniform"`` (bucket_size defaults to 64 for the random ones and
    1 otherwise), a ``PositionSampler`` as is, or a list of positions (the explicit sampler).
    """
    if isinstance(positions, PositionSampler):
        return positions
    if isinstance(positions, str):
        if positions not in ("all", "uniform", "log_uniform"):
            raise ValueError(
                f"positions: unknown sampler {positions!r}; allowed are 'all', 'uniform', 'log_uniform', "
                "a spectra.PositionSampler, or a list of token positions"
            )
        default = 1 if positions == "all" else DEFAULT_BUCKET_SIZE
        return PositionSampler(positions, bucket_size=bucket_size or default, seed=seed)
    try:
        listed = [int(p) for p in positions]
    except (TypeError, ValueError):
        raise TypeError(
            f"positions: expected 'all', 'uniform', 'log_uniform', a PositionSampler or a list of ints; "
            f"got {positions!r}"
        ) from None
    if not listed:
        raise ValueError("positions: the list of positions is empty")
    return PositionSampler("explicit", bucket_size=bucket_size or 1, positions=listed)


def _as_tuple(value: str | Iterable[str], name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items:
        raise ValueError(f"{name}: nothing requested; allowed values are {', '.join(allowed)}")
    for item in items:
        if item not in allowed:
            raise ValueError(f"{name}: unknown value {item!r}; allowed values are {', '.join(allowed)}")
    return tuple(dict.fromkeys(items))


def _heads_by_layer(adapter: Adapter, layers: Iterable[int] | None, heads: Heads) -> dict[int, tuple[int, ...]]:
    n_layers, n_heads = adapter.n_layers, adapter.n_heads

    def check_layer(layer: Any) -> int:
        if not isinstance(layer, (int, np.integer)) or not 0 <= layer < n_layers:
            raise ValueError(f"layers: {layer!r} is not a layer of this model; allowed layers are 0..{n_layers - 1}")
        return int(layer)

    def check_heads(layer: int, hs: Iterable[Any]) -> tuple[int, ...]:
        out = []
        for h in hs:
            if not isinstance(h, (int, np.integer)) or not 0 <= h < n_heads:
                raise ValueError(
                    f"heads: {h!r} (layer {layer}) is not a query head of this model; allowed heads are 0..{n_heads - 1}"
                )
            out.append(int(h))
        if not out:
            raise ValueError(f"heads: no heads selected for layer {layer}")
        return tuple(sorted(set(out)))

    chosen = sorted({check_layer(layer) for layer in layers}) if layers is not None else list(range(n_layers))
    if not chosen:
        raise ValueError("layers: the list of layers is empty")
    if heads is None:
        return {layer: tuple(range(n_heads)) for layer in chosen}
    if isinstance(heads, Mapping):
        by_layer = {check_layer(layer): hs for layer, hs in heads.items()}
        return {layer: check_heads(layer, hs) for layer, hs in sorted(by_layer.items()) if layer in chosen}
    heads = list(heads)
    if heads and all(isinstance(h, tuple) for h in heads):
        grouped: dict[int, list[int]] = {}
        for pair in heads:
            if len(pair) != 2:
                raise ValueError(f"heads: expected (layer, head) pairs; got {pair!r}")
            grouped.setdefault(check_layer(pair[0]), []).append(pair[1])
        return {layer: check_heads(layer, hs) for layer, hs in sorted(grouped.items()) if layer in chosen}
    return {layer: check_heads(layer, heads) for layer in chosen}


class Probe(AttentionClient):
    """Captures per-head Q, K and V from every forward pass of ``model`` inside ``with probe:``.

    Args:
        model: a transformers model of a supported family (see ``spectra.models``).
        layers: layers to capture (default all).
        heads: query heads: a list (same for every layer), ``{layer: [heads]}``, or ``[(layer, head)]``.
            K and V are captured for the KV heads those query heads read (``probe.kv_head(h)``).
        capture: any of ``"q"``, ``"k"``, ``"v"``.
        stage: ``"post_rope"`` (what the attention kernel sees: after QK-norm and RoPE) and/or
            ``"pre_rope"`` (after QK-norm, before RoPE).
        positions: which tokens to keep: ``"all"``, ``"uniform"``, ``"log_uniform"``, a
            ``spectra.PositionSampler``, or a list of positions. One draw per (example, layer, kind),
            shared by all heads and stages of that layer and kind.
        bucket_size, seed: for samplers named by string.
        out_dir: stream rows to Parquet there (qk-sniffer layout, see ``spectra.capture.store``).
        keep_in_memory: keep rows for ``captured()`` (default: True unless ``out_dir`` is given).
        pre_rope_route: ``"hook"`` (forward hooks on the projections / QK-norm, exact) or
            ``"inverse_rope"`` (undo RoPE on the post-RoPE vectors with the model's own cos/sin).
        row_stats, threshold, n_sink: also measure the heads' attention rows inside the forward
            (``attn_row_stats`` and q/k norms, see ``drain_row_stats``), with the ops' implementation
            that ``spectra.ops.backend.current()`` names when the probe is built.

    Rows are numbered by example: the i-th sequence the model sees inside the probe is example i,
    unless ``set_example_ids`` names the rows of the next forward.

    Example:
        >>> import torch, spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> ids = tok("In the beginning God created the heaven and the earth.", return_tensors="pt").input_ids
        >>> probe = spectra.Probe(model, layers=[1], heads=[0, 5], capture=("q", "k"))
        >>> with probe, torch.no_grad():
        ...     logits = model(ids).logits
        >>> q = probe.captured(1, 5, "q")
        >>> k = probe.captured(1, probe.kv_head(5), "k")
        >>> q.vectors.shape == (ids.shape[1], 32), probe.kv_head(5)
        (True, 1)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[int] | None = None,
        heads: Heads = None,
        capture: str | Iterable[str] = ("q", "k"),
        stage: str | Iterable[str] = "post_rope",
        positions: Positions = "all",
        *,
        bucket_size: int | None = None,
        seed: int = 0,
        out_dir: str | Path | None = None,
        keep_in_memory: bool | None = None,
        pre_rope_route: Literal["hook", "inverse_rope"] = "hook",
        row_stats: bool = False,
        threshold: float = 0.9,
        n_sink: int = 4,
    ) -> None:
        self.model = model
        self.adapter = adapter_for(model)
        empty_capture = not isinstance(capture, str) and len(tuple(capture)) == 0
        if empty_capture and not row_stats:
            raise ValueError("capture: nothing requested; allowed values are q, k, v (or pass row_stats=True)")
        self.kinds = () if empty_capture else _as_tuple(capture, "capture", KINDS)
        self.stages = _as_tuple(stage, "stage", STAGES)
        if pre_rope_route not in PRE_ROPE_ROUTES:
            raise ValueError(
                f"pre_rope_route: unknown route {pre_rope_route!r}; allowed are {', '.join(PRE_ROPE_ROUTES)}"
            )
        self.pre_rope_route = pre_rope_route
        self._pre_from_call: set[int] = set()  # layers whose pre-RoPE vectors are the call's (see _install_pre_rope)
        unavailable = self.adapter.inverse_rope_unavailable
        if pre_rope_route == "inverse_rope" and unavailable:
            raise ValueError(f"pre_rope_route: {type(model).__name__}: {unavailable}")
        self.heads_by_layer = _heads_by_layer(self.adapter, layers, heads)
        self.sampler = make_sampler(positions, bucket_size=bucket_size, seed=seed)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.keep_in_memory = (self.out_dir is None) if keep_in_memory is None else bool(keep_in_memory)
        if self.out_dir is None and not self.keep_in_memory:
            raise ValueError("keep_in_memory: False needs an out_dir, or the rows would go nowhere")
        a = self.adapter
        self.registry = HookRegistry(a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, self.sampler)
        for layer, layer_heads in self.heads_by_layer.items():
            for kind in self.kinds:
                targets = layer_heads if kind == "q" else self.kv_heads(layer)
                for st in self.stages:
                    self.registry.add_capture(layer, kind, st, list(targets), self.keep_in_memory)
        if not (isinstance(threshold, (int, float)) and 0.0 < threshold <= 1.0):
            raise ValueError(f"threshold: {threshold!r} is outside (0, 1]")
        backend = current_backend()  # SPECTRA_BACKEND or spectra.backend(...), as the probe is built
        self._row_stats = (
            [
                self.registry.add_row_stats(layer, list(hs), float(threshold), int(n_sink), backend=backend)
                for layer, hs in self.heads_by_layer.items()
            ]
            if row_stats
            else []
        )
        self.threshold, self.n_sink = float(threshold), int(n_sink)
        self._active_layers = frozenset(self.heads_by_layer)
        self._pre_rope_kinds = self.kinds if "pre_rope" in self.stages else ()
        self._switch: AttentionSwitch | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._rope: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._writer: CaptureWriter | None = None
        self._examples = itertools.count()
        self._next_example_ids: list[int] | None = None
        self._entered = False
        self.n_examples = 0
        # How the caller made the inputs (e.g. run_capture's tokenisation), recorded in the sidecar.
        self.input_notes: dict[str, Any] = {}
        self._valid: torch.Tensor | None = None  # the current batch's real tokens (B, T)

    # ---- GQA ----
    def kv_head(self, head: int) -> int:
        """The KV head query head ``head`` reads: ``head // (n_heads // n_kv_heads)``."""
        return self.registry.kv_head(head)

    @property
    def kv_head_map(self) -> tuple[int, ...]:
        """``kv_head_map[h]`` is the KV head of query head h."""
        return tuple(self.registry.kv_head(h) for h in range(self.adapter.n_heads))

    def kv_heads(self, layer: int) -> tuple[int, ...]:
        """KV heads captured for ``layer`` (those its selected query heads read)."""
        return tuple(sorted({self.kv_head(h) for h in self.heads_by_layer[layer]}))

    def set_example_ids(self, example_ids: Sequence[int]) -> None:
        """Names the rows of the next forward (default: a running count from 0)."""
        self._next_example_ids = [int(e) for e in example_ids]

    # ---- context ----
    def __enter__(self) -> Probe:
        if self._entered:
            raise RuntimeError("Probe: this probe was already used; create a new Probe for another capture")
        self._entered = True
        try:
            if self.out_dir is not None:
                self._writer = CaptureWriter(self.out_dir)
                n_files = sum(
                    len(hs if kind == "q" else self.kv_heads(layer)) * len(self.stages)
                    for layer, hs in self.heads_by_layer.items()
                    for kind in self.kinds
                )
                self._writer.reserve(n_files)
            if "pre_rope" in self.stages:
                self._install_pre_rope()
            self._switch = switch_for(self.model)
            self._switch.attach(self)
        except BaseException:
            self._close(failed=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(failed=exc_type is not None)

    def _close(self, failed: bool) -> None:
        try:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._rope.clear()
        finally:
            try:
                if self._switch is not None:
                    self._switch.detach(self)
                    self._switch = None
            finally:
                if self.registry.in_batch:
                    self.registry.end_batch(discard=True)
                if self._writer is not None:
                    if failed:
                        self._writer.abort()
                    else:
                        self._writer.commit(self.describe())
                    self._writer = None

    def _install_pre_rope(self) -> None:
        for layer in self.heads_by_layer:
            if self.pre_rope_route == "hook" or not self.adapter.uses_rope(layer):
                try:
                    stage_hooks = self.adapter.stage_hooks(layer)
                except UnsupportedStructureError:
                    if self.adapter.uses_rope(layer):
                        raise
                    # No RoPE on this layer and no projection to hook: what the call receives is the
                    # pre-RoPE stage (as for GPT-2).
                    self._pre_from_call.add(layer)
                    continue
                for stage_hook in stage_hooks:
                    self._handles.append(stage_hook.module.register_forward_hook(self._stage_reader(layer, stage_hook)))
            else:
                module = self.adapter.attention[layer]
                self._handles.append(module.register_forward_pre_hook(self._rope_stasher(layer), with_kwargs=True))

    def _stage_reader(self, layer: int, stage_hook):
        wanted = self._pre_rope_kinds

        def read(module, args, output):
            if not self.registry.in_batch:
                return
            for kind, x in stage_hook.read(output).items():
                if kind in wanted:
                    self.registry.on_stage(layer, kind, "pre_rope", x)

        return read

    def _rope_stasher(self, layer: int):
        def stash(module, args, kwargs):
            embeddings = kwargs.get("position_embeddings")
            if embeddings is None:
                raise RuntimeError(
                    f"pre_rope_route='inverse_rope': layer {layer} was called without position_embeddings; "
                    "use pre_rope_route='hook'"
                )
            self._rope[layer] = embeddings

        return stash

    # ---- AttentionClient ----
    def begin_batch(self, positions: torch.Tensor, valid: torch.Tensor) -> None:
        batch_size = positions.shape[0]
        if self._next_example_ids is not None:
            ids = self._next_example_ids
            self._next_example_ids = None
            if len(ids) != batch_size:
                raise ValueError(f"set_example_ids: got {len(ids)} ids for a batch of {batch_size} sequences")
        else:
            ids = [next(self._examples) for _ in range(batch_size)]
        if self.sampler.kind == "explicit":
            last = int(positions[valid].max()) if bool(valid.any()) else -1
            beyond = [p for p in self.sampler.positions if p > last]
            if beyond:
                raise ValueError(
                    f"positions: {beyond[:5]} lie outside the sequence (the last position in this batch is {last})"
                )
        self.registry.begin_batch(torch.tensor(ids, dtype=torch.long), positions, valid)
        self._valid = valid
        self.n_examples += batch_size

    def _key_valid_for(self, k: torch.Tensor) -> torch.Tensor | None:
        """The batch's real tokens where they line up with the keys (no KV cache), else None."""
        valid = self._valid
        return valid if valid is not None and valid.shape[-1] == k.shape[-2] else None

    def end_batch(self, failed: bool) -> None:
        self._valid = None
        if not self.registry.in_batch:
            return
        self.registry.end_batch(discard=failed)
        if not failed and self._writer is not None:
            self._flush()

    def on_attention(self, layer: int, module: nn.Module, q, k, v, attention_mask, kwargs: dict):
        if layer not in self._active_layers:
            return q, k, v
        if self.pre_rope_route == "inverse_rope" and "pre_rope" in self.stages and self.adapter.uses_rope(layer):
            cos, sin = self._rope[layer]
            for kind, x in (("q", q), ("k", k), ("v", v)):
                if kind in self.kinds:
                    self.registry.on_stage(layer, kind, "pre_rope", x if kind == "v" else inverse_rope(x, cos, sin))
        elif layer in self._pre_from_call and "pre_rope" in self.stages:
            for kind, x in (("q", q), ("k", k), ("v", v)):
                if kind in self.kinds:
                    self.registry.on_stage(layer, kind, "pre_rope", x)
        mask = attention_mask if isinstance(attention_mask, torch.Tensor) else None
        how = layer_attention(self.adapter, layer, module, kwargs, attention_mask, self._key_valid_for(k))
        return self.registry.on_attention(
            layer, q, k, v, how.scaling, mask, how.causal, how.sliding_window, how.softcap, how.sinks, how.visible
        )

    def drain_row_stats(self) -> dict[str, np.ndarray]:
        """Per-token attention metrics recorded since the last call (``row_stats=True``), as columns.

        One entry per (example, layer, head, real token): ``example_id, layer, head, position`` and
        ``entropy, entropy_normalized, max_attn, argmax, k_eff, sink_mass, sink_mass_n, n_visible,
        q_norm, k_norm`` (k_norm is the norm of the head's KV-head key at the same token).
        """
        if not self._row_stats:
            raise RuntimeError("drain_row_stats: this probe was built without row_stats=True")
        parts = []
        for action in self._row_stats:
            columns = {name: t.numpy() for name, t in action.drain().items()}
            columns["layer"] = np.full(len(columns["head"]), action.layer, dtype=np.int64)
            parts.append(columns)
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _flush(self) -> None:
        for capture in self.registry.captures():
            vectors, positions, example_ids, buckets = capture.drain()
            window = self.adapter.sliding_window(capture.layer)
            pos, ex, bk = positions.numpy(), example_ids.numpy(), buckets.numpy()
            for column, head in enumerate(capture.heads):
                path = capture_path(self.out_dir, capture.layer, head, capture.kind, capture.stage)
                self._writer.write(path, vectors[:, column].numpy(), pos, ex, bk, window, capture.stage)

    # ---- results ----
    def captured(self, layer: int, head: int, kind: str = "q", stage: str | None = None) -> Captured:
        """Rows of one head: vectors (N, D) float32, positions, example_ids, buckets.

        ``head`` is a query head for q and a KV head for k and v (see ``kv_head``).
        """
        if stage is None:
            if len(self.stages) != 1:
                raise ValueError(f"stage: this probe captured {', '.join(self.stages)}; name one")
            stage = self.stages[0]
        vectors, positions, example_ids, buckets = self.registry.captured(layer, head, kind, stage)
        return Captured(vectors, positions, example_ids, buckets)

    def describe(self) -> dict[str, Any]:
        """What was captured, as written to the sidecar JSON."""
        config = self.model.config
        return {
            "spectra_version": __version__,
            "model": {
                "class": type(self.model).__name__,
                "name_or_path": getattr(config, "_name_or_path", None),
                "torch_dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
                **self.adapter.describe(),
            },
            "capture": list(self.kinds),
            "stages": list(self.stages),
            "pre_rope_route": self.pre_rope_route,
            "heads": {str(layer): list(hs) for layer, hs in self.heads_by_layer.items()},
            "kv_heads": {str(layer): list(self.kv_heads(layer)) for layer in self.heads_by_layer},
            "kv_head_map": list(self.kv_head_map),
            "sampler": {
                "kind": self.sampler.kind,
                "bucket_size": self.sampler.bucket_size,
                "base_rate": self.sampler.base_rate,
                "seed": self.sampler.seed,
                "positions": list(self.sampler.positions),
            },
            "n_examples": self.n_examples,
            **({"inputs": dict(self.input_notes)} if self.input_notes else {}),
        }
