"""The ``spectra`` command line."""

from __future__ import annotations

import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Mechanistic analysis of attention heads in HuggingFace transformers models."""


@main.command()
def info() -> None:
    """Versions, build flags, compiled backends and whether the native module loaded."""
    from spectra.info import main as info_main

    sys.exit(info_main())


@main.command()
@click.option("--model", default="tiny-llama", show_default=True, help="Zoo name or a local model folder.")
@click.option("--context-length", default=256, show_default=True, type=click.IntRange(min=1), help="Tokens per window.")
@click.option("--n-samples", default=16, show_default=True, type=click.IntRange(min=1), help="Windows to profile.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Windows per shard.")
@click.option("--out", "out_dir", default="results/demo", show_default=True, type=click.Path(file_okay=False),
              help="Result folder (a previous result folder there is replaced).")
def demo(model: str, context_length: int, n_samples: int, batch_size: int, out_dir: str) -> None:
    """Profile a model on the zoo's held-out text into results/demo; print the figures and a per-layer summary."""
    from spectra.jobs.demo import run_demo

    try:
        run_demo(model, context_length=context_length, n_samples=n_samples, batch_size=batch_size, out_dir=out_dir)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error


@main.command()
@click.option("--model", "model_name", required=True, help="Zoo name, all-minilm-l6-v2, or a local model folder.")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="Examples: .jsonl with 'text' (and optional integer 'id') per line, or text with one example per line.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Capture folder to write.")
@click.option("--layers", default=None, help="Layers, e.g. '0,2,5-7' (default all).")
@click.option("--heads", default=None, help="Query heads for every layer, e.g. '0-3' (default all).")
@click.option("--capture", "kinds", default="q,k", show_default=True, help="Any of q,k,v.")
@click.option("--stage", "stages", default="post_rope", show_default=True, help="post_rope and/or pre_rope.")
@click.option("--positions", default="all", show_default=True,
              help="all | uniform | log_uniform | a comma-separated list of positions.")
