"""Per-(layer, head) geometry of query and key vectors over a corpus: norms, max |x_d|, PR.

Each forward pass hands the q/k projections of every layer to the native ``vec_stats`` op and
folds the results into native ``RunningMoments`` accumulators, so memory stays O(layers × heads)
however much text flows through.

The vectors are the Probe's ``pre_rope`` stage, read through the architecture adapter: after
QK-norm where the family has one (the seeds' "k_norm output"), before RoPE. Norms are the same
post-RoPE; max |x_d| and the participation ratio are not (RoPE mixes dimension pairs), which is why
the axis-aligned ("golden dimension") statistics are taken before it. Every family in
``spectra.models`` is supported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pandas as pd
import torch
from torch import nn

from spectra.capture.forward import run_model
from spectra.models import adapter_for
from spectra.ops import RunningMoments, SecondMoments
from spectra.ops.native import vec_stats

STATS = ("norm", "max_abs", "participation_ratio", "one_hotness")
KINDS = ("q", "k")


class HeadGeometry:
    """Accumulates q/k vector statistics per (layer, head) across forward passes.

    Use it as a context manager around forward passes; its hooks are removed on exit, even when
    the forward raises, and only its own hooks are ever touched.

    Example:
        >>> import torch, spectra
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> geometry = spectra.HeadGeometry(model)
        >>> with geometry, torch.no_grad():
        ...     _ = model(tok("In the beginning", return_tensors="pt").input_ids)
        >>> table = geometry.table()
        >>> list(table.columns[:4])
        ['layer', 'head', 'kv_head', 'q_norm_mean']
    """

    def __init__(self, model: nn.Module, *, centered: bool = True) -> None:
        self.adapter = adapter_for(model)
        self.centered = centered
        self.n_layers: int = self.adapter.n_layers
        self.n_heads: int = self.adapter.n_heads
        self.n_kv_heads: int = self.adapter.n_kv_heads
        self.head_dim: int = self.adapter.head_dim
        # One accumulator per (kind, stat, layer), one group per head of that kind.
        self._moments = {
            (kind, stat, layer): RunningMoments(self.n_heads if kind == "q" else self.n_kv_heads)
            for kind in KINDS
            for stat in STATS
            for layer in range(self.n_layers)
        }
        # Σk and Σkkᵀ per KV head: the effective rank of each head's key matrix (see docs/concepts.md, 'Key-matrix ranks and ratios').
        self._key_moments = [SecondMoments(self.n_kv_heads, self.head_dim) for _ in range(self.n_layers)]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _record(self, kind: str, layer: int, x: torch.Tensor) -> None:
        rows = x.detach().transpose(1, 2)  # x is (B, heads, T, D) -> (B, T, heads, D)
        stats = vec_stats(rows)  # each stat (B, T, heads), on the layer's device
        # The accumulators live on the CPU: with a device map, layers sit on different devices.
        for stat in STATS[:3]:
            self._moments[(kind, stat, layer)].update(getattr(stats, stat).cpu())
        # max|x_d| / ‖x‖ per vector (one-hotness): 1 for an axis-aligned vector, 1/√D for a flat one.
        self._moments[(kind, "one_hotness", layer)].update((stats.max_abs / stats.norm).cpu())
        if kind == "k":
            self._key_moments[layer].update(rows.cpu())

    def __enter__(self) -> HeadGeometry:
        if self._handles:
            raise RuntimeError("HeadGeometry is already active; it cannot be entered twice at once")
        try:
            for layer in range(self.n_layers):
                for stage_hook in self.adapter.stage_hooks(layer):
                    self._handles.append(stage_hook.module.register_forward_hook(self._reader(layer, stage_hook)))
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def _reader(self, layer: int, stage_hook):
        def read(module, args, output):
            for kind, x in stage_hook.read(output).items():
                if kind in KINDS:
                    self._record(kind, layer, x)

        return read

    def __exit__(self, *exc: object) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def table(self) -> pd.DataFrame:
        """One row per (layer, query head); ``k_*`` columns belong to the head's KV head (``adapter.kv_head(h)``).

        ``k_spectral_pr`` and ``k_entropy_rank`` are the effective ranks of the KV head's key matrix
        (the effective rank of K: spectral participation ratio of the covariance's eigenvalues, and Roy–Vetterli's
        entropy rank of its singular values; of the uncentered matrix with ``centered=False``).
        """
        frames = []
        for layer in range(self.n_layers):
            kv_of_head = self.adapter.kv_heads()
            frame = {"layer": layer, "head": range(self.n_heads), "kv_head": kv_of_head.tolist()}
            for kind in KINDS:
                select = slice(None) if kind == "q" else kv_of_head
                for stat in STATS:
                    moments = self._moments[(kind, stat, layer)]
                    frame[f"{kind}_{stat}_mean"] = moments.mean()[select].tolist()
                    if stat == "norm":
                        frame[f"{kind}_norm_std"] = moments.variance(0).sqrt()[select].tolist()
            ranks = self._key_moments[layer]
            frame["k_spectral_pr"] = ranks.spectral_pr(self.centered)[kv_of_head].tolist()
            frame["k_entropy_rank"] = ranks.entropy_rank(self.centered)[kv_of_head].tolist()
            frame["tokens"] = self._moments[("q", "norm", layer)].count().tolist()
            frames.append(pd.DataFrame(frame))
        table = pd.concat(frames, ignore_index=True)
        table["qk_norm_ratio"] = table["q_norm_mean"] / table["k_norm_mean"]
        return table


def token_windows(token_ids: list[int], seq_len: int, max_windows: int | None = None) -> Iterator[torch.Tensor]:
    """Non-overlapping windows of exactly ``seq_len`` tokens (the remainder is dropped)."""
    n = len(token_ids) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    for i in range(n):
        yield torch.tensor(token_ids[i * seq_len : (i + 1) * seq_len])


def head_geometry(model: nn.Module, batches: Iterable[torch.Tensor]) -> pd.DataFrame:
    """Runs ``model`` on each ``(B, T)`` batch of token ids and returns :meth:`HeadGeometry.table`.

    Example:
        >>> import torch, spectra
        >>> from spectra import zoo
        >>> model, _ = zoo.load("tiny-llama")
        >>> table = spectra.head_geometry(model, [torch.randint(0, 4096, (2, 32))])
        >>> len(table) == model.config.num_hidden_layers * model.config.num_attention_heads
        True
    """
    geometry = HeadGeometry(model)
    with geometry:
        for batch in batches:
            run_model(model, batch, require_eval=False)
    return geometry.table()
