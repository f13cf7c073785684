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
@click.option("--model", default="tiny-llama", show_default=True, help="Zoo model name.")
@click.option("--seq-len", default=256, show_default=True, type=click.IntRange(min=1), help="Tokens per window.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--max-windows", default=None, type=click.IntRange(min=1), help="Use at most this many windows.")
def demo(model: str, seq_len: int, batch_size: int, max_windows: int | None) -> None:
    """Per-(layer, head) Q/K geometry of an embedded model on held-out text."""
    from spectra.demo import run_demo

    try:
        run_demo(model, seq_len=seq_len, batch_size=batch_size, max_windows=max_windows)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


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

    from spectra.capture_job import load_model, parse_ints, read_examples, run_capture, split_names

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
