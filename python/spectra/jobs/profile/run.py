"""The profile job behind ``spectra profile`` and ``make demo``: token windows in, a result folder out.

Layout of ``out_dir``::

    meta.json                     model, config hash, run configuration, versions, seed, command line;
                                  model_source: a folder's absolute path, a hub model's repo id and commit
    tokens/shard-00000.parquet    per-token metrics of samples [0, batch_size) (``spectra.profile``)
    tokens/shard-00001.parquet    ... one shard per batch; sample = the window's global index
    head_summary.parquet / .csv   per (layer, head): mean, std, n of every metric
    correlations_pooled.parquet   exp0: q-norm vs entropy per head, tokens of all samples pooled
    correlations_per_sample.parquet   the same per (sample, layer, head)
    consistency.parquet           per head: in how many samples it is significant
    layer_statistics.parquet      per layer and scope: mean |r|, fraction with p < 0.01
    summary.json                  randomisation control, fraction of significant heads, verdict
    figures/head_<metric>.png     layer x head heatmaps of the mean metric
    figures/entropy_vs_qnorm.png  the entropy-vs-norm scatter

Every file is written to a temporary name in its folder and renamed into place, so an interrupted
run loses at most the shard in flight; ``resume=True`` skips the shards already on disk. The
analysis files are rewritten from all shards at the end of every complete run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from spectra import defaults
from spectra.capture.probe import Probe
from spectra.data.windows import load_windows
from spectra.figures.profile import plot_entropy_vs_norm, plot_head_heatmaps
from spectra.io.atomic import write_csv, write_json, write_parquet
from spectra.io.identity import (
    config_hash,
    data_sha256,
    non_default_attn_implementation,
    sha256_of,
    versions,
    weights_fingerprint,
)
from spectra.metrics import correlations as corr
from spectra.metrics.profile import check_metrics, check_threshold, profile, write_profile_parquet
from spectra.metrics.summaries import head_summary, layer_summary
from spectra.models import resolve_ignore_first
from spectra.models.zoo.references import model_source

__all__ = ["DEFAULT_METRICS", "ProfileResult", "load_windows", "profile_meta", "run_profile", "verdict"]

#: The job's default metrics: profile's defaults plus ``entropy_normalized`` (position control).
DEFAULT_METRICS: tuple[str, ...] = defaults.METRICS
META = "meta.json"
TOKENS = "tokens"
FIGURES = "figures"
SEED = 0  # nothing is random in the job itself: windows come in file order; the control has its own seed
GO_FRACTION, MARGINAL_FRACTION = 0.20, 0.10


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Identity of a run
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


@dataclass
class ProfileResult:
    """What :func:`run_profile` wrote: the folder, its files, and the per-layer means."""

    out_dir: Path
    meta: dict[str, Any]
    summary: dict[str, Any]
    shards: list[Path]
    computed_shards: list[int]
    figures: list[Path]
    layer_summary: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


def shard_path(out_dir: str | os.PathLike, index: int) -> Path:
    return Path(out_dir) / TOKENS / f"shard-{index:05d}.parquet"


def verdict(fraction_significant: float, control_passes: bool) -> str:
    """The exp0 verdict (docs/concepts.md, 'Token-level correlations'): GO when ≥ 20 % of the heads are significant and the randomisation control passes,
    MARGINAL when ≥ 10 % are (with or without a passing control), NO-GO otherwise.

    Example:
        >>> verdict(0.25, True), verdict(0.25, False), verdict(0.1, True), verdict(0.05, True)
        ('GO', 'MARGINAL', 'MARGINAL', 'NO-GO')
    """
    if not np.isfinite(fraction_significant):
        return "NO-GO"
    if fraction_significant >= GO_FRACTION and control_passes:
        return "GO"
    if fraction_significant >= MARGINAL_FRACTION:
        return "MARGINAL"
    return "NO-GO"


def profile_meta(
    model_name: str,
    identity: dict[str, Any],
    dtype: str,
    run_config: dict[str, Any],
    n_shards: int,
    command_line: Sequence[str] | None,
    attn_implementation: str | None = None,
) -> dict[str, Any]:
    """The ``meta.json`` document of a profile folder; ``spectra profile`` and ``kind: profile`` both
    build it here. ``identity`` holds the model's ``class``, ``config_sha256`` and
    ``weights_fingerprint``; the ``run_hash`` covers it and ``run_config``. ``attn_implementation``,
    the attention backend the model ran with (eager where sdpa was refused), is recorded beside the
    dtype where it is not the default (sdpa), outside the ``run_hash``."""
    backend = non_default_attn_implementation(attn_implementation)
    return {
        "run_hash": sha256_of({"model": identity, "run": run_config}),
        "model": {"name": model_name, **identity, "dtype": dtype, **backend},
        "run": run_config,
        "n_shards": n_shards,
        "versions": versions(),
        "seed": SEED,
        "command_line": list(command_line) if command_line is not None else list(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_profile(
    model,
    tokenizer,
    windows: torch.Tensor,
    out_dir: str | os.PathLike,
    *,
    model_name: str,
    batch_size: int = 8,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    threshold: float = defaults.THRESHOLD,
    ignore_first: int | None = None,
    resume: bool = False,
    data: str | None = None,
    n_samples: int | None = None,
    add_special_tokens: bool | None = None,
    n_permutations: int = 100,
    command_line: Sequence[str] | None = None,
    progress: bool = True,
) -> ProfileResult:
    """Profiles ``windows`` (``(N, T)`` token ids) shard by shard into ``out_dir``, then writes the
    head summary, the exp0 correlation tables, ``summary.json`` and the figures.

    ``tokenizer`` is unused (the windows are already tokens); it is accepted for symmetry with the
    data loader. ``ignore_first`` defaults to 2 for a decoder, 0 for an encoder. ``data``,
    ``n_samples`` (as requested) and ``add_special_tokens`` (how the windows were tokenised; None
    when they did not come from ``load_windows``) only go into ``meta.json`` and the run's
    identity. A folder holding a run with another ``run_hash`` (model, weights, windows or
    configuration) raises ``ValueError`` naming ``out``; a folder holding shards of this very run
    needs ``resume=True``.

    Example:
        >>> import tempfile
        >>> from spectra import zoo
        >>> model, tok = zoo.load("tiny-llama")
        >>> result = run_profile(model, tok, load_windows(None, tok, 32, 4), tempfile.mkdtemp(), model_name="tiny-llama",
        ...                      batch_size=2, layers=[0, 1], progress=False, n_permutations=5)
        >>> [p.name for p in result.shards], result.summary["verdict"] in ("GO", "MARGINAL", "NO-GO")
        (['shard-00000.parquet', 'shard-00001.parquet'], True)
    """

    metrics = check_metrics(metrics)
    threshold = check_threshold(threshold)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch-size: expected an integer >= 1; got {batch_size!r}")
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.shape[0] == 0:
        raise ValueError(
            f"data: expected a non-empty (samples, context_length) tensor of token ids; got {windows!r:.80}"
        )
    windows = windows.to(torch.int64)
    n, context_length = windows.shape
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit is not None and context_length > limit:
        raise ValueError(f"context-length: {context_length} exceeds the model's max_position_embeddings ({limit})")
    ignore_first = resolve_ignore_first(model, ignore_first)
    if add_special_tokens is not None and not isinstance(add_special_tokens, bool):
        raise ValueError(f"add_special_tokens: expected True, False or None; got {add_special_tokens!r}")

    Probe(model, layers=layers, heads=heads, capture=(), row_stats=True, threshold=threshold)  # validates layers/heads
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a folder")

    run_config = {
        "context_length": int(context_length),
        "n_samples": int(n),
        "n_samples_requested": n_samples,
        "batch_size": batch_size,
        "layers": None if layers is None else [int(x) for x in layers],
        "heads": None if heads is None else [int(x) for x in heads],
        "metrics": list(metrics),
        "threshold": threshold,
        "ignore_first": int(ignore_first),
        "n_permutations": int(n_permutations),
        "data": None if data is None else str(data),
        "add_special_tokens": add_special_tokens,
        "data_sha256": data_sha256(windows),
    }
    model_identity = {
        "class": type(model).__name__,
        "config_sha256": config_hash(model),
        "weights_fingerprint": weights_fingerprint(model),
    }
    n_shards = -(-n // batch_size)
    meta = profile_meta(
        model_name,
        model_identity,
        str(next(model.parameters()).dtype),
        run_config,
        n_shards,
        command_line,
        getattr(model.config, "_attn_implementation", None),
    )
    source = model_source(model_name)
    if source is not None:  # a folder (absolute) or hub model (repo id, commit): found again from any folder
        meta["model_source"] = source
    run_hash = meta["run_hash"]
    existing_shards = sorted((out / TOKENS).glob("shard-*.parquet")) if out.is_dir() else []
    if (out / META).is_file():
        try:
            old = json.loads((out / META).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(
                f"out: {out / META} is not valid JSON ({error}); choose another --out or delete it"
            ) from None
        if old.get("run_hash") != run_hash and existing_shards:
            what = _difference(old, meta)
            raise ValueError(
                f"out: {out} holds a run of another model/configuration ({what}); choose another --out or delete it"
            )
        if existing_shards and not resume:
            raise ValueError(
                f"out: {out} already holds {len(existing_shards)} shard(s) of this run; pass --resume to "
                "finish it (finished shards are kept) or choose another --out"
            )
        if old.get("run_hash") == run_hash:
            meta["created"] = old.get("created", meta["created"])
    elif existing_shards or (out.is_dir() and any(out.iterdir())):
        raise ValueError(f"out: {out} is not empty and holds no {META}; choose another --out or delete it")
    (out / TOKENS).mkdir(parents=True, exist_ok=True)
    for stray in (out / TOKENS).glob(".*.tmp"):  # left by an interrupted run; its shard is redone
        stray.unlink(missing_ok=True)
    write_json(out / META, meta)

    model.eval()
    computed: list[int] = []
    paths = [shard_path(out, i) for i in range(n_shards)]
    todo = [i for i in range(n_shards) if not (resume and paths[i].is_file())]
    pending = set(todo)
    done_samples = sum(min(batch_size, n - i * batch_size) for i in range(n_shards) if i not in pending)
    with tqdm(total=n, initial=done_samples, desc="profile", unit="sample", disable=not progress) as bar:
        for i in todo:
            lo, hi = i * batch_size, min(n, (i + 1) * batch_size)
            frame = profile(
                model,
                windows[lo:hi],
                layers=layers,
                heads=heads,
                metrics=metrics,
                threshold=threshold,
                ignore_first=ignore_first,
                sample_ids=list(range(lo, hi)),
            )
            write_profile_parquet(frame, paths[i])
            computed.append(i)
            bar.update(hi - lo)

    frame = read_tokens(out)
    files = _analyse(frame, out, n_permutations=n_permutations)
    summary = json.loads(files["summary"].read_text())
    return ProfileResult(
        out_dir=out,
        meta=meta,
        summary=summary,
        shards=paths,
        computed_shards=computed,
        figures=[files[k] for k in sorted(files) if k.startswith("figure:")],
        layer_summary=layer_summary(
            frame, [m for m in ("entropy", "max_attn", "k_eff", "sink_mass") if m in frame.columns] or None
        ),
        files=files,
    )


def _difference(old: dict, new: dict) -> str:
    """A short account of what differs between two meta.json documents."""
    parts = []
    old_model, new_model = old.get("model", {}), new["model"]
    if old_model.get("config_sha256") != new_model["config_sha256"] or old_model.get("class") != new_model["class"]:
        parts.append(
            f"model {old_model.get('name')!r} ({old_model.get('class')}) vs {new_model['name']!r} "
            f"({new_model['class']})"
        )
    elif old_model.get("weights_fingerprint") != new_model["weights_fingerprint"]:
        parts.append(f"weights of {old_model.get('name')!r} differ from those of {new_model['name']!r}")
    old_run = old.get("run", {})
    changed = [k for k in new["run"] if old_run.get(k) != new["run"][k]]
    if changed:
        parts.append("run settings differ: " + ", ".join(changed))
    return "; ".join(parts) or f"run_hash {str(old.get('run_hash'))[:12]} vs {new['run_hash'][:12]}"


def read_tokens(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Every shard of a result folder as one per-token frame, in (sample, layer, head, token) order."""

    shards = sorted((Path(out_dir) / TOKENS).glob("shard-*.parquet"))
    if not shards:
        raise FileNotFoundError(f"out: {out_dir} holds no token shards")
    return pd.concat([pq.read_table(s).to_pandas() for s in shards], ignore_index=True)