@click.option("--bucket-size", default=None, type=click.IntRange(min=1), help="Bucket size (default 64 for uniform/log_uniform, else 1).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--max-length", default=4096, show_default=True, type=click.IntRange(min=1), help="Keep the first N tokens.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--attn-implementation", default="sdpa", show_default=True, type=click.Choice(["sdpa", "eager"]))
@click.option("--overwrite", is_flag=True, help="Replace a finished capture in --out.")
def capture(model_name, data_path, out_dir, layers, heads, kinds, stages, positions, bucket_size, seed, max_length,
            dtype, attn_implementation, overwrite) -> None:
    """Capture per-head Q/K/V of every example into Parquet (qk-sniffer layout) plus a JSON sidecar."""
    import torch

    from spectra.data.examples import read_examples
    from spectra.jobs.capture.run import run_capture
    from spectra.io.parsing import parse_ints, split_names
    from spectra.models.loading import load_model

    try:
        examples = read_examples(data_path)
        model, tokenizer = load_model(model_name, dtype=getattr(torch, dtype), attn_implementation=attn_implementation)
        if positions not in ("all", "uniform", "log_uniform"):
            positions = parse_ints(positions)
        meta = run_capture(
            model, tokenizer, examples, out_dir, max_length=max_length, overwrite=overwrite,
            layers=parse_ints(layers), heads=parse_ints(heads), capture=split_names(kinds), stage=split_names(stages),
            positions=positions, bucket_size=bucket_size, seed=seed,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        raise click.ClickException(str(error)) from error
    rows = sum(meta["rows"].values())
    click.echo(f"spectra capture: {meta['n_examples']} examples, {len(meta['rows'])} files, {rows} rows -> {out_dir}")


# ---- spectra profile ------------------------------------------------------------------------

def _option_keys(command: click.Command) -> dict[str, str]:
    """Every spelling a --config YAML may use for an option (``context-length``, ``context_length``,
    the parameter name) -> the parameter name."""
    keys = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "config":
            continue
        keys[param.name] = param.name
        for opt in param.opts:
            if opt.startswith("--"):
                keys[opt[2:]] = keys[opt[2:].replace("-", "_")] = param.name
    return keys


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--config run.yaml``: a mapping of option names to values that become the defaults."""
    if value is None:
        return None
    import yaml

    try:
        with open(value, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except OSError as error:
        raise click.BadParameter(f"cannot read {value}: {error.strerror}", ctx, param) from None
    except yaml.YAMLError as error:
        raise click.BadParameter(f"{value} is not valid YAML ({error})", ctx, param) from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise click.BadParameter(f"{value} must hold a mapping of option names to values", ctx, param)
    keys = _option_keys(ctx.command)
    unknown = sorted(str(k) for k in loaded if str(k) not in keys)
    if unknown:
        allowed = sorted({k for k in keys if "_" not in k})
        raise click.BadParameter(f"{value}: unknown key(s) {', '.join(unknown)}; allowed keys are {', '.join(allowed)}",
                                 ctx, param)
    defaults = {}
    for key, item in loaded.items():
        if isinstance(item, (list, tuple)):
            item = ",".join(str(v) for v in item)
        defaults[keys[str(key)]] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@main.command("profile")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False, callback=_load_config,
              help="YAML file of option defaults (keys as the long options, e.g. context-length: 256); flags override it.")
@click.option("--model", "model_name", required=True, help="Zoo name (tiny-llama, tiny-qwen3) or a local model folder.")
@click.option("--data", "data_path", default=None, type=click.Path(),
              help="Text file, folder of *.txt, .npz file or folder of shard_*.npz with input_ids "
                   "(default: the zoo's held-out corpus).")
@click.option("--context-length", required=True, type=click.IntRange(min=1), help="Tokens per window.")
@click.option("--n-samples", default=None, type=click.IntRange(min=1), help="Profile the first N windows (default all).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Windows per forward and per shard.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Result folder.")
@click.option("--layers", default=None, help="Layers, e.g. '0,2,5-7' (default all).")
@click.option("--heads", default=None, help="Query heads of every layer, e.g. '0-3' (default all).")
@click.option("--metrics", default="entropy,entropy_normalized,max_attn,k_eff,sink_mass,q_norm,k_norm", show_default=True,
              help="Comma-separated metrics.")
@click.option("--threshold", default=0.9, show_default=True, type=float, help="Mass that k_eff must reach.")
@click.option("--ignore-first", default=2, show_default=True, type=click.IntRange(min=0),
              help="Row metrics are NaN for the first N tokens.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--attn-implementation", default="sdpa", show_default=True, type=click.Choice(["sdpa", "eager"]))
@click.option("--resume", is_flag=True, help="Finish an interrupted run in --out, skipping its finished shards.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def profile_command(model_name, data_path, context_length, n_samples, batch_size, out_dir, layers, heads, metrics,
                    threshold, ignore_first, dtype, attn_implementation, resume, quiet) -> None:
    """Per-token attention metrics of a model on token windows, as Parquet shards, plus the head summary,
    the exp0 q-norm/entropy correlation tables and figures."""
    import torch

    from spectra.io.parsing import parse_ints, split_names
    from spectra.models.loading import load_model
    from spectra.jobs.profile.run import run_profile
    from spectra.data.windows import load_windows
    try:
        try:
            layer_list, head_list = parse_ints(layers), parse_ints(heads)
        except ValueError:
            raise ValueError(f"layers/heads: expected e.g. '0,2,5-7'; got --layers {layers!r} --heads {heads!r}") from None
        model, tokenizer = load_model(model_name, dtype=getattr(torch, dtype), attn_implementation=attn_implementation)
        windows = load_windows(data_path, tokenizer, context_length, n_samples)
        result = run_profile(
            model, tokenizer, windows, out_dir, model_name=model_name, batch_size=batch_size, layers=layer_list,
            heads=head_list, metrics=split_names(metrics), threshold=threshold, ignore_first=ignore_first,
            resume=resume, data=data_path, n_samples=n_samples, command_line=sys.argv, progress=not quiet,
        )
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise click.ClickException(str(error).strip("'\"")) from error
    from spectra.jobs.demo import print_result

    print_result(result)


@main.command("sweep")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML experiment file (see configs/): experiment scale_sweep | gain_map | qk_asymmetry, model, alphas, heads, ...")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Result folder (default: the config's out, else results/<experiment>).")
@click.option("--resume", is_flag=True, help="Finish an interrupted run in the result folder, keeping its finished shards.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sweep_command(config_path, out_dir, resume, quiet) -> None:
    """The seed's intervention experiments: scale sweeps (exp1), gain fits (exp2), the global gain map (exp2b) and
    Q-vs-K scaling (exp3, exp3b), as tables, summary.json and figures."""
    from spectra.jobs.sweep.run import load_config, print_sweep_result, run_sweep

    try:
        config = load_config(config_path)
        result = run_sweep(config, out=out_dir, resume=resume, progress=not quiet, command_line=sys.argv)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as error:
        raise click.ClickException(str(error).strip("'\"")) from error
    print_sweep_result(result)


@main.command("dynamics")
@click.option("--checkpoints", multiple=True, type=click.Path(file_okay=False),
              help="Checkpoint folders of one model (repeat the option); named step-N / checkpoint-N or with trainer_state.json.")
@click.option("--model", "model_name", default=None, help="Instead of --checkpoints: a zoo model with checkpoints (tiny-qwen3).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Result folder.")
@click.option("--context-length", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--n-samples", default=8, show_default=True, type=click.IntRange(min=1), help="Held-out text windows.")
@click.option("--n-random", default=8, show_default=True, type=click.IntRange(min=1), help="Repeated random blocks.")
@click.option("--random-block", default=32, show_default=True, type=click.IntRange(min=2), help="Tokens per random block.")
@click.option("--gamma-heatmap/--no-gamma-heatmap", default=None,
              help="Require (or skip) the k_norm gamma heatmap; default: drawn when the family has QK-norm.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def dynamics_command(checkpoints, model_name, out_dir, context_length, n_samples, n_random, random_block,
                     gamma_heatmap, quiet) -> None:
    """Per-head statistics, classes and k_norm gain over training checkpoints: tables and figures."""
    from spectra.jobs.dynamics.run import print_dynamics_result, run_dynamics

    if bool(checkpoints) == bool(model_name):
        raise click.UsageError("give either --checkpoints (one or more folders) or --model (e.g. tiny-qwen3)")
    try:
        result = run_dynamics(model_name or list(checkpoints), out_dir, context_length=context_length,
                              n_samples=n_samples, n_random=n_random, random_block=random_block,
                              gamma_heatmap=gamma_heatmap, progress=not quiet, command_line=sys.argv)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    print_dynamics_result(result)


@main.command("taxonomy")
@click.option("--model", "model_name", default="tiny-qwen3", show_default=True, help="Zoo name or a local model folder.")
@click.option("--context-length", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--n-samples", default=8, show_default=True, type=click.IntRange(min=1), help="Held-out text windows.")
@click.option("--out", "out_csv", default=None, type=click.Path(dir_okay=False), help="Also write the table as CSV.")
def taxonomy_command(model_name, context_length, n_samples, out_csv) -> None:
    """Classify every head (sink, induction, previous-token, positional, gatherer, retriever) and print the table."""
    from spectra.models.loading import load_model
    from spectra.data.windows import load_windows
    from spectra.heads.stats import head_stats
    from spectra.heads.taxonomy import classify

    try:
        model, tokenizer = load_model(model_name)
        stats = head_stats(model, load_windows(None, tokenizer, context_length, n_samples))
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    table = classify(stats)
    columns = ["layer", "head", "class", "score", "margin", "runner_up", "k_norm_mean", "entropy_mean"]
    click.echo(table[columns].round(3).to_string(index=False))
    click.echo("\n" + ", ".join(f"{k}: {v}" for k, v in table["class"].value_counts().items()))
    if out_csv:
        table.to_csv(out_csv, index=False)


@main.command("geometry")
@click.option("--qk", "qk_dirs", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Capture folder (spectra capture / qk-sniffer layout) with post-RoPE q and k; repeat for a "
                   "checkpoint series (step from a step-N / checkpoint-N name).")
@click.option("--model", "model_name", default=None,
              help="Instead of --qk: capture this model (zoo name or folder) on held-out text first, into OUT/qk/.")
@click.option("--checkpoints", is_flag=True, help="With --model: every training checkpoint of the zoo model (tiny-qwen3).")
@click.option("--n-examples", default=8, show_default=True, type=click.IntRange(min=1), help="With --model: examples.")
@click.option("--max-length", default=256, show_default=True, type=click.IntRange(min=2), help="With --model: tokens each.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Result folder.")
@click.option("--label", "labels", multiple=True, help="A name per --qk folder (default: the folder names).")
@click.option("--n-components", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--axis-b", default="centroid", show_default=True, type=click.Choice(["centroid", "eigen"]),
              help="Separation axis: the thesis's projected centroid difference, or the top eigenvector of P C_δ P.")
@click.option("--per-kind", is_flag=True, help="Also the published tool's per-kind PCA (correlations.csv).")
@click.option("--max-rows", default=None, type=click.IntRange(min=2), help="Keep the first N rows of each file.")
@click.option("--n-planes", default=30, show_default=True, type=click.IntRange(min=0),
              help="Complement rotation planes (SVD pairs) to describe.")
@click.option("--active-threshold", default=0.3, show_default=True, type=click.FloatRange(0, 1),
              help="A plane is active when the phase coherence of its rotation with position (angle_r) exceeds this.")
@click.option("--hi", default=0.7, show_default=True, type=click.FloatRange(0, 1), help="PC0 taxonomy: high |r|.")
@click.option("--lo", default=0.3, show_default=True, type=click.FloatRange(0, 1), help="PC0 taxonomy: low |r|.")
@click.option("--gqa-group", default=None, type=click.IntRange(min=1),
              help="Query heads per KV head, for folders without spectra_capture.json.")
@click.option("--scatter-head", default=None, help="LAYER,HEAD for the PC0-PC1 scatter (default: the most positional head).")
def geometry_command(qk_dirs, model_name, checkpoints, n_examples, max_length, out_dir, labels, n_components, axis_b,
                     per_kind, max_rows, n_planes, active_threshold, hi, lo, gqa_group, scatter_head) -> None:
    """Combined Q+K PCA and the planar rotation model of every captured head: heads.csv, qk.csv, planes.csv,
    summary.json, figures; over a checkpoint series also series.csv and the training-dynamics figures."""
    from pathlib import Path

    from spectra.jobs.geometry.run import capture_model, print_geometry_run, run_geometry
    if bool(qk_dirs) == bool(model_name):
        raise click.UsageError("give either --qk (one or more capture folders) or --model")
    if checkpoints and not model_name:
        raise click.UsageError("--checkpoints goes with --model")
    try:
        head = None
        if scatter_head is not None:
            try:
                layer_text, head_text = scatter_head.split(",")
                head = (int(layer_text), int(head_text))
            except ValueError:
                raise ValueError(f"scatter-head: expected LAYER,HEAD such as 2,5; got {scatter_head!r}") from None
        if model_name:
            qk_dirs = capture_model(model_name, Path(out_dir) / "qk", checkpoints=checkpoints, n_examples=n_examples,
                                    max_length=max_length)
        run = run_geometry(qk_dirs, out_dir, labels=list(labels) or None, per_kind=per_kind, scatter_head=head,
                           command_line=sys.argv, n_components=n_components, axis_b=axis_b, max_rows=max_rows,
                           n_planes=n_planes, active_threshold=active_threshold, hi=hi, lo=lo, gqa_group=gqa_group)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    print_geometry_run(run, click.echo)


@main.command("plasticity")
@click.option("--qk", "qk_dirs", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Capture folder (spectra capture / qk-sniffer layout) with post-RoPE q and k; repeat to compare "
                   "models or checkpoints (step from a step-N / checkpoint-N name).")
@click.option("--model", "model_name", default=None,
              help="Instead of --qk: capture this model (zoo name or folder) at its full context first, into OUT/qk/.")
@click.option("--checkpoints", is_flag=True, help="With --model: every training checkpoint of the zoo model (tiny-qwen3).")
@click.option("--n-examples", default=8, show_default=True, type=click.IntRange(min=1), help="With --model: examples.")
@click.option("--max-length", default=None, type=click.IntRange(min=16),
              help="With --model: tokens per example (default: the model's max_position_embeddings).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Result folder.")
@click.option("--label", "labels", multiple=True, help="A name per --qk folder (default: the folder names).")
@click.option("--mode", default="thesis", show_default=True, type=click.Choice(["thesis", "published"]),
              help="thesis: query grid, keys before the query, per-cell query statistics, count-weighted; "
                   "published: the attention-plasticity tool's bucket-pair cells and global statistics.")
@click.option("--bucket-size", default=None, type=click.IntRange(min=1),
              help="Capture bucket B in tokens (default: from the capture).")
@click.option("--context-length", default=None, type=click.IntRange(min=1),
              help="Context for the context fractions (default: (last bucket + 1) x B).")
@click.option("--grid-width", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Thesis query grid width in tokens (default: B; the thesis's profile plots used 1024).")
@click.option("--query-position", default="midpoint", show_default=True, type=click.Choice(["midpoint", "mean"]),
              help="Thesis: a cell's query position tau.")
@click.option("--covariance", default="diagonal", show_default=True, type=click.Choice(["diagonal", "full"]),
              help="Thesis: per-cell query covariance of the non-positional coordinates.")
@click.option("--pairs-per-cell", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--heatmap-bin", default=None, type=click.IntRange(min=1), help="2D heatmap bin in tokens (default: B).")
@click.option("--max-tokens-per-head", default=50_000, show_default=True, type=click.IntRange(min=3))
@click.option("--normality-max-dims", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--gqa-group", default=None, type=click.IntRange(min=1),
              help="Query heads per KV head, for folders without spectra_capture.json.")
@click.option("--scores", default=None, type=click.Path(dir_okay=False, exists=True),
              help="CSV of benchmark scores: checkpoint + score columns (one row per model), or checkpoint, length, "
                   "score (per-length scores); writes score_correlations.csv.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def plasticity_command(qk_dirs, model_name, checkpoints, n_examples, max_length, out_dir, labels, mode, bucket_size,
                       context_length, grid_width, query_position, covariance, pairs_per_cell, seed, heatmap_bin,
                       max_tokens_per_head, normality_max_dims, gqa_group, scores, quiet) -> None:
    """Attention plasticity of every captured head: heads.csv, cells.csv, profile.csv, fractions.csv, heatmap.csv,
    components.csv, model_report.csv, figures; with several captures the comparison figures."""
    from pathlib import Path

    from spectra.jobs.plasticity.run import capture_model, print_plasticity_run, run_plasticity

    if bool(qk_dirs) == bool(model_name):
        raise click.UsageError("give either --qk (one or more capture folders) or --model")
    if checkpoints and not model_name:
        raise click.UsageError("--checkpoints goes with --model")
    try:
        if model_name:
            qk_dirs = capture_model(model_name, Path(out_dir) / "qk", checkpoints=checkpoints, n_examples=n_examples,
                                    max_length=max_length, progress=not quiet)
        run = run_plasticity(qk_dirs, out_dir, mode=mode, labels=list(labels) or None, scores=scores,
                             command_line=sys.argv, progress=not quiet, bucket_size=bucket_size,
                             context_length=context_length, grid_width=grid_width, query_position=query_position,
                             covariance=covariance, pairs_per_cell=pairs_per_cell, seed=seed, heatmap_bin=heatmap_bin,
                             max_tokens_per_head=max_tokens_per_head, normality_max_dims=normality_max_dims,
                             gqa_group=gqa_group)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    print_plasticity_run(run, click.echo)


@main.command("report")
@click.argument("result_dir", type=click.Path())
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help="HTML file to write (default: RESULT_DIR/report.html).")
@click.option("--model", "model_name", default=None,
              help="Model for the attention viewer and the taxonomy classes (default: the one the result folder names).")
@click.option("--no-model", is_flag=True, help="Do not load the model: no attention viewer, only the classes the folder holds.")
@click.option("--n-samples", default=2, show_default=True, type=click.IntRange(1, 3),
              help="Held-out windows in the attention viewer.")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(2, 64),
              help="Tokens per window in the attention viewer.")
def report_command(result_dir, out_path, model_name, no_model, n_samples, max_tokens) -> None:
    """One self-contained HTML file summarising a result folder of any Spectra job: run metadata, a layer x head
    grid coloured by a per-head metric with each head's class, an attention viewer for the selected head, and the
    folder's figures."""
    from spectra.report.html import write_report

    try:
        path = write_report(result_dir, out_path, model=model_name, with_model=not no_model, n_samples=n_samples,
                            max_tokens=max_tokens)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"spectra report: {path}")


