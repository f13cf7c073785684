"""The job behind ``spectra geometry``: capture folders (or a model and its checkpoints, captured
first) in, a result folder of tables, ``summary.json`` and figures out.

Layout of the result folder::

    heads.parquet, heads.csv     one row per (checkpoint, layer, query head)
    qk.csv                       the thesis's per-component table (layer, head, pc, explained_variance, r_q, r_k)
    planes.csv                   the complement's rotation planes
    correlations.csv             the published per-kind PCA (with --per-kind)
    series.csv                   one row per checkpoint (series of two or more captures)
    summary.json, meta.json      aggregates; options, inputs, versions, command line
    figures/*.png
    qk/<label>/                  captures made from --model (reused when already complete)

Every file is written atomically; a capture folder is complete or absent, so a rerun after an
interruption only captures what is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import spectra
from spectra import defaults, geometry
from spectra.capture.store import SIDECAR, read_capture
from spectra.data.examples import heldout_examples
from spectra.figures import geometry as geometry_figures
from spectra.io.atomic import write_csv, write_json, write_parquet
from spectra.jobs.capture.run import run_capture
from spectra.models import zoo
from spectra.models.loading import load_model


@dataclass
class GeometryRun:
    """What :func:`run_geometry` wrote."""

    out_dir: Path
    tables: geometry.GeometryTables
    summary: dict[str, Any]
    figures: list[Path] = field(default_factory=list)


def capture_model(
    model_name: str,
    out_root: str | Path,
    *,
    checkpoints: bool = False,
    n_examples: int = 8,
    max_length: int = 256,
    progress: bool = False,
    bucket_size: int = 1,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    dtype: str | None = None,
    device: str | None = None,
    attn_implementation: str = defaults.ATTN_IMPLEMENTATION,
) -> list[Path]:
    """Captures post-RoPE q and k of every head of a model (zoo name or folder), or of each of its
    checkpoints, on held-out text (``n_examples`` examples of up to ``max_length`` tokens, every
    position kept, buckets of ``bucket_size`` tokens) into ``out_root/<label>``; returns the folders in
    step order. Finished captures are kept, not redone. ``layers`` / ``heads`` (query heads of every
    layer) restrict the capture (default all). ``dtype`` (default float32) and ``device`` (default:
    the CPU) and ``attn_implementation`` load the model as ``spectra.models.loading.load_model``; the captured vectors are float32
    whatever the dtype.

    Example:
        >>> import tempfile
        >>> [p.name for p in capture_model("tiny-qwen3", tempfile.mkdtemp(), checkpoints=True, n_examples=1,
        ...                                max_length=32)][:2]
        ['step-000000', 'step-000100']
    """

    if n_examples < 1 or max_length < 2:
        raise ValueError(f"n_examples/max_length: expected >= 1 and >= 2; got {n_examples}, {max_length}")
    if checkpoints:
        if model_name not in zoo.MODEL_NAMES:
            raise ValueError(f"model: --checkpoints needs a zoo model with checkpoints; got {model_name!r}")
        sources = [(p.name, p) for p in zoo.checkpoint_paths(model_name)]
        if not sources:
            raise ValueError(f"model: {model_name} has no checkpoints (tiny-qwen3 has)")
    else:
        sources = [(Path(model_name).name, model_name)]
    examples = heldout_examples(n_examples, max_length)
    folders = []
    for label, source in sources:
        folder = Path(out_root) / label
        if not (folder / SIDECAR).is_file():
            model, tokenizer = load_model(
                str(source), dtype=dtype, device=device, attn_implementation=attn_implementation
            )
            run_capture(
                model,
                tokenizer,
                examples,
                folder,
                max_length=max_length,
                overwrite=True,
                progress=progress,
                capture=("q", "k"),
                stage="post_rope",
                positions="all",
                bucket_size=bucket_size,
                layers=layers,
                heads=heads,
            )
        folders.append(folder)
    return folders


def run_geometry(
    qk_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    labels: Sequence[str] | None = None,
    per_kind: bool = False,
    scatter_head: tuple[int, int] | None = None,
    command_line: Sequence[str] | None = None,
    **options: Any,
) -> GeometryRun:
    """Analyses one or more capture folders into ``out_dir`` (see the module docstring); ``options``
    go to :func:`spectra.geometry.capture_table`. With several folders the tables carry
    ``checkpoint``/``step`` columns and the series figures are drawn; the single-model figures then
    show the last folder.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> folders = capture_model("tiny-llama", root / "qk", n_examples=2, max_length=64)
        >>> run = run_geometry(folders, root / "out")
        >>> len(run.tables.heads), sorted(p.name for p in run.figures)[0]
        (32, 'depth_heatmaps.png')
    """

    dirs = [Path(d) for d in qk_dirs]
    tables = geometry.series(dirs, labels=labels, per_kind=per_kind, **options)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    heads = tables.heads
    last_label = heads["checkpoint"].iloc[-1]
    final = heads[heads["checkpoint"] == last_label]
    n_layers = tables.meta["checkpoints"][-1].get("n_layers")
    summary: dict[str, Any] = {"final": {"checkpoint": last_label, **geometry.summarize(final, n_layers)}}
    if len(dirs) > 1:
        per_checkpoint = geometry.summarize_series(heads)
        write_csv(out / "series.csv", per_checkpoint)
        summary["series"] = per_checkpoint.to_dict(orient="records")
        summary["bias_vs_separation_by_checkpoint"] = geometry.family_correlations(heads, by="checkpoint").to_dict(
            orient="records"
        )
    families = {c.get("family") for c in tables.meta["checkpoints"]}
    if len(families) > 1:
        heads = heads.assign(
            family=heads["checkpoint"].map({c["label"]: c.get("family") for c in tables.meta["checkpoints"]})
        )
        summary["bias_vs_separation_by_family"] = geometry.family_correlations(heads).to_dict(orient="records")

    write_parquet(out / "heads.parquet", tables.heads)
    write_csv(out / "heads.csv", tables.heads)
    write_csv(out / "qk.csv", tables.components)
    write_csv(out / "planes.csv", tables.planes)
    if tables.correlations is not None:
        write_csv(out / "correlations.csv", tables.correlations)
    write_json(out / "summary.json", summary)
    write_json(
        out / "meta.json",
        {
            "spectra_version": spectra.__version__,
            "inputs": tables.meta["checkpoints"],
            "options": {"per_kind": per_kind, **options},
            "command_line": list(command_line) if command_line else None,
        },
    )
    figures = _draw(tables, final, dirs[-1], out / "figures", scatter_head, len(dirs) > 1, options)
    return GeometryRun(out, tables, summary, figures)


def _draw(
    tables: geometry.GeometryTables,
    final: pd.DataFrame,
    final_dir: Path,
    folder: Path,
    scatter_head: tuple[int, int] | None,
    is_series: bool,
    options: dict,
) -> list[Path]:
    components = tables.components[tables.components["checkpoint"] == final["checkpoint"].iloc[0]]
    figures = [
        geometry_figures.plot_pc0_scatter(
            final, folder / "pc0_rq_rk.png", hi=options.get("hi", 0.7), lo=options.get("lo", 0.3)
        ),
        geometry_figures.plot_explained_variance(components, folder / "explained_variance.png"),
        geometry_figures.plot_depth_heatmaps(final, folder / "depth_heatmaps.png"),
    ]
    layer, head = scatter_head if scatter_head is not None else _most_positional(final)
    figures.append(_pc_scatter(final_dir, final, layer, head, folder / f"pc_scatter_l{layer:02d}h{head:02d}.png"))
    if is_series:
        figures += [
            geometry_figures.plot_bias_decomposition(tables.heads, folder / "bias_decomposition.png"),
            geometry_figures.plot_class_shares(tables.heads, folder / "class_shares.png"),
            geometry_figures.plot_series_depth_heatmap(tables.heads, folder / "depth_bias_strength.png"),
        ]
    return figures


def _most_positional(heads: pd.DataFrame) -> tuple[int, int]:
    """The head whose PC0 tracks position most on both kinds: max of min(r_q, |r_k|)."""
    score = np.minimum(heads["pc0_r_q"], heads["pc0_r_k"].abs()).fillna(-1)
    row = heads.iloc[int(np.argmax(score.to_numpy()))]
    return int(row["layer"]), int(row["head"])


def _pc_scatter(qk_dir: Path, heads: pd.DataFrame, layer: int, head: int, path: Path) -> Path:
    """One head's rows on its combined PC0 and PC1, coloured by position."""

    match = heads[(heads["layer"] == layer) & (heads["head"] == head)]
    if match.empty:
        raise ValueError(f"scatter_head: layer {layer} head {head} is not among the analysed heads")
    q = read_capture(qk_dir, layer, head, "q")
    k = read_capture(qk_dir, layer, int(match["kv_head"].iloc[0]), "k")
    pca = geometry.combined_pca(q.vectors, k.vectors, q.positions, k.positions, n_components=2)
    basis, mean = pca.attrs["components"], pca.attrs["mean"]
    rows = np.concatenate([q.vectors.double().numpy(), k.vectors.double().numpy()])
    z = (rows - mean) @ basis.T
    positions = np.concatenate([q.positions.numpy(), k.positions.numpy()])
    is_query = np.arange(len(rows)) < len(q.positions)
    title = (
        f"L{layer}H{head}: PC0 {pca['explained_variance'][0]:.0%} (r_q {pca['r_q'][0]:.2f}, "
        f"r_k {pca['r_k'][0]:.2f}), PC1 {pca['explained_variance'][1]:.0%}"
    )
    return geometry_figures.plot_pc_scatter(z[:, 0], z[:, 1], positions, is_query, path, title=title)


def print_geometry_run(run: GeometryRun, echo=print) -> None:
    final = run.summary["final"]
    echo(f"spectra geometry: {len(run.tables.heads)} head rows -> {run.out_dir}")
    echo(
        f"{final['checkpoint']}: PC0 classes " + ", ".join(f"{k} {v:.0%}" for k, v in final["pc0_class_share"].items())
    )
    echo(
        f"  mean bias_strength {final['mean_bias_strength']:.4g} (> 0 in {final['fraction_bias_positive']:.0%}), "
        f"median |alpha_k|/|alpha_q| {final['median_alpha_k_over_alpha_q']:.3g}, "
        f"plane variance {final['mean_plane_var_fraction']:.3f}, max residual_pos_r {final['max_residual_pos_r']:.1e}"
    )
    for row in run.summary.get("series", []):
        echo(
            f"  {row['checkpoint']}: bias {row['mean_bias_strength']:.4g} = mu_q_a {row['mean_mu_q_a']:.3g} x "
            f"alpha_k {row['mean_alpha_k']:.3g} (means), position-dominated {row['share_position-dominated']:.0%}"
        )
    for path in run.figures:
        echo(f"figure: {path}")