def _analyse(frame: pd.DataFrame, out: Path, *, n_permutations: int) -> dict[str, Path]:
    files: dict[str, Path] = {}
    summary = head_summary(frame)
    files["head_summary"] = out / "head_summary.parquet"
    write_parquet(files["head_summary"], summary)
    files["head_summary_csv"] = out / "head_summary.csv"
    write_csv(files["head_summary_csv"], summary)
    figures = out / FIGURES
    for path in plot_head_heatmaps(summary, figures):
        files[f"figure:{path.stem}"] = path

    report: dict[str, Any] = {
        "n_rows": len(frame),
        "n_samples": int(frame["sample"].nunique()),
        "n_heads": len(summary),
    }
    if {"q_norm", "entropy"} <= set(frame.columns):
        pooled = corr.qnorm_entropy_correlations(frame, scope="pooled", position_control=True)
        per_sample = corr.qnorm_entropy_correlations(frame, scope="per_sample", position_control=True)
        layer_stats = pd.concat(
            [
                corr.layer_statistics(pooled).assign(scope="pooled"),
                corr.layer_statistics(per_sample).assign(scope="per_sample"),
            ],
            ignore_index=True,
        )
        for name, table in (
            ("correlations_pooled", pooled),
            ("correlations_per_sample", per_sample),
            ("consistency", corr.consistency(per_sample)),
            ("layer_statistics", layer_stats),
        ):
            files[name] = out / f"{name}.parquet"
            write_parquet(files[name], table)
        control = {
            scope: corr.randomization_control(frame, n_permutations=n_permutations, scope=scope)
            for scope in ("pooled", "per_sample")
        }
        n_sig = int(pooled["significant"].sum())
        fraction = n_sig / len(pooled) if len(pooled) else float("nan")
        report["exp0"] = {
            "x": "q_norm",
            "y": "entropy",
            "n_heads": len(pooled),
            "n_significant": n_sig,
            "fraction_significant": fraction,
            "significance": f"|r_pearson| >= {corr.SIGNIFICANCE_R} and p_pearson < {corr.SIGNIFICANCE_P}",
            "mean_abs_r_pooled": float(np.nanmean(np.abs(pooled["r_pearson"])))
            if pooled["r_pearson"].notna().any()
            else float("nan"),
            "mean_abs_r_partial_position": float(np.nanmean(np.abs(pooled["r_partial"])))
            if pooled["r_partial"].notna().any()
            else float("nan"),
            "fraction_consistent_per_sample": float(corr.consistency(per_sample)["consistent"].mean()),
            "randomization_control": control,
            "verdict_rule": "GO: >= 20% of heads significant and the pooled control passes; MARGINAL: >= 10%; else NO-GO",
        }
        report["verdict"] = verdict(fraction, control["pooled"]["passes"])
        files["figure:entropy_vs_qnorm"] = plot_entropy_vs_norm(frame, figures / "entropy_vs_qnorm.png")
    else:
        report["exp0"] = None
        report["verdict"] = None
        report["note"] = "exp0 needs the q_norm and entropy metrics"
    files["summary"] = out / "summary.json"
    write_json(files["summary"], report)
    return files