# ---- spectra run ----------------------------------------------------------------------------

@main.command("run")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--engine", "engine_name", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="local: tasks one after the other in this process; ray: tasks on a Ray cluster.")
@click.option("--address", default=None,
              help="With --engine ray: the cluster to join ('auto' for a running one); default: start a local one.")
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="With --engine ray: tasks running at once (and the CPUs of a local cluster); default: all CPUs.")
@click.option("--max-retries", default=3, show_default=True, type=click.IntRange(min=0),
              help="With --engine ray: retries of a task whose worker died or that raised.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Result folder (default: the config's out).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_command(config_path, engine_name, address, workers, max_retries, out_dir, quiet) -> None:
    """A job from a YAML file (kind: profile | capture | sweep | dynamics | geometry | plasticity, models: [...],
    checkpoints: ..., out, and the kind's settings; examples in configs/runs/) split into tasks by (model or
    checkpoint, sample shard), each writing its own shard; a rerun skips the finished shards. The result folders
    are the same whatever the engine and worker count."""
    from spectra.engine.core import load_config, make_engine, run

    if engine_name == "local" and (address is not None or workers is not None):
        raise click.UsageError("--address and --workers go with --engine ray")
    try:
        config = load_config(config_path)
        engine = make_engine(engine_name, address=address, workers=workers, max_retries=max_retries)
        result = run(config, engine, out=out_dir, progress=not quiet, command_line=sys.argv)
    except (ValueError, FileNotFoundError, NotImplementedError, RuntimeError) as error:
        raise click.ClickException(str(error).strip("'\"")) from error
    report = result.report
    click.echo(f"spectra run ({report.engine}): {len(report.computed)} task(s) computed, {len(report.skipped)} "
               f"skipped (already done), {report.seconds:.1f} s -> {result.out}")
    from spectra.engine.core import kind_module

    describe = kind_module(result.kind).describe
    for label, item in result.results.items():
        click.echo(f"  {describe(label, item)}")
